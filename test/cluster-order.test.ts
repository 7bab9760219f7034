/**
 * Delivery order across nodes (Redis + MongoDB + MySQL): members on two nodes write to one
 * conversation as fast as they can, so each node keeps storing seqs right after the other's; every
 * device, on either node, must still receive the conversation's entries in seq order, each once
 * (topics.md, "Delivery guarantees"). And a node whose first write to a conversation finds the
 * other node's seqs in the store before any word of them has come through Redis (the other node's
 * publishes held up) still delivers after them.
 */
import type { Redis } from 'ioredis'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope } from '../src/protocol/schemas.js'
import { metricOf } from './helpers/metrics.js'

describe('delivery order with writers on two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  let overrides: Record<string, unknown>
  beforeAll(async () => {
    overrides = await clusterOverrides(13)
    // these tests hold n1's publishes in its socket to Redis (cork) for up to 15 s, to play a node
    // whose deliveries never leave it; n1's socket timeout (default 10 s) would see the held socket
    // as a Redis that stopped answering and resend them through a new connection, so it is longer
    const persistence = (overrides.broker as { persistence: Record<string, unknown> }).persistence
    n1 = await startServer({ ...overrides, broker: { persistence: { ...persistence, socketTimeoutMs: 60000 } }, nodeId: 'o1' })
    n2 = await startServer({ ...overrides, nodeId: 'o2' })
    for (const u of ['co.alice', 'co.bob', 'co.carol', 'co.extra0', 'co.extra1', 'co.extra2', 'co.extra3', 'co.owner', 'co.admin', 'co.reader1', 'co.reader2', 'co.pat', 'co.quinn', 'co.rae', 'co.sam', 'co.tia', 'co.uma', 'co.vic', 'co.wes', 'co.xan', 'co.yve', 'co.zed', 'co.amy', 'co.ben', 'co.cat']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  test('two writers per node, interleaving: every device gets 1..N in order, once', async () => {
    const alice1 = await connect(n1, 'co.alice', 'a1')
    const alice2 = await connect(n2, 'co.alice', 'a2')
    const bob1 = await connect(n1, 'co.bob', 'b1')
    const bob2 = await connect(n2, 'co.bob', 'b2')
    const carol = await connect(n2, 'co.carol', 'c')
    clients.push(alice1, alice2, bob1, bob2, carol)
    const { conv } = await alice1.request('create-group', { name: 'order', members: ['co.bob', 'co.carol'] })
    const PER_WRITER = 20
    const IN_FLIGHT = 6
    // each writer keeps IN_FLIGHT sends going: the nodes' batches of this conversation interleave
    const writer = async (c: ImClient, tag: string): Promise<void> => {
      let next = 0
      await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
        while (next < PER_WRITER) {
          const i = next++
          await c.request('send', { conv, msgId: `${tag}${i}`, kind: 'text', body: `${tag} ${i}` })
        }
      }))
    }
    // rounds: a member added before each (every node drops its cached membership, so the first
    // commit of a round on each node looks the members up before publishing: a window for the
    // other node to store and publish the next seqs first)
    const ROUNDS = 4
    for (let r = 0; r < ROUNDS; r++) {
      await alice1.request('add-members', { conv, members: [`co.extra${r}`] })
      await Promise.all([writer(alice1, `a${r}_`), writer(bob2, `b${r}_`), writer(alice2, `c${r}_`), writer(bob1, `d${r}_`)])
    }
    const total = ROUNDS * 4 * PER_WRITER
    for (const c of clients) {
      await c.waitFor(() => c.messages.filter(m => m.conv === conv).length >= total, 20000, `${c.userId}:${c.deviceId} gets ${total}`)
      const seqs = c.messages.filter(m => m.conv === conv).map(m => m.seq)
      const firstOutOfOrder = seqs.findIndex((s, i) => s !== i + 1)
      const around = firstOutOfOrder === -1 ? [] : seqs.slice(Math.max(0, firstOutOfOrder - 2), firstOutOfOrder + 3)
      expect({ device: `${c.userId}:${c.deviceId}`, count: seqs.length, firstOutOfOrder, around }).toEqual({ device: `${c.userId}:${c.deviceId}`, count: total, firstOutOfOrder: -1, around: [] })
    }
  }, 60000)

  test('a node waits for the other node\'s fan-out of the seqs before its own: when its first write finds them in the store before any notice of them arrived, and when they are held longer than 2 s', async () => {
    const owner = await connect(n1, 'co.owner', 'o')
    const admin = await connect(n2, 'co.admin', 'a')
    const reader1 = await connect(n1, 'co.reader1', 'r')
    const reader2 = await connect(n2, 'co.reader2', 'r')
    clients.push(owner, admin, reader1, reader2)
    // a channel: no entry is stored before the first post, so n2 has no mark or notice of it
    const c = await owner.request('create-channel', { name: 'first-write' })
    await owner.request('add-members', { conv: c.conv, members: ['co.admin', 'co.reader1', 'co.reader2'] })
    await owner.request('set-role', { conv: c.conv, user: 'co.admin', role: 'admin' })
    const received = new Map<ImClient, number[]>()
    for (const d of [owner, admin, reader1, reader2]) {
      const seqs: number[] = []
      received.set(d, seqs)
      d.mqtt.on('message', (t, payload) => { if (t === c.topic) seqs.push((JSON.parse(payload.toString('utf8')) as MessageEnvelope).seq) })
      await d.mqtt.subscribeAsync(c.topic, { qos: 1 })
    }
    // n1's publishes (fan-outs, commit notices, replies) held in its socket to Redis while n1 stores
    // `owners` posts and then n2 stores one after them; released `heldMs` later
    const pub = (n1.internals.backends.mq as { pubConn: Redis }).pubConn
    let last = 0
    const round = async (owners: number, heldMs: number, whileHeld?: (adminSent: Promise<unknown>) => Promise<void>): Promise<void> => {
      const sent: Array<Promise<unknown>> = []
      pub.stream.cork()
      try {
        for (let i = 1; i <= owners; i++) sent.push(owner.request('send', { conv: c.conv, msgId: `o${last + i}`, kind: 'text', body: `owner ${last + i}` }))
        await waitUntil(() => n1.services.sequencer.knownLastSeq(c.conv) === last + owners, 10000, `n1 to store up to ${last + owners}`)
        sent.push(admin.request('send', { conv: c.conv, msgId: `a${last + owners + 1}`, kind: 'text', body: 'admin' }))
        await waitUntil(() => n2.services.sequencer.knownLastSeq(c.conv) === last + owners + 1, 10000, `n2 to store ${last + owners + 1}`)
        const waited = new Promise(resolve => setTimeout(resolve, heldMs))
        await whileHeld?.(sent[sent.length - 1] as Promise<unknown>)
        await waited
      } finally {
        pub.stream.uncork()
      }
      await Promise.all(sent)
      last += owners + 1
      const all = Array.from({ length: last }, (_, i) => i + 1)
      for (const [d, seqs] of received) {
        await d.waitFor(() => seqs.length >= last, 15000, `${d.userId} gets ${last} posts`)
        expect({ device: d.userId, seqs }).toEqual({ device: d.userId, seqs: all })
      }
    }
    // n2 finds 1..2 in the store (no notice of them yet) and stores 3
    await round(2, 300)
    // n2 knows the conversation now; n1's next post is held for 3 s (longer than the order wait
    // was: a fan-out may wait up to QUEUE_TIMEOUT_MS for the queueing of the ones before it).
    // Meanwhile n2's wait holds that channel only: a message to another conversation, sent on n2
    // after the held post, is stored, delivered and answered while the post is still held.
    const { conv: bystanders } = await admin.request('create-group', { name: 'bystanders', members: ['co.reader2'] })
    await round(1, 3000, async (adminSent) => {
      let answered = false
      void adminSent.then(() => { answered = true })
      const other = await reader2.request('send', { conv: bystanders, msgId: 'b1', kind: 'text', body: 'meanwhile' })
      await admin.waitFor(() => admin.messages.some(m => m.conv === bystanders && m.seq === other.seq), 2000, 'the bystander message')
      expect(answered).toBe(false)
      expect(received.get(admin)).toHaveLength(last) // neither n1's post nor its own held one yet
    })
  }, 60000)

  test('a node that stored a seq and never published it (its link to Redis held past the order wait): the other node waits 6 s, then delivers it from the store before its own: every device gets them in order', async () => {
    const pat = await connect(n1, 'co.pat', 'p')
    const rae = await connect(n1, 'co.rae', 'r')
    const quinn = await connect(n2, 'co.quinn', 'q')
    const sam = await connect(n2, 'co.sam', 's')
    const devices = [pat, rae, quinn, sam]
    clients.push(...devices)
    const { conv } = await pat.request('create-group', { name: 'filled', members: ['co.quinn', 'co.rae', 'co.sam'] })
    const seqsOf = (d: ImClient): number[] => d.messages.filter(m => m.conv === conv).map(m => m.seq)
    // both nodes write once: n2 knows what was published of the conversation
    await pat.request('send', { conv, msgId: 'p1', kind: 'text', body: 'one' })
    await quinn.request('send', { conv, msgId: 'q2', kind: 'text', body: 'two' })
    for (const d of devices) await d.waitFor(() => seqsOf(d).length >= 2, 10000, `${d.userId} gets 1 and 2`)
    const filledBefore = await filled(n2)
    // n1 stores 3, but its fan-out (and commit notice) stays in its socket to Redis; n2 stores 4
    const pub = (n1.internals.backends.mq as { pubConn: Redis }).pubConn
    pub.stream.cork()
    let patSent: Promise<unknown> = Promise.resolve()
    try {
      patSent = pat.request('send', { conv, msgId: 'p3', kind: 'text', body: 'three' })
      await waitUntil(() => n1.services.sequencer.knownLastSeq(conv) === 3, 10000, 'n1 to store 3')
      const t0 = Date.now()
      const four = await quinn.request('send', { conv, msgId: 'q4', kind: 'text', body: 'four' }, 15000)
      expect(four.seq).toBe(4)
      expect(Date.now() - t0).toBeGreaterThanOrEqual(5000) // the order wait ran out (6 s)
      // n2 delivered 3, read from the store, before 4: to its own devices and, through Redis, to n1's
      for (const d of devices) {
        await d.waitFor(() => seqsOf(d).length >= 4, 10000, `${d.userId} gets 3 and 4`)
        expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3, 4] })
      }
      expect(await filled(n2) - filledBefore).toBe(1)
    } finally {
      pub.stream.uncork()
    }
    await patSent
    // n1 was only held: its own fan-out of 3 comes now, a duplicate every device drops by conv and seq
    for (const d of devices) {
      await d.waitFor(() => seqsOf(d).length >= 5, 10000, `${d.userId} gets n1's late 3`)
      expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3, 4, 3] })
    }
  }, 60000)

  test('a node that stored a seq and never delivered it, its sender sending it again through the other node: answered there as a resend at once, and delivered from there 15 s later, when no delivery of it came', async () => {
    const tia = await connect(n1, 'co.tia', 't')
    const uma = await connect(n1, 'co.uma', 'u')
    const vic = await connect(n2, 'co.vic', 'v')
    const wes = await connect(n2, 'co.wes', 'w')
    clients.push(tia, uma, vic, wes)
    const { conv } = await tia.request('create-group', { name: 'resent', members: ['co.uma', 'co.vic', 'co.wes'] })
    const seqsOf = (d: ImClient): number[] => d.messages.filter(m => m.conv === conv).map(m => m.seq)
    await tia.request('send', { conv, msgId: 't1', kind: 'text', body: 'one' })
    await vic.request('send', { conv, msgId: 'v2', kind: 'text', body: 'two' })
    for (const d of [tia, uma, vic, wes]) await d.waitFor(() => seqsOf(d).length >= 2, 10000, `${d.userId} gets 1 and 2`)
    const before = await metric(n2, 'mqim_delivery_resend_filled_total')
    // n1 stores 3, and its delivery stays in its socket to Redis: for the others, n1 died there
    const pub = (n1.internals.backends.mq as { pubConn: Redis }).pubConn
    pub.stream.cork()
    const tiaAgain = await connect(n2, 'co.tia', 't2')
    clients.push(tiaAgain)
    let tiaSent: Promise<unknown> = Promise.resolve()
    try {
      tiaSent = tia.request('send', { conv, msgId: 't3', kind: 'text', body: 'three' })
      await waitUntil(() => n1.services.sequencer.knownLastSeq(conv) === 3, 10000, 'n1 to store 3')
      // tia's phone, unanswered by a dead node, sends it again through n2
      const t0 = Date.now()
      const again = await tiaAgain.request('send', { conv, msgId: 't3', kind: 'text', body: 'three' })
      expect(again).toMatchObject({ seq: 3, duplicate: true })
      expect(Date.now() - t0).toBeLessThan(5000)
      // n2 waits for n1's delivery of 3 (a live node may hold one 13 s), then delivers it itself
      for (const d of [tia, uma, vic, wes]) {
        await d.waitFor(() => seqsOf(d).length >= 3, 25000, `${d.userId} gets 3 from n2`)
        expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3] })
      }
      expect(Date.now() - t0).toBeGreaterThanOrEqual(14000)
      expect(seqsOf(tiaAgain)).toStrictEqual([3])
      expect(vic.messages.find(m => m.conv === conv && m.seq === 3)).toMatchObject({ body: 'three', from: 'co.tia' })
      expect(await metric(n2, 'mqim_delivery_resend_filled_total') - before).toBe(1)
    } finally {
      pub.stream.uncork()
    }
    await tiaSent
    // n1 was only held here: its own delivery of 3 comes now, a duplicate every device drops by conv and seq
    for (const d of [tia, uma, vic, wes]) {
      await d.waitFor(() => seqsOf(d).length >= 4, 10000, `${d.userId} gets n1's late 3`)
      expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3, 3] })
    }
  }, 60000)

  test('a node that stored a seq and told the others (its commit notice), then never delivered it, nobody writing again: one other node, the first to claim it in Redis, delivers it 15 s later, once', async () => {
    const n3 = await startServer({ ...overrides, nodeId: 'o3' })
    try {
      const zed = await connect(n1, 'co.zed', 'z')
      const cat = await connect(n1, 'co.cat', 'c')
      const amy = await connect(n2, 'co.amy', 'a')
      const ben = await connect(n3, 'co.ben', 'b')
      const devices = [zed, cat, amy, ben]
      clients.push(...devices)
      const { conv } = await zed.request('create-group', { name: 'told', members: ['co.cat', 'co.amy', 'co.ben'] })
      const seqsOf = (d: ImClient): number[] => d.messages.filter(m => m.conv === conv).map(m => m.seq)
      await zed.request('send', { conv, msgId: 'z1', kind: 'text', body: 'one' })
      await amy.request('send', { conv, msgId: 'a2', kind: 'text', body: 'two' })
      for (const d of devices) await d.waitFor(() => seqsOf(d).length >= 2, 10000, `${d.userId} gets 1 and 2`)
      const others = [n2, n3]
      const before = await Promise.all(others.map(async n => await metric(n, 'mqim_delivery_notice_filled_total')))
      // from here n1's deliveries never leave it (as if it died right after its notice)
      const publisher = n1.services.publisher
      const message = publisher.message.bind(publisher)
      publisher.message = () => {}
      try {
        const t0 = Date.now()
        const three = await zed.request('send', { conv, msgId: 'z3', kind: 'text', body: 'three' })
        expect(three.seq).toBe(3)
        for (const d of devices) {
          await d.waitFor(() => seqsOf(d).length >= 3, 25000, `${d.userId} gets 3 from another node`)
          expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3] })
        }
        expect(Date.now() - t0).toBeGreaterThanOrEqual(14000)
        expect(ben.messages.find(m => m.conv === conv && m.seq === 3)).toMatchObject({ body: 'three', from: 'co.zed' })
        const after = await Promise.all(others.map(async n => await metric(n, 'mqim_delivery_notice_filled_total')))
        expect(after.reduce((sum, n, i) => sum + n - (before[i] ?? 0), 0)).toBe(1)
        // claimed in Redis by the node that filled, for a while
        const filler = others.find((n, i) => after[i] !== before[i])
        expect(await n2.internals.backends.redis?.get(`mqim:delivery-fill:${conv}`)).toBe(filler?.nodeId)
        expect(await n2.internals.backends.redis?.pttl(`mqim:delivery-fill:${conv}`)).toBeGreaterThan(0)
        // the node that did not claim it delivers nothing: no second copy
        await new Promise(resolve => setTimeout(resolve, 3000))
        for (const d of devices) expect({ device: d.userId, seqs: seqsOf(d) }).toEqual({ device: d.userId, seqs: [1, 2, 3] })
      } finally {
        publisher.message = message
      }
    } finally {
      await n3.stop()
    }
  }, 60000)

  test('a delete stored (and applied) on a node that never delivered it, resent through the other node: answered there as a resend, not refused as a delete of a deleted message, and delivered from there 15 s later', async () => {
    const xan = await connect(n1, 'co.xan', 'x')
    const yve = await connect(n2, 'co.yve', 'y')
    clients.push(xan, yve)
    const { conv } = await xan.request('create-group', { name: 'deleted', members: ['co.yve'] })
    const seqsOf = (d: ImClient): number[] => d.messages.filter(m => m.conv === conv).map(m => m.seq)
    await xan.request('send', { conv, msgId: 'x1', kind: 'text', body: 'oops' })
    await yve.waitFor(() => seqsOf(yve).length >= 1, 10000, 'yve gets 1')
    const pub = (n1.internals.backends.mq as { pubConn: Redis }).pubConn
    pub.stream.cork()
    const xanAgain = await connect(n2, 'co.xan', 'x2')
    clients.push(xanAgain)
    let xanDeleted: Promise<unknown> = Promise.resolve()
    try {
      xanDeleted = xan.request('delete', { conv, msgId: 'xd', target: 1 })
      await waitUntil(() => n1.services.sequencer.knownLastSeq(conv) === 2, 10000, 'n1 to store the delete')
      // and to apply it (before its delivery): 1 is deleted in the store
      await waitUntil(async () => (await n1.services.messages.getMany([{ conversationId: conv, seq: 1 }]))[0]?.changes?.deleted !== undefined, 10000, 'n1 to apply the delete')
      // n2's cached copy of 1 (from n1's notice of it) is stale, and expires within a minute: gone now,
      // n2 reads 1 as n1 left it, deleted
      n2.services.messages.forget([{ conversationId: conv, seq: 1 }])
      const again = await xanAgain.request('delete', { conv, msgId: 'xd', target: 1 })
      expect(again).toMatchObject({ seq: 2, duplicate: true })
      await yve.waitFor(() => seqsOf(yve).length >= 2, 25000, 'yve gets the delete from n2')
      expect(yve.messages.find(m => m.conv === conv && m.seq === 2)).toMatchObject({ kind: 'delete', target: 1, from: 'co.xan' })
    } finally {
      pub.stream.uncork()
    }
    await xanDeleted
  }, 60000)
})

/** mqim_delivery_order_filled_total of the node. */
async function filled (server: MqimServer): Promise<number> {
  return await metric(server, 'mqim_delivery_order_filled_total')
}

/** A metric of the node (GET /metrics from loopback). */
async function metric (server: MqimServer, name: string): Promise<number> {
  return await metricOf(server, name) ?? Number.NaN
}
