/**
 * Two nodes sharing Redis (sessions, routing), MongoDB (messages) and MySQL (metadata), in one
 * test process: clients on either node, concurrent senders through both, resends through the
 * other node, persistent sessions moving between nodes, clientId takeover, presence.
 * (Process-level crashes and outages are in test/drill.test.ts.)
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope } from '../src/protocol/schemas.js'

function inOrderOnce (messages: MessageEnvelope[], conv: string): number[] {
  return messages.filter(m => m.conv === conv).map(m => m.seq)
}

describe('two nodes on Redis + MongoDB + MySQL', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    const overrides = await clusterOverrides(5)
    n1 = await startServer({ ...overrides, nodeId: 'n1' })
    n2 = await startServer({ ...overrides, nodeId: 'n2' })
    for (const u of ['alice', 'bob', 'carol', 'dave', 'rita']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  test('senders on both nodes: seqs gapless and unique, every device gets every message once in order', async () => {
    const alice = await connect(n1, 'alice', 'a', { transport: 'tcp' })
    const bob = await connect(n2, 'bob', 'b', { transport: 'ws' })
    const carol1 = await connect(n1, 'carol', 'c1')
    const carol2 = await connect(n2, 'carol', 'c2')
    clients.push(alice, bob, carol1, carol2)
    const g = await alice.request('create-group', { name: 'cluster', members: ['bob', 'carol'] })
    const PER = 400
    const sendAll = async (c: ImClient, prefix: string): Promise<number[]> => {
      const seqs: number[] = []
      let next = 0
      await Promise.all(Array.from({ length: 20 }, async () => {
        while (next < PER) {
          const i = next++
          const r = await c.request('send', { conv: g.conv, msgId: `${prefix}${i}`, kind: 'text', body: `${prefix}${i}` }, 60000)
          expect(r.duplicate).toBe(false)
          seqs.push(r.seq)
        }
      }))
      return seqs
    }
    const [a, b] = await Promise.all([sendAll(alice, 'a'), sendAll(bob, 'b')])
    expect([...a, ...b].sort((x, y) => x - y)).toEqual(Array.from({ length: 2 * PER }, (_, i) => i + 1))
    for (const c of [alice, bob, carol1, carol2]) {
      await c.waitFor(() => c.messages.filter(m => m.conv === g.conv).length >= 2 * PER, 60000, `${c.userId}:${c.deviceId}`)
    }
    // a late duplicate would arrive before a marker sent now, through either node
    const marker = await bob.request('send', { conv: g.conv, msgId: 'marker', kind: 'text', body: 'marker' })
    for (const c of [alice, bob, carol1, carol2]) {
      await c.waitFor(() => c.messages.some(m => m.conv === g.conv && m.seq === marker.seq), 20000, `${c.userId}:${c.deviceId} marker`)
    }
    for (const c of [alice, bob, carol1, carol2]) {
      const seqs = inOrderOnce(c.messages, g.conv).filter(s => s !== marker.seq)
      // once each; in order per conversation
      expect(seqs).toEqual(Array.from({ length: 2 * PER }, (_, i) => i + 1))
    }
    // a resend of alice's message through the other node: same seq, no new delivery
    const again = await connect(n2, 'alice', 'a2')
    clients.push(again)
    const dup = await again.request('send', { conv: g.conv, msgId: 'a7', kind: 'text', body: 'a7' })
    expect(dup.duplicate).toBe(true)
    expect(dup.seq).toBe(a[7] ?? dup.seq)
    const h = await again.request('history', { conv: g.conv, after: 2 * PER - 1 })
    expect(h.lastSeq).toBe(2 * PER + 1) // the marker
  }, 120000)

  test('membership changes on one node take effect on the other', async () => {
    const alice = await connect(n1, 'alice', 'm1')
    const dave = await connect(n2, 'dave', 'm2')
    clients.push(alice, dave)
    const g = await alice.request('create-group', { name: 'm', members: ['bob'] })
    // node 2 learns the conversation (caches it) through a request there
    expect((await dave.requestRaw('history', { conv: g.conv })).ok).toBe(false)
    await alice.request('add-members', { conv: g.conv, members: ['dave'] })
    // the invalidation reaches node 2: dave may now read and send there
    await dave.waitFor(() => dave.events.some(e => e.conv === g.conv && e.action === 'added'))
    const sent = await dave.request('send', { conv: g.conv, msgId: 'hi', kind: 'text', body: 'hi from n2' })
    await alice.waitFor(() => alice.messages.some(m => m.conv === g.conv && m.seq === sent.seq))
    await alice.request('remove-member', { conv: g.conv, user: 'dave' })
    await dave.waitFor(() => dave.events.some(e => e.conv === g.conv && e.action === 'removed'))
    await new Promise(resolve => setTimeout(resolve, 100))
    expect((await dave.requestRaw('send', { conv: g.conv, msgId: 'nope', kind: 'text', body: 'x' })).ok).toBe(false)
  })

  test('group receipts: at most one a second per conversation across both nodes, counting the reads made on either', async () => {
    const alice = await connect(n1, 'alice', 'rc1')
    const bob = await connect(n1, 'bob', 'rc2')
    const carol = await connect(n2, 'carol', 'rc3')
    clients.push(alice, bob, carol)
    const g = await alice.request('create-group', { name: 'receipts', members: ['bob', 'carol'] })
    const sent = await alice.request('send', { conv: g.conv, msgId: 'r1', kind: 'text', body: 'read me' })
    const times: number[] = []
    alice.mqtt.on('message', (topic, payload) => {
      if (topic !== 'im/u/alice/e') return
      const e = JSON.parse(payload.toString()) as Record<string, unknown>
      if (e.type === 'receipt' && e.conv === g.conv) times.push(Date.now())
    })
    await bob.waitFor(() => bob.messages.some(m => m.conv === g.conv && m.seq === sent.seq))
    await carol.waitFor(() => carol.messages.some(m => m.conv === g.conv && m.seq === sent.seq))
    // bob reads through node 1, carol through node 2, 300 ms apart: each node has a receipt to send
    const readAt = Date.now()
    await bob.request('read', { conv: g.conv, seq: sent.seq })
    await new Promise(resolve => setTimeout(resolve, 300))
    await carol.request('read', { conv: g.conv, seq: sent.seq })
    const receipts = (): Array<Record<string, unknown>> => alice.events.filter(e => e.type === 'receipt' && e.conv === g.conv)
    // one receipt from each node (each had a cursor move to tell), the second no sooner than the
    // window allows; (the sender's own cursor does not move with a send: alice has read nothing)
    await alice.waitFor(() => receipts().length >= 2, 8000, 'a receipt from each node')
    await new Promise(resolve => setTimeout(resolve, 500))
    expect(times).toHaveLength(2)
    // each node used to send its own within the second (two receipts 300 ms apart); now the
    // second node waits for the cluster's window to end: the window was taken by node 1 after bob's
    // read was sent, so the second receipt comes a window (1 s) after that at the soonest, however
    // slow the first one was (measured from the read, not the first receipt, for that reason)
    expect(times[1]! - readAt).toBeGreaterThanOrEqual(950)
    expect(receipts().at(-1)).toEqual({ type: 'receipt', conv: g.conv, kind: 'group', lastSeq: sent.seq, members: 3, readAll: 2, minReadSeq: 0 })
  })

  test('a read event reaches the user\'s devices on both nodes but not the one that sent read', async () => {
    const alice = await connect(n1, 'alice', 'rd-a')
    const phone = await connect(n1, 'rita', 'rd-phone')
    const laptop = await connect(n1, 'rita', 'rd-laptop')
    const tablet = await connect(n2, 'rita', 'rd-tablet')
    clients.push(alice, phone, laptop, tablet)
    const d = await alice.request('direct', { user: 'rita' })
    const sent = await alice.request('send', { conv: d.conv, msgId: 'rd-1', kind: 'text', body: 'read me' })
    const reply = await phone.request('read', { conv: d.conv, seq: sent.seq })
    const event = { type: 'read', conv: d.conv, readSeq: reply.readSeq, unread: reply.unread }
    for (const other of [laptop, tablet]) await other.waitFor(() => other.events.some(e => e.type === 'read'), 10000, 'the read event')
    // a marker published after the event, to every device of rita's: the phone got no event before it
    const marker = await alice.request('send', { conv: d.conv, msgId: 'rd-marker', kind: 'text', body: 'marker' })
    for (const c of [phone, laptop, tablet]) await c.waitFor(() => c.messages.some(m => m.conv === d.conv && m.seq === marker.seq), 10000, 'the marker')
    expect(phone.events.filter(e => e.type === 'read')).toEqual([])
    expect(laptop.events.filter(e => e.type === 'read')).toEqual([event])
    expect(tablet.events.filter(e => e.type === 'read')).toEqual([event])
  })

  test('a read event is published only while the reader has another connection, here or on the other node', async () => {
    await addUser(n1, 'ivan')
    const alice = await connect(n1, 'alice', 'iv-a')
    const phone = await connect(n1, 'ivan', 'iv-phone')
    clients.push(alice, phone)
    const d = await alice.request('direct', { user: 'ivan' })
    const connected = n1.internals.connectedUsers
    const none = (): number => n1.services.publisher.noOtherDevices
    // past n1's first period (clusterOverrides: 500 ms), it knows n2's list
    await phone.waitFor(() => !connected.elsewhere('nobody-at-all'), 10000, 'n1 knows the other node\'s connections')
    expect(connected.elsewhere('ivan')).toBe(false)
    const send = async (id: string): Promise<number> => (await alice.request('send', { conv: d.conv, msgId: id, kind: 'text', body: id })).seq
    // the only device: nothing published
    const before = none()
    await phone.request('read', { conv: d.conv, seq: await send('iv-1') })
    expect(none()).toBe(before + 1)
    // a second device on the other node: n2 tells n1 at its login, and the event goes there
    const tablet = await connect(n2, 'ivan', 'iv-tablet')
    clients.push(tablet)
    await phone.waitFor(() => connected.elsewhere('ivan'), 10000, 'n1 learns of the device on n2')
    const r2 = await phone.request('read', { conv: d.conv, seq: await send('iv-2') })
    await tablet.waitFor(() => tablet.events.some(e => e.type === 'read' && e.readSeq === r2.readSeq), 10000, 'the read event on n2')
    expect(none()).toBe(before + 1)
    // it leaves: nothing published again
    await tablet.end()
    await phone.waitFor(() => !connected.elsewhere('ivan'), 10000, 'n1 learns the device on n2 is gone')
    await phone.request('read', { conv: d.conv, seq: await send('iv-3') })
    expect(none()).toBe(before + 2)
    expect(phone.events.filter(e => e.type === 'read')).toEqual([])
  })

  test('a persistent session queued on one node is delivered on the other', async () => {
    const alice = await connect(n1, 'alice', 'p')
    clients.push(alice)
    const d = await alice.request('direct', { user: 'dave' })
    const first = await connect(n1, 'dave', 'phone', { clean: false })
    await first.end()
    for (let i = 0; i < 5; i++) await alice.request('send', { conv: d.conv, msgId: `q${i}`, kind: 'text', body: `queued ${i}` })
    const back = await connect(n2, 'dave', 'phone', { clean: false, subscribe: false })
    clients.push(back)
    await back.waitFor(() => back.messages.filter(m => m.conv === d.conv).length >= 5, 15000, 'queued messages on node 2')
    expect(inOrderOnce(back.messages, d.conv)).toEqual([1, 2, 3, 4, 5])
  })

  test('a watcher of im/u/<user>/# on the other node sees the replies; the requester gets each once', async () => {
    await addUser(n1, 'gina')
    const requester = await connect(n1, 'gina', 'cli')
    const watcher = await connect(n2, 'gina', 'watch', { subscribe: false })
    clients.push(requester, watcher)
    const seen: string[] = []
    watcher.mqtt.on('message', (topic, payload) => { if (topic === 'im/u/gina/r/cli') seen.push(JSON.parse(payload.toString()).id) })
    await watcher.mqtt.subscribeAsync('im/u/gina/#', { qos: 1 })
    for (const id of ['w1', 'w2', 'w3']) await requester.request('list', { id })
    await watcher.waitFor(() => seen.length >= 3, 10000, 'the replies on node 2')
    // duplicates would arrive before the copy of a later reply
    await requester.request('list', { id: 'marker' })
    await watcher.waitFor(() => seen.includes('marker'), 10000, 'the marker on node 2')
    expect(seen).toEqual(['w1', 'w2', 'w3', 'marker'])
    expect(requester.replies.map(r => r.id)).toEqual(['w1', 'w2', 'w3', 'marker'])
  })

  test('a reply crosses Redis only while another node has a watcher of its user', async () => {
    await addUser(n1, 'hana')
    const requester = await connect(n1, 'hana', 'cli')
    const near = await connect(n1, 'hana', 'near', { subscribe: false })
    clients.push(requester, near)
    const seenBy = (c: ImClient): string[] => {
      const seen: string[] = []
      c.mqtt.on('message', (topic, payload) => { if (topic === 'im/u/hana/r/cli') seen.push(JSON.parse(payload.toString()).id) })
      return seen
    }
    const nearSeen = seenBy(near)
    const watchers = n1.internals.replyWatchers
    const routed = (): number => n1.services.publisher.repliesRouted
    // past n1's first period (clusterOverrides: 500 ms), it knows n2's list
    await requester.waitFor(() => !watchers.elsewhere('nobody-at-all'), 10000, 'n1 knows the other node\'s watchers')
    // nobody watches: nothing routed
    const before = routed()
    for (const id of ['a1', 'a2']) await requester.request('list', { id })
    expect(routed()).toBe(before)
    // a watcher on the same node: written to it directly, still nothing routed
    await near.mqtt.subscribeAsync('im/u/hana/r/+', { qos: 1 })
    await requester.request('list', { id: 'b1' })
    await near.waitFor(() => nearSeen.includes('b1'), 10000, 'the copy on node 1')
    expect(routed()).toBe(before)
    // a watcher on the other node: routed (and the one here gets the routed copy, once)
    const far = await connect(n2, 'hana', 'far', { subscribe: false })
    clients.push(far)
    const farSeen = seenBy(far)
    await far.mqtt.subscribeAsync('im/u/hana/#', { qos: 1 })
    await requester.waitFor(() => watchers.elsewhere('hana'), 10000, 'n1 learns of the watcher on n2')
    await requester.request('list', { id: 'c1' })
    await far.waitFor(() => farSeen.includes('c1'), 10000, 'the copy on node 2')
    await near.waitFor(() => nearSeen.includes('c1'), 10000, 'the routed copy on node 1')
    expect(routed()).toBe(before + 1)
    // it unsubscribes: no longer routed; the watcher here still gets its copies
    await far.mqtt.unsubscribeAsync('im/u/hana/#')
    await requester.waitFor(() => !watchers.elsewhere('hana'), 10000, 'n1 learns the watcher left')
    await requester.request('list', { id: 'd1' })
    await near.waitFor(() => nearSeen.includes('d1'), 10000, 'the copy on node 1 again')
    expect(routed()).toBe(before + 1)
    // a watcher whose connection ends takes its filter with it
    await far.mqtt.subscribeAsync('im/u/hana/r/cli', { qos: 0 })
    await requester.waitFor(() => watchers.elsewhere('hana'), 10000, 'n1 learns of the watcher by name')
    await far.end()
    await requester.waitFor(() => !watchers.elsewhere('hana'), 10000, 'n1 learns the watcher is gone')
    await requester.request('list', { id: 'e1' })
    await near.waitFor(() => nearSeen.includes('e1'), 10000, 'the last copy on node 1')
    expect(routed()).toBe(before + 1)
    expect(nearSeen).toEqual(['b1', 'c1', 'd1', 'e1'])
    expect(farSeen).toEqual(['c1'])
    expect(requester.replies.map(r => r.id)).toEqual(['a1', 'a2', 'b1', 'c1', 'd1', 'e1'])
  })

  test('clientId takeover across nodes: the newer connection wins', async () => {
    const old = await connect(n1, 'bob', 'same')
    const closed = new Promise<void>(resolve => old.mqtt.once('close', () => resolve()))
    const fresh = await connect(n2, 'bob', 'same')
    clients.push(fresh)
    await closed
    expect((await fresh.request('list', {})).conversations.length).toBeGreaterThan(0)
    old.mqtt.end(true)
  })

  test('presence: online while any device on any node is connected, with last-seen; contacts are told', async () => {
    await addUser(n1, 'erin')
    await addUser(n1, 'fred')
    const fred = await connect(n1, 'fred', 'f')
    clients.push(fred)
    const erinA = await connect(n1, 'erin', 'x')
    await erinA.request('direct', { user: 'fred' })
    const erinB = await connect(n2, 'erin', 'y')
    const status = async (): Promise<{ online: boolean, lastSeen: number | null } | undefined> => (await fred.request('presence', { users: ['erin'] })).users[0]
    expect((await status())?.online).toBe(true)
    await erinA.end()
    expect((await status())?.online).toBe(true) // still connected to node 2
    await erinB.end()
    await fred.waitFor(() => fred.events.some(e => e.type === 'presence' && e.user === 'erin' && e.online === false), 5000, 'offline event')
    const off = await status()
    expect(off?.online).toBe(false)
    expect(off?.lastSeen).toEqual(expect.any(Number))
    const erinC = await connect(n2, 'erin', 'z')
    clients.push(erinC)
    await fred.waitFor(() => fred.events.some(e => e.type === 'presence' && e.user === 'erin' && e.online === true), 5000, 'online event')
    // strangers see nothing
    const dave = await connect(n2, 'dave', 'pz')
    clients.push(dave)
    expect((await dave.request('presence', { users: ['fred'] })).users[0]).toEqual({ user: 'fred', online: false, lastSeen: null })
  })
})

describe('presence grace on two nodes (Redis)', () => {
  const GRACE_MS = 1500
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    // ttlMs 3 s: a heartbeat (and a sweep of the offline checks a stopped node left) every second
    const overrides = await clusterOverrides(9, { presence: { ttlMs: 3000, notifyIntervalMs: 0, offlineGraceMs: GRACE_MS, maxAudience: 500 } })
    n1 = await startServer({ ...overrides, nodeId: 'g1' })
    n2 = await startServer({ ...overrides, nodeId: 'g2' })
    for (const u of ['gail', 'hank', 'ivy', 'jack']) await addUser(n1, u)
  }, 60000)
  let n1Stopped = false
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await Promise.allSettled([n1Stopped ? Promise.resolve() : n1.stop(), n2.stop()])
  })

  test('a reconnect within offlineGraceMs, to the other node, tells the contacts nothing; going away for longer tells them once', async () => {
    const hank = await connect(n1, 'hank', 'h')
    clients.push(hank)
    const gailA = await connect(n1, 'gail', 'a')
    await gailA.request('direct', { user: 'hank' })
    const told = (): Array<{ online: boolean }> => hank.events.filter(e => e.type === 'presence' && e.user === 'gail') as unknown as Array<{ online: boolean }>
    // hank was connected before the conversation existed: gail's first coming is told from the next transition on
    await gailA.end()
    const gailB = await connect(n2, 'gail', 'b')
    await new Promise(resolve => setTimeout(resolve, GRACE_MS + 1000))
    // n1 saw gail leave and n2 saw her come back: whatever either told, nobody was told she was offline
    expect(told().some(e => !e.online)).toBe(false)
    const before = told().length
    // away again for a moment and back on n1: no event at all
    await gailB.end()
    const gailC = await connect(n1, 'gail', 'c')
    await new Promise(resolve => setTimeout(resolve, GRACE_MS + 1000))
    expect(told().length).toBe(before)
    expect((await hank.request('presence', { users: ['gail'] })).users[0]?.online).toBe(true)
    // gone for good: one offline event, not before the grace has passed
    const leftAt = Date.now()
    await gailC.end()
    await hank.waitFor(() => told().some(e => !e.online), 10_000, 'offline event after the grace')
    expect(Date.now() - leftAt).toBeGreaterThanOrEqual(GRACE_MS - 100)
    expect(told().slice(before)).toEqual([expect.objectContaining({ online: false, lastSeen: expect.any(Number) })])
    // and coming back is told at once (the state differs from the one told)
    const gailD = await connect(n2, 'gail', 'd')
    clients.push(gailD)
    await hank.waitFor(() => told().at(-1)?.online === true, 5000, 'online event')
    expect(told().length).toBe(before + 2)
  }, 30000)

  test('a node that stops within the grace leaves its offline checks to the other node', async () => {
    const hank = await connect(n2, 'hank', 'h2')
    clients.push(hank)
    const ivy = await connect(n1, 'ivy', 'i')
    const jack = await connect(n1, 'jack', 'j')
    await ivy.request('direct', { user: 'hank' })
    await jack.request('direct', { user: 'hank' })
    const offline = (user: string): boolean => hank.events.some(e => e.type === 'presence' && e.user === user && e.online === false)
    // ivy leaves (n1's grace timer runs), then n1 stops with jack still connected to it
    await ivy.end()
    n1Stopped = true
    await n1.stop()
    const stoppedAt = Date.now()
    await jack.end().catch(() => {})
    // n2's heartbeat takes both checks once they are a heartbeat overdue, and tells them
    await hank.waitFor(() => offline('ivy') && offline('jack'), 10_000, 'offline events for the users of the stopped node')
    expect(Date.now() - stoppedAt).toBeGreaterThanOrEqual(GRACE_MS - 200)
    expect((await hank.request('presence', { users: ['ivy', 'jack'] })).users.map((u: { online: boolean }) => u.online)).toEqual([false, false])
  }, 30000)
})
