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

test('lruCache: a bound of 0, a negative one, a fraction, NaN or Infinity holds one entry (never unbounded, never a throw)', () => {
  for (const max of [0, -5, 0.5, Number.NaN, Number.POSITIVE_INFINITY]) {
    const c = lruCache<string, number>(max)
    for (let i = 0; i < 100; i++) c.set(`k${i}`, i)
    expect(c.size).toBe(1)
    expect(c.get('k99')).toBe(99)
  }
  const c = lruCache<string, number>(2.9)
  for (let i = 0; i < 100; i++) c.set(`k${i}`, i)
  expect(c.size).toBe(2)
})

test('lruCacheSized(max, maxSize, size): bounded by entries and by size; an entry bigger than the whole is not kept', () => {
  // 2 entries, 8 in all: each counts 4 at least
  const c = lruCacheSized<string, string[]>(2, 8, list => list.length + 1)
  c.set('a', [])
  c.set('b', [])
  c.set('c', []) // a third small entry: the oldest goes (the entry bound)
  expect([...c.keys()].sort()).toEqual(['b', 'c'])
  c.set('d', ['1', '2', '3', '4', '5', '6']) // counts 7: only it fits
  expect([...c.keys()]).toEqual(['d'])
  c.set('e', Array.from({ length: 8 }, (_, i) => String(i))) // counts 9 > 8: not kept, nothing else lost
  expect(c.has('e')).toBe(false)
  expect([...c.keys()]).toEqual(['d'])
  // many entries of any size: never more than 2, never more than 8 in all
  for (let i = 0; i < 500; i++) {
    c.set(`k${i}`, Array.from({ length: i % 5 }, () => 'x'))
    expect(c.size).toBeLessThanOrEqual(2)
    expect(c.calculatedSize).toBeLessThanOrEqual(8)
  }
})

test('lruCacheSized: a size function answering 0, a fraction, a negative number or NaN still counts the entry', () => {
  const c = lruCacheSized<string, number>(3, 3, v => v)
  for (const [k, v] of [['a', 0], ['b', 0.2], ['c', -4], ['d', Number.NaN]] as const) c.set(k, v)
  expect(c.size).toBe(3)
  expect([...c.keys()].sort()).toEqual(['b', 'c', 'd'])
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
  expect(heapAfter(() => new LRUCache<string, number>({ max: 1_000_000 }))).toBeGreaterThan(5 * 15)
  expect(heapAfter(() => lruCache<string, number>(1_000_000))).toBeLessThan(1)
  expect(heapAfter(() => lruCacheSized<string, number[]>(1_000_000, 10_000_000, l => l.length))).toBeLessThan(1)
})
