import { startServer, addUser } from '../test/helpers/im.js'
import { Dispatcher } from '../src/im/dispatcher.js'
import { MEMORY } from '../test/helpers/backends.js'

const server = await startServer({ log: { level: 'error' } }, await MEMORY.make())
await addUser(server, 'alice'); await addUser(server, 'bob')
const d = new Dispatcher(server.services)
const alice = { userId: 'alice', deviceId: 'a' }
const r = await d.handle(alice, 'direct', Buffer.from(JSON.stringify({ id: 'x', user: 'bob' })))
const conv = (r as any).result.conv
const mode = process.argv[2] ?? 'send'
let n = 0
async function round (count: number): Promise<void> {
  const ps = []
  for (let i = 0; i < count; i++) {
    const id = `m${n++}`
    const payload = Buffer.from(JSON.stringify({ id, conv, msgId: id, kind: 'text', body: 'x'.repeat(100) }))
    if (mode === 'send') ps.push(d.handle(alice, 'send', payload))
    else if (mode === 'parse') ps.push(d.handle(alice, 'send', Buffer.from(JSON.stringify({ id, conv: 'nope', msgId: id, kind: 'text', body: 'x'.repeat(100) }))))
    else if (mode === 'publish') { server.services.publisher.message({ conversationId: conv, seq: n, clientMsgId: id, senderId: 'alice', ts: Date.now(), kind: 'text', body: 'x'.repeat(100), replyTo: null }, ['alice', 'bob']) }
    else if (mode === 'reply') { server.services.publisher.reply('alice', 'a', { id, op: 'send', ok: true, result: { conv, seq: n, msgId: id, ts: Date.now(), duplicate: false } }) }
  }
  await Promise.all(ps)
  await new Promise(resolve => setImmediate(resolve))
}
for (let i = 0; i < 20; i++) await round(500)
const t0 = process.cpuUsage(); const w0 = performance.now()
const N = 200
for (let i = 0; i < N; i++) await round(500)
const cpu = process.cpuUsage(t0); const wall = performance.now() - w0
console.log(mode, 'µs CPU per op', ((cpu.user + cpu.system) / (N * 500)).toFixed(2), 'wall µs/op', (wall * 1000 / (N * 500)).toFixed(2))
await server.stop()
