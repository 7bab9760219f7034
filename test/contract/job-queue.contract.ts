/**
 * The JobQueue contract (src/im/jobs.ts), run against the in-memory queue (unit) and the Redis
 * queue (integration): bounded adds, leases that hide a claimed job until they lapse, retries
 * due later with their attempts counted, done removing.
 */
import type { JobQueue } from '../../src/im/jobs.js'

export function describeJobQueue (name: string, factory: (max: number) => Promise<{ queue: JobQueue, cleanup?: () => Promise<void> }>): void {
  describe(`JobQueue contract: ${name}`, () => {
    let queue: JobQueue
    let cleanup: (() => Promise<void>) | undefined
    const T = 1_764_532_800_123 // a realistic epoch ms (Redis scripts round numbers past 14 digits)

    beforeEach(async () => {
      const made = await factory(5)
      queue = made.queue
      cleanup = made.cleanup
    })
    afterEach(async () => { await cleanup?.() })

    test('add is bounded: beyond max nothing new is added; an id already queued gets the new data, also at the bound', async () => {
      expect(await queue.add([{ id: 'a', data: '1' }, { id: 'b', data: '2' }, { id: 'a', data: 'again' }], T)).toBe(3)
      expect(await queue.add(Array.from({ length: 6 }, (_, i) => ({ id: `x${i}`, data: String(i) })), T + 5)).toBe(3)
      expect(await queue.size()).toBe(5)
      expect(await queue.add([{ id: 'late', data: '' }], T)).toBe(0)
      expect(await queue.add([{ id: 'b', data: 'latest' }], T + 9)).toBe(1)
      const claimed = await queue.claim(10, T + 10, 1000)
      expect(claimed.find(j => j.id === 'a')).toStrictEqual({ id: 'a', data: 'again', at: T, attempts: 1 })
      // replaced: the data only (first time and attempts stay)
      expect(claimed.find(j => j.id === 'b')).toStrictEqual({ id: 'b', data: 'latest', at: T, attempts: 1 })
      expect(await queue.size()).toBe(5)
    })

    test('done removes the job unless its data was replaced after the claim: then the new data is due at once', async () => {
      await queue.add([{ id: 'p', data: 'old' }], T)
      const [claimed] = await queue.claim(1, T, 60_000)
      if (claimed === undefined) throw new Error('nothing claimed')
      await queue.add([{ id: 'p', data: 'new' }], T + 1)
      await queue.done('p', claimed.data, T + 2)
      expect(await queue.claim(1, T + 2, 60_000)).toStrictEqual([{ id: 'p', data: 'new', at: T, attempts: 2 }])
      await queue.done('p', 'new', T + 3)
      expect(await queue.size()).toBe(0)
    })

    test('a claimed job is leased: no one else gets it until the lease lapses, then it comes again with the attempt counted', async () => {
      await queue.add([{ id: 'j', data: 'payload' }], T)
      expect((await queue.claim(10, T, 1000)).map(j => j.id)).toStrictEqual(['j'])
      expect(await queue.claim(10, T + 999, 1000)).toStrictEqual([])
      const again = await queue.claim(10, T + 1000, 1000)
      expect(again).toStrictEqual([{ id: 'j', data: 'payload', at: T, attempts: 2 }])
    })

    test('claim takes at most max of the due jobs; jobs not due yet wait', async () => {
      await queue.add([{ id: 'a', data: '' }, { id: 'b', data: '' }, { id: 'c', data: '' }], T)
      const first = await queue.claim(2, T, 1000)
      expect(first).toHaveLength(2)
      const second = await queue.claim(2, T, 1000)
      expect(second).toHaveLength(1)
      expect(new Set([...first, ...second].map(j => j.id))).toStrictEqual(new Set(['a', 'b', 'c']))
      expect(await queue.claim(2, T - 1, 1000)).toStrictEqual([])
    })

    test('retry makes a job due at the given time with its attempts (and its data as it is now); done removes it (a retry after done does nothing)', async () => {
      await queue.add([{ id: 'r', data: 'd' }], T)
      const [job] = await queue.claim(1, T, 60_000)
      if (job === undefined) throw new Error('nothing claimed')
      await queue.add([{ id: 'r', data: 'd' }], T + 1)
      await queue.retry(job, T + 500)
      expect(await queue.claim(1, T + 499, 60_000)).toStrictEqual([])
      expect(await queue.claim(1, T + 500, 60_000)).toStrictEqual([{ id: 'r', data: 'd', at: T, attempts: 2 }])
      await queue.done('r', 'd', T + 500)
      expect(await queue.size()).toBe(0)
      await queue.retry(job, T)
      expect(await queue.size()).toBe(0)
      expect(await queue.claim(1, T + 10_000_000, 1000)).toStrictEqual([])
      // room again after done
      expect(await queue.add([{ id: 'n', data: '' }], T)).toBe(1)
    })

    test('data is kept as given (any string)', async () => {
      const data = JSON.stringify({ text: 'héllo "quotes" \\u0000 ✓', n: [1, 2] })
      await queue.add([{ id: 'd', data }], T)
      expect((await queue.claim(1, T, 1000))[0]?.data).toBe(data)
    })
  })
}
