/**
 * src/lru.ts: caches bounded like lru-cache's `max` (and `max` + `maxSize`), without storage
 * allocated for the bound up front. (What that saves is measured by the soak's heap figures.)
 */
import v8 from 'node:v8'
import { LRUCache } from 'lru-cache'
import { lruCache, lruCacheSized } from '../../src/lru.js'

test('lruCache(max): at most max entries, the least recently used going first, dispose told "evict"', () => {
  const evicted: string[] = []
  const c = lruCache<string, number>(3, { dispose: (_v, k, reason) => { if (reason === 'evict') evicted.push(k) } })
  for (const k of ['a', 'b', 'c']) c.set(k, 1)
  expect(c.get('a')).toBe(1) // a used: b is now the oldest
  c.set('d', 1)
  expect([...c.keys()].sort()).toEqual(['a', 'c', 'd'])
  expect(evicted).toEqual(['b'])
  // overwriting is not an addition
  c.set('a', 2)
  expect(c.size).toBe(3)
  expect(evicted).toEqual(['b'])
  for (let i = 0; i < 1000; i++) c.set(`k${i}`, i)
  expect(c.size).toBe(3)
  expect([...c.keys()].sort()).toEqual(['k997', 'k998', 'k999'])
})

test('lruCache(max) with a ttl: entries expire as with lru-cache\'s own options', async () => {
  const c = lruCache<string, number>(10, { ttl: 50, ttlAutopurge: false })
  c.set('a', 1)
  expect(c.get('a')).toBe(1)
  await new Promise(resolve => setTimeout(resolve, 120))
  expect(c.get('a')).toBeUndefined()
})

test('a bound that is not a positive integer is refused when the cache is made (0 would mean no bound at all)', () => {
  for (const bad of [0, -5, 0.5, 2.9, Number.NaN, Number.POSITIVE_INFINITY]) {
    expect(() => lruCache<string, number>(bad)).toThrow(/cache max must be a positive integer/)
    expect(() => lruCacheSized<string, number[]>(bad, 10, l => l.length)).toThrow(/cache max must be a positive integer/)
    expect(() => lruCacheSized<string, number[]>(10, bad, l => l.length)).toThrow(/cache maxSize must be a positive integer/)
  }
  expect(lruCache<string, number>(1).max).toBe(0) // (bounded by size: lru-cache's own max unused)
})

test('lruCacheSized(max, maxSize, size): bounded by entries and by size, each on its own; an entry bigger than the whole is not kept', () => {
  const evicted: string[] = []
  const c = lruCacheSized<string, string[]>(2, 8, list => list.length + 1, { dispose: (_v, k, reason) => { if (reason === 'evict') evicted.push(k) } })
  c.set('a', [])
  c.set('b', [])
  c.set('c', []) // a third small entry: the oldest goes (the entry bound), told as an eviction
  expect([...c.keys()].sort()).toEqual(['b', 'c'])
  expect(evicted).toEqual(['a'])
  c.set('d', ['1', '2', '3', '4', '5', '6']) // counts 7: 2 + 7 > 8, the oldest (b) goes for room
  expect([...c.keys()].sort()).toEqual(['c', 'd'])
  c.set('e', ['1']) // counts 2: c and d both go for room
  expect([...c.keys()]).toEqual(['e'])
  expect(evicted).toEqual(['a', 'b', 'c', 'd'])
  c.set('f', Array.from({ length: 8 }, (_, i) => String(i))) // counts 9 > 8: not kept
  expect(c.has('f')).toBe(false)
  // many entries of any size: never more than 2, never more than 8 in all
  for (let i = 0; i < 500; i++) {
    c.set(`k${i}`, Array.from({ length: i % 5 }, () => 'x'))
    expect(c.size).toBeLessThanOrEqual(2)
    expect(c.calculatedSize).toBeLessThanOrEqual(8)
  }
})

test('lruCacheSized: many small entries and a few large ones fit as both bounds allow (an entry is not counted above its size)', () => {
  // 95 empty lists and 5 of 100: 95 + 505 = 600 of 1,000, 100 entries of 100
  const c = lruCacheSized<string, number[]>(100, 1000, l => l.length + 1)
  for (let i = 0; i < 95; i++) c.set(`empty${i}`, [])
  for (let i = 0; i < 5; i++) c.set(`big${i}`, Array.from({ length: 100 }, (_, n) => n))
  expect(c.size).toBe(100)
  expect(c.calculatedSize).toBe(600)
})

test('lruCacheSized: a size of 0, a fraction or a negative number counts 1; NaN or Infinity is not kept (no throw)', () => {
  const c = lruCacheSized<string, number>(10, 10, v => v)
  for (const [k, v] of [['a', 0], ['b', 0.2], ['c', -4], ['d', Number.NaN], ['e', Number.POSITIVE_INFINITY]] as const) c.set(k, v)
  expect([...c.keys()].sort()).toEqual(['a', 'b', 'c'])
  expect(c.calculatedSize).toBe(3)
})

test('an empty cache takes no storage for its bound (lru-cache given max: 16 MB of heap for a million entries)', () => {
  // arrays that large live in V8's large-object space, where little else comes and goes
  const large = (): number => v8.getHeapSpaceStatistics().find(s => s.space_name === 'large_object_space')?.space_used_size ?? 0
  const heapAfter = (make: () => unknown): number => {
    const before = large()
    const kept = Array.from({ length: 5 }, make)
    const grown = large() - before
    expect(kept).toHaveLength(5)
    return grown / 1e6
  }
  // the contrast, so that the measure is seen to work: lru-cache's own max preallocates
  expect(heapAfter(() => new LRUCache<string, number>({ max: 1_000_000 }))).toBeGreaterThan(40)
  expect(heapAfter(() => lruCache<string, number>(1_000_000))).toBeLessThan(1)
  expect(heapAfter(() => lruCacheSized<string, number[]>(1_000_000, 10_000_000, l => l.length))).toBeLessThan(1)
})
