/**
 * The broker hooks and the dispatcher in-process, over in-memory duplex streams handed straight to
 * the broker (as Aedes' own tests do): CONNACK codes, the reply written before its PUBACK,
 * refused subscriptions and publishes, the per-user rate limit, forwarding only inside the
 * receiver's own subtree, and the dispatcher's order of checks. No network client, no services.
 */
import { startServer, addUser } from '../helpers/im.js'
import { MEMORY } from '../helpers/backends.js'
import { duplexPair, type PacketEnd } from '../helpers/duplex-pair.js'
import { Dispatcher } from '../../src/im/dispatcher.js'
import { setDisabled } from '../../src/admin/accounts.js'
import type { MqimServer } from '../../src/server.js'
import type { Reply } from '../../src/protocol/schemas.js'

interface Publish { cmd: 'publish', topic: string, payload: Buffer, messageId?: number }

describe('hooks over in-memory connections', () => {
  let server: MqimServer

  beforeAll(async () => {
    server = await startServer({ limits: { requestsPerSecond: 1, requestBurst: 3 } }, await MEMORY.make())
    for (const u of ['alice', 'bob', 'dave']) await addUser(server, u)
    await setDisabled(server.services.meta, 'dave', true)
  })
  afterAll(async () => { await server.stop() })

  async function open (clientId: string, username?: string, password?: string): Promise<{ end: PacketEnd, code: number }> {
    const { server: conn, client } = duplexPair()
    server.internals.listeners.attach(conn)
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 0, username, password: password === undefined ? undefined : Buffer.from(password) })
    const connack = await client.next('connack', 5000)
    return { end: client, code: (connack as unknown as { returnCode: number }).returnCode }
  }

  test('CONNACK: 0 accepted, 2 clientId not bound, 4 bad credentials, 5 disabled', async () => {
    expect((await open('alice:u1', 'alice', 'password-alice')).code).toBe(0)
    expect((await open('bob:u1', 'alice', 'password-alice')).code).toBe(2)
    expect((await open('alice:u2', 'alice', 'nope-nope')).code).toBe(4)
    expect((await open('alice:u3')).code).toBe(4)
    expect((await open('dave:u1', 'dave', 'password-dave')).code).toBe(5)
  })

  test('a connection that goes while its password is checked leaves no session behind', async () => {
    for (let i = 0; i < 5; i++) {
      const { server: conn, client } = duplexPair()
      server.internals.listeners.attach(conn)
      client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: `bob:gone${i}`, keepalive: 0, username: 'bob', password: Buffer.from('password-bob') })
      await new Promise(resolve => setTimeout(resolve, 2))
      conn.destroy()
    }
    // the checks finish after the connections went (a marker login after them is answered)
    expect((await open('bob:after', 'bob', 'password-bob')).code).toBe(0)
    expect(server.internals.sessions.sessionsOf('bob').map(s => s.deviceId)).toEqual(['after'])
  })

  test('the reply comes before its PUBACK; foreign subscriptions and publishes are refused on the same connection', async () => {
    const { end } = await open('bob:u1', 'bob', 'password-bob')
    end.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'im/u/bob/#', qos: 1 }, { topic: 'im/u/alice/#', qos: 1 }, { topic: '#', qos: 0 }, { topic: 'im/u/bob/\u0000', qos: 1 }] })
    // a filter with U+0000 is not allowed in MQTT [MQTT-4.7.3-2], even in one's own subtree
    expect((await end.next('suback') as unknown as { granted: number[] }).granted).toEqual([1, 128, 128, 128])
    end.send({ cmd: 'publish', topic: 'im/req/list', payload: Buffer.from('{"id":"l1"}'), qos: 1, messageId: 2 })
    await end.next('puback')
    const order = end.received.filter(p => p.cmd === 'puback' || (p.cmd === 'publish' && (p as Publish).topic === 'im/u/bob/r/u1')).map(p => p.cmd)
    expect(order).toEqual(['publish', 'puback'])
    end.send({ cmd: 'publish', topic: 'im/u/alice/m', payload: Buffer.from('{}'), qos: 1, messageId: 3 })
    await end.nth('puback', 2)
    const replies = end.received.filter((p): p is Publish & typeof p => p.cmd === 'publish').map(p => JSON.parse((p as Publish).payload.toString()) as Reply)
    expect(replies.map(r => r.ok ? 'ok' : r.error.code)).toEqual(['ok', 'FORBIDDEN'])
  })

  test('a request refused for the rate is answered at once, and the connection is not read again until the bucket has a request', async () => {
    const { end } = await open('bob:hold', 'bob', 'password-bob')
    await new Promise(resolve => setTimeout(resolve, 3100)) // a full bucket of 3
    for (let i = 0; i < 3; i++) end.send({ cmd: 'publish', topic: 'im/req/presence', payload: Buffer.from(`{"id":"h${i}","users":["bob"]}`), qos: 1, messageId: 30 + i })
    await end.nth('puback', 3)
    const t0 = performance.now()
    end.send({ cmd: 'publish', topic: 'im/req/presence', payload: Buffer.from('{"id":"h3","users":["bob"]}'), qos: 1, messageId: 33 })
    const refusal = JSON.parse((await end.nth('publish', 4) as Publish).payload.toString()) as Reply
    expect(refusal.ok ? 'ok' : [refusal.id, refusal.error.code]).toEqual(['h3', 'RATE_LIMITED'])
    const answered = performance.now() - t0
    // sent after the refusal came: read only once a token is back (rate 1/s: most of a second)
    end.send({ cmd: 'pingreq' })
    await end.next('pingresp', 3000)
    const read = performance.now() - t0
    expect(answered).toBeLessThan(600) // (waiting for a token would take most of a second)
    expect(read).toBeGreaterThanOrEqual(500)
    expect(end.received.filter(p => p.cmd === 'puback')).toHaveLength(4)
  })

  test('the rate limit is per user: a second connection of the same user shares the bucket', async () => {
    const { end: one } = await open('alice:r1', 'alice', 'password-alice')
    const { end: two } = await open('alice:r2', 'alice', 'password-alice')
    await new Promise(resolve => setTimeout(resolve, 3100)) // a full bucket of 3
    for (let i = 0; i < 3; i++) one.send({ cmd: 'publish', topic: 'im/req/list', payload: Buffer.from(`{"id":"a${i}"}`), qos: 1, messageId: 10 + i })
    for (let i = 0; i < 3; i++) two.send({ cmd: 'publish', topic: 'im/req/list', payload: Buffer.from(`{"id":"b${i}"}`), qos: 1, messageId: 20 + i })
    const codes = async (end: PacketEnd): Promise<string[]> => {
      await end.nth('puback', 3)
      return end.received.filter(p => p.cmd === 'publish').map(p => JSON.parse((p as Publish).payload.toString()) as Reply).map(r => r.ok ? 'ok' : r.error.code)
    }
    const all = [...await codes(one), ...await codes(two)]
    expect(all.filter(c => c === 'ok').length).toBeLessThanOrEqual(4)
    expect(all.filter(c => c === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(2)
  })
})

describe('dispatcher', () => {
  let server: MqimServer
  let dispatcher: Dispatcher
  const caller = { userId: 'alice', deviceId: 'd' }

  beforeAll(async () => {
    server = await startServer({ limits: { maxPayloadBytes: 1024, maxPacketBytes: 4096, maxJsonDepth: 8, pageBytes: 1024, outboundBufferBytes: 65536 } }, await MEMORY.make())
    dispatcher = new Dispatcher(server.services)
  })
  afterAll(async () => { await server.stop() })

  const code = (r: Reply): string => r.ok ? 'ok' : r.error.code

  test.each([
    ['invalid UTF-8', Buffer.from([0x7b, 0xff, 0x7d]), 'list', 'BAD_JSON', null],
    ['not JSON', Buffer.from('{"id":"x"'), 'list', 'BAD_JSON', null],
    ['too deep (id not even parsed)', Buffer.from(`{"id":"x","a":${'['.repeat(9)}${']'.repeat(9)}}`), 'list', 'BAD_REQUEST', null],
    ['deep inside a string is fine', Buffer.from(`{"id":"x","cursor":"${'['.repeat(30)}"}`), 'list', 'BAD_REQUEST', 'x'],
    ['too large (the id still comes back)', Buffer.from(JSON.stringify({ id: 'big', pad: 'x'.repeat(2000) })), 'list', 'TOO_LARGE', 'big'],
    ['unknown operation', Buffer.from('{"id":"u"}'), 'nope', 'UNKNOWN_OP', 'u'],
    ['unknown field', Buffer.from('{"id":"f","extra":1}'), 'list', 'BAD_REQUEST', 'f'],
    ['prototype key', Buffer.from('{"id":"p","__proto__":{"admin":true}}'), 'list', 'BAD_REQUEST', 'p'],
    ['a good one', Buffer.from('{"id":"g"}'), 'list', 'ok', 'g']
  ] as const)('%s', async (_what, payload, op, expected, id) => {
    const reply = await dispatcher.handle(caller, op, payload)
    expect([code(reply), reply.id]).toEqual([expected, id])
  })
})
