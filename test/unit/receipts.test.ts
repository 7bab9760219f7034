/**
 * ReceiptAggregator: a group's receipt goes out one window after the first read; when the
 * cluster's window for the conversation is taken (another node sent one), it waits for the rest
 * of it and asks again; when the window cannot be told (Redis down), it is sent rather than lost.
 */
import { RECEIPT_MEMBERS_PER_SECOND, RECEIPT_WINDOW_MAX_MS, ReceiptAggregator, type ReceiptWindows, type Timers } from '../../src/im/receipts.js'
import type { ConversationDirectory } from '../../src/im/directory.js'
import type { Publisher } from '../../src/im/publisher.js'
import type { MetadataStore } from '../../src/store/types.js'
import { createLogger } from '../../src/log.js'

/** Timers run by hand: `run()` fires the earliest, returning its delay. */
function manualTimers (): Timers & { pending: () => number[], run: () => Promise<number> } {
  let queue: Array<{ fn: () => void, ms: number }> = []
  return {
    setTimeout: (fn, ms) => { const t = { fn, ms }; queue.push(t); return t },
    clearTimeout: (h) => { queue = queue.filter(t => t !== h) },
    pending: () => queue.map(t => t.ms),
    run: async () => {
      const t = queue.shift()
      if (t === undefined) throw new Error('no timer')
      t.fn()
      // the claim, the member list and the publish are promises
      for (let i = 0; i < 10; i++) await Promise.resolve()
      return t.ms
    }
  }
}

function setUp (claims: Array<number | Error> | ReceiptWindows, windowMs = 1000, members = 2): { agg: ReceiptAggregator, timers: ReturnType<typeof manualTimers>, sent: unknown[], asked: number[], tails: number[] } {
  const directory = { get: async () => ({ conversation: { kind: 'group' }, members: new Map(Array.from({ length: members }, (_, i) => [`u${i}`, {}])) }) } as unknown as ConversationDirectory
  const meta = { memberList: async () => [{ userId: 'a', readSeq: 3 }, { userId: 'b', readSeq: 5 }] } as unknown as MetadataStore
  const sent: unknown[] = []
  // group aggregates go out at QoS 0 (ephemeral); a QoS 1 event here would be a mistake
  const publisher = {
    ephemeral: (_to: string[], e: unknown) => { sent.push(e) },
    event: (_to: string[], e: unknown) => { throw new Error(`group receipt sent at QoS 1: ${JSON.stringify(e)}`) }
  } as unknown as Publisher
  const asked: number[] = []
  const windows: ReceiptWindows = !Array.isArray(claims)
    ? claims
    : {
        claim: async (_conv, ms) => {
          asked.push(ms)
          const next = claims.shift() ?? 0
          if (next instanceof Error) throw next
          return next
        }
      }
  const timers = manualTimers()
  const tails: number[] = []
  const agg = new ReceiptAggregator(directory, meta, async (_conv, atLeast) => { tails.push(atLeast); return 5 }, publisher, createLogger('silent'), windowMs, timers, windows)
  return { agg, timers, sent, asked, tails }
}

test('the window is free: one receipt, a window after the first read; reads meanwhile add nothing', async () => {
  const { agg, timers, sent, asked } = setUp([0])
  await agg.noteRead('g', 'a', 3)
  await agg.noteRead('g', 'b', 5)
  expect(timers.pending()).toEqual([1000])
  await timers.run()
  expect(asked).toEqual([1000])
  expect(sent).toEqual([{ type: 'receipt', conv: 'g', kind: 'group', lastSeq: 5, members: 2, readAll: 1, minReadSeq: 3 }])
  expect(timers.pending()).toEqual([])
})

test('the tail is asked for at least the highest cursor (what a node knows is enough when it covers every cursor)', async () => {
  const { agg, timers, sent, tails } = setUp([0])
  await agg.noteRead('g', 'a', 3)
  await timers.run()
  expect(tails).toEqual([5])
  expect(sent).toHaveLength(1)
})

test('another node holds the window: wait for the rest of it, ask again, then send once', async () => {
  const { agg, timers, sent, asked } = setUp([640, 0])
  await agg.noteRead('g', 'a', 3)
  await timers.run()
  expect(sent).toEqual([])
  expect(timers.pending()).toEqual([640])
  // a read while waiting does not start a second timer
  await agg.noteRead('g', 'b', 5)
  expect(timers.pending()).toEqual([640])
  await timers.run()
  expect(asked).toEqual([1000, 1000])
  expect(sent).toHaveLength(1)
  expect(timers.pending()).toEqual([])
})

test('the window cannot be told (the claim fails): the receipt is sent anyway', async () => {
  const { agg, timers, sent } = setUp([new Error('redis down')])
  await agg.noteRead('g', 'a', 3)
  await timers.run()
  expect(sent).toHaveLength(1)
})

test('the window is not told within a window\'s time (Redis not answering): the receipt is sent anyway', async () => {
  const { agg, timers, sent } = setUp({ claim: async () => await new Promise<number>(() => {}) }, 50)
  await agg.noteRead('g', 'a', 3)
  await timers.run()
  await new Promise(resolve => setTimeout(resolve, 120))
  expect(sent).toEqual([{ type: 'receipt', conv: 'g', kind: 'group', lastSeq: 5, members: 2, readAll: 1, minReadSeq: 3 }])
})

test('closed while waiting for the window, or while asking for it: nothing is sent, no new window', async () => {
  const a = setUp([640])
  await a.agg.noteRead('g', 'a', 3)
  await a.timers.run()
  a.agg.close()
  expect(a.timers.pending()).toEqual([])
  expect(a.sent).toEqual([])
  await a.agg.noteRead('g', 'b', 5)
  expect(a.timers.pending()).toEqual([])

  // the claim is still being answered when the aggregator closes
  let answer: (left: number) => void = () => {}
  const b = setUp({ claim: async () => await new Promise<number>(resolve => { answer = resolve }) })
  await b.agg.noteRead('g', 'a', 3)
  await b.timers.run()
  b.agg.close()
  answer(0)
  for (let i = 0; i < 10; i++) await Promise.resolve()
  expect(b.sent).toEqual([])
  expect(b.timers.pending()).toEqual([])
})

test('a group of more than 100 members gets its aggregate less often: a window of a second per 100 members or part of them, the cluster\'s too', async () => {
  expect(RECEIPT_MEMBERS_PER_SECOND).toBe(100)
  expect(RECEIPT_WINDOW_MAX_MS).toBe(60_000)
  // (a minute at most: limits.groupMembersMax can be raised far beyond 1,000)
  for (const [members, ms] of [[0, 1000], [1, 1000], [100, 1000], [101, 2000], [250, 3000], [1000, 10_000], [5900, 59_000], [6001, 60_000], [100_000, 60_000]] as const) {
    const { agg, timers, sent, asked } = setUp([0], 1000, members)
    await agg.noteRead('g', 'a', 3)
    expect({ members, pending: timers.pending() }).toEqual({ members, pending: [ms] })
    await timers.run()
    expect({ members, asked }).toEqual({ members, asked: [ms] })
    expect(sent).toHaveLength(1)
  }
  // another node holds the window of a group of 250: the rest of it, then the same window asked for again
  const { agg, timers, sent, asked } = setUp([640, 0], 1000, 250)
  await agg.noteRead('g', 'a', 3)
  await timers.run()
  expect(timers.pending()).toEqual([640])
  await timers.run()
  expect(asked).toEqual([3000, 3000])
  expect(sent).toHaveLength(1)
})
