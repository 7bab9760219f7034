/**
 * Delivery order across nodes (src/im/delivery.ts): a node that stores seq S of a conversation
 * right after another node stored S-1 waits until that node's fan-out of S-1 has reached it (its
 * mark, told by the publisher) before publishing S, at most ORDER_WAIT_MS; a conversation no other
 * node wrote to lately does not wait. A commit notice goes out at once (the other sequencers'
 * tails), and marks are what count as published, not the notice. The bus and the publisher are
 * stand-ins that record what happens, in order.
 */
import { CHECK_TRIES, CLAIM_MS, Delivery, FILL_MAX, FILL_UNKNOWN_MAX, ORDER_WAIT_MS, RESEND_CHECK_MS, CHECKS_MAX, RESEND_RECENT_MS, type DeliveryParts, type FillClaims, type OrderOptions } from '../../src/im/delivery.js'
import { GapReads, QUEUE_MAX, READ_KEYS, READ_TIMEOUT_MS, type SeqKey } from '../../src/im/gap-reads.js'
import { Metrics } from '../../src/metrics.js'
import { QUEUE_TIMEOUT_MS } from '../../src/broker/fanout.js'
import type { ClusterBus } from '../../src/broker/bus.js'
import type { ConversationDirectory, ConversationEntry } from '../../src/im/directory.js'
import type { Publisher } from '../../src/im/publisher.js'
import type { MessageStore, StoredMessage } from '../../src/store/types.js'
import { SEQ_TOPIC } from '../../src/protocol/topics.js'
import type { Logger } from '../../src/log.js'
import { Sequencer } from '../../src/im/sequencer.js'
import { createLogger } from '../../src/log.js'
import { FaultyMessageStore } from '../helpers/faulty-store.js'
import { WALL_NEVER, type WallMs } from '../../src/clocks.js'

interface Setup { delivery: Delivery, published: number[], events: string[], flags: { backlogged: boolean }, delivered: string[], sent: StoredMessage[], notices: Array<Record<string, unknown>>, errors: string[], warnings: string[], notify: (seqs: Record<string, number>) => void, notice: (seqs: Record<string, number>) => void, noticeRaw: (m: Record<string, unknown>) => void, bus: ClusterBus, failNext: () => void, gone: Set<string> }

/** The message store's part Delivery reads after a wait ran out: `getMany` (recorded). */
type Messages = Pick<MessageStore, 'getMany'>

function setup (order: OrderOptions = {}, metrics: Metrics | null = null, messages: Messages | null = null, parts: DeliveryParts = {}): Setup {
  const marks: Array<(conv: string, seq: number) => void> = []
  const notices: Array<Record<string, unknown>> = []
  const handlers: Array<(m: Record<string, unknown>) => void> = []
  // what the stand-ins were handed, in order: `notice` and `message <seq>`
  const events: string[] = []
  const bus = { clustered: true, on: (topic: string, h: (m: Record<string, unknown>) => void) => { if (topic === SEQ_TOPIC) handlers.push(h) }, publish: (_t: string, m: Record<string, unknown>) => { notices.push(m); events.push('notice') } }
  const published: number[] = []
  const delivered: string[] = []
  const sent: StoredMessage[] = []
  // backlogged: this node's publishes wait for Redis
  const flags = { backlogged: false }
  const publisher = { backlogged: () => flags.backlogged, message: (m: StoredMessage) => { events.push(`message ${m.seq}`); published.push(m.seq); delivered.push(`${m.conversationId}${m.seq}`); sent.push(m) }, onPublished: (l: (conv: string, seq: number) => void) => { marks.push(l) } }
  const entry = { conversation: { id: 'c', kind: 'group' }, members: new Map(), memberIds: ['u'] } as unknown as ConversationEntry
  // failNext: the next lookup finds nothing cached and the metadata store down
  let fail = false
  // conversations deleted: their lookups find nothing
  const gone = new Set<string>()
  const directory = {
    peek: (conv: string) => fail || gone.has(conv) ? undefined : entry,
    get: async (conv: string) => {
      if (gone.has(conv)) return null
      if (!fail) return entry
      fail = false
      throw new Error('metadata store down')
    }
  }
  const errors: string[] = []
  const warnings: string[] = []
  const logger = { error: (_o: unknown, message: string) => { errors.push(message) }, warn: (_o: unknown, message: string) => { warnings.push(message) } } as unknown as Logger
  const delivery = new Delivery(directory as unknown as ConversationDirectory, publisher as unknown as Publisher, bus as unknown as ClusterBus, { metrics, logger, order, messages, ...parts })
  return {
    delivery,
    published,
    events,
    flags,
    delivered,
    sent,
    notices,
    errors,
    warnings,
    notify: (seqs) => { for (const [conv, seq] of Object.entries(seqs)) for (const l of marks) l(conv, seq) },
    notice: (seqs) => { for (const h of handlers) h({ seqs, node: 'other' }) },
    noticeRaw: (m) => { for (const h of handlers) h(m) },
    bus: bus as unknown as ClusterBus,
    failNext: () => { fail = true },
    gone
  }
}

/** The batch delivered: the conversations delivered at once, then those held (order waits). */
async function deliver (delivery: Delivery, batch: StoredMessage[], before?: ReadonlyMap<string, number>, told?: boolean): Promise<void> {
  const held = await delivery.committed(batch, before, told)
  await Promise.all(held.values())
}

const msg = (seq: number): StoredMessage => ({ conversationId: 'c', seq, clientMsgId: `m${seq}`, senderId: 'u', ts: seq, kind: 'text', body: 'x', replyTo: null })

test('seq S waits for the mark that another node\'s fan-out of S-1 arrived, then goes', async () => {
  const { delivery, published, notify } = setup()
  notify({ c: 5 }) // another node published 1..5
  const done = deliver(delivery, [msg(9), msg(10)]) // 6..8 stored elsewhere, not said yet
  await new Promise(resolve => setTimeout(resolve, 50))
  expect(published).toStrictEqual([])
  notify({ c: 7 })
  await new Promise(resolve => setTimeout(resolve, 20))
  expect(published).toStrictEqual([])
  notify({ c: 8 })
  await done
  expect(published).toStrictEqual([9, 10])
})

test('no wait for what this node published itself, or for a conversation no node wrote to lately', async () => {
  const { delivery, published, notices } = setup()
  const t0 = Date.now()
  await deliver(delivery, [msg(1), msg(2)])
  await deliver(delivery, [msg(3)])
  expect(Date.now() - t0).toBeLessThan(500)
  expect(published).toStrictEqual([1, 2, 3])
  expect(notices.map(n => n.seqs)).toStrictEqual([{ c: 2 }, { c: 3 }])
})

test('the wait outlasts how long another node may hold its fan-out behind earlier queueings', () => {
  // else a wait that ran out while the other node still held S-1 would deliver S first
  expect(ORDER_WAIT_MS).toBeGreaterThan(QUEUE_TIMEOUT_MS)
})

test('a mark that never comes holds the delivery at most the order wait (1 s here), counted', async () => {
  const metrics = new Metrics({ enabled: true })
  const { delivery, published, notify } = setup({ waitMs: 1000 }, metrics)
  notify({ c: 1 })
  const t0 = Date.now()
  await deliver(delivery, [msg(5)])
  const waited = Date.now() - t0
  expect(published).toStrictEqual([5])
  expect(waited).toBeGreaterThanOrEqual(950)
  expect(waited).toBeLessThan(3000)
  expect(await metrics.text()).toMatch(/^mqim_delivery_order_timeouts_total 1$/m)
  // and the next one does not wait again
  const t1 = Date.now()
  await deliver(delivery, [msg(6)])
  expect(Date.now() - t1).toBeLessThan(500)
})

test('the notice carries the batch\'s small messages for the other nodes\' caches: bodies up to 2,048 characters, 64 KiB with mentions and overhead, 256 messages', async () => {
  const { delivery, notices } = setup()
  const body = (n: number): string => 'b'.repeat(n)
  const batch: StoredMessage[] = [
    { ...msg(1), body: body(2048) },
    { ...msg(2), body: body(2049) }, // over the bound of one body: read from the store there
    { ...msg(3), kind: 'custom', body: { a: [1, 2, 3] } },
    { ...msg(4), mentions: ['u1', 'u2'] }
  ]
  await deliver(delivery, batch)
  expect((notices[0]?.docs as StoredMessage[]).map(m => m.seq)).toStrictEqual([1, 3, 4])
  // 40 bodies of 2,000: about 32 fit in 64 KiB
  await deliver(delivery, Array.from({ length: 40 }, (_, i) => ({ ...msg(5 + i), body: body(2000) })))
  const fitted = (notices[1]?.docs as StoredMessage[]).length
  expect(fitted).toBeGreaterThanOrEqual(30)
  expect(fitted).toBeLessThan(33)
  // many tiny ones: 256 at most
  await deliver(delivery, Array.from({ length: 400 }, (_, i) => msg(45 + i)))
  expect((notices[2]?.docs as StoredMessage[]).length).toBe(256)
  expect(notices[2]?.tails).toStrictEqual({ c: [444, 444, 444] })
})

test('a commit notice of a conversation known from no mark: its seqs before count as published, the next waits for its mark', async () => {
  const { delivery, published, notify, notice } = setup()
  notice({ c: 4 }) // another node stored 4, not published yet; 1..3 taken as published
  const done = deliver(delivery, [msg(5)])
  await new Promise(resolve => setTimeout(resolve, 50))
  expect(published).toStrictEqual([])
  notify({ c: 4 })
  await done
  expect(published).toStrictEqual([5])
  // a notice never lowers what marks said
  notice({ c: 2 })
  const t0 = Date.now()
  await deliver(delivery, [msg(6)])
  expect(Date.now() - t0).toBeLessThan(500)
})

test('a conversation known from no mark or notice yet: when the seq before was stored by another node moments ago (its notice still on the way), the next waits for its mark', async () => {
  const { delivery, published, notify } = setup()
  await new Promise(resolve => setTimeout(resolve, 100))
  // this node's sequencer found 1..4 in the store, seq 4 stored just now (after this node started)
  const done = deliver(delivery, [msg(5)], new Map([['c', Date.now() - 50]]))
  await new Promise(resolve => setTimeout(resolve, 50))
  expect(published).toStrictEqual([])
  notify({ c: 4 })
  await done
  expect(published).toStrictEqual([5])
})

test('no wait when the seq before was stored long ago, before this node listened, during a break in listening, or when nothing says when', async () => {
  const t0 = Date.now()
  // stored after this node listened, but longer ago than it may take to publish (100 ms here)
  const old = setup({ listeningSince: () => 0 as WallMs, unpublishedMs: 100 })
  await new Promise(resolve => setTimeout(resolve, 150))
  await deliver(old.delivery, [msg(3)], new Map([['c', Date.now() - 140]]))
  // stored 100 ms before this node started: its mark went by before this node listened
  const startedAt = Date.now()
  const late = setup()
  await deliver(late.delivery, [msg(3)], new Map([['c', startedAt - 100]]))
  // not listening now (Redis link down): no mark can come
  const deaf = setup({ listeningSince: () => WALL_NEVER })
  await deliver(deaf.delivery, [msg(3)], new Map([['c', Date.now()]]))
  // listening again since a moment ago: a seq stored before that may have had its mark lost
  const back = setup({ listeningSince: () => (Date.now() - 10) as WallMs })
  await deliver(back.delivery, [msg(3)], new Map([['c', Date.now() - 500]]))
  const none = setup()
  await deliver(none.delivery, [msg(3)])
  expect(Date.now() - t0).toBeLessThan(3000) // (a wait would take ORDER_WAIT_MS, 6 s)
  for (const s of [old, late, deaf, back, none]) expect(s.published).toStrictEqual([3])
})

test('a seq stored "later" than now (the other node\'s clock ahead) is waited for, at most the order wait', async () => {
  const { delivery, published } = setup({ waitMs: 300, listeningSince: () => 0 as WallMs })
  const t0 = Date.now()
  await deliver(delivery, [msg(3)], new Map([['c', Date.now() + 30_000]]))
  expect(Date.now() - t0).toBeGreaterThanOrEqual(280)
  expect(published).toStrictEqual([3])
})

test('the own seqs count as published even when delivering them failed half-way: the next does not wait for them', async () => {
  const { delivery, published, notices, errors, failNext } = setup()
  failNext()
  await deliver(delivery, [msg(1), msg(2)])
  expect(errors).toStrictEqual(['delivery of committed messages failed half-way (devices sync by seq)'])
  expect(published).toStrictEqual([])
  expect(notices.map(n => n.seqs)).toStrictEqual([{ c: 2 }])
  const t0 = Date.now()
  await deliver(delivery, [msg(3)], new Map([['c', Date.now()]]))
  expect(Date.now() - t0).toBeLessThan(500)
  expect(published).toStrictEqual([3])
})

test('once a wait has run out, the next ones for a while are short: a node that died costs one full wait, not one per conversation it wrote', async () => {
  const metrics = new Metrics({ enabled: true })
  const { delivery, published, notify } = setup({ waitMs: 600, afterTimeoutWaitMs: 50 }, metrics)
  notify({ c: 1, d: 1, e: 1 })
  const t0 = Date.now()
  await deliver(delivery, [msg(5)])
  expect(Date.now() - t0).toBeGreaterThanOrEqual(570)
  const t1 = Date.now()
  await deliver(delivery, [{ ...msg(5), conversationId: 'd' }])
  const second = Date.now() - t1
  expect(second).toBeGreaterThanOrEqual(40)
  expect(second).toBeLessThan(400)
  // a mark that does come still ends the wait, as before
  const done = deliver(delivery, [{ ...msg(3), conversationId: 'e' }])
  notify({ e: 2 })
  await done
  expect(published).toStrictEqual([5, 5, 3])
  expect(await metrics.text()).toMatch(/^mqim_delivery_order_timeouts_total 2$/m)
})

test('short waits that run out do not prolong the while: after it, a wait is full again', async () => {
  const { delivery, published, notify } = setup({ waitMs: 1000, afterTimeoutWaitMs: 300, afterTimeoutMs: 1500 })
  notify({ c: 1, d: 1, e: 1 })
  await deliver(delivery, [msg(5)]) // full: runs out at ~1,000 ms; short waits until ~2,500 ms
  const t1 = Date.now()
  await deliver(delivery, [{ ...msg(5), conversationId: 'd' }]) // short: runs out at ~1,300 ms
  expect(Date.now() - t1).toBeLessThan(800)
  // ~2,600 ms: past the while, but within the one a renewal by the short wait would make (~2,800 ms)
  await new Promise(resolve => setTimeout(resolve, 1300))
  const t2 = Date.now()
  await deliver(delivery, [{ ...msg(5), conversationId: 'e' }])
  expect(Date.now() - t2).toBeGreaterThanOrEqual(950)
  expect(published).toStrictEqual([5, 5, 5])
})

test('listening counts from when this Delivery was made at the earliest (the link may be up before the subscriptions that bring the marks)', async () => {
  const { delivery, published } = setup({ listeningSince: () => 0 as WallMs })
  await new Promise(resolve => setTimeout(resolve, 30))
  const t0 = Date.now()
  // stored just before this Delivery was made: its mark may have gone by
  await deliver(delivery, [msg(3)], new Map([['c', t0 - 200]]))
  expect(Date.now() - t0).toBeLessThan(3000) // (a wait would take ORDER_WAIT_MS, 6 s)
  expect(published).toStrictEqual([3])
})

test('a wait holds its conversation only: the batch\'s other conversations and the next batches go at once, the held one\'s next seqs follow it in order', async () => {
  const { delivery, delivered, notify, notices } = setup()
  notify({ c: 4, d: 1 }) // another node published c 1..4 and d 1; c 5 stored there, not published yet
  const first = await delivery.committed([msg(6), { ...msg(2), conversationId: 'd' }])
  expect([...first.keys()]).toStrictEqual(['c'])
  expect(delivered).toStrictEqual(['d2'])
  // the notice goes at once, the held conversation's too (the other sequencers' tails)
  expect(notices.map(n => n.seqs)).toStrictEqual([{ c: 6, d: 2 }])
  const second = await delivery.committed([msg(7), { ...msg(3), conversationId: 'd' }])
  expect([...second.keys()]).toStrictEqual(['c']) // behind the held 6, which is this node's own
  expect(delivered).toStrictEqual(['d2', 'd3'])
  notify({ c: 5 })
  await Promise.all([...first.values(), ...second.values()])
  expect(delivered).toStrictEqual(['d2', 'd3', 'c6', 'c7'])
  // delivered: the own seqs count as published, nothing is held any more
  const third = await delivery.committed([msg(8)])
  expect(third.size).toBe(0)
  expect(delivered).toStrictEqual(['d2', 'd3', 'c6', 'c7', 'c8'])
})

test('a batch of several seqs of one conversation waits for the seqs before its first only, not for its own', async () => {
  const { delivery, delivered, notify } = setup()
  notify({ c: 20 })
  const t0 = Date.now()
  const held = await delivery.committed([msg(21), msg(22), msg(23)])
  expect(held.size).toBe(0)
  expect(Date.now() - t0).toBeLessThan(500)
  expect(delivered).toStrictEqual(['c21', 'c22', 'c23'])
})

test('a commit notice that comes while this node waits for a conversation does not swallow the mark that ends the wait', async () => {
  const { delivery, published, notify, notice } = setup({ waitMs: 3000 })
  await new Promise(resolve => setTimeout(resolve, 100))
  // 1..4 found in the store, 4 stored just now by another node: 5 waits for its mark
  const t0 = Date.now()
  const done = deliver(delivery, [msg(5)], new Map([['c', Date.now() - 20]]))
  // a third node stored 6 and says so at once; then the mark of 4 comes
  notice({ c: 6 })
  notify({ c: 4 })
  await done
  expect(Date.now() - t0).toBeLessThan(1500)
  expect(published).toStrictEqual([5])
})

/**
 * A stand-in message store holding `stored` (by conversation and seq): its getMany records the
 * keys of each call and answers after `delayMs`, or fails while `failing`.
 */
function store (stored: StoredMessage[], delayMs = 0): Messages & { calls: SeqKey[][], failing: boolean } {
  const s = {
    calls: [] as SeqKey[][],
    failing: false,
    getMany: async (keys: ReadonlyArray<{ conversationId: string, seq: number }>) => {
      s.calls.push([...keys])
      if (delayMs > 0) await new Promise(resolve => setTimeout(resolve, delayMs))
      if (s.failing) throw new Error('message store down')
      const byKey = new Map(stored.map(m => [`${m.conversationId}/${m.seq}`, m]))
      return keys.map(k => byKey.get(`${k.conversationId}/${k.seq}`)).filter((m): m is StoredMessage => m !== undefined)
    }
  }
  return s
}
const seqs = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

/**
 * A node whose waits can run out and fill from `stored` (a stand-in store, filled by the test after
 * the Delivery was made: what was stored before this node listened is never filled).
 */
function filling (order: OrderOptions = {}, metrics: Metrics | null = null, delayMs = 0, parts: DeliveryParts = {}): Setup & { stored: StoredMessage[], messages: ReturnType<typeof store>, storeNow: (seqs: number[], ageMs?: number) => void } {
  const stored: StoredMessage[] = []
  const messages = store(stored, delayMs)
  const s = setup({ fillMinAgeMs: 0, ...order }, metrics, messages, parts)
  return { ...s, stored, messages, storeNow: (seqs, ageMs = 0) => { stored.push(...seqs.map(seq => ({ ...msg(seq), ts: Date.now() - ageMs }))) } }
}
const tick = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }

/** What `make` makes, as if made (and listening since) `ms` ago: Date.now set back while it runs. */
function madeAgo<T> (ms: number, make: () => T): T {
  const now = Date.now
  Date.now = () => now() - ms
  try {
    return make()
  } finally {
    Date.now = now
  }
}

describe('after a wait ran out, the seqs before are delivered from the store', () => {
  test('the seqs another node stored and never published come first, in order, each once, counted', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, messages, storeNow } = filling({ waitMs: 300 }, metrics)
    await tick(5)
    storeNow(seqs(1, 7))
    notify({ c: 4 }) // published 1..4; 5..7 stored by another node that died before publishing them
    await deliver(delivery, [msg(8), msg(9)])
    expect(published).toStrictEqual([5, 6, 7, 8, 9])
    expect(messages.calls).toStrictEqual([[5, 6, 7].map(seq => ({ conversationId: 'c', seq }))])
    expect(await metrics.text()).toMatch(/^mqim_delivery_order_timeouts_total 1$/m)
    expect(await metrics.text()).toMatch(/^mqim_delivery_order_filled_total 3$/m)
    // they count as published now: the next does not wait, nothing is read again
    await deliver(delivery, [msg(10)])
    expect(published).toStrictEqual([5, 6, 7, 8, 9, 10])
    expect(messages.calls).toHaveLength(1)
  })

  test('marks that come while the store is read: those seqs are not delivered again', async () => {
    const { delivery, published, notify, messages, storeNow } = filling({ waitMs: 200 }, null, 200)
    await tick(5)
    storeNow(seqs(1, 7))
    notify({ c: 4 })
    const done = deliver(delivery, [msg(8)])
    await tick(300) // the wait has run out, the read is on
    expect(messages.calls).toHaveLength(1)
    notify({ c: 6 }) // the other node was only late: its fan-out of 5 and 6 arrived
    await done
    expect(published).toStrictEqual([7, 8])
  })

  test(`a conversation known from no mark: the last ${FILL_UNKNOWN_MAX} seqs are read, those stored lately (by their time) filled`, async () => {
    const { delivery, published, messages, storeNow } = filling({ waitMs: 200, unpublishedMs: 1000 })
    await tick(5)
    storeNow(seqs(1, 12), 60_000) // (stored before this node listened: never filled)
    await tick(1100)
    storeNow([13, 14], 1050) // listening, but too long ago when the wait began: published then
    storeNow([15, 16]) // just now by a node that died
    await deliver(delivery, [msg(17)], new Map([['c', Date.now()]]))
    expect(published).toStrictEqual([15, 16, 17])
    expect(messages.calls[0]?.map(k => k.seq)).toStrictEqual(seqs(17 - FILL_UNKNOWN_MAX, 16))
  })

  test('how recent a seq must be is judged when the wait began, not after it', async () => {
    const { delivery, published, storeNow } = filling({ waitMs: 400, unpublishedMs: 300 })
    await tick(150)
    storeNow([3], 100) // 100 ms old when the wait begins, 500 ms when it runs out
    await deliver(delivery, [msg(4)], new Map([['c', Date.now() - 100]]))
    expect(published).toStrictEqual([3, 4])
  })

  test('after a short wait (another ran out lately) a seq stored a moment ago has its mark waited for until it is old enough (a live node may hold its fan-out that long): filled then if none came', async () => {
    const { delivery, published, delivered, notify, stored } = filling({ waitMs: 100, afterTimeoutWaitMs: 50, fillMinAgeMs: 400 })
    await tick(5)
    notify({ d: 1, c: 4, e: 4 })
    await deliver(delivery, [{ ...msg(3), conversationId: 'd' }]) // a full wait runs out: short waits from now
    stored.push({ ...msg(5), ts: Date.now() })
    const t0 = Date.now()
    await deliver(delivery, [msg(6)]) // nothing comes: 5 is filled once 400 ms old
    expect(Date.now() - t0).toBeGreaterThanOrEqual(330)
    stored.push({ ...msg(5), conversationId: 'e', ts: Date.now() })
    const e = deliver(delivery, [{ ...msg(6), conversationId: 'e' }])
    await tick(100)
    notify({ e: 5 }) // the live node's fan-out of 5 arrives late: not filled
    await e
    expect(delivered).toStrictEqual(['d3', 'c5', 'c6', 'e6'])
    expect(published).toStrictEqual([3, 5, 6, 6])
  })

  test('a full wait fills what the other node stored before it began, however long ago (within the node\'s listening) and whatever its clock says', async () => {
    const old = filling({ waitMs: 100, unpublishedMs: 300, fillMinAgeMs: 5000 })
    await tick(5)
    old.notify({ c: 5 })
    old.storeNow([6]) // stored 400 ms before the next write: the node died then
    await tick(400)
    await deliver(old.delivery, [msg(7)])
    expect(old.published).toStrictEqual([6, 7])
    const ahead = filling({ waitMs: 100, fillMinAgeMs: 5000 })
    await tick(5)
    ahead.notify({ c: 4 })
    ahead.stored.push({ ...msg(5), ts: Date.now() + 1500 }) // its clock 1.5 s ahead of this node's
    await deliver(ahead.delivery, [msg(6)])
    expect(ahead.published).toStrictEqual([5, 6])
  })

  test('a commit notice\'s guess is waited on but not filled from: the seqs before it may be unpublished too', async () => {
    const { delivery, published, notice, storeNow } = filling({ waitMs: 100 })
    await tick(5)
    storeNow(seqs(1, 4), 60_000) // long ago, before this node listened
    storeNow(seqs(5, 7)) // just now, by a node that then died
    notice({ c: 7 }) // its notice: 6 taken as published (a guess), 7 waited for
    await deliver(delivery, [msg(8)])
    expect(published).toStrictEqual([5, 6, 7, 8])
  })

  test('what was known published before a break in listening is not known after it: seqs published during the break are not delivered again', async () => {
    let since = 0
    const { delivery, published, notify, messages, storeNow } = filling({ waitMs: 3000, listeningSince: () => since as WallMs })
    await tick(5)
    notify({ c: 10 }) // then the link broke; 11..500 were stored and published meanwhile, unheard
    storeNow(seqs(1, 500), 0)
    await tick(20)
    since = Date.now() // listening again
    const t0 = Date.now()
    // the seq before was stored before this node listened again: nothing to wait for
    await deliver(delivery, [msg(501)], new Map([['c', Date.now() - 15]]))
    expect(Date.now() - t0).toBeLessThan(1500) // (a wait would take 3 s)
    expect(published).toStrictEqual([501])
    expect(messages.calls).toHaveLength(0)
    // a late mark below what was known does not make the knowledge from before the break count again
    notify({ c: 3 })
    await deliver(delivery, [msg(502)], new Map([['c', Date.now() - 15]]))
    expect(published).toStrictEqual([501, 502])
    // and while not listening at all, no wait either (no mark can come)
    since = Number.POSITIVE_INFINITY
    notify({ c: 501 })
    const t1 = Date.now()
    await deliver(delivery, [msg(503)])
    expect(Date.now() - t1).toBeLessThan(1500)
  })

  test(`a gap longer than ${FILL_MAX}: the last ${FILL_MAX} seqs before (devices fill the rest with history)`, async () => {
    const { delivery, published, notify, storeNow } = filling({ waitMs: 100 })
    await tick(5)
    storeNow(seqs(1, 249))
    notify({ c: 1 })
    await deliver(delivery, [msg(250)])
    expect(published).toStrictEqual(seqs(250 - FILL_MAX, 250))
  })

  test('a store that fails, or a delivery from it that fails: the seq that waited goes anyway, once a minute a warning', async () => {
    const { delivery, published, notify, warnings, errors, messages, storeNow } = filling({ waitMs: 100, afterTimeoutWaitMs: 100 })
    await tick(5)
    storeNow(seqs(1, 7))
    messages.failing = true
    notify({ c: 4, d: 4 })
    await deliver(delivery, [msg(8)])
    await deliver(delivery, [{ ...msg(8), conversationId: 'd' }])
    expect(published).toStrictEqual([8, 8])
    expect(warnings).toStrictEqual(['the seqs another node may not have delivered (an order wait ran out, or a resend found none) could not be read from the store: devices get them when they sync'])
    expect(errors).toStrictEqual([])
    // read, but the conversation's lookup fails for the first of them
    const e = filling({ waitMs: 100 })
    await tick(5)
    e.storeNow(seqs(1, 7))
    e.notify({ c: 4 })
    e.failNext()
    await deliver(e.delivery, [msg(8)])
    expect(e.published).toStrictEqual([8])
    expect(e.errors).toStrictEqual(['delivery of the seqs before an order wait that ran out failed (devices sync by seq)'])
  })

  test('changes among them: folded into their targets delivered with them (a deleted one without push or mention, an edited one pushed with its edited text), applied to the targets in the store, then the other nodes told', async () => {
    const applied: number[] = []
    const pushed: Array<[number, unknown]> = []
    const mentioned: number[] = []
    const { delivery, published, sent, notify, notices, stored, errors } = filling({ waitMs: 100 }, null, 0, {
      applyChange: async (m) => {
        applied.push(m.seq)
        if (m.seq === 8) throw new Error('store down')
      },
      push: { noteStored: (m: StoredMessage) => { pushed.push([m.seq, m.body]) } } as unknown as DeliveryParts['push'],
      mentions: { note: (m: StoredMessage) => { mentioned.push(m.seq) } } as unknown as DeliveryParts['mentions']
    })
    await tick(5)
    const ts = Date.now()
    // the node that stored 5..8 died before applying 7 and 8 to 5 and 6, and before publishing
    stored.push(
      { ...msg(5), ts, body: 'secret', mentions: ['v'] },
      { ...msg(6), ts, body: 'old', mentions: ['v'] },
      { ...msg(7), ts, kind: 'delete', target: 5, body: null },
      { ...msg(8), ts, kind: 'edit', target: 6, body: 'new' }
    )
    notify({ c: 4 })
    await deliver(delivery, [msg(9)])
    expect(published).toStrictEqual([5, 6, 7, 8, 9])
    expect(sent[0]?.changes?.deleted).toStrictEqual({ seq: 7, ts, by: 'u' })
    expect(sent[1]?.changes?.edited).toStrictEqual({ seq: 8, ts, body: 'new' })
    expect(pushed).toStrictEqual([[6, 'new'], [7, null], [8, 'new'], [9, 'x']])
    expect(mentioned).toStrictEqual([6])
    expect(applied).toStrictEqual([7, 8])
    await tick(10)
    expect(errors).toStrictEqual(['a stored change was not applied to its target'])
    expect(notices.at(-1)).toStrictEqual({ seqs: {}, tails: {}, changed: [['c', 5], ['c', 6]] })
  })

  test('a mark below a notice\'s guess still counts: what the dead node did publish is not delivered again', async () => {
    const { delivery, published, notice, notify, storeNow } = filling({ waitMs: 100 })
    await tick(5)
    storeNow(seqs(1, 10), 60_000)
    storeNow([11, 12, 13]) // one batch of a node: its notice says 13, it publishes 11 and dies
    notice({ c: 13 })
    notify({ c: 11 })
    await deliver(delivery, [msg(14)])
    expect(published).toStrictEqual([12, 13, 14])
  })

  test('close waits for the changes of filled entries being applied (at most its bound)', async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    let applied = false
    const { delivery, notify, stored } = filling({ waitMs: 100 }, null, 0, { applyChange: async () => { await gate; applied = true } })
    await tick(5)
    stored.push({ ...msg(5), ts: Date.now() }, { ...msg(6), kind: 'delete', target: 5, body: null, ts: Date.now() })
    notify({ c: 4 })
    await deliver(delivery, [msg(7)])
    const t0 = Date.now()
    await delivery.close(100) // still being applied: close gives up after 100 ms
    expect(Date.now() - t0).toBeGreaterThanOrEqual(90)
    expect(applied).toBe(false)
    const closed = delivery.close(5000)
    setTimeout(release, 50)
    await closed
    expect(applied).toBe(true)
    await delivery.close() // nothing left: at once
  })

  test('without a message store nothing is read (as before)', async () => {
    const { delivery, published, notify } = setup({ waitMs: 100 })
    notify({ c: 4 })
    await deliver(delivery, [msg(8)])
    expect(published).toStrictEqual([8])
  })
})

describe('a resend answered with an entry another node stored whose delivery never came: delivered here', () => {
  test('the check outlasts the longest a live node holds a delivery (an order wait, its gap read, then its fan-out held behind queueing)', () => {
    expect(RESEND_CHECK_MS).toBeGreaterThan(ORDER_WAIT_MS + READ_TIMEOUT_MS + QUEUE_TIMEOUT_MS)
  })

  test('after the check time without its mark: read with what before it is missing, delivered once, counted; then it counts as published', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 200 }, metrics)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 }) // published 1..4; 5 and 6 stored by a node that died before publishing them
    delivery.resent({ ...msg(5), ts: Date.now() }) // 5's sender, unanswered, sent it again here
    delivery.resent({ ...msg(6), ts: Date.now() }) // and 6's: one check, up to 6
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(100)
    expect(published).toStrictEqual([])
    await tick(250)
    expect(published).toStrictEqual([5, 6])
    expect(messages.calls).toStrictEqual([[5, 6].map(seq => ({ conversationId: 'c', seq }))])
    expect(await metrics.text()).toMatch(/^mqim_delivery_resend_filled_total 2$/m)
    expect(await metrics.text()).toMatch(/^mqim_delivery_order_filled_total 0$/m)
    // delivered here: the next seq does not wait, a resend of 6 again reads nothing
    await deliver(delivery, [msg(7)])
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(300)
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
  })

  test('its mark before the check time (the node was alive, only slow): nothing read or delivered', async () => {
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 200 })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(50)
    notify({ c: 6 })
    await tick(300)
    expect(published).toStrictEqual([])
    expect(messages.calls).toHaveLength(0)
  })

  test('a resend of what this node delivered, or another node\'s whose mark came: no check at all', async () => {
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 50 })
    await tick(5)
    storeNow(seqs(1, 3))
    notify({ c: 2 })
    await deliver(delivery, [msg(3)]) // this node's own
    delivery.resent({ ...msg(3), ts: Date.now() })
    delivery.resent({ ...msg(2), ts: Date.now() })
    await tick(150)
    expect(published).toStrictEqual([3])
    expect(messages.calls).toHaveLength(0)
  })

  test('a conversation known from no mark: an entry stored while this node listened, within 5 minutes, is checked; one stored before it listened, or long ago, is not', async () => {
    const { delivery, published, messages, storeNow } = filling({ resendCheckMs: 50 })
    await tick(5)
    delivery.resent({ ...msg(3), ts: Date.now() - 60_000 }) // before this Delivery listened
    await tick(150)
    expect(messages.calls).toHaveLength(0)
    // listening for long: 5 minutes is the bound
    const listening = madeAgo(10 * 60_000, () => filling({ resendCheckMs: 50 }))
    listening.delivery.resent({ ...msg(3), conversationId: 'old', ts: Date.now() - RESEND_RECENT_MS - 1000 })
    listening.delivery.resent({ ...msg(3), conversationId: 'recent', ts: Date.now() - RESEND_RECENT_MS + 60_000 })
    await tick(150)
    expect(listening.messages.calls.map(keys => keys[0]?.conversationId)).toStrictEqual(['recent'])
    storeNow([1, 2], 60_000) // (stored before this node listened: never filled)
    storeNow([3, 4], 100)
    delivery.resent({ ...msg(4), ts: Date.now() - 100 })
    await tick(150)
    expect(messages.calls[0]?.map(k => k.seq)).toStrictEqual(seqs(1, 4))
    expect(published).toStrictEqual([3, 4])
  })

  test('a resend of a higher seq while a check waits: that seq gets its own time', async () => {
    const { delivery, published, notify, storeNow } = filling({ resendCheckMs: 300 })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(5), ts: Date.now() })
    await tick(200)
    delivery.resent({ ...msg(6), ts: Date.now() }) // 6 stored by a live node moments ago
    await tick(200) // 5's time is up, 6's is not
    expect(published).toStrictEqual([])
    notify({ c: 5 }) // 5 was delivered after all; 6 never is
    await tick(250)
    expect(published).toStrictEqual([6])
  })

  test('a conversation this node forgot the marks of (its memory of 200,000 conversations full): a resend of one stored before it forgot is not checked, nor filled when the forgetting came while it waited', async () => {
    const { delivery, notify, messages } = madeAgo(60_000, () => filling({ resendCheckMs: 50 }))
    const before = Date.now() - 1000
    delivery.resent({ ...msg(3), conversationId: 'kept', ts: before })
    await tick(150) // checked and read before anything was forgotten
    delivery.resent({ ...msg(3), conversationId: 'pending', ts: before })
    for (let i = 0; i <= 200_000; i++) notify({ [`n${i}`]: 1 }) // the first is forgotten
    await tick(1100) // (the storing node's clock may be 1 s behind)
    delivery.resent({ ...msg(3), conversationId: 'forgot', ts: before })
    delivery.resent({ ...msg(3), conversationId: 'after', ts: Date.now() })
    await tick(150)
    expect(messages.calls.map(keys => keys[0]?.conversationId)).toStrictEqual(['kept', 'after'])
  })

  test('a mark learnt again (replacing what was known) forgets nothing: a resend stored before it is checked', async () => {
    const { delivery, notify, messages } = madeAgo(60_000, () => filling({ resendCheckMs: 50 }))
    const before = Date.now() - 5000
    notify({ other: 1 })
    notify({ other: 2 })
    delivery.resent({ ...msg(3), ts: before })
    await tick(150)
    expect(messages.calls).toHaveLength(1)
  })

  test('entries of a conversation deleted meanwhile: not read, not delivered, not counted', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, messages, storeNow, gone } = filling({ resendCheckMs: 50 }, metrics)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(6), ts: Date.now() })
    gone.add('c')
    await tick(150)
    expect(messages.calls).toHaveLength(0)
    expect(published).toStrictEqual([])
    expect(await metrics.text()).toMatch(/^mqim_delivery_resend_filled_total 0$/m)
  })

  test('while a resend is filled, this node\'s next seq of the conversation goes behind it: each delivered once, in order', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 50, waitMs: 100 }, metrics, 200)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(100) // the check's read is under way (200 ms)
    await deliver(delivery, [msg(7)])
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
    expect(await metrics.text()).toMatch(/^mqim_delivery_resend_filled_total 2$/m)
    expect(await metrics.text()).toMatch(/^mqim_delivery_order_timeouts_total 0$/m)
  })

  test('a check waiting makes an order wait of the conversation count its seqs as recent as the check does (not 12 s): the resent seq is filled before the next', async () => {
    const { delivery, published, storeNow } = madeAgo(10 * 60_000, () => filling({ resendCheckMs: 5000, waitMs: 100, unpublishedMs: 50 }))
    storeNow([1, 2], 60_000) // a minute ago, by a node that died; this node knows nothing of the conversation
    delivery.resent({ ...msg(2), ts: Date.now() - 60_000 })
    await deliver(delivery, [msg(3)], new Map([['c', Date.now() - 60_000]]))
    expect(published).toStrictEqual([1, 2, 3])
  })

  test('no check while not listening, nor across a break in listening (its mark may have gone by unheard)', async () => {
    let since = 0
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 100, listeningSince: () => since as WallMs })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    since = Number.POSITIVE_INFINITY
    delivery.resent({ ...msg(6), ts: Date.now() })
    since = 0
    delivery.resent({ ...msg(5), ts: Date.now() })
    await tick(20)
    since = Date.now() // the link broke and came back while the check waited
    await tick(200)
    expect(published).toStrictEqual([])
    expect(messages.calls).toHaveLength(0)
  })

  test('an order wait of the conversation under way when the check comes: it fills, not the check (once)', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 100, waitMs: 300 }, metrics)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(50)
    await deliver(delivery, [msg(7)]) // waits 300 ms for 6's mark, the check comes meanwhile
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
    expect(await metrics.text()).toMatch(/^mqim_delivery_order_filled_total 2$/m)
    expect(await metrics.text()).toMatch(/^mqim_delivery_resend_filled_total 0$/m)
  })

  test('a check that comes while an order wait that ran out is reading the seqs before: it leaves them to that fill', async () => {
    const { delivery, published, notify, messages, storeNow } = filling({ resendCheckMs: 150, waitMs: 100 }, null, 300)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    delivery.resent({ ...msg(6), ts: Date.now() })
    await deliver(delivery, [msg(7)]) // the wait runs out at 100 ms, its read lasts until 400 ms; the check comes at 150 ms
    await tick(100)
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
  })

  test(`at most ${CHECKS_MAX} conversations checked at once; close drops the checks waiting`, async () => {
    const { delivery, published, messages } = filling({ resendCheckMs: 100 })
    await tick(5)
    for (let i = 0; i <= CHECKS_MAX; i++) delivery.resent({ ...msg(2), conversationId: `k${i}`, ts: Date.now() })
    await tick(400)
    expect(new Set(messages.calls.flat().map(k => k.conversationId)).size).toBe(CHECKS_MAX)
    expect(published).toStrictEqual([]) // (nothing of those in the store)
    const other = filling({ resendCheckMs: 50 })
    await tick(5)
    other.storeNow([1, 2])
    other.delivery.resent({ ...msg(2), ts: Date.now() })
    await other.delivery.close()
    other.delivery.resent({ ...msg(2), ts: Date.now() })
    await tick(150)
    expect(other.messages.calls).toHaveLength(0)
    expect(other.published).toStrictEqual([])
  })

  test('a store that fails: nothing delivered, a warning', async () => {
    const { delivery, published, notify, messages, storeNow, warnings } = filling({ resendCheckMs: 50 })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    messages.failing = true
    delivery.resent({ ...msg(6), ts: Date.now() })
    await tick(200)
    expect(published).toStrictEqual([])
    expect(warnings).toHaveLength(1)
  })
})

describe('another node\'s notice of entries whose delivery never came: delivered here', () => {
  test('the commit notice goes out before the batch is delivered (a node that dies delivering it has told the others what to check)', async () => {
    const { delivery, events } = setup()
    await deliver(delivery, [msg(1), msg(2)])
    expect(events).toStrictEqual(['notice', 'message 1', 'message 2'])
  })

  test('told as soon as stored (`stored`): the notice without the changes and without the targets changed in the batch; `committed` with `told` then sends the changes, with the batch\'s seqs again (the checks elsewhere count from then)', async () => {
    const { delivery, notices, events } = setup()
    const edit: StoredMessage = { ...msg(3), kind: 'edit', target: 2, body: 'changed' }
    const batch = [msg(1), msg(2), edit]
    delivery.stored(batch)
    expect(notices).toHaveLength(1)
    expect(notices[0]?.changed).toBeUndefined()
    expect(notices[0]?.seqs).toStrictEqual({ c: 3 })
    expect((notices[0]?.docs as StoredMessage[]).map(m => m.seq)).toStrictEqual([1, 3])
    await deliver(delivery, batch, undefined, true)
    expect(notices[1]).toStrictEqual({ seqs: { c: 3 }, tails: {}, changed: [['c', 2]] })
    expect(events).toStrictEqual(['notice', 'notice', 'message 1', 'message 2', 'message 3'])
    // a batch without changes: nothing more is sent
    delivery.stored([msg(4)])
    await deliver(delivery, [msg(4)], undefined, true)
    expect(notices).toHaveLength(3)
  })

  test('a check due while another fill of the conversation runs here waits for it, then fills what that one did not', async () => {
    const { delivery, published, notify, notice, storeNow } = filling({ resendCheckMs: 100 }, null, 300)
    await tick(5)
    storeNow(seqs(1, 8))
    notify({ c: 4 })
    notice({ c: 6 }) // its fill reads for 300 ms
    delivery.resent({ ...msg(8), ts: Date.now() }) // due meanwhile
    await tick(1000)
    expect(published).toStrictEqual([5, 6, 7, 8])
  })

  test('a second notice of the same seq (after the batch\'s changes were applied) restarts the time', async () => {
    const { published, notify, notice, storeNow } = filling({ resendCheckMs: 200 })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    notice({ c: 6 })
    await tick(150)
    notice({ c: 6 })
    await tick(150)
    expect(published).toStrictEqual([])
    await tick(150)
    expect(published).toStrictEqual([5, 6])
  })

  test('a conversation known from no mark, a check of it waiting: this node\'s order wait counts its seqs as recent as the check does, and fills them before its own', async () => {
    const { delivery, published, notice, storeNow } = madeAgo(10 * 60_000, () => filling({ resendCheckMs: 5000, waitMs: 100, unpublishedMs: 50 }))
    storeNow([5, 6], 200) // by a node that died, 200 ms ago (older than `unpublishedMs` here)
    notice({ c: 6 })
    const sixAt = Date.now() - 200
    await deliver(delivery, [msg(7)], new Map([['c', sixAt]]))
    expect(published).toStrictEqual([5, 6, 7])
  })

  test('after the check time without their mark: read, delivered once, counted; a mark in time: nothing read', async () => {
    const metrics = new Metrics({ enabled: true })
    const { delivery, published, notify, notice, messages, storeNow } = filling({ resendCheckMs: 200 }, metrics)
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4, d: 1 })
    // the other node stored c 5..6 and d 2, told so, and published only d 2
    notice({ c: 6, d: 2 })
    await tick(50)
    notify({ d: 2 })
    await tick(100)
    expect(published).toStrictEqual([])
    await tick(150)
    expect(published).toStrictEqual([5, 6])
    expect(messages.calls).toStrictEqual([[5, 6].map(seq => ({ conversationId: 'c', seq }))])
    expect(await metrics.text()).toMatch(/^mqim_delivery_notice_filled_total 2$/m)
    expect(await metrics.text()).toMatch(/^mqim_delivery_resend_filled_total 0$/m)
    // they count as published now: this node's next does not wait, nothing is read again
    const t0 = Date.now()
    await deliver(delivery, [msg(7)])
    expect(Date.now() - t0).toBeLessThan(3000) // (an order wait would take 6 s)
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
  })

  test('a node writing on: each notice restarts the time, the mark of the latest ends the check', async () => {
    const { published, notify, notice, messages, storeNow } = filling({ resendCheckMs: 200 })
    await tick(5)
    storeNow(seqs(1, 10))
    notify({ c: 1 })
    for (let seq = 2; seq <= 6; seq++) {
      notice({ c: seq })
      await tick(60)
      notify({ c: seq - 1 }) // each mark one behind the notices
    }
    await tick(50)
    notify({ c: 6 })
    await tick(300)
    expect(published).toStrictEqual([])
    expect(messages.calls).toHaveLength(0)
  })

  test(`a check ends with its mark (the usual case, within milliseconds): ${CHECKS_MAX} notices whose marks came leave room for the next`, async () => {
    const { notify, notice, messages, storeNow } = filling({ resendCheckMs: 100 })
    await tick(5)
    for (let i = 0; i < CHECKS_MAX; i++) {
      notice({ [`k${i}`]: 1 })
      notify({ [`k${i}`]: 1 })
    }
    storeNow([1])
    notice({ c: 1 })
    await tick(250)
    expect(messages.calls).toStrictEqual([[{ conversationId: 'c', seq: 1 }]])
  })

  /** Claims as Redis answers them: `answer` says how the next claim goes; claims and releases recorded. */
  function claimsThat (): { claims: FillClaims, log: string[], answer: { next: 'yes' | 'no' | 'fail' | 'hang' } } {
    const log: string[] = []
    const answer = { next: 'no' as 'yes' | 'no' | 'fail' | 'hang' }
    return {
      log,
      answer,
      claims: {
        claim: async (key, ms) => {
          log.push(`claim ${key} ${ms}`)
          if (answer.next === 'fail') throw new Error('redis down')
          if (answer.next === 'hang') return await new Promise<boolean>(() => {})
          return answer.next === 'yes'
        },
        release: async (key) => { log.push(`release ${key}`) }
      }
    }
  }

  test('a claim lasts longer than a fill (its read, then the delivery) and lapses before the other nodes\' last check: a node that claimed and died leaves the seqs to the next', () => {
    expect(CLAIM_MS).toBeGreaterThan(READ_TIMEOUT_MS + 2000 + 5000)
    expect(CLAIM_MS).toBeLessThan((CHECK_TRIES - 1) * RESEND_CHECK_MS)
  })

  test('with claims (one per conversation): what this node claims is filled here; a claim another node has: the check waits again (3 times in all), and that node\'s delivery ends it', async () => {
    const { claims, log, answer } = claimsThat()
    const { published, notify, notice, messages, storeNow } = filling({ resendCheckMs: 50 }, null, 0, { claims })
    await tick(5)
    storeNow(seqs(1, 8))
    notify({ c: 4, d: 1 })
    notice({ c: 5, d: 2 }) // another node claims both first
    await tick(300)
    expect(log).toStrictEqual(['c', 'd', 'c', 'd', 'c', 'd'].map(conv => `claim mqim:delivery-fill:${conv} ${CLAIM_MS}`))
    expect(messages.calls).toHaveLength(0)
    log.length = 0
    notice({ c: 6 })
    await tick(80)
    expect(log).toHaveLength(1)
    notify({ c: 6 }) // the node that claimed it delivered it
    await tick(200)
    expect(log).toHaveLength(1)
    answer.next = 'yes'
    notice({ c: 8 })
    await tick(150)
    expect(log.at(-1)).toBe(`claim mqim:delivery-fill:c ${CLAIM_MS}`)
    expect(published).toStrictEqual([7, 8])
  })

  test('a claim that fails, or a read that fails after a claim (the claim given up): tried again later, 3 times in all; a warning once a minute', async () => {
    const { claims, log, answer } = claimsThat()
    const { published, notify, notice, messages, storeNow, warnings } = filling({ resendCheckMs: 50 }, null, 0, { claims })
    await tick(5)
    storeNow(seqs(1, 7))
    notify({ c: 4 })
    answer.next = 'fail'
    notice({ c: 5 })
    await tick(300)
    expect(log).toStrictEqual(Array(3).fill(`claim mqim:delivery-fill:c ${CLAIM_MS}`))
    expect(messages.calls).toHaveLength(0)
    expect(warnings).toHaveLength(1)
    log.length = 0
    answer.next = 'yes'
    messages.failing = true
    notice({ c: 6 })
    await tick(300)
    expect(log).toStrictEqual(Array(3).fill([`claim mqim:delivery-fill:c ${CLAIM_MS}`, 'release mqim:delivery-fill:c']).flat())
    expect(published).toStrictEqual([])
    messages.failing = false
    notice({ c: 7 })
    await tick(150)
    expect(published).toStrictEqual([5, 6, 7])
  })

  test('a claim not answered within 2 s: not filled meanwhile', async () => {
    const { claims, log, answer } = claimsThat()
    const { published, notify, notice, storeNow, warnings } = filling({ resendCheckMs: 50 }, null, 0, { claims })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    answer.next = 'hang'
    notice({ c: 6 })
    await tick(2200)
    expect(log.length).toBeGreaterThanOrEqual(1)
    expect(published).toStrictEqual([])
    expect(warnings).toHaveLength(1)
  })

  test('an order wait that ran out while another node fills those seqs (it has the claim): this node waits for that delivery, then delivers its own after it, and reads nothing', async () => {
    const { claims, log } = claimsThat()
    const { delivery, published, notify, messages, storeNow } = filling({ waitMs: 100 }, null, 0, { claims })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    const done = deliver(delivery, [msg(7)]) // waits for 6's mark 100 ms, then finds 5..6 claimed
    await tick(300)
    expect(log).toStrictEqual([`claim mqim:delivery-fill:c ${CLAIM_MS}`])
    expect(published).toStrictEqual([])
    notify({ c: 6 }) // the claiming node delivered 5 and 6
    await done
    expect(published).toStrictEqual([7])
    expect(messages.calls).toHaveLength(0)
  })

  test('an order wait that found the seqs claimed, whose claiming node never delivers them (it died): after 8 s the claim is free, and they are filled here before its own seq', async () => {
    const { claims, log, answer } = claimsThat()
    const { delivery, published, notify, messages, storeNow } = filling({ waitMs: 100 }, null, 0, { claims })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    const done = deliver(delivery, [msg(7)])
    await tick(300)
    answer.next = 'yes' // the claim lapsed
    await done
    expect(log).toStrictEqual(Array(2).fill(`claim mqim:delivery-fill:c ${CLAIM_MS}`))
    expect(published).toStrictEqual([5, 6, 7])
    expect(messages.calls).toHaveLength(1)
  }, 15000)

  test('while this node\'s own publishes back up (Redis slow), a check waits again rather than add to them', async () => {
    const { published, notify, notice, storeNow, flags } = filling({ resendCheckMs: 50 })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    flags.backlogged = true
    notice({ c: 6 })
    await tick(80)
    expect(published).toStrictEqual([])
    flags.backlogged = false
    await tick(100)
    expect(published).toStrictEqual([5, 6])
  })

  test('none while not listening, nor across a break in listening, nor after close', async () => {
    let since = 0
    const { delivery, published, notify, notice, messages, storeNow } = filling({ resendCheckMs: 100, listeningSince: () => since as WallMs })
    await tick(5)
    storeNow(seqs(1, 6))
    notify({ c: 4 })
    notify({ f: 1 })
    since = Number.POSITIVE_INFINITY
    notice({ c: 5, f: 2 })
    since = 0 // (f: nothing more of it; had the notice made a check, it would be read now)
    notice({ c: 6 })
    await tick(20)
    since = Date.now() // the link broke and came back while the check waited
    await tick(200)
    expect(published).toStrictEqual([])
    expect(messages.calls).toHaveLength(0)
    await delivery.close()
    notice({ c: 6 })
    await tick(200)
    expect(messages.calls).toHaveLength(0)
  })

  test(`resends and notices have ${CHECKS_MAX} checks each: notices without marks do not crowd a resend out`, async () => {
    const { delivery, notice, messages, storeNow } = filling({ resendCheckMs: 100 })
    await tick(5)
    for (let i = 0; i < CHECKS_MAX + 5; i++) notice({ [`k${i}`]: 2 })
    storeNow([1, 2])
    delivery.resent({ ...msg(2), ts: Date.now() })
    await tick(350)
    const read = new Set(messages.calls.flat().map(k => k.conversationId))
    expect(read.has('c')).toBe(true)
    expect(read.size).toBe(CHECKS_MAX + 1)
  })

  test('a conversation known from no mark: the entries stored lately are read (the last 10), those with no mark delivered', async () => {
    const { published, notice, messages, storeNow } = madeAgo(10 * 60_000, () => filling({ resendCheckMs: 50 }))
    storeNow([1, 2], 20 * 60_000) // long ago: published then
    storeNow([3, 4], 100)
    notice({ c: 4 })
    await tick(150)
    expect(messages.calls[0]?.map(k => k.seq)).toStrictEqual(seqs(1, 4))
    expect(published).toStrictEqual([3, 4])
  })
})

describe('GapReads: the reads of many conversations whose waits ran out at once', () => {
  const keysOf = (conv: string, n: number): SeqKey[] => seqs(1, n).map(seq => ({ conversationId: conv, seq }))

  test(`one read in flight; the requests meanwhile merged, at most ${READ_KEYS} seqs a read, a request never split; each gets its own messages`, async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    const calls: number[] = []
    const reads = new GapReads({
      getMany: async (keys) => {
        calls.push(keys.length)
        if (calls.length === 1) await gate
        return keys.map(k => ({ ...msg(k.seq), conversationId: k.conversationId }))
      }
    }, () => {})
    const first = reads.read(keysOf('a', 20))
    const more = Array.from({ length: 30 }, async (_, i) => await reads.read(keysOf(`b${i}`, 20)))
    const big = reads.read(keysOf('z', READ_KEYS + 1)) // more than a read: alone
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(calls).toStrictEqual([20])
    release()
    const answers = await Promise.all([first, ...more, big])
    expect(calls).toStrictEqual([20, READ_KEYS, 100, READ_KEYS + 1])
    answers.forEach((found, i) => {
      const conv = i === 0 ? 'a' : i === answers.length - 1 ? 'z' : `b${i - 1}`
      expect(found?.map(m => `${m.conversationId}/${m.seq}`)).toStrictEqual(keysOf(conv, i === answers.length - 1 ? READ_KEYS + 1 : 20).map(k => `${k.conversationId}/${k.seq}`))
    })
    expect(await reads.read([])).toStrictEqual([])
  })

  test(`at most ${QUEUE_MAX} requests wait: one more is answered null at once; a failed read answers null to all it held and is told`, async () => {
    let release: () => void = () => {}
    const gate = new Promise<void>(resolve => { release = resolve })
    const told: unknown[] = []
    let calls = 0
    const reads = new GapReads({
      getMany: async () => {
        if (++calls === 1) await gate
        throw new Error('down')
      }
    }, (err) => { told.push(err) })
    const first = reads.read(keysOf('a', 1))
    await new Promise(resolve => setImmediate(resolve))
    const waiting = Array.from({ length: QUEUE_MAX }, async (_, i) => await reads.read(keysOf(`w${i}`, 1)))
    expect(await reads.read(keysOf('over', 1))).toBeNull()
    release()
    const answers = await Promise.all([first, ...waiting])
    expect(answers.every(a => a === null)).toBe(true)
    expect(calls).toBe(1 + Math.ceil(QUEUE_MAX / READ_KEYS))
    expect(told).toHaveLength(calls)
  })

  test('an error callback that throws does not stall the reads', async () => {
    let calls = 0
    const reads = new GapReads({
      getMany: async (keys) => {
        if (++calls === 1) throw new Error('down')
        return keys.map(k => ({ ...msg(k.seq), conversationId: k.conversationId }))
      }
    }, () => { throw new Error('a logger that throws') })
    expect(await reads.read(keysOf('a', 1))).toBeNull()
    expect((await reads.read(keysOf('b', 1)))?.map(m => m.seq)).toStrictEqual([1])
  })

  test(`a request not answered within its time (${READ_TIMEOUT_MS} ms; 100 ms here) is answered null then; a read that hangs is given up and the next goes on`, async () => {
    const calls: string[] = []
    let hang = true
    const reads = new GapReads({
      getMany: async (keys) => {
        calls.push(keys[0]?.conversationId ?? '')
        if (hang) await new Promise(() => {}) // never answers
        return keys.map(k => ({ ...msg(k.seq), conversationId: k.conversationId }))
      }
    }, () => {}, 100)
    const t0 = Date.now()
    expect(await reads.read(keysOf('a', 2))).toBeNull()
    expect(Date.now() - t0).toBeLessThan(3000) // (a hung read would never be answered)
    hang = false
    expect((await reads.read(keysOf('b', 1)))?.map(m => `${m.conversationId}/${m.seq}`)).toStrictEqual(['b/1'])
    expect(calls).toStrictEqual(['a', 'b'])
  })
})

describe('the sequencer and delivery together (a seq conflict resolved from the winner\'s notice)', () => {
  test('node B\'s write of seq 1 meets seqs 1-3 that node A stored, whose notice came during the write: B retries at seq 4 without reading the store, and delivers it only once A\'s fan-out of 3 has arrived', async () => {
    const { delivery, published, notify, noticeRaw, bus } = setup()
    const store = new FaultyMessageStore()
    const reads: string[] = []
    const getMany = store.getMany.bind(store)
    store.getMany = async (keys) => { reads.push(keys.map(k => `${k.conversationId}${k.seq}`).join(',')); return await getMany(keys) }
    const sequencer = new Sequencer(store, delivery, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 5000, logger: createLogger('silent'), peers: bus })
    sequencer.created('c')
    let inserts = 0
    store.beforeInsert = async () => {
      if (++inserts > 1) return
      // node A stores 1-3 while B's write is on its way, and its notice arrives before B's answer
      await store.otherNodeInsert('c', 3, 'a', Date.now())
      noticeRaw({ seqs: { c: 3 }, tails: { c: [3, 3, 3] }, node: 'a' })
    }
    const result = sequencer.submit({ conversationId: 'c', senderId: 'b', clientMsgId: 'b1', kind: 'text', body: 'x', replyTo: null })
    let answered = false
    result.then(() => { answered = true }, () => {})
    try {
      await new Promise(resolve => setTimeout(resolve, 100))
      // stored at 4 after one conflict: two inserts, no read of the entry that won
      expect(inserts).toBe(2)
      expect(reads).toStrictEqual([])
      expect((await store.all('c')).map(m => `${m.senderId}${m.seq}`)).toStrictEqual(['a1', 'a2', 'a3', 'b4'])
      // A's fan-out of 1-3 has not reached B: 4 waits (and its sender with it)
      expect(published).toStrictEqual([])
      await new Promise(resolve => setTimeout(resolve, 20))
      expect(answered).toBe(false)
      notify({ c: 3 })
      expect((await result).message.seq).toBe(4)
      expect(published).toStrictEqual([4])
    } finally {
      notify({ c: 3 })
      await sequencer.close()
    }
  })
})
