/**
 * The core guarantees over real sockets, on the embedded stores and on MongoDB + MySQL:
 * concurrent senders over TCP and WebSocket, every device gets every message once and in
 * order, acks carry seqs, history matches, resends are deduplicated, an offline member syncs
 * what it missed, and read cursors move across devices.
 */
import { BACKENDS } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope } from '../src/protocol/schemas.js'

const PER_SENDER = 1000

function assertInOrderOnce (messages: MessageEnvelope[], conv: string, count: number): void {
  const mine = messages.filter(m => m.conv === conv)
  expect(mine.map(m => m.seq)).toEqual(Array.from({ length: count }, (_, i) => i + 1))
}

async function sendMany (client: ImClient, conv: string, prefix: string, n: number, window = 50): Promise<Array<{ seq: number, msgId: string }>> {
  const acks: Array<{ seq: number, msgId: string }> = []
  let next = 0
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++
      const msgId = `${prefix}-${i}`
      const r = await client.request('send', { conv, msgId, kind: 'text', body: `${prefix} says ${i}` }, 60000)
      expect(r.duplicate).toBe(false)
      acks.push({ seq: r.seq, msgId })
    }
  }
  await Promise.all(Array.from({ length: window }, worker))
  return acks
}

describe.each(BACKENDS)('delivery on $name stores', (backend) => {
  let server: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    // bursts of 1,000 requests per connection: above the default per-connection rate limit
    server = await startServer({ limits: { requestsPerSecond: 100000, requestBurst: 100000 } }, await backend.make())
    for (const u of ['alice', 'bob', 'carol']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server.stop()
  })

  test('2 senders x 1,000 messages over TCP and WebSocket: every device gets all 2,000 once, in seq order', async () => {
    const alice = await connect(server, 'alice', 'phone', { transport: 'tcp' })
    const bob = await connect(server, 'bob', 'laptop', { transport: 'ws' })
    const carol = await connect(server, 'carol', 'phone', { transport: 'tcp' })
    const carolWeb = await connect(server, 'carol', 'web', { transport: 'ws' })
    const aliceTablet = await connect(server, 'alice', 'tablet', { transport: 'ws' })
    clients.push(alice, bob, carol, carolWeb, aliceTablet)
    const group = await alice.request('create-group', { name: 'burst', members: ['bob', 'carol'] })

    const [aAcks, bAcks] = await Promise.all([
      sendMany(alice, group.conv, 'a', PER_SENDER),
      sendMany(bob, group.conv, 'b', PER_SENDER)
    ])
    // every ack carries a seq; together they are exactly 1..2000
    const seqs = [...aAcks, ...bAcks].map(a => a.seq).sort((x, y) => x - y)
    expect(seqs).toEqual(Array.from({ length: 2 * PER_SENDER }, (_, i) => i + 1))

    for (const c of [alice, bob, carol, carolWeb, aliceTablet]) {
      await c.waitFor(() => c.messages.filter(m => m.conv === group.conv).length >= 2 * PER_SENDER, 60000, `${c.userId}:${c.deviceId} deliveries`)
    }
    // a late duplicate would arrive before a marker message sent now (deliveries follow commit order)
    const marker = await alice.request('send', { conv: group.conv, msgId: 'marker', kind: 'text', body: 'marker' })
    for (const c of [alice, bob, carol, carolWeb, aliceTablet]) {
      await c.waitFor(() => c.messages.some(m => m.conv === group.conv && m.seq === marker.seq), 20000, `${c.userId}:${c.deviceId} marker`)
    }
    for (const c of [alice, bob, carol, carolWeb, aliceTablet]) assertInOrderOnce(c.messages, group.conv, 2 * PER_SENDER + 1)
    // per-sender order is preserved: alice's messages appear in the order she sent them is not
    // promised under a window of 50, but each envelope matches its ack
    const bySeq = new Map(carol.messages.map(m => [m.seq, m]))
    for (const a of aAcks) expect(bySeq.get(a.seq)).toMatchObject({ msgId: a.msgId, from: 'alice', kind: 'text' })
    for (const b of bAcks) expect(bySeq.get(b.seq)).toMatchObject({ msgId: b.msgId, from: 'bob' })

    // history returns the same 2,000, page by page
    const seen: MessageEnvelope[] = []
    let after = 0
    for (;;) {
      const page = await carol.request('history', { conv: group.conv, after, limit: 500 })
      expect(page.limit).toBeLessThanOrEqual(server.services.config.limits.historyPageMax)
      seen.push(...page.messages)
      const last = page.messages.at(-1)
      if (!page.hasMore || last === undefined) break
      after = last.seq
    }
    expect(seen.map(m => m.seq)).toEqual(Array.from({ length: 2 * PER_SENDER + 1 }, (_, i) => i + 1)) // and the marker
    expect(seen).toEqual(carol.messages.filter(m => m.conv === group.conv))
  }, 180000)

  test('a resend with the same msgId gets the same seq and is not delivered again', async () => {
    const alice = await connect(server, 'alice', 'resend')
    const bob = await connect(server, 'bob', 'resend')
    clients.push(alice, bob)
    const d = await alice.request('direct', { user: 'bob' })
    const first = await alice.request('send', { conv: d.conv, msgId: 'once-1', kind: 'text', body: 'hello' })
    const again = await alice.request('send', { conv: d.conv, msgId: 'once-1', kind: 'text', body: 'hello' })
    expect(again).toMatchObject({ seq: first.seq, duplicate: true, msgId: 'once-1' })
    // concurrent duplicates in flight
    const burst = await Promise.all([1, 2, 3].map(() => alice.request('send', { conv: d.conv, msgId: 'once-2', kind: 'text', body: 'x' })))
    expect(new Set(burst.map(r => r.seq)).size).toBe(1)
    expect(burst.filter(r => !r.duplicate).length).toBe(1)
    const marker = await alice.request('send', { conv: d.conv, msgId: 'once-3', kind: 'text', body: 'after' })
    await bob.waitFor(() => bob.messages.some(m => m.seq === marker.seq && m.conv === d.conv))
    expect(bob.messages.filter(m => m.conv === d.conv).map(m => m.msgId)).toEqual(['once-1', 'once-2', 'once-3'])
    const h = await bob.request('history', { conv: d.conv })
    expect(h.messages.map((m: MessageEnvelope) => m.msgId)).toEqual(['once-1', 'once-2', 'once-3'])
  })

  test('an offline member reconnects, pulls exactly what it missed, sees unread; reading on one device moves the other', async () => {
    const alice = await connect(server, 'alice', 'sync')
    const bobPhone = await connect(server, 'bob', 'phone')
    clients.push(alice)
    const g = await alice.request('create-group', { name: 'sync', members: ['bob'] })
    await alice.request('send', { conv: g.conv, msgId: 's-0', kind: 'text', body: 'before' })
    await bobPhone.waitFor(() => bobPhone.messages.some(m => m.conv === g.conv))
    const lastSeen = Math.max(...bobPhone.messages.filter(m => m.conv === g.conv).map(m => m.seq))
    await bobPhone.request('read', { conv: g.conv, seq: lastSeen })
    await bobPhone.end()

    await sendMany(alice, g.conv, 'sm', 120, 10)
    const bobBack = await connect(server, 'bob', 'phone')
    const bobTablet = await connect(server, 'bob', 'tablet')
    clients.push(bobBack, bobTablet)
    const listed = await bobBack.request('list', {})
    const summary = listed.conversations.find((c: { conv: string }) => c.conv === g.conv)
    expect(summary).toMatchObject({ lastSeq: 121, readSeq: 1, unread: 120, muted: false, kind: 'group', name: 'sync' })
    expect(summary?.last).toMatchObject({ seq: 121, from: 'alice' })

    const pulled: MessageEnvelope[] = []
    let after = lastSeen
    for (;;) {
      const page = await bobBack.request('history', { conv: g.conv, after, limit: 50 })
      pulled.push(...page.messages)
      const last = page.messages.at(-1)
      if (!page.hasMore || last === undefined) break
      after = last.seq
    }
    expect(pulled.map(m => m.seq)).toEqual(Array.from({ length: 120 }, (_, i) => i + 2))

    const r = await bobBack.request('read', { conv: g.conv, seq: 121 })
    expect(r).toEqual({ conv: g.conv, readSeq: 121, unread: 0 })
    await bobTablet.waitFor(() => bobTablet.events.some(e => e.type === 'read' && e.conv === g.conv && e.readSeq === 121))
    // never backwards
    const back = await bobTablet.request('read', { conv: g.conv, seq: 5 })
    expect(back.readSeq).toBe(121)
    const listed2 = await bobTablet.request('list', {})
    expect(listed2.conversations.find((c: { conv: string }) => c.conv === g.conv)).toMatchObject({ readSeq: 121, unread: 0 })
  })

  test('a persistent session (clean=false) gets messages queued while it was offline', async () => {
    const alice = await connect(server, 'alice', 'persist')
    clients.push(alice)
    const first = await connect(server, 'carol', 'persistent', { clean: false })
    const d = await alice.request('create-group', { name: 'persist', members: ['carol'] })
    await first.end()
    for (let i = 0; i < 5; i++) await alice.request('send', { conv: d.conv, msgId: `p-${i}`, kind: 'text', body: `queued ${i}` })
    const back = await connect(server, 'carol', 'persistent', { clean: false, subscribe: false })
    clients.push(back)
    await back.waitFor(() => back.messages.filter(m => m.conv === d.conv).length === 5, 10000, 'queued messages')
    assertInOrderOnce(back.messages, d.conv, 5)
  })

  test('read events and group receipts are QoS 0, never queued for a session that is away; a direct receipt is QoS 1 and queued', async () => {
    const alice = await connect(server, 'alice', 'qos-a')
    const carol = await connect(server, 'carol', 'qos-live')
    // carol reads on another device: read events go to a user's other devices
    const reader = await connect(server, 'carol', 'qos-reader')
    clients.push(alice, carol, reader)
    const qosOf = new Map<string, number[]>()
    carol.mqtt.on('message', (topic, payload, packet) => {
      if (topic !== 'im/u/carol/e') return
      const type = (JSON.parse(payload.toString()) as { type: string, kind?: string }).type
      const key = type === 'receipt' ? `receipt:${(JSON.parse(payload.toString()) as { kind: string }).kind}` : type
      qosOf.set(key, [...(qosOf.get(key) ?? []), packet.qos])
    })
    const direct = await alice.request('direct', { user: 'carol' })
    const group = await alice.request('create-group', { name: 'qos', members: ['carol'] })
    // carol's second device, persistent, goes away
    const away = await connect(server, 'carol', 'qos-away', { clean: false })
    await away.end()
    for (const conv of [direct.conv, group.conv]) await alice.request('send', { conv, msgId: `q-${conv}`, kind: 'text', body: 'hi' })
    // carol reads both (read events to her devices), alice reads both (a direct receipt and a group aggregate to carol)
    for (const conv of [direct.conv, group.conv]) await reader.request('read', { conv, seq: 1 })
    for (const conv of [direct.conv, group.conv]) await alice.request('read', { conv, seq: 1 })
    await carol.waitFor(() => (qosOf.get('read')?.length ?? 0) >= 2 && qosOf.has('receipt:direct') && qosOf.has('receipt:group'), 10000, 'the events, live')
    expect(qosOf.get('read')).toEqual([0, 0])
    expect(qosOf.get('receipt:direct')).toEqual([1])
    expect(new Set(qosOf.get('receipt:group'))).toEqual(new Set([0]))
    expect(qosOf.get('member')?.every(q => q === 1)).toBe(true) // member events stay QoS 1

    // the persistent device comes back: its queue has the two messages and alice's direct receipt, no read event, no group aggregate
    const back = await connect(server, 'carol', 'qos-away', { clean: false, subscribe: false })
    clients.push(back)
    await back.waitFor(() => back.messages.length >= 2 && back.events.some(e => e.type === 'receipt'), 10000, 'the queue')
    const marker = await alice.request('send', { conv: direct.conv, msgId: 'q-marker', kind: 'text', body: 'after' })
    await back.waitFor(() => back.messages.some(m => m.seq === marker.seq && m.conv === direct.conv), 10000, 'a live message after the queue')
    expect(back.events.filter(e => e.type === 'read')).toEqual([])
    expect(back.events.filter(e => e.type === 'receipt')).toEqual([{ type: 'receipt', conv: direct.conv, kind: 'direct', user: 'alice', readSeq: 1 }])
  })

  test('the device that sent read gets no read event (the reply has it); the user\'s other devices do', async () => {
    const alice = await connect(server, 'alice', 'own-a')
    const carol = await connect(server, 'carol', 'own-c')
    clients.push(alice, carol)
    const { conv } = await alice.request('direct', { user: 'carol' })
    const sent = []
    for (let i = 1; i <= 3; i++) sent.push(await alice.request('send', { conv, msgId: `own-${i}`, kind: 'text', body: `m${i}` }))
    const [first, second, third] = sent.map(r => r.seq) as [number, number, number]
    // carol's only device reads: nothing is published for her (on one node nothing at all)
    expect(await carol.request('read', { conv, seq: first })).toEqual({ conv, readSeq: first, unread: 2 })
    // a marker: a read event made before this message would have come first
    const marker = await alice.request('send', { conv, msgId: 'own-marker', kind: 'text', body: 'marker' })
    await carol.waitFor(() => carol.messages.some(m => m.conv === conv && m.seq === marker.seq), 5000, 'the marker')
    // a second device: the next read reaches it, not the reader
    const tablet = await connect(server, 'carol', 'own-t')
    clients.push(tablet)
    expect(await carol.request('read', { conv, seq: second })).toEqual({ conv, readSeq: second, unread: 2 })
    await tablet.waitFor(() => tablet.events.some(e => e.type === 'read'), 5000, 'the read event')
    // and the tablet's read reaches the phone, not the tablet
    expect(await tablet.request('read', { conv, seq: marker.seq })).toEqual({ conv, readSeq: marker.seq, unread: 0 })
    await carol.waitFor(() => carol.events.some(e => e.type === 'read'), 5000, 'the phone\'s read event')
    const last = await alice.request('send', { conv, msgId: 'own-marker-2', kind: 'text', body: 'marker 2' })
    await tablet.waitFor(() => tablet.messages.some(m => m.conv === conv && m.seq === last.seq), 5000, 'the last marker')
    await carol.waitFor(() => carol.messages.some(m => m.conv === conv && m.seq === last.seq), 5000, 'the last marker')
    expect(carol.events.filter(e => e.type === 'read')).toEqual([{ type: 'read', conv, readSeq: marker.seq, unread: 0 }])
    expect(tablet.events.filter(e => e.type === 'read')).toEqual([{ type: 'read', conv, readSeq: second, unread: 2 }])
    expect(third).toBe(second + 1)
  })
})
