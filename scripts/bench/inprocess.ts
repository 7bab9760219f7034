/**
 * The server's own cost of a `send`, without sockets: a real MqimServer (embedded stores, port 0,
 * nobody connected) and the dispatcher called directly, 500 sends per loop turn. It separates
 * mqim's work (parse, validate, sequencer, store, serialize, Aedes' publish pipeline with no
 * subscriber) from the socket work that `npm run bench` measures together with it.
 *
 *   node --import tsx scripts/bench/inprocess.ts [--sends 200000] [--mode send|publish|event]
 *
 * send: the whole request; publish: only Publisher.message to the two members; event: only
 * Publisher.event to one user. Prints CPU µs per operation and the heap at the end. The in-memory store
 * keeps every message, so `send` includes the cost of a growing heap (GC), as in production.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { headerComment, intOption, oneOf, parseCommandLine, printUsage } from '../lib/cli.js'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { MqimServer } from '../../src/server.js'
import { createUser } from '../../src/admin/accounts.js'
import { Dispatcher } from '../../src/im/dispatcher.js'

const usage = headerComment(new URL(import.meta.url))
const { total, mode } = parseCommandLine(usage, () => {
  const { values } = parseArgs({ options: { sends: { type: 'string' }, mode: { type: 'string' }, help: { type: 'boolean', short: 'h' } } })
  if (values.help === true) printUsage(usage)
  return { total: intOption('sends', values.sends, 200_000), mode: oneOf('mode', values.mode, ['send', 'publish', 'event'] as const, 'send') }
})

const dataDir = mkdtempSync(path.join(tmpdir(), 'mqim-inprocess-'))
const config = loadConfig({ env: {}, overrides: { host: '127.0.0.1', mqtt: { port: 0 }, http: { port: 0 }, dataDir, log: { level: 'error' } } })
const server = await MqimServer.start({ config, logger: createLogger('error') })
try {
  const { services } = server
  for (const id of ['alice', 'bob']) await createUser(services.meta, { id, password: `password-${id}` })
  const dispatcher = new Dispatcher(services)
  const alice = { userId: 'alice', deviceId: 'a' }
  const opened = await dispatcher.handle(alice, 'direct', Buffer.from(JSON.stringify({ id: 'd', user: 'bob' })))
  if (!opened.ok) throw new Error(`direct failed: ${JSON.stringify(opened)}`)
  const conv = (opened.result as { conv: string }).conv
  const body = 'x'.repeat(100)
  let n = 0
  const turn = async (count: number): Promise<void> => {
    const pending: Array<Promise<unknown>> = []
    for (let i = 0; i < count; i++) {
      const id = `m${n++}`
      if (mode === 'send') {
        pending.push(dispatcher.handle(alice, 'send', Buffer.from(JSON.stringify({ id, conv, msgId: id, kind: 'text', body }))).then(r => {
          if (!r.ok) throw new Error(`send failed: ${JSON.stringify(r)}`)
        }))
      } else if (mode === 'publish') {
        services.publisher.message({ conversationId: conv, seq: n, clientMsgId: id, senderId: 'alice', ts: Date.now(), kind: 'text', body, replyTo: null }, ['alice', 'bob'])
      } else {
        services.publisher.event(['alice'], { type: 'read', conv, readSeq: n, unread: 0 })
      }
    }
    await Promise.all(pending)
    await new Promise(resolve => setImmediate(resolve))
  }
  for (let i = 0; i < 20; i++) await turn(500) // warm-up
  const turns = Math.ceil(total / 500)
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  for (let i = 0; i < turns; i++) await turn(500)
  const cpu = process.cpuUsage(cpu0)
  const ops = turns * 500
  const mem = process.memoryUsage()
  console.log(JSON.stringify({
    mode,
    ops,
    cpuMicrosPerOp: Number(((cpu.user + cpu.system) / ops).toFixed(2)),
    wallMicrosPerOp: Number(((performance.now() - t0) * 1000 / ops).toFixed(2)),
    heapUsedMiB: Math.round(mem.heapUsed / 2 ** 20),
    externalMiB: Math.round(mem.external / 2 ** 20)
  }))
} finally {
  await server.stop()
  rmSync(dataDir, { recursive: true, force: true })
}
