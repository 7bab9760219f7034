/**
 * Connect rules and authorization over real sockets: CONNACK codes, clientId binding,
 * subscriptions outside one's own subtree refused with SUBACK 0x80 (connection kept),
 * publishes to anything but im/req/<op> refused without routing, and no access to other
 * people's conversations. An eavesdropper with every subscription it can get sees nothing.
 */
import mqtt from 'mqtt'
import { MEMORY } from './helpers/backends.js'
import { startServer, addUser, connect, url, subackCodes, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { createBot, setDisabled } from '../src/admin/accounts.js'

async function connectError (server: MqimServer, opts: { clientId: string, username?: string, password?: string }): Promise<number | undefined> {
  try {
    const c = await mqtt.connectAsync(url(server, 'tcp'), { ...opts, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 })
    await c.endAsync()
    return 0
  } catch (err) {
    return (err as { code?: number }).code
  }
}

describe('connect rules', () => {
  let server: MqimServer
  beforeAll(async () => {
    server = await startServer({}, await MEMORY.make())
    await addUser(server, 'alice')
    await addUser(server, 'dave')
  })
  afterAll(async () => { await server.stop() })

  test('right credentials with a bound clientId connect', async () => {
    expect(await connectError(server, { clientId: 'alice:x', username: 'alice', password: 'password-alice' })).toBe(0)
  })
  test('wrong password, unknown user or no credentials: CONNACK 4', async () => {
    expect(await connectError(server, { clientId: 'alice:x', username: 'alice', password: 'nope' })).toBe(4)
    expect(await connectError(server, { clientId: 'zed:x', username: 'zed', password: 'whatever1' })).toBe(4)
    expect(await connectError(server, { clientId: 'alice:x' })).toBe(4)
  })
  test('clientId not bound to the username: CONNACK 2 (no session takeover of another user)', async () => {
    expect(await connectError(server, { clientId: 'dave:x', username: 'alice', password: 'password-alice' })).toBe(2)
    expect(await connectError(server, { clientId: 'alice', username: 'alice', password: 'password-alice' })).toBe(2)
    expect(await connectError(server, { clientId: 'alice:bad/device', username: 'alice', password: 'password-alice' })).toBe(2)
  })
  test('a disabled account: CONNACK 5', async () => {
    await setDisabled(server.services.meta, 'dave', true)
    expect(await connectError(server, { clientId: 'dave:x', username: 'dave', password: 'password-dave' })).toBe(5)
    await setDisabled(server.services.meta, 'dave', false)
    expect(await connectError(server, { clientId: 'dave:x', username: 'dave', password: 'password-dave' })).toBe(0)
  })
  test('bots authenticate with their API key, and only with it', async () => {
    const { apiKey } = await createBot(server.services.meta, { id: 'echo' })
    expect(await connectError(server, { clientId: 'echo:1', username: 'echo', password: apiKey })).toBe(0)
    expect(await connectError(server, { clientId: 'echo:1', username: 'echo', password: apiKey.slice(0, -1) + 'x' })).toBe(4)
  })
})

describe('authorization', () => {
  let server: MqimServer
  let alice: ImClient, bob: ImClient, eve: ImClient
  let conv: string
  beforeAll(async () => {
    server = await startServer({}, await MEMORY.make())
    for (const u of ['alice', 'bob', 'eve']) await addUser(server, u)
    alice = await connect(server, 'alice', 'a')
    bob = await connect(server, 'bob', 'b', { transport: 'ws' })
    eve = await connect(server, 'eve', 'e')
    conv = (await alice.request('direct', { user: 'bob' })).conv
  })
  afterAll(async () => {
    await Promise.allSettled([alice.end(), bob.end(), eve.end()])
    await server.stop()
  })

  test('subscriptions outside the own subtree get SUBACK 0x80 and the connection stays up', async () => {
    const refused = ['#', '+/#', '$SYS/#', '$SYS/+/heartbeat', 'im/#', 'im/u/+/m', 'im/u/+/#', 'im/u/alice/m', 'im/u/alice/#', 'im/u/bob/r/b', 'im/req/send', 'im/req/#', `im/c/${conv}`, 'im/u/eve', '$mqim/sink']
    for (const filter of refused) {
      expect({ filter, codes: await subackCodes(eve, [filter]) }).toEqual({ filter, codes: [128] })
    }
    expect(eve.mqtt.connected).toBe(true)
    expect(await subackCodes(eve, ['im/u/eve/#', 'im/u/eve/+', 'im/u/eve/r/+'])).toEqual([1, 1, 1])
    // mixed: each filter is judged on its own
    expect(await subackCodes(eve, ['im/u/eve/m', 'im/u/alice/m'])).toEqual([1, 128])
    // still works afterwards
    expect((await eve.request('list', {})).conversations).toEqual([])
  })

  test('requests on a conversation one is not in: NOT_MEMBER, nothing stored, nothing leaked', async () => {
    const attempts: Array<[string, Record<string, unknown>]> = [
      ['send', { conv, msgId: 'evil', kind: 'text', body: 'hi' }],
      ['history', { conv }],
      ['read', { conv, seq: 1 }],
      ['mute', { conv, muted: true }],
      ['members', { conv }],
      ['receipts', { conv, seq: 1 }],
      ['add-members', { conv, members: ['eve'] }],
      ['rename', { conv, name: 'x' }],
      ['leave', { conv }],
      ['history', { conv: 'doesNotExist' }]
    ]
    for (const [op, body] of attempts) {
      const r = await eve.requestRaw(op, body)
      expect({ op, ok: r.ok, code: r.ok ? undefined : r.error.code }).toEqual({ op, ok: false, code: 'NOT_MEMBER' })
    }
    const h = await alice.request('history', { conv })
    expect(h.messages).toEqual([])
  })

  test('publishing anywhere but im/req/<op> is refused, not routed, and costs no connection', async () => {
    const before = bob.messages.length
    await eve.mqtt.publishAsync('im/u/bob/m', JSON.stringify({ conv, seq: 99, from: 'alice', body: 'forged' }), { qos: 1 })
    await eve.mqtt.publishAsync('im/u/bob/e', '{}', { qos: 1 })
    await eve.mqtt.publishAsync('$SYS/x', 'x', { qos: 1 })
    await eve.mqtt.publishAsync('chat/random', 'x', { qos: 0, retain: true })
    await eve.waitFor(() => eve.replies.filter(r => r.id === null).length >= 3, 5000, 'error replies')
    const codes = eve.replies.filter(r => r.id === null).map(r => (r.ok ? 'ok' : r.error.code))
    expect(codes.slice(0, 3)).toEqual(['FORBIDDEN', 'FORBIDDEN', 'FORBIDDEN'])
    // an honest marker proves ordering: anything routed would have arrived before it
    const sent = await alice.request('send', { conv, msgId: 'marker', kind: 'text', body: 'real' })
    await bob.waitFor(() => bob.messages.some(m => m.seq === sent.seq))
    expect(bob.messages.slice(before).map(m => m.body)).toEqual(['real'])
    expect(eve.mqtt.connected).toBe(true)
    // a retained publish left nothing behind for new subscribers: retained messages come with the
    // subscription, before the reply to a request made after it
    const late = await connect(server, 'eve', 'late')
    await late.request('list', {})
    expect(late.messages).toEqual([])
    expect(late.events).toEqual([])
    await late.end()
  })

  test('the eavesdropper saw nothing of the alice-bob conversation', async () => {
    await alice.request('send', { conv, msgId: 'secret', kind: 'text', body: 'secret' })
    // a marker eve does get, sent after the secret: deliveries follow commit order, so a leaked
    // secret would have reached eve before it
    const withEve = (await alice.request('direct', { user: 'eve' })).conv
    const marker = await alice.request('send', { conv: withEve, msgId: 'marker-eve', kind: 'text', body: 'for eve' })
    await eve.waitFor(() => eve.messages.some(m => m.conv === withEve && m.seq === marker.seq), 5000, 'the marker')
    expect(eve.messages.map(m => m.conv)).toEqual([withEve])
    expect(eve.events.filter(e => e.conv === conv)).toEqual([])
  })

  test('a will is never published: not as a request, not to anyone', async () => {
    const willing = await mqtt.connectAsync(url(server, 'tcp'), {
      clientId: 'alice:willing',
      username: 'alice',
      password: 'password-alice',
      protocolVersion: 4,
      reconnectPeriod: 0,
      will: { topic: 'im/req/send', payload: Buffer.from(JSON.stringify({ id: 'w', conv, msgId: 'from-the-grave', kind: 'text', body: 'will' })), qos: 1, retain: false }
    })
    const before = (await alice.request('history', { conv })).lastSeq
    willing.stream.destroy() // no DISCONNECT: Aedes would publish the will
    // Aedes publishes a will as the connection closes: once the server has dropped the session,
    // it has happened (or not), and a marker sent now is stored after anything it caused
    await alice.waitFor(() => !server.internals.sessions.sessionsOf('alice').some(s => s.deviceId === 'willing'), 5000, 'the session to end')
    const marker = await alice.request('send', { conv, msgId: 'after-the-will', kind: 'text', body: 'marker' })
    expect(marker.seq).toBe(before + 1)
    const after = await alice.request('history', { conv })
    expect(after.messages.map((m: { msgId: string }) => m.msgId)).not.toContain('from-the-grave')
    willing.end(true)
  })

  test('replies go to the requesting device only', async () => {
    const other = await connect(server, 'alice', 'other')
    await alice.request('list', {})
    // other's own reply comes after anything routed to it for alice's request
    await other.request('list', { id: 'mine' })
    expect(other.replies.map(r => r.id)).toEqual(['mine'])
    await other.end()
  })

  test('a reply arrives once and before its PUBACK; a watcher of im/u/alice/# sees it too', async () => {
    const watcher = await mqtt.connectAsync(url(server, 'tcp'), { clientId: 'alice:watch', username: 'alice', password: 'password-alice', protocolVersion: 4, reconnectPeriod: 0 })
    const watched: Array<{ topic: string, id: unknown }> = []
    watcher.on('message', (topic, payload) => { watched.push({ topic, id: JSON.parse(payload.toString()).id }) })
    await watcher.subscribeAsync('im/u/alice/#', { qos: 1 })
    // the requester also watches its whole subtree: its reply topic matches twice
    expect(await subackCodes(alice, ['im/u/alice/#'])).toEqual([1])
    try {
      const before = alice.replies.length
      const id = 'once-' + Date.now()
      // publishAsync resolves on the PUBACK: the reply, written before it, is already in
      await alice.mqtt.publishAsync('im/req/list', JSON.stringify({ id }), { qos: 1 })
      expect(alice.replies.slice(before).map(r => r.id)).toEqual([id])
      await alice.waitFor(() => watched.some(w => w.id === id), 5000, 'the watcher to see the reply')
      // a second copy would arrive before the reply to a later request
      const marker = 'marker-' + id
      await alice.request('list', { id: marker })
      await alice.waitFor(() => watched.some(w => w.id === marker), 5000, 'the watcher to see the marker')
      expect(alice.replies.slice(before).map(r => r.id)).toEqual([id, marker])
      expect(watched.filter(w => w.id === id)).toEqual([{ topic: 'im/u/alice/r/a', id }])
      expect(watched.filter(w => w.id === marker)).toEqual([{ topic: 'im/u/alice/r/a', id: marker }])
    } finally {
      await alice.mqtt.unsubscribeAsync('im/u/alice/#')
      await watcher.endAsync()
    }
  })
})
