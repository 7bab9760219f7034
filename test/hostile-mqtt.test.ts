/**
 * Hostile and faulty MQTT clients, over real sockets, on every store pair: oversized packets
 * (before and after CONNECT, over TCP and WebSocket), a subscriber that stops reading while it is
 * flooded, too many subscriptions, QoS 2 subscriptions, deeply nested JSON, unbounded persistent
 * session queues, and too many connections per address or per user. Nothing of it may crash the
 * server or stall the bystanders; each is cut off or refused with a documented answer.
 */
import { BACKENDS, MEMORY } from './helpers/backends.js'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'
import { RawClient, fixedHeader } from '../scripts/lib/raw-mqtt.js'
import type { MqimServer } from '../src/server.js'

const LIMITS = {
  maxPayloadBytes: 65536,
  maxPacketBytes: 131072,
  maxConnectPacketBytes: 4096,
  subscriptionsPerConnection: 20,
  outboundBufferBytes: 512 * 1024,
  pageBytes: 200_000,
  sessionQueueMessages: 10,
  connectionsPerAddress: 40,
  connectionsPerUser: 4,
  requestsPerSecond: 100_000,
  requestBurst: 100_000
}

describe.each(BACKENDS)('hostile MQTT clients ($name)', (backend) => {
  let server: MqimServer
  const open: Array<ImClient | RawClient> = []
  const track = <T extends ImClient | RawClient>(c: T): T => { open.push(c); return c }

  beforeAll(async () => {
    // drainTimeoutMs is long here: only the byte bound can cut the stuck subscriber below
    server = await startServer({ limits: LIMITS, broker: { drainTimeoutMs: 120_000 } }, await backend.make())
    for (const u of ['alice', 'bob', 'carol', 'mallory', 'dave', 'erin']) await addUser(server, u)
  })
  afterEach(async () => {
    for (const c of open.splice(0)) {
      if (c instanceof RawClient) c.end()
      else await c.end().catch(() => {})
    }
  })
  afterAll(async () => { await server.stop() })

  test.each(['tcp', 'ws'] as const)('a CONNECT claiming 200 MB is cut after its header, before its body is buffered (%s)', async (transport) => {
    const port = transport === 'tcp' ? server.ports.mqtt : server.ports.http
    const raw = track(await RawClient.open(port, { transport }))
    raw.write(Buffer.concat([fixedHeader(0x10, 200_000_000), Buffer.alloc(1000, 1)]))
    await raw.waitClosed(5000)
    // and a CONNECT just over the small pre-login limit is refused too
    const big = track(await RawClient.open(port, { transport }))
    big.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'alice:x', keepalive: 60, username: 'alice', password: Buffer.alloc(LIMITS.maxConnectPacketBytes, 0x61) })
    await big.waitClosed(5000)
  })

  test('after login: a PUBLISH over maxPacketBytes closes the connection; one over maxPayloadBytes only gets TOO_LARGE', async () => {
    const { client: raw, code } = await RawClient.login(server.ports.mqtt, 'alice', 'raw', 'password-alice')
    track(raw)
    expect(code).toBe(0)
    raw.write(fixedHeader(0x32, 200_000_000))
    raw.write(Buffer.alloc(4096))
    await raw.waitClosed(5000)

    const alice = track(await connect(server, 'alice', 'a'))
    const reply = await alice.requestRaw('send', { id: 'big', conv: 'cNothing', msgId: 'm', kind: 'text', body: 'x'.repeat(LIMITS.maxPayloadBytes) })
    expect(reply.ok ? 'ok' : reply.error.code).toBe('TOO_LARGE')
    expect(alice.mqtt.connected).toBe(true)
    expect((await alice.request('list', {})).next).toBeNull()
  })

  test('a subscriber that stops reading is cut off at outboundBufferBytes; bystanders keep chatting; nothing is lost', async () => {
    const mallory = track(await connect(server, 'mallory', 'm'))
    const alice = track(await connect(server, 'alice', 'a'))
    const carol = track(await connect(server, 'carol', 'c', { transport: 'ws' }))
    const victimConv = (await mallory.request('direct', { user: 'bob' })).conv
    const bystanderConv = (await alice.request('direct', { user: 'carol' })).conv
    const { client: stuck, code } = await RawClient.login(server.ports.mqtt, 'bob', 'stuck', 'password-bob')
    track(stuck)
    expect(code).toBe(0)
    expect(await stuck.subscribe(['im/u/bob/#'])).toEqual([1])
    stuck.stopReading()

    const body = 'x'.repeat(60_000)
    const acked: number[] = []
    const flooding = new AbortController()
    const flood = async (lane: number): Promise<void> => {
      for (let i = 0; !flooding.signal.aborted && i < 150; i++) {
        const r = await mallory.request('send', { conv: victimConv, msgId: `f${lane}-${i}`, kind: 'text', body })
        acked.push(r.seq)
      }
    }
    const floods = Promise.all([flood(0), flood(1), flood(2)])
    // the bystanders chat while the flood runs
    for (let i = 0; i < 20; i++) await alice.request('send', { conv: bystanderConv, msgId: `b${i}`, kind: 'text', body: `hello ${i}` })
    await carol.waitFor(() => carol.messages.filter(m => m.conv === bystanderConv).length === 20, 20_000, 'the bystander messages')
    // the server closes the stuck connection, long before drainTimeoutMs (the stuck client itself
    // does not notice: it reads nothing, not even the end of the stream)
    await carol.waitFor(() => server.internals.sessions.countOf('bob') === 0, 30_000, 'the stuck connection to be cut')
    flooding.abort()
    await floods
    expect(server.internals.sessions.slowConsumersCut).toBeGreaterThanOrEqual(1)
    // every acknowledged message is stored: bob syncs by seq when he returns
    const bob = track(await connect(server, 'bob', 'back'))
    const page = await bob.request('history', { conv: victimConv, after: 0, limit: 10 })
    expect(page.lastSeq).toBe(Math.max(...acked))
    expect(acked.length).toBe(new Set(acked).size)
  })

  test('20 history pages asked at once on one connection are answered as it reads, not cut as a slow reader', async () => {
    await addUser(server, 'pager')
    const pager = track(await connect(server, 'pager', 'pages'))
    const { conv } = await pager.request('direct', { user: 'bob' })
    const body = 'p'.repeat(60_000)
    for (let i = 0; i < 40; i++) await pager.request('send', { conv, msgId: `page${i}`, kind: 'text', body })
    // each page is ~180 KB (pageBytes 200,000): together ~3.6 MB, 7 times outboundBufferBytes
    const pages = await Promise.all(Array.from({ length: 20 }, async () => await pager.request('history', { conv, after: 0, limit: 200 }, 20_000)))
    for (const p of pages) expect(p.messages.length).toBe(3)
    expect(pager.mqtt.connected).toBe(true)
  }, 60_000)

  test('subscriptions per connection are capped: SUBACK 0x80 beyond, the connection stays', async () => {
    const { client: raw, code } = await RawClient.login(server.ports.mqtt, 'dave', 'subs', 'password-dave')
    track(raw)
    expect(code).toBe(0)
    const filters = Array.from({ length: 50 }, (_, i) => `im/u/dave/x/${i}`)
    const granted = await raw.subscribe(filters)
    expect(granted.filter(g => g === 1).length).toBe(LIMITS.subscriptionsPerConnection)
    expect(granted.filter(g => g === 0x80).length).toBe(50 - LIMITS.subscriptionsPerConnection)
    // re-subscribing a held filter is fine; a new one is not
    expect(await raw.subscribe(['im/u/dave/x/0', 'im/u/dave/x/49'])).toEqual([1, 0x80])
    // the same user's other device is answered as usual
    const dave = track(await connect(server, 'dave', 'phone'))
    expect((await dave.request('list', {})).conversations).toEqual([])
    raw.request('list', { id: 'still-here' })
    expect((await raw.reply('dave', 'subs', 'still-here')).ok).toBe(true)
  })

  test('a subscription requested at QoS 2 is granted (and acknowledged) at QoS 1', async () => {
    const { client: raw } = await RawClient.login(server.ports.mqtt, 'erin', 'q2', 'password-erin')
    track(raw)
    expect(await raw.subscribe(['im/u/erin/m', 'im/u/erin/e'], 2)).toEqual([1, 1])
  })

  test('a body nested 3,000 deep is a BAD_REQUEST, not an internal error', async () => {
    const alice = track(await connect(server, 'alice', 'deep'))
    const conv = (await alice.request('direct', { user: 'erin' })).conv
    const deep = '['.repeat(3000) + ']'.repeat(3000)
    const payload = `{"id":"d1","conv":"${conv}","msgId":"deep","kind":"custom","body":${deep}}`
    await alice.mqtt.publishAsync('im/req/send', payload, { qos: 1 })
    await alice.waitFor(() => alice.replies.some(r => r.op === 'send' && !r.ok), 5000, 'the error reply')
    const r = alice.replies.find(r => r.op === 'send')
    expect(r?.ok === false ? r.error.code : 'ok').toBe('BAD_REQUEST')
    const shallow = await alice.request('send', { conv, msgId: 'ok', kind: 'custom', body: [[[1]]] })
    expect(shallow.seq).toBe(1)
  })

  test('connections per address are capped; other addresses are not affected', async () => {
    const mine: RawClient[] = []
    for (let i = 0; i < LIMITS.connectionsPerAddress; i++) mine.push(track(await RawClient.open(server.ports.mqtt, { localAddress: '127.0.0.7' })))
    const over = track(await RawClient.open(server.ports.mqtt, { localAddress: '127.0.0.7' }))
    await over.waitClosed(5000)
    expect(mine.every(c => !c.closed)).toBe(true)
    const fine = track(await connect(server, 'carol', 'elsewhere'))
    expect((await fine.request('list', {})).next).toBeNull()
    for (const c of mine) c.end()
  })

  test('TCP health probes (open, close, no CONNECT) are not held against their address: 3x the cap of them, then a login from it works', async () => {
    const refusedBefore = server.internals.listeners.refused
    for (let i = 0; i < LIMITS.connectionsPerAddress * 3; i++) {
      const probe = await RawClient.open(server.ports.mqtt, { localAddress: '127.0.0.9' })
      probe.end()
      await probe.waitClosed(5000)
    }
    // each probe's slot is given back when it closes: none was refused, and the address is not in login backoff
    expect(server.internals.listeners.refused).toBe(refusedBefore)
    expect(server.internals.logins.addressBackoffMs('127.0.0.9')).toBe(0)
    const { client, code } = await RawClient.login(server.ports.mqtt, 'dave', 'after-probes', 'password-dave', { localAddress: '127.0.0.9' })
    track(client)
    expect(code).toBe(0)
  })

  test('connections per user are capped (CONNACK 3); taking over an own clientId still works', async () => {
    const held: ImClient[] = []
    for (let i = 0; i < LIMITS.connectionsPerUser; i++) held.push(track(await connect(server, 'erin', `d${i}`)))
    const { client: extra, code } = await RawClient.login(server.ports.mqtt, 'erin', 'one-more', 'password-erin')
    track(extra)
    expect(code).toBe(3)
    const { client: again, code: takeover } = await RawClient.login(server.ports.mqtt, 'erin', 'd0', 'password-erin')
    track(again)
    expect(takeover).toBe(0)
  })
})

describe('persistent-session queues of the embedded broker are bounded', () => {
  let server: MqimServer
  afterAll(async () => { await server.stop() })

  test('an offline clean=false session keeps at most sessionQueueMessages; the rest comes from history', async () => {
    server = await startServer({ limits: { sessionQueueMessages: 10 } }, await MEMORY.make())
    await addUser(server, 'alice')
    await addUser(server, 'dave')
    const alice = await connect(server, 'alice', 'a')
    const conv = (await alice.request('direct', { user: 'dave' })).conv
    const first = await connect(server, 'dave', 'phone', { clean: false })
    await first.end()
    for (let i = 0; i < 25; i++) await alice.request('send', { conv, msgId: `q${i}`, kind: 'text', body: `queued ${i}` })
    const back = await connect(server, 'dave', 'phone', { clean: false, subscribe: false })
    // a live message after the queue: once it is in, the queue has been delivered
    const marker = await alice.request('send', { conv, msgId: 'marker', kind: 'text', body: 'live' })
    await back.waitFor(() => back.messages.some(m => m.seq === marker.seq), 10_000, 'the live marker')
    expect(back.messages.map(m => m.seq).sort((a, b) => a - b)).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 26])
    const page = await back.request('history', { conv, after: 10 })
    expect(page.messages.map((m: { seq: number }) => m.seq)).toEqual(Array.from({ length: 16 }, (_, i) => 11 + i))
    await Promise.all([alice.end(), back.end()])
  })

  test('a device whose queue is full (it acknowledges nothing) stays connected and gets live messages', async () => {
    await addUser(server, 'fred')
    const alice = await connect(server, 'alice', 'a2')
    const conv = (await alice.request('direct', { user: 'fred' })).conv
    const first = await connect(server, 'fred', 'phone', { clean: false })
    await first.end()
    for (let i = 0; i < 12; i++) await alice.request('send', { conv, msgId: `f${i}`, kind: 'text', body: `queued ${i}` })
    // back with the same session, sending no PUBACK: the 10 queued stay in flight, the queue stays full
    const { client: raw, code } = await RawClient.login(server.ports.mqtt, 'fred', 'phone', 'password-fred', { clean: false })
    expect(code).toBe(0)
    const seqs = (): number[] => raw.packets.filter(p => p.cmd === 'publish' && p.topic === 'im/u/fred/m').map(p => (JSON.parse((p as { payload: Buffer }).payload.toString()) as { seq: number }).seq)
    await waitUntil(() => seqs().length >= 10, 10_000, 'the queued messages')
    const live = await alice.request('send', { conv, msgId: 'live', kind: 'text', body: 'live' })
    await waitUntil(() => seqs().includes(live.seq), 10_000, 'the live message')
    expect(seqs()).toEqual([...Array.from({ length: 10 }, (_, i) => i + 1), live.seq])
    expect(raw.closed).toBe(false)
    raw.end()
    await alice.end()
  })
})
