/**
 * The Sequencer under injected store faults (test/helpers/faulty-store.ts): unknown-outcome
 * writes that store a prefix and then throw, writes that fail before storing anything, another
 * node taking seqs between batches, slow writes, and an outage longer than writeRetryMs.
 *
 * Everything is asserted through the public API (submit results, the commit listener) and by reading
 * the store back. The invariants, in every scenario:
 *   - per conversation the stored seqs are 1..N, gapless, and (sender, clientMsgId) is unique;
 *   - every submit resolves with the seq its message is stored under;
 *   - the commit listener gets every message this sequencer stored exactly once, in ascending seq per
 *     conversation, including messages stored by a write whose outcome was unknown;
 *   - a resend returns the original seq with duplicate=true and is not delivered again.
 *
 * Randomness comes from a seeded generator so a failure can be replayed. Retry back-off uses an
 * injected sleep on a virtual clock, so no test waits for real back-off time.
 */
import { Sequencer, type Draft, type SubmitResult } from '../../src/im/sequencer.js'
import { ImError } from '../../src/errors.js'
import { createLogger } from '../../src/log.js'
import type { StoredMessage } from '../../src/store/types.js'
import { FaultyMessageStore } from '../helpers/faulty-store.js'
import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import type { ClusterBus } from '../../src/broker/bus.js'
import { sleep, waitUntil } from '../../scripts/lib/procs.js'
import type { MonotonicMs, WallMs } from '../../src/clocks.js'

/** mulberry32: a small seeded PRNG returning floats in [0, 1). */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6D2B79F5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

function pick<T> (rng: () => number, items: readonly T[]): T {
  const item = items[Math.floor(rng() * items.length)]
  if (item === undefined) throw new RangeError('nothing to pick from')
  return item
}

/** Fisher-Yates, driven by the seeded generator. */
function shuffle<T> (rng: () => number, items: readonly T[]): T[] {
  const out = [...items]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1))
    const a = out[i]
    const b = out[j]
    if (a === undefined || b === undefined) throw new RangeError(`cannot swap ${i} and ${j}`)
    out[i] = b
    out[j] = a
  }
  return out
}

const tick = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

function keyOf (m: { conversationId: string, senderId: string, clientMsgId: string }): string {
  return `${m.conversationId}/${m.senderId}/${m.clientMsgId}`
}

function draft (conversationId: string, senderId: string, clientMsgId: string): Draft {
  return { conversationId, senderId, clientMsgId, kind: 'text', body: `${senderId}: ${clientMsgId}`, replyTo: null }
}

interface HarnessOptions {
  batchMaxMessages?: number
  batchDelayMs?: number
  /** Virtual milliseconds. */
  writeRetryMs?: number
  /** Called on each back-off sleep with the number of sleeps so far. */
  onSleep?: (sleeps: number) => void
  recentMax?: number
}

/** A Sequencer over a FaultyMessageStore, a virtual clock, and a recorder of committed batches. */
class Harness {
  readonly sequencer: Sequencer
  /** Every message passed to the commit listener, in call order. */
  readonly delivered: StoredMessage[] = []
  readonly batches: StoredMessage[][] = []
  /** What each commit listener call was told of the entries before its batch (Delivery's order). */
  readonly befores: Array<Map<string, number>> = []
  /** Deliveries that were not above the previous delivery of the same conversation. */
  readonly outOfOrder: string[] = []
  /** Every entry a resend was answered with (the commit listener's `resent`), in call order. */
  readonly resent: StoredMessage[] = []
  private readonly lastDelivered = new Map<string, number>()
  /** Virtual time: advanced only by the sequencer's back-off sleeps. */
  clock = 1_767_225_600_000
  sleeps = 0

  constructor (readonly store: FaultyMessageStore, options: HarnessOptions = {}) {
    const delivery = {
      committed: (messages: StoredMessage[], before?: ReadonlyMap<string, number>) => {
        this.batches.push(messages.map(m => ({ ...m })))
        this.befores.push(new Map(before))
        for (const m of messages) {
          const before = this.lastDelivered.get(m.conversationId) ?? 0
          if (m.seq <= before) this.outOfOrder.push(`${m.conversationId}: seq ${m.seq} delivered after ${before}`)
          this.lastDelivered.set(m.conversationId, m.seq)
          this.delivered.push({ ...m })
        }
      },
      resent: (m: StoredMessage) => { this.resent.push({ ...m }) }
    }
    this.sequencer = new Sequencer(store, delivery, {
      batchMaxMessages: options.batchMaxMessages ?? 100,
      batchDelayMs: options.batchDelayMs ?? 1,
      writeRetryMs: options.writeRetryMs ?? 1_000_000_000,
      recentMax: options.recentMax,
      logger: createLogger('silent'),
      now: () => this.clock as WallMs,
      sleep: async (ms) => {
        this.sleeps++
        this.clock += ms
        options.onSleep?.(this.sleeps)
        await tick()
      }
    })
  }

  submit (d: Draft): Promise<SubmitResult> {
    return this.sequencer.submit(d)
  }
}

interface Sent {
  draft: Draft
  result: Promise<SubmitResult>
}

/**
 * Submits `n` drafts, `make(i)` each, without waiting for their results; `after(i)` may pause
 * between two submits (a trickle).
 */
async function submitEach (h: Harness, n: number, make: (i: number) => Draft, after?: (i: number) => Promise<void> | undefined): Promise<Sent[]> {
  const sent: Sent[] = []
  for (let i = 0; i < n; i++) {
    const d = make(i)
    sent.push({ draft: d, result: h.submit(d) })
    // no await at all unless `after` asks for one: the submits stay in one turn
    const pause = after?.(i)
    if (pause !== undefined) await pause
  }
  return sent
}

interface Traffic {
  senders: number
  conversations: number
  perSender: number
  /** Probability of yielding (one tick, or a few ms) between two submits. */
  yieldP?: number
}

/** Many senders submit to many conversations in a seeded random interleaving. */
async function drive (h: Harness, rng: () => number, traffic: Traffic, prefix = 'm'): Promise<Sent[]> {
  const convs = Array.from({ length: traffic.conversations }, (_, i) => `conv${i}`)
  const next = Array.from({ length: traffic.senders }, () => 0)
  const sent: Sent[] = []
  const yieldP = traffic.yieldP ?? 0.3
  for (;;) {
    const live = next.flatMap((n, s) => n < traffic.perSender ? [s] : [])
    if (live.length === 0) break
    const s = pick(rng, live)
    const n = next[s] ?? 0
    next[s] = n + 1
    const d = draft(pick(rng, convs), `user${s}`, `${prefix}${n}`)
    sent.push({ draft: d, result: h.submit(d) })
    if (rng() < yieldP) {
      if (rng() < 0.8) await tick()
      else await sleep(Math.floor(rng() * 4))
    }
  }
  return sent
}

function conversationsOf (sent: Array<Sent | Draft>): string[] {
  return [...new Set(sent.map(s => 'draft' in s ? s.draft.conversationId : s.conversationId))]
}

/**
 * The invariants every scenario must keep. `others` are keys stored by "another node": they take
 * seqs but are not this sequencer's to deliver.
 */
async function expectConsistent (h: Harness, conversations: string[], others: Set<string> = new Set()): Promise<Map<string, StoredMessage>> {
  const stored = new Map<string, StoredMessage>()
  for (const conv of conversations) {
    const all = await h.store.all(conv)
    expect(all.map(m => m.seq)).toEqual(Array.from({ length: all.length }, (_, i) => i + 1))
    for (const m of all) {
      expect(stored.has(keyOf(m))).toBe(false)
      stored.set(keyOf(m), m)
    }
  }
  expect(h.outOfOrder).toEqual([])
  const deliveredKeys = h.delivered.map(keyOf)
  expect(new Set(deliveredKeys).size).toBe(deliveredKeys.length)
  const expected = [...stored.keys()].filter(k => !others.has(k)).sort()
  expect([...deliveredKeys].sort()).toEqual(expected)
  for (const m of h.delivered) expect(m).toEqual(stored.get(keyOf(m)))
  return stored
}

/** Every submit resolved with the message stored under its key, as a first send. */
async function expectResults (sent: Sent[], stored: Map<string, StoredMessage>): Promise<SubmitResult[]> {
  const results = await Promise.all(sent.map(s => s.result))
  sent.forEach((s, i) => {
    expect(results[i]?.duplicate).toBe(false)
    expect(results[i]?.message).toEqual(stored.get(keyOf(s.draft)))
  })
  return results
}

/** A sender's messages to one conversation get seqs in the order it submitted them. */
function expectSubmitOrderKept (sent: Sent[], results: SubmitResult[]): void {
  const last = new Map<string, number>()
  sent.forEach((s, i) => {
    const k = `${s.draft.conversationId}/${s.draft.senderId}`
    const seq = results[i]?.message.seq ?? NaN
    expect(seq).toBeGreaterThan(last.get(k) ?? 0)
    last.set(k, seq)
  })
}

function byConversation (messages: StoredMessage[]): Map<string, number> {
  const counts = new Map<string, number>()
  for (const m of messages) counts.set(m.conversationId, (counts.get(m.conversationId) ?? 0) + 1)
  return counts
}

const SEEDS = [1, 7, 42, 1234, 99991]

describe('Sequencer', () => {
  const open: Harness[] = []
  const harness = (store = new FaultyMessageStore(), options?: HarnessOptions): Harness => {
    const h = new Harness(store, options)
    open.push(h)
    return h
  }
  afterEach(async () => {
    for (const h of open.splice(0)) await h.sequencer.close()
  })

  describe('without faults', () => {
    test.each(SEEDS)('many senders and conversations: gapless, delivered once and in order (seed %i)', async (seed) => {
      const h = harness()
      const sent = await drive(h, prng(seed), { senders: 12, conversations: 7, perSender: 60 })
      const results = await Promise.all(sent.map(s => s.result))
      const stored = await expectConsistent(h, conversationsOf(sent))
      expect(stored.size).toBe(sent.length)
      await expectResults(sent, stored)
      expectSubmitOrderKept(sent, results)
    })

    test('group commit: 500 concurrent submits take at most 10 insertBatch calls', async () => {
      const h = harness(undefined, { batchMaxMessages: 500, batchDelayMs: 2 })
      h.store.delayMs = 5
      const rng = prng(5)
      const sent = await submitEach(h, 500, i => draft(`conv${i % 13}`, `user${Math.floor(rng() * 40)}`, `g${i}`))
      await Promise.all(sent.map(s => s.result))
      await expectResults(sent, await expectConsistent(h, conversationsOf(sent)))
      expect(h.store.insertCalls).toBeLessThanOrEqual(10)
      expect(h.store.insertBatchSizes.reduce((a, b) => a + b, 0)).toBe(500)
    })

    test('group commit: submits that trickle in while a slow write is in flight share the next write', async () => {
      const h = harness(undefined, { batchMaxMessages: 500, batchDelayMs: 2 })
      h.store.delayMs = 20
      const rng = prng(11)
      const sent = await submitEach(h, 500, i => draft(`conv${i % 5}`, `user${Math.floor(rng() * 20)}`, `t${i}`), i => i % 50 === 49 ? sleep(3) : undefined)
      await Promise.all(sent.map(s => s.result))
      await expectResults(sent, await expectConsistent(h, conversationsOf(sent)))
      expect(h.store.insertCalls).toBeLessThanOrEqual(10)
    })

    test('batchMaxMessages caps the batch size', async () => {
      const h = harness(undefined, { batchMaxMessages: 50, batchDelayMs: 2 })
      const sent = await submitEach(h, 500, i => draft('conv', 'alice', `c${i}`))
      await Promise.all(sent.map(s => s.result))
      await expectResults(sent, await expectConsistent(h, ['conv']))
      expect(Math.max(...h.store.insertBatchSizes)).toBeLessThanOrEqual(50)
      expect(h.store.insertCalls).toBe(10)
    })
  })

  describe('unknown-outcome writes (a prefix stored, then the call throws)', () => {
    test.each([0, 1, 3, 17, 99, 100])('one failure after storing %i of the batch', async (prefix) => {
      const h = harness()
      h.store.failInserts(1, { storePrefix: prefix })
      const sent = await submitEach(h, 100, i => draft(`conv${i % 3}`, `user${i % 7}`, `p${i}`))
      const results = await Promise.all(sent.map(s => s.result))
      const stored = await expectConsistent(h, conversationsOf(sent))
      expect(stored.size).toBe(100)
      expect(h.store.storedByFailedCalls).toHaveLength(prefix)
      await expectResults(sent, stored)
      expectSubmitOrderKept(sent, results)
      // The messages stored by the failed call were delivered, each once, with their first seq.
      for (const m of h.store.storedByFailedCalls) {
        expect(h.delivered.filter(d => keyOf(d) === keyOf(m))).toEqual([m])
      }
    })

    test('several failures in a row, each storing a little more', async () => {
      const h = harness()
      for (const k of [2, 5, 11]) h.store.failInserts(1, { storePrefix: k })
      const sent = await submitEach(h, 60, i => draft(`conv${i % 2}`, `user${i % 4}`, `s${i}`))
      const results = await Promise.all(sent.map(s => s.result))
      await expectResults(sent, await expectConsistent(h, conversationsOf(sent)))
      expectSubmitOrderKept(sent, results)
      expect(h.store.pendingFaults()).toBe(0)
      expect(h.sleeps).toBeGreaterThanOrEqual(3)
    })

    test.each(SEEDS)('random prefix failures under concurrent traffic (seed %i)', async (seed) => {
      const rng = prng(seed)
      const h = harness(undefined, { batchMaxMessages: 40, batchDelayMs: 1 })
      h.store.beforeInsert = async (messages) => {
        if (rng() < 0.35) h.store.failInserts(1, { storePrefix: Math.floor(rng() * (messages.length + 1)) })
      }
      const sent = await drive(h, rng, { senders: 10, conversations: 6, perSender: 50 })
      const results = await Promise.all(sent.map(s => s.result))
      const stored = await expectConsistent(h, conversationsOf(sent))
      expect(stored.size).toBe(sent.length)
      await expectResults(sent, stored)
      expectSubmitOrderKept(sent, results)
      expect(h.store.storedByFailedCalls.length).toBeGreaterThan(0)
    })
  })

  describe('failures before anything is stored', () => {
    test('the batch is retried with the same seqs and nothing is lost', async () => {
      const h = harness()
      h.store.failInserts(4)
      const sent = await submitEach(h, 30, i => draft(`conv${i % 3}`, `user${i % 5}`, `b${i}`))
      const results = await Promise.all(sent.map(s => s.result))
      await expectResults(sent, await expectConsistent(h, conversationsOf(sent)))
      expectSubmitOrderKept(sent, results)
      expect(h.store.insertCalls).toBe(5)
      expect(h.sleeps).toBe(4)
    })

    test('a restarted process whose first lastSeq loads fail retries them', async () => {
      const store = new FaultyMessageStore()
      const h = harness(store)
      const first = await Promise.all([0, 1, 2].map(i => h.submit(draft('conv', 'alice', `x${i}`))))
      expect(first.map(r => r.message.seq)).toEqual([1, 2, 3])
      // Nothing is cached in the restarted process, so its first write has to load lastSeq.
      const restarted = harness(store, { onSleep: (n) => { if (n === 3) store.setDown(false) } })
      store.setDown(true)
      const results = await Promise.all([3, 4].map(i => restarted.submit(draft('conv', 'bob', `y${i}`))))
      expect(results.map(r => r.message.seq)).toEqual([4, 5])
      expect(results.every(r => !r.duplicate)).toBe(true)
      expect(restarted.sleeps).toBe(3)
      await expectConsistent(restarted, ['conv'], new Set(first.map(r => keyOf(r.message))))
    })
  })

  test('a conversation just created (a new random id): its first write reads no tail from the store', async () => {
    const h = harness()
    const latest = h.store.latest.bind(h.store)
    const asked: string[] = []
    h.store.latest = async (c: string) => { asked.push(c); return await latest(c) }
    h.sequencer.created('new')
    expect((await h.submit(draft('new', 'u', 'a'))).message.seq).toBe(1)
    expect((await h.submit(draft('new', 'u', 'b'))).message.seq).toBe(2)
    expect((await h.submit(draft('old', 'u', 'a'))).message.seq).toBe(1)
    expect(asked).toStrictEqual(['old'])
    // a known tail is never lowered by it
    h.sequencer.created('new')
    expect((await h.submit(draft('new', 'u', 'c'))).message.seq).toBe(3)
    expect(await expectConsistent(h, ['new', 'old'])).toBeInstanceOf(Map)
  })

  describe('another node takes seqs', () => {
    test('delivery is told when the entry before a batch was stored, when it was read from the store; not when written here, nor from a notice', async () => {
      const h = harness()
      // cold: the tail is loaded from the store, where another node stored seqs 1-2 at 111
      await h.store.otherNodeInsert('c', 2, 'other-node', 111)
      expect((await h.submit(draft('c', 'u', 'a'))).message.seq).toBe(3)
      expect(h.befores.at(-1)).toStrictEqual(new Map([['c', 111]]))
      // a seq conflict: the other node took seq 4 (at 222); the retry after it knows when
      let once = true
      h.store.beforeInsert = async (messages) => {
        if (once && messages[0] !== undefined) {
          once = false
          await h.store.otherNodeInsert('c', 1, 'other-node', 222)
        }
      }
      expect((await h.submit(draft('c', 'u', 'b'))).message.seq).toBe(5)
      expect(h.befores.at(-1)).toStrictEqual(new Map([['c', 222]]))
      // written here: delivery knows it published it (nothing to wait for)
      h.store.beforeInsert = null
      expect((await h.submit(draft('c', 'u', 'c'))).message.seq).toBe(6)
      expect(h.befores.at(-1)).toStrictEqual(new Map())
      // a tail told by a notice carries no time
      h.sequencer.observe('d', { seq: 3, count: 3, lastReal: 3 })
      await h.store.otherNodeInsert('d', 3, 'other-node', 333)
      expect((await h.submit(draft('d', 'u', 'a'))).message.seq).toBe(4)
      expect(h.befores.at(-1)).toStrictEqual(new Map())
    })

    test("a seq conflict whose winner's notice came while the write was on its way: retried after that node's tail, no read, no second conflict", async () => {
      const h = harness()
      expect((await h.submit(draft('c', 'u', 'a'))).message.seq).toBe(1)
      // another node stores seqs 2-4 and its notice (tail 4) arrives while this node writes seq 2
      let once = true
      h.store.beforeInsert = async () => {
        if (!once) return
        once = false
        await h.store.otherNodeInsert('c', 3, 'other-node', 222)
        h.sequencer.observe('c', { seq: 4, count: 4, lastReal: 4 })
      }
      const reads: number[] = []
      const getMany = h.store.getMany.bind(h.store)
      h.store.getMany = async (keys) => { reads.push(...keys.map(k => k.seq)); return await getMany(keys) }
      const inserts = h.store.insertCalls
      expect((await h.submit(draft('c', 'u', 'b'))).message.seq).toBe(5)
      expect(reads).toStrictEqual([])
      // the write that conflicted and its one retry
      expect(h.store.insertCalls - inserts).toBe(2)
      // delivery gets the time the notice was taken as the time seq 4 was stored (an upper bound):
      // knowing nothing else of c, it would wait for that node's fan-out
      expect(h.befores.at(-1)).toStrictEqual(new Map([['c', h.clock]]))
      // without the notice, the entry that won is read (seq 6 taken by the other node, told nothing)
      once = true
      h.store.beforeInsert = async () => {
        if (!once) return
        once = false
        await h.store.otherNodeInsert('c', 1, 'other-node', 333)
      }
      expect((await h.submit(draft('c', 'u', 'c'))).message.seq).toBe(7)
      expect(reads).toStrictEqual([6])
      expect(h.befores.at(-1)).toStrictEqual(new Map([['c', 333]]))
      await expectConsistent(h, ['c'], new Set((await h.store.all('c')).filter(m => m.senderId === 'other-node').map(keyOf)))
    })

    test('messages of conversations another node writes too go after the others in a batch (each conversation in order): a seq conflict there costs the others no round trip', async () => {
      const h = harness()
      await h.store.otherNodeInsert('x', 1, 'other-node', 111)
      // its notice: this node knows x's tail, and that another node writes x
      h.sequencer.observe('x', { seq: 1, count: 1, lastReal: 1 })
      const inserts: string[][] = []
      h.store.beforeInsert = async (messages) => {
        inserts.push(messages.map(m => `${m.conversationId}${m.seq}`))
        // meanwhile that node takes x's seq 2, and this time no notice comes
        if (inserts.length === 1) await h.store.otherNodeInsert('x', 1, 'other-node', 222)
      }
      const send = (conv: string, sender: string, id: string): Sent => { const d = draft(conv, sender, id); return { draft: d, result: h.submit(d) } }
      const sent = [send('x', 'u', 'x1'), send('a', 'u', 'a1'), send('x', 'v', 'x2'), send('b', 'u', 'b1')]
      const results = await Promise.all(sent.map(s => s.result))
      // a and b stored by the first insert, before x's conflict; x retried after the seq that won
      expect(inserts).toStrictEqual([['a1', 'b1', 'x2', 'x3'], ['x3', 'x4']])
      expect(results.map(r => `${r.message.conversationId}${r.message.seq}`)).toStrictEqual(['x3', 'a1', 'x4', 'b1'])
      expectSubmitOrderKept(sent, results)
      // for 2 s after its notice and its conflict; then x is like any other again: arrival order
      h.clock += 1999
      const again = [send('x', 'u', 'x3'), send('c', 'u', 'c1')]
      await Promise.all(again.map(s => s.result))
      expect(inserts.at(-1)).toStrictEqual(['c1', 'x5'])
      h.clock += 2001
      const later = [send('x', 'u', 'x4'), send('d', 'u', 'd1')]
      await Promise.all(later.map(s => s.result))
      expect(inserts.at(-1)).toStrictEqual(['x6', 'd1'])
      // a seq conflict alone (no notice came) counts too
      let taken = false
      h.store.beforeInsert = async (messages) => {
        inserts.push(messages.map(m => `${m.conversationId}${m.seq}`))
        if (!taken && messages.some(m => m.conversationId === 'y')) {
          taken = true
          await h.store.otherNodeInsert('y', 1, 'other-node', 333)
        }
      }
      expect((await h.submit(draft('y', 'u', 'y1'))).message.seq).toBe(2)
      const after = [send('y', 'u', 'y2'), send('e', 'u', 'e1')]
      await Promise.all(after.map(s => s.result))
      expect(inserts.at(-1)).toStrictEqual(['e1', 'y3'])
      const others = [...await h.store.all('x'), ...await h.store.all('y')].filter(m => m.senderId === 'other-node').map(keyOf)
      await expectConsistent(h, ['x', 'a', 'b', 'c', 'd', 'y', 'e'], new Set(others))
    })

    test('between batches: seq conflicts are resolved by reloading, stored seqs stay gapless', async () => {
      const h = harness()
      const others = new Set<string>()
      let round = 0
      h.store.beforeInsert = async (messages) => {
        if (round++ % 2 === 0 && messages[0] !== undefined) {
          for (const m of await h.store.otherNodeInsert(messages[0].conversationId, 2)) others.add(keyOf(m))
        }
      }
      const sent: Sent[] = []
      for (let wave = 0; wave < 5; wave++) {
        for (let i = 0; i < 20; i++) {
          const d = draft(`conv${i % 2}`, `user${i % 3}`, `o${wave}-${i}`)
          sent.push({ draft: d, result: h.submit(d) })
        }
        await Promise.all(sent.map(s => s.result))
      }
      const results = await Promise.all(sent.map(s => s.result))
      const stored = await expectConsistent(h, conversationsOf(sent), others)
      expect(stored.size).toBe(sent.length + others.size)
      await expectResults(sent, stored)
      expectSubmitOrderKept(sent, results)
      expect(others.size).toBeGreaterThan(0)
    })

    test.each(SEEDS)('random other-node writes, prefix failures and slow writes together (seed %i)', async (seed) => {
      const rng = prng(seed)
      const h = harness(undefined, { batchMaxMessages: 25, batchDelayMs: 1 })
      const others = new Set<string>()
      h.store.beforeInsert = async (messages) => {
        const r = rng()
        if (r < 0.25) {
          const conv = pick(rng, messages).conversationId
          for (const m of await h.store.otherNodeInsert(conv, 1 + Math.floor(rng() * 3))) others.add(keyOf(m))
        } else if (r < 0.5) {
          h.store.failInserts(1, { storePrefix: Math.floor(rng() * (messages.length + 1)) })
        }
        if (rng() < 0.5) await sleep(Math.floor(rng() * 5))
      }
      const sent = await drive(h, rng, { senders: 16, conversations: 5, perSender: 40, yieldP: 0.4 })
      const results = await Promise.all(sent.map(s => s.result))
      const stored = await expectConsistent(h, conversationsOf(sent), others)
      expect(stored.size).toBe(sent.length + others.size)
      await expectResults(sent, stored)
      expectSubmitOrderKept(sent, results)
      expect(others.size).toBeGreaterThan(0)
    })
  })

  describe('resends (idempotency)', () => {
    test.each([
      ['with the recent-keys cache', undefined],
      ['without it (recentMax 0, the in-memory store\'s setting)', 0]
    ])('a resend of a stored message returns its seq with duplicate=true and is not delivered again, %s', async (_name, recentMax) => {
      const h = harness(undefined, { recentMax })
      const sent = await drive(h, prng(3), { senders: 6, conversations: 4, perSender: 30 })
      const originals = await Promise.all(sent.map(s => s.result))
      const deliveredBefore = h.delivered.length
      const rng = prng(4)
      const again = sent.filter(() => rng() < 0.5)
      // Resends mixed with new messages, in one burst.
      const fresh = Array.from({ length: 20 }, (_, i) => draft(`conv${i % 4}`, 'late', `f${i}`))
      const resent = again.map(s => h.submit({ ...s.draft, body: 'changed body is ignored' }))
      const freshResults = await Promise.all(fresh.map(d => h.submit(d)))
      const results = await Promise.all(resent)
      // what a reply carries (conv, seq, msgId, ts) is the stored message's; the body may be the resend's
      const replyOf = (m: StoredMessage | undefined): unknown => m === undefined ? undefined : [m.conversationId, m.seq, m.clientMsgId, m.ts, m.senderId]
      again.forEach((s, i) => {
        expect(results[i]?.duplicate).toBe(true)
        expect(replyOf(results[i]?.message)).toEqual(replyOf(originals[sent.indexOf(s)]?.message))
      })
      expect(freshResults.every(r => !r.duplicate)).toBe(true)
      expect(h.delivered.length).toBe(deliveredBefore + fresh.length)
      // each resend told to delivery (a cluster delivers it if its node never did), the new ones not
      expect(h.resent.map(replyOf).sort()).toEqual(results.map(r => replyOf(r.message)).sort())
      await expectConsistent(h, conversationsOf(sent))
    })

    test('a resend while the original is still being written shares its result', async () => {
      const h = harness()
      h.store.delayMs = 10
      const d = draft('conv', 'alice', 'same')
      const a = h.submit(d)
      await tick()
      const b = h.submit(d)
      const [ra, rb] = await Promise.all([a, b])
      expect(ra.duplicate).toBe(false)
      expect(rb).toEqual({ message: ra.message, duplicate: true })
      expect(h.delivered.map(keyOf)).toEqual([keyOf(d)])
      expect(h.resent).toEqual([ra.message])
    })

    test('a resend after a restart is answered from the store', async () => {
      const store = new FaultyMessageStore()
      const h = harness(store)
      const sent = await drive(h, prng(8), { senders: 4, conversations: 3, perSender: 20 })
      const originals = await Promise.all(sent.map(s => s.result))
      const restarted = harness(store)
      const results = await Promise.all(sent.map(s => restarted.submit(s.draft)))
      results.forEach((r, i) => expect(r).toEqual({ message: originals[i]?.message, duplicate: true }))
      expect(restarted.delivered).toEqual([])
      expect(restarted.resent).toEqual(originals.map(r => r.message))
      const next = await restarted.submit(draft('conv0', 'user0', 'after-restart'))
      expect(next.message.seq).toBe((await store.all('conv0')).length)
      expect(next.duplicate).toBe(false)
    })

    test('a commit listener with `stored` is told of each batch as soon as the store has it, before the changes among it are applied; `committed` then gets `told`', async () => {
      const store = new FaultyMessageStore()
      const events: string[] = []
      let release = (): void => {}
      const apply = store.applyChange.bind(store)
      store.applyChange = async (change) => {
        events.push(`apply ${change.seq}`)
        await new Promise<void>(resolve => { release = resolve })
        return await apply(change)
      }
      const listener = {
        stored: (ms: StoredMessage[]) => { events.push(`stored ${ms.map(m => m.seq).join(',')}`) },
        committed: (ms: StoredMessage[], _before?: ReadonlyMap<string, number>, told?: boolean) => { events.push(`committed ${ms.map(m => m.seq).join(',')} ${String(told)}`) }
      }
      const seq = new Sequencer(store, listener, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent') })
      await seq.submit(draft('conv', 'alice', 'm1'))
      const edit = seq.submit({ ...draft('conv', 'alice', 'e1'), kind: 'edit', body: 'changed', target: 1 })
      await waitUntil(() => events.includes('apply 2'), 2000, 'the edit to be applied')
      expect(events).toStrictEqual(['stored 1', 'committed 1 true', 'stored 2', 'apply 2'])
      release()
      await edit
      expect(events.at(-1)).toBe('committed 2 true')
    })

    test('a commit listener whose `resent` throws: the resend is still answered as a duplicate', async () => {
      const store = new FaultyMessageStore()
      const original = await harness(store).submit(draft('conv', 'alice', 'm1'))
      const errors: string[] = []
      const logger = { ...createLogger('silent'), error: (_o: unknown, message: string) => { errors.push(message) } } as unknown as ReturnType<typeof createLogger>
      const seq = new Sequencer(store, { committed: () => {}, resent: () => { throw new Error('boom') } }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger })
      expect(await seq.submit(draft('conv', 'alice', 'm1'))).toEqual({ message: original.message, duplicate: true })
      expect(errors).toStrictEqual(['a resend could not be told to delivery'])
    })

    test('a failing lookup of a resent message is retried with back-off, not in a tight loop', async () => {
      const store = new FaultyMessageStore()
      const original = await harness(store).submit(draft('conv', 'alice', 'm1'))
      // Restarted: the resend is not cached, its insert reports a clientMsgId conflict, and the
      // lookup that follows fails until the second back-off. A safety valve ends a spin.
      const restarted = harness(store, { onSleep: (n) => { if (n === 2) store.setDown(false) } })
      store.setDown(true, ['findByClientMsgId'])
      store.beforeInsert = async () => { if (store.insertCalls >= 50) store.setDown(false) }
      const again = await restarted.submit(draft('conv', 'alice', 'm1'))
      expect(again).toEqual({ message: original.message, duplicate: true })
      expect(restarted.sleeps).toBe(2)
      expect(store.insertCalls).toBeLessThanOrEqual(4)
    })

    test('a resend the sequencer does not remember is looked up off the write loop: other sends, in its conversation too, do not wait for it', async () => {
      const store = new FaultyMessageStore()
      const original = await harness(store).submit(draft('conv', 'alice', 'm1'))
      const restarted = harness(store) // remembers nothing
      let release: () => void = () => {}
      const gate = new Promise<void>(resolve => { release = resolve })
      const lookups: string[] = []
      const find = store.findByClientMsgId.bind(store)
      store.findByClientMsgId = async (c, u, m) => { lookups.push(m); await gate; return await find(c, u, m) }
      const resend = restarted.submit(draft('conv', 'alice', 'm1'))
      // a slow lookup (a collection scan on FerretDB) holds only its own sender
      const others = await Promise.all([restarted.submit(draft('conv', 'carol', 'c1')), restarted.submit(draft('conv2', 'bob', 'b1'))])
      expect(others.map(r => [r.message.conversationId, r.message.seq, r.duplicate])).toEqual([['conv', 2, false], ['conv2', 1, false]])
      // carol's message is remembered now: its resend needs no lookup
      await expect(restarted.submit(draft('conv', 'carol', 'c1'))).resolves.toMatchObject({ duplicate: true, message: { seq: 2 } })
      expect(lookups).toEqual(['m1'])
      release()
      expect(await resend).toMatchObject({ duplicate: true, message: { seq: original.message.seq, ts: original.message.ts } })
      // delivered: the two new messages only, not the resend
      expect(restarted.delivered.map(m => `${m.conversationId}:${m.seq}`).sort()).toEqual(['conv2:1', 'conv:2'])
    })

    test('resends the sequencer does not remember: 4 lookups at once, 1,000 more wait their turn, beyond that UNAVAILABLE', async () => {
      const store = new FaultyMessageStore()
      const keys = Array.from({ length: 1006 }, (_, i) => `m${i}`)
      const first = harness(store)
      await Promise.all(keys.map(async m => await first.submit(draft('conv', 'dave', m))))
      const restarted = harness(store)
      let release: () => void = () => {}
      const gate = new Promise<void>(resolve => { release = resolve })
      const find = store.findByClientMsgId.bind(store)
      let running = 0
      let most = 0
      store.findByClientMsgId = async (c, u, m) => {
        running++
        most = Math.max(most, running)
        await gate
        running--
        return await find(c, u, m)
      }
      const resends = keys.map(m => restarted.submit(draft('conv', 'dave', m)))
      const settled = Promise.allSettled(resends)
      const lookupsRunning = (): number => running
      for (let i = 0; i < 400 && lookupsRunning() < 4; i++) await new Promise(resolve => setTimeout(resolve, 5))
      await new Promise(resolve => setTimeout(resolve, 50))
      release()
      const outcomes = (await settled).map(r => r.status === 'fulfilled' ? r.value.duplicate : (r.reason as { code?: string }).code)
      expect(most).toBe(4)
      expect(outcomes.filter(o => o === true)).toHaveLength(1004)
      expect(outcomes.filter(o => o === 'UNAVAILABLE')).toHaveLength(2)
      expect(restarted.delivered).toHaveLength(0)
    })

    test('a resend after a restart is not delivered again when its first write attempt fails', async () => {
      const store = new FaultyMessageStore()
      const h = harness(store)
      const original = await h.submit(draft('conv', 'alice', 'm1'))
      expect(h.delivered).toHaveLength(1)
      const restarted = harness(store)
      store.failInserts(1)
      const again = await restarted.submit(draft('conv', 'alice', 'm1'))
      expect(again).toEqual({ message: original.message, duplicate: true })
      expect(restarted.delivered).toEqual([])
    })
  })

  describe('an outage longer than writeRetryMs', () => {
    test.each([0, 4, 25])('senders get UNAVAILABLE; after recovery a resend of the same ids is gapless and delivered once (%i stored before the outage)', async (prefix) => {
      const h = harness(undefined, { writeRetryMs: 500 })
      const rng = prng(prefix + 100)
      const drafts = Array.from({ length: 40 }, (_, i) => draft(`conv${i % 3}`, `user${Math.floor(rng() * 6)}`, `u${i}`))
      // The first write stores a prefix and loses the answer, then the store stays down.
      h.store.failInserts(1, { storePrefix: prefix })
      h.store.beforeInsert = async () => { if (h.store.pendingFaults() === 0) h.store.setDown(true) }
      const outcomes = await Promise.allSettled(drafts.map(d => h.submit(d)))
      for (const o of outcomes) {
        expect(o.status).toBe('rejected')
        const err = (o as PromiseRejectedResult).reason
        expect(err).toBeInstanceOf(ImError)
        expect((err as ImError).code).toBe('UNAVAILABLE')
      }
      expect(h.store.storedByFailedCalls).toHaveLength(prefix)
      expect(h.delivered).toEqual([])

      h.store.beforeInsert = null
      h.store.setDown(false)
      // Senders resend in their own order, not in the order of the first attempt.
      const shuffled = shuffle(rng, drafts)
      const results = await Promise.all(shuffled.map(d => h.submit(d)))
      const stored = await expectConsistent(h, conversationsOf(drafts))
      expect(stored.size).toBe(drafts.length)
      shuffled.forEach((d, i) => expect(results[i]?.message).toEqual(stored.get(keyOf(d))))
      // What the failed write stored keeps its first seq and is delivered now, once.
      for (const m of h.store.storedByFailedCalls) {
        expect(stored.get(keyOf(m))?.seq).toBe(m.seq)
      }
      expect(h.delivered).toHaveLength(drafts.length)
      // A second resend is a plain duplicate.
      if (drafts[0] === undefined) throw new Error('no drafts')
      const dup = await h.submit(drafts[0])
      expect(dup.duplicate).toBe(true)
      expect(h.delivered).toHaveLength(drafts.length)
    })

    test('the outage fails only the batches written during it', async () => {
      const h = harness(undefined, { writeRetryMs: 300 })
      const before = await Promise.all([0, 1, 2].map(i => h.submit(draft('conv', 'alice', `a${i}`))))
      expect(before.map(r => r.message.seq)).toEqual([1, 2, 3])
      h.store.setDown(true)
      const during = await Promise.allSettled([0, 1].map(i => h.submit(draft('conv', 'bob', `b${i}`))))
      expect(during.map(o => o.status)).toEqual(['rejected', 'rejected'])
      h.store.setDown(false)
      const after = await Promise.all([0, 1].map(i => h.submit(draft('conv', 'carol', `c${i}`))))
      expect(after.map(r => r.message.seq)).toEqual([4, 5])
      const resent = await Promise.all([0, 1].map(i => h.submit(draft('conv', 'bob', `b${i}`))))
      expect(resent.map(r => r.message.seq)).toEqual([6, 7])
      expect(resent.every(r => !r.duplicate)).toBe(true)
      await expectConsistent(h, ['conv'])
    })
  })

  describe('close()', () => {
    test('drains queued messages, then refuses new ones with UNAVAILABLE', async () => {
      const h = harness(undefined, { batchMaxMessages: 20, batchDelayMs: 5 })
      h.store.delayMs = 5
      h.store.failInserts(1, { storePrefix: 7 })
      const sent = await submitEach(h, 100, i => draft(`conv${i % 4}`, `user${i % 9}`, `d${i}`))
      await h.sequencer.close()
      const settled = await Promise.allSettled(sent.map(s => s.result))
      expect(settled.every(s => s.status === 'fulfilled')).toBe(true)
      const stored = await expectConsistent(h, conversationsOf(sent))
      expect(stored.size).toBe(100)
      expect(byConversation(h.delivered)).toEqual(byConversation([...stored.values()]))
      await expect(h.submit(draft('conv0', 'late', 'z'))).rejects.toMatchObject({ code: 'UNAVAILABLE' })
    })

    test('gives up on a store that stays down instead of hanging', async () => {
      const h = harness(undefined, { writeRetryMs: 1_000_000_000 })
      h.store.setDown(true)
      const pending = h.submit(draft('conv', 'alice', 'stuck'))
      await tick()
      await h.sequencer.close()
      await expect(pending).rejects.toMatchObject({ code: 'UNAVAILABLE' })
    })
  })
})

/** An in-memory store whose every method call is named in `calls`. */
function countingStore (): { inner: MemoryMessageStore, calls: string[], store: MemoryMessageStore } {
  const inner = new MemoryMessageStore()
  const calls: string[] = []
  const store = new Proxy(inner, {
    get (target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown
      if (typeof v !== 'function') return v
      return (...args: unknown[]) => { calls.push(String(prop)); return (v as (...a: unknown[]) => unknown).apply(target, args) }
    }
  })
  return { inner, calls, store }
}

describe('Sequencer in a cluster: tails of other nodes', () => {
  test('a commit notice: the messages it carries are remembered before the ones it says changed are forgotten (a message changed in the batch that stored it is dropped), and what is not a message is left out', () => {
    const calls: unknown[] = []
    const store = new Proxy(new MemoryMessageStore(), {
      get (target, prop, receiver) {
        if (prop === 'remember') return (messages: StoredMessage[]) => { calls.push(['remember', messages.map(m => m.seq)]) }
        if (prop === 'forget') return (keys: Array<{ seq: number }>) => { calls.push(['forget', keys.map(k => k.seq)]) }
        return Reflect.get(target, prop, receiver) as unknown
      }
    })
    let handler: ((notice: Record<string, unknown>) => void) | undefined
    const bus = { on: (_topic: string, h: typeof handler) => { handler = h }, publish: () => {} } as unknown as ClusterBus
    const seq = new Sequencer(store, { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent'), peers: bus })
    const m = (n: number, extra: Partial<StoredMessage> = {}): StoredMessage => ({ conversationId: 'c', seq: n, clientMsgId: `m${n}`, senderId: 'u', ts: n, kind: 'text', body: `b${n}`, replyTo: null, ...extra })
    handler?.({
      tails: { c: [2, 1, 1] },
      changed: [['c', 1]],
      docs: [m(1), m(2, { kind: 'edit', target: 1, lastReal: 1, count: 1 }), { seq: 3 }, null, m(4, { replyTo: 'x' as unknown as number }), m(5, { seq: 0 })]
    })
    expect(calls).toEqual([['remember', [1, 2]], ['forget', [1]]])
    void seq.close()
  })

  test('a notice\'s tail that no node writes (seq below 1, a count or last real seq above the seq or below 0, not integers) is ignored', () => {
    let handler: ((notice: Record<string, unknown>) => void) | undefined
    const bus = { on: (_topic: string, h: typeof handler) => { handler = h }, publish: () => {} } as unknown as ClusterBus
    const seq = new Sequencer(new MemoryMessageStore(), { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent'), peers: bus })
    handler?.({ tails: { a: [0, 0, 0], b: [5, 6, 5], c: [5, 4, 6], d: [5, -1, 5], e: [5, 4, -1], f: [5.5, 4, 5], g: [5, 4], h: '5', i: [2 ** 60, 1, 1], ok: [5, 4, 5], start: [1, 0, 0] } })
    for (const c of ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']) expect(seq.knownTail(c)).toBeUndefined()
    expect(seq.knownTail('ok')).toEqual({ seq: 5, count: 4, lastReal: 5 })
    // (the bounds themselves are allowed)
    expect(seq.knownTail('start')).toEqual({ seq: 1, count: 0, lastReal: 0 })
    void seq.close()
  })

  test('a notice caches the tail of a conversation this node did not know; tailsComplete waits for the store\'s check of its heads and for a link older than a head may lag', () => {
    let handler: ((notice: Record<string, unknown>) => void) | undefined
    const bus = { on: (_topic: string, h: typeof handler) => { handler = h }, publish: () => {} } as unknown as ClusterBus
    const state = { headsChecked: false, headLagMs: 15_000 }
    const store = new Proxy(new MemoryMessageStore(), {
      get (target, prop, receiver) {
        if (prop === 'headsChecked') return state.headsChecked
        if (prop === 'headLagMs') return state.headLagMs
        return Reflect.get(target, prop, receiver) as unknown
      }
    })
    // `now` is the monotonic clock the link's age is read on; `wall` the wall clock (message times)
    let now = 1_000_000
    let wall = 1_700_000_000_000
    let since = now
    const seq = new Sequencer(store, { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent'), peers: bus, peersSince: () => since as MonotonicMs, clock: () => now as MonotonicMs, now: () => wall as WallMs })
    expect(seq.knownTail('c')).toBeUndefined()
    handler?.({ tails: { c: [5, 4, 5] } })
    expect(seq.knownTail('c')).toEqual({ seq: 5, count: 4, lastReal: 5 })
    expect(seq.lowerTail('c')).toEqual({ seq: 5, count: 4, lastReal: 5 })
    handler?.({ seqs: { d: 3 } }) // a bare seq (no counts) of an unknown conversation: left unknown
    expect(seq.knownTail('d')).toBeUndefined()

    expect(seq.tailsComplete()).toBe(false) // the store has not checked its heads
    state.headsChecked = true
    expect(seq.tailsComplete()).toBe(false) // the link is younger than a head may lag
    wall += 3_600_000 // the wall clock stepped an hour forward: the link is as young as it was
    expect(seq.tailsComplete()).toBe(false)
    now += 15_001
    expect(seq.tailsComplete()).toBe(true)
    since = Number.POSITIVE_INFINITY // the subscriber is down
    expect(seq.tailsComplete()).toBe(false)
    since = now - 1000 // back a second ago
    expect(seq.tailsComplete()).toBe(false)
    state.headLagMs = 0 // a store whose heads never lag
    expect(seq.tailsComplete()).toBe(true)
    void seq.close()
  })

  test('history\'s last seq: the known tail without a store query once the link has been up longer than a tail is kept; the store otherwise', async () => {
    let handler: ((notice: Record<string, unknown>) => void) | undefined
    const bus = { on: (_topic: string, h: typeof handler) => { handler = h }, publish: () => {} } as unknown as ClusterBus
    const { inner, calls, store } = countingStore()
    // the store holds seqs 1-7 of c (written by "another node"); this node was told of 5 only
    await inner.insertBatch(Array.from({ length: 7 }, (_, i) => ({ conversationId: 'c', seq: i + 1, senderId: 'u', clientMsgId: `m${i}`, kind: 'text' as const, body: 'x', ts: 1, replyTo: null })))
    // `now` is the monotonic clock the link's age is read on; `wall` the wall clock (message times)
    let now = 1_000_000
    let wall = 1_700_000_000_000
    let since = now
    const seq = new Sequencer(store, { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent'), peers: bus, peersSince: () => since as MonotonicMs, clock: () => now as MonotonicMs, now: () => wall as WallMs })
    handler?.({ tails: { c: [5, 5, 5] } })
    calls.length = 0
    // a link younger than a tail is kept: the store is asked, past the known tail (also when the
    // wall clock stepped forward meanwhile)
    wall += 3_600_000
    expect(seq.syncTail('c')).toBeUndefined()
    now += 60_000
    expect(seq.syncTail('c')).toBeUndefined()
    expect(await seq.lastSeqForSync('c')).toBe(7)
    expect(calls).toEqual(['latestPast'])
    // (the store's answer is kept); told of 8, which the store does not have (a notice that came first)
    handler?.({ tails: { c: [8, 8, 8] } })
    calls.length = 0
    now += 1
    expect(await seq.lastSeqForSync('c')).toBe(8)
    expect(seq.syncTail('c')).toEqual({ seq: 8, count: 8, lastReal: 8 }) // (what list answers with)
    expect(calls).toEqual([])
    // the subscriber is down, or came back less than a minute ago: the store again
    since = Number.POSITIVE_INFINITY
    expect(await seq.lastSeqForSync('c')).toBe(8)
    since = now - 59_000
    expect(await seq.lastSeqForSync('c')).toBe(8)
    expect(seq.syncTail('c')).toBeUndefined()
    expect(calls).toEqual(['latestPast', 'latestPast'])
    // a fan-out past the known tail (its notice did not come first): the store until a tail that high is known
    calls.length = 0
    since = 0
    seq.noteMarked('c', 8) // not past: nothing
    expect(await seq.lastSeqForSync('c')).toBe(8)
    expect(calls).toEqual([])
    await inner.insertBatch([9, 10].map(n => ({ conversationId: 'c', seq: n, senderId: 'u', clientMsgId: `m${n}`, kind: 'text' as const, body: 'x', ts: 1, replyTo: null })))
    seq.noteMarked('c', 10)
    expect(seq.syncTail('c')).toBeUndefined()
    expect(await seq.lastSeqForSync('c')).toBe(10)
    expect(calls).toEqual(['latestPast'])
    expect(await seq.lastSeqForSync('c')).toBe(10) // (the store's answer is kept: 10 known)
    expect(calls).toEqual(['latestPast'])
    // an unknown conversation is read from the store (a tail is forgotten a minute after it was
    // set: the cache's own clock, not this test's)
    calls.length = 0
    since = 0
    expect(await seq.lastSeqForSync('unknown')).toBe(0)
    expect(calls).toEqual(['latest'])
    void seq.close()
  })

  test('one node: the tail a syncing reader gets without a store query is the one this process knows (it writes every message)', async () => {
    const { calls, store } = countingStore()
    const seq = new Sequencer(store, { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent') })
    expect(seq.syncTail('c')).toBeUndefined() // never seen: list reads its head record
    seq.created('c')
    expect(seq.syncTail('c')).toEqual({ seq: 0, count: 0, lastReal: 0 })
    expect(await seq.lastSeqForSync('c')).toBe(0)
    expect(await seq.lastSeqForSync('other')).toBe(0) // unknown: the store
    expect(calls).toEqual(['latest'])
    void seq.close()
  })

  test('a known tail is looked past (latestPast), never re-read from the head; an unknown one is read (latest)', async () => {
    const { calls, store } = countingStore()
    // a bus that carries nothing: this node never hears of the other's writes
    const deaf = { on: () => {}, publish: () => {} } as unknown as ClusterBus
    const make = (): Sequencer => new Sequencer(store, { committed: () => {} }, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 1000, logger: createLogger('silent'), peers: deaf })
    const a = make()
    const b = make()
    for (let i = 1; i <= 3; i++) await a.submit(draft('c', 'u', `a${i}`))
    expect(a.knownLastSeq('c')).toBe(3)
    for (let i = 1; i <= 4; i++) await b.submit(draft('c', 'u', `b${i}`))
    calls.length = 0
    // a reader that needs the exact tail: a knows 3 is stored and looks past it only
    expect(await a.lastSeqFor('c')).toBe(7)
    expect(calls).toEqual(['latestPast'])
    expect(a.knownLastSeq('c')).toBe(7)
    // nothing past it now: still one look, the known tail answers
    calls.length = 0
    expect(await a.tailFor('c')).toEqual(expect.objectContaining({ seq: 7 }))
    expect(calls).toEqual(['latestPast'])
    // a reader that needs no more than what it knows: no store call
    calls.length = 0
    expect(await a.lastSeqFor('c', 5)).toBe(7)
    expect(calls).toEqual([])
    // a conversation it knows nothing of: the head is read
    await b.submit(draft('d', 'u', 'b1'))
    calls.length = 0
    expect(await a.lastSeqFor('d')).toBe(1)
    expect(calls).toEqual(['latest'])
  })
})

/** A commit listener that records each batch ("conv" + seq) and holds 'slow' seq 1's delivery until release(). */
function holdingSlow (): { delivery: { committed: (messages: StoredMessage[]) => Map<string, Promise<void>> | undefined }, batches: string[][], release: () => void } {
  let release = (): void => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const batches: string[][] = []
  const delivery = {
    committed: (messages: StoredMessage[]) => {
      batches.push(messages.map(m => `${m.conversationId}${m.seq}`))
      // the first message of 'slow' waits for the gate
      return messages.some(m => m.conversationId === 'slow' && m.seq === 1) ? new Map([['slow', gate]]) : undefined
    }
  }
  return { delivery, batches, release }
}

test('a conversation whose delivery is held (order across nodes) has its senders answered once it is delivered, and its next messages written after it as one block; the write loop, and the other conversations, go on meanwhile; close waits for them', async () => {
  const { delivery, batches, release } = holdingSlow()
  const store = new MemoryMessageStore()
  const seq = new Sequencer(store, delivery, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 60_000, logger: createLogger('silent') })
  const answered: string[] = []
  const slow = seq.submit(draft('slow', 'alice', 'a1')).then(r => { answered.push(`slow${r.message.seq}`) })
  await sleep(20)
  // a later batch of another conversation: stored, delivered and answered while 'slow' is held
  const fast = await seq.submit(draft('fast', 'bob', 'b1'))
  expect(fast.message.seq).toBe(1)
  // more for 'slow', one turn apart: queued, not written while it is held
  const more = [seq.submit(draft('slow', 'carol', 'c1'))]
  await sleep(5)
  more.push(seq.submit(draft('slow', 'carol', 'c2')))
  // a resend of the held message waits for the same answer
  const resend = seq.submit(draft('slow', 'alice', 'a1'))
  await sleep(30)
  expect(await store.lastSeq('slow')).toBe(1)
  expect(answered).toStrictEqual([])
  expect(batches).toStrictEqual([['slow1'], ['fast1']])
  const closed = seq.close().then(() => { answered.push('closed') })
  await sleep(20)
  expect(answered).toStrictEqual([])
  release()
  await Promise.all([slow, closed])
  expect(answered).toStrictEqual(['slow1', 'closed'])
  expect(await resend).toMatchObject({ duplicate: true, message: { seq: 1 } })
  expect((await Promise.all(more)).map(r => r.message.seq)).toStrictEqual([2, 3])
  // after the hold, the two queued ones in one batch
  expect(batches).toStrictEqual([['slow1'], ['fast1'], ['slow2', 'slow3']])
})

test('a message queued behind a hold gets its writeRetryMs from the end of the hold: a store failure right after fails neither it nor a fresh message of another conversation', async () => {
  let release = (): void => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const delivery = {
    committed: (messages: StoredMessage[]) => messages.some(m => m.conversationId === 'slow' && m.seq === 1) ? new Map([['slow', gate]]) : undefined
  }
  let failNext = false
  const store = new Proxy(new MemoryMessageStore(), {
    get (target, prop, receiver) {
      if (prop === 'insertBatch') {
        return async (docs: StoredMessage[]) => {
          if (failNext) {
            failNext = false
            throw new Error('primary stepped down')
          }
          return await target.insertBatch(docs)
        }
      }
      return Reflect.get(target, prop, receiver) as unknown
    }
  })
  const seq = new Sequencer(store, delivery, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 300, logger: createLogger('silent') })
  const first = seq.submit(draft('slow', 'alice', 'a1'))
  await sleep(20)
  const queued = seq.submit(draft('slow', 'carol', 'c1'))
  // held longer than writeRetryMs
  await sleep(450)
  failNext = true
  release()
  const fresh = seq.submit(draft('fresh', 'bob', 'b1'))
  expect((await Promise.all([first, queued, fresh])).map(r => `${r.message.conversationId}${r.message.seq}`)).toStrictEqual(['slow1', 'slow2', 'fresh1'])
  await seq.close()
})

describe('after a seq conflict', () => {
  test('a conversation that the conflicting batch left held is not written with the rest: its next message waits for the hold, the rest goes on', async () => {
    const { delivery, batches, release } = holdingSlow()
    const store = new FaultyMessageStore()
    let conflicted = false
    store.beforeInsert = async () => {
      if (conflicted) return
      conflicted = true
      await store.otherNodeInsert('x', 1)
    }
    const seq = new Sequencer(store, delivery, { batchMaxMessages: 100, batchDelayMs: 0, writeRetryMs: 60_000, logger: createLogger('silent') })
    const answered: string[] = []
    const sent = [draft('slow', 'alice', 'a1'), draft('x', 'bob', 'b1'), draft('slow', 'carol', 'c1')]
      .map(d => seq.submit(d).then(r => { answered.push(`${r.message.conversationId}${r.message.seq}`) }))
    await waitUntil(() => answered.length > 0, 5000, 'the first answer')
    // slow1 stored and held; x's conflict retried at once; slow's next one queued behind the hold
    expect(batches).toStrictEqual([['slow1'], ['x2']])
    expect(store.insertBatchSizes).toStrictEqual([3, 1])
    expect(answered).toStrictEqual(['x2'])
    release()
    await Promise.all(sent)
    expect(batches).toStrictEqual([['slow1'], ['x2'], ['slow2']])
    expect(answered).toStrictEqual(['x2', 'slow1', 'slow2'])
    await seq.close()
  })
})

test('a write given up while its outcome is unknown: the conversations it may have stored in are reloaded before their next write, so what it stored is delivered before what comes next (found in review: b1 at seq 1 after b2 at seq 2)', async () => {
  const store = new FaultyMessageStore()
  const h = new Harness(store, { writeRetryMs: 50, recentMax: 0 })
  // both stored, then the call throws (unknown outcome); on the retry x1's key conflicts and the
  // lookup of where it went fails: past writeRetryMs, both are answered UNAVAILABLE
  store.failInserts(1, { storePrefix: 2 })
  store.beforeInsert = async (messages) => {
    if (messages.length === 2 && store.pendingFaults() === 0) store.setDown(true, ['range'])
  }
  const first = await Promise.allSettled([h.submit(draft('c1', 'u', 'x1')), h.submit(draft('c2', 'u', 'b1'))])
  expect(first.map(r => r.status)).toStrictEqual(['rejected', 'rejected'])
  expect((await store.all('c2')).map(m => `${m.clientMsgId}@${m.seq}`)).toStrictEqual(['b1@1'])
  store.setDown(false)
  store.beforeInsert = null
  const next = await h.submit(draft('c2', 'u', 'b2'))
  expect(next.message.seq).toBe(2)
  // b1 (stored by the write given up) is delivered, and before b2
  expect(h.delivered.filter(m => m.conversationId === 'c2').map(m => `${m.clientMsgId}@${m.seq}`)).toStrictEqual(['b1@1', 'b2@2'])
  expect(h.outOfOrder).toStrictEqual([])
  await h.sequencer.close()
})
