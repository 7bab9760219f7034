/**
 * A channel of 2,000 members on two nodes sharing Redis (routing), MongoDB (messages) and MySQL
 * (metadata). 300 of the members are connected (real mqtt.js clients, half on each node); the
 * other 1,700 are offline: connecting 2,000 clients in this test process would take most of the
 * test's time on a 2-core machine without testing anything more of the channel path.
 * Every connected member gets every post once and in order (posts from both nodes); offline
 * members pull exactly the seqs they miss; non-members are refused on subscribe (SUBACK 0x80)
 * and on history (NOT_MEMBER) on both nodes; a member removed on one node stops receiving on the
 * other at once; members cannot post where only admins may; a member added on one node is
 * subscribed by the server on the node it is connected to.
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, connect, type ImClient } from './helpers/im.js'
import { createBot } from '../src/admin/accounts.js'
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope, Reply } from '../src/protocol/schemas.js'

const MEMBERS = 2000
const ONLINE = 300
const POSTS = 40

async function grants (client: ImClient, filters: string[]): Promise<number[]> {
  try {
    return (await client.mqtt.subscribeAsync(filters, { qos: 1 })).map(g => g.qos)
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[] } }).packet
    if (packet?.granted === undefined) throw err
    return packet.granted
  }
}

function collect (client: ImClient, topic: string): number[] {
  const seqs: number[] = []
  client.mqtt.on('message', (t, payload) => {
    if (t === topic) seqs.push((JSON.parse(payload.toString('utf8')) as MessageEnvelope).seq)
  })
  return seqs
}

async function errorOf (client: ImClient, op: string, body: Record<string, unknown>): Promise<string> {
  const reply: Reply = await client.requestRaw(op, body)
  if (reply.ok) throw new Error(`${op} succeeded`)
  return reply.error.code
}

async function pullAll (client: ImClient, conv: string, after: number): Promise<number[]> {
  const seqs: number[] = []
  for (;;) {
    const h = await client.request('history', { conv, after, limit: 7 })
    seqs.push(...h.messages.map(m => m.seq))
    if (!h.hasMore) return seqs
    after = h.messages[h.messages.length - 1]?.seq ?? after
  }
}

describe('a channel of 2,000 members on two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  const keys = new Map<string, string>()
  const clients: ImClient[] = []
  const member = (i: number): string => `ccm${i}`
  const open = async (node: MqimServer, user: string, device: string): Promise<ImClient> => {
    const c = await connect(node, user, device, { password: keys.get(user) })
    clients.push(c)
    return c
  }
  beforeAll(async () => {
    const overrides = await clusterOverrides(12, {
      limits: { requestsPerSecond: 100000, requestBurst: 100000, connectionsPerAddress: 10000 },
      auth: { maxQueuedLogins: 4096, loginsPerAddress: 4096 }
    })
    n1 = await startServer({ ...overrides, nodeId: 'cc1' })
    n2 = await startServer({ ...overrides, nodeId: 'cc2' })
    const users = ['ccowner', 'ccadmin', 'ccstranger', 'cclate', ...Array.from({ length: MEMBERS }, (_, i) => member(i))]
    for (let i = 0; i < users.length; i += 50) {
      await Promise.all(users.slice(i, i + 50).map(async id => { keys.set(id, (await createBot(n1.services.meta, { id })).apiKey) }))
    }
  }, 120000)
  afterAll(async () => {
    for (let i = 0; i < clients.length; i += 50) await Promise.allSettled(clients.slice(i, i + 50).map(c => c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  test('every connected member gets every post once and in order; offline members pull exactly what they missed', async () => {
    const owner = await open(n1, 'ccowner', 'o')
    const admin = await open(n2, 'ccadmin', 'a')
    const c = await owner.request('create-channel', { name: 'Big' })
    // 2,000 members (the owner, the admin and 1,998 of ccm*) in two requests, through both nodes
    const everyone = ['ccadmin', ...Array.from({ length: MEMBERS - 2 }, (_, i) => member(i))]
    const added1 = await owner.request('add-members', { conv: c.conv, members: everyone.slice(0, 1000) })
    await owner.request('set-role', { conv: c.conv, user: 'ccadmin', role: 'admin' })
    const added2 = await admin.request('add-members', { conv: c.conv, members: everyone.slice(1000) })
    expect(added1.added.length + added2.added.length).toBe(MEMBERS - 1)
    expect(await admin.request('channel-info', { conv: c.conv })).toMatchObject({ members: MEMBERS, role: 'admin', canPost: true })

    // 300 members connect, alternately to each node, and subscribe the channel (as the SDK does on connect)
    const online: ImClient[] = []
    for (let i = 0; i < ONLINE; i += 25) {
      online.push(...await Promise.all(Array.from({ length: Math.min(25, ONLINE - i) }, async (_, k) => await open((i + k) % 2 === 0 ? n1 : n2, member(i + k), 'd'))))
    }
    const received = online.map(o => collect(o, c.topic))
    for (let i = 0; i < online.length; i += 50) {
      const g = await Promise.all(online.slice(i, i + 50).map(async o => await grants(o, [c.topic])))
      expect(g.flat()).toEqual(Array(g.length).fill(1))
    }
    // one of them goes away after the first half; it pulls the rest later
    const leaver = online[1] as ImClient

    // posts from both nodes, concurrently: seqs interleave
    const post = async (from: ImClient, prefix: string, n: number): Promise<void> => {
      for (let i = 0; i < n; i++) await from.request('send', { conv: c.conv, msgId: `${prefix}${i}`, kind: 'text', body: `${prefix}${i}` })
    }
    await Promise.all([post(owner, 'o', POSTS / 4), post(admin, 'a', POSTS / 4)])
    await leaver.waitFor(() => (received[1] ?? []).length === POSTS / 2, 20000, 'the leaver has the first half')
    await leaver.end()
    await Promise.all([post(owner, 'o2-', POSTS / 4), post(admin, 'a2-', POSTS / 4)])
    const all = Array.from({ length: POSTS }, (_, i) => i + 1)
    for (const [i, o] of online.entries()) {
      if (o === leaver) continue
      await o.waitFor(() => (received[i] ?? []).length >= POSTS, 30000, `${o.userId} all posts`)
    }
    // a late duplicate would come before this marker
    await owner.request('send', { conv: c.conv, msgId: 'marker', kind: 'text', body: 'marker' })
    for (const [i, o] of online.entries()) {
      if (o === leaver) continue
      await o.waitFor(() => (received[i] ?? []).includes(POSTS + 1), 30000, `${o.userId} marker`)
      expect(received[i]).toEqual([...all, POSTS + 1])
      // nothing went to the members' inboxes
      expect(o.messages).toEqual([])
    }
    // the leaver, back on the other node, pulls exactly what it missed
    const back = await open(n2, leaver.userId, 'back')
    expect(await pullAll(back, c.conv, POSTS / 2)).toEqual(Array.from({ length: POSTS / 2 + 1 }, (_, i) => POSTS / 2 + 1 + i))
    // members that were never online pull everything, on either node
    for (const [node, i] of [[n1, 1500], [n2, 1997]] as const) {
      const off = await open(node, member(i), 'first')
      expect(await pullAll(off, c.conv, 0)).toEqual([...all, POSTS + 1])
      const page = await off.request('list', {})
      expect(page.conversations.find(s => s.conv === c.conv)).toMatchObject({ kind: 'channel', lastSeq: POSTS + 1, unread: POSTS + 1, readSeq: 0 })
    }

    // non-members: refused on subscribe and on history, on both nodes
    for (const node of [n1, n2]) {
      const stranger = await open(node, 'ccstranger', `s-${node === n1 ? 1 : 2}`)
      expect(await grants(stranger, [c.topic])).toEqual([128])
      expect(await errorOf(stranger, 'history', { conv: c.conv, after: 0 })).toBe('NOT_MEMBER')
      expect(await errorOf(stranger, 'send', { conv: c.conv, msgId: 'x', kind: 'text', body: 'x' })).toBe('NOT_MEMBER')
    }
    // members cannot post where only admins may, on either node
    expect(await errorOf(online[2] as ImClient, 'send', { conv: c.conv, msgId: 'm', kind: 'text', body: 'm' })).toBe('FORBIDDEN')
    expect(await errorOf(online[3] as ImClient, 'send', { conv: c.conv, msgId: 'm', kind: 'text', body: 'm' })).toBe('FORBIDDEN')

    // a member connected to n1, removed through n2, gets nothing posted after the removal's reply
    const removed = online[4] as ImClient
    const watcher = online[6] as ImClient
    expect(removed.mqtt.options.port).toBe(n1.ports.mqtt)
    await admin.request('remove-member', { conv: c.conv, user: removed.userId })
    const after = await owner.request('send', { conv: c.conv, msgId: 'after-removal', kind: 'text', body: 'after' })
    const more = await admin.request('send', { conv: c.conv, msgId: 'after-removal-2', kind: 'text', body: 'after' })
    await watcher.waitFor(() => (received[6] ?? []).includes(more.seq), 20000, 'the watcher has the posts after the removal')
    expect(received[4]).not.toContain(after.seq)
    expect(received[4]).not.toContain(more.seq)
    expect(await errorOf(removed, 'history', { conv: c.conv, after: 0 })).toBe('NOT_MEMBER')
    expect(await grants(removed, [c.topic])).toEqual([128])
  }, 300000)

  test('a member added through one node is subscribed by the server on the node it is connected to', async () => {
    const owner = await open(n1, 'ccowner', 'o2')
    const c = await owner.request('create-channel', { name: 'Added', public: true })
    const late = await open(n2, 'cclate', 'l')
    const got = collect(late, c.topic)
    await owner.request('add-members', { conv: c.conv, members: ['cclate'] })
    // the subscription on n2 follows the cluster notice: post until the first arrives, then every later post arrives in order
    let n = 0
    await late.waitFor(() => {
      if (got.length === 0 && n < 200) void owner.request('send', { conv: c.conv, msgId: `p${n++}`, kind: 'text', body: 'p' })
      return got.length > 0
    }, 20000, 'the first post on n2')
    const first = got[0] as number
    const last = await owner.request('send', { conv: c.conv, msgId: 'last', kind: 'text', body: 'last' })
    await late.waitFor(() => got.includes(last.seq), 20000, 'the last post')
    expect(got).toEqual(Array.from({ length: last.seq - first + 1 }, (_, i) => first + i))
    // and leaving through n1 (another device of the same user) unsubscribes it on n2
    const other = await open(n1, 'cclate', 'l2')
    await other.request('leave', { conv: c.conv })
    const gone = await owner.request('send', { conv: c.conv, msgId: 'gone', kind: 'text', body: 'gone' })
    const probe = await open(n2, 'ccowner', 'probe')
    const probeGot = collect(probe, c.topic)
    expect(await grants(probe, [c.topic])).toEqual([1])
    const seen = await owner.request('send', { conv: c.conv, msgId: 'seen', kind: 'text', body: 'seen' })
    await probe.waitFor(() => probeGot.includes(seen.seq), 20000, 'the probe on n2')
    expect(got).not.toContain(gone.seq)
    expect(got).not.toContain(seen.seq)
  }, 120000)
})
