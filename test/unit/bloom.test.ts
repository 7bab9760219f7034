/**
 * The Bloom filter of users a node sends the others (src/broker/bloom.ts). Its two hashes are FNV-1a
 * from two offsets, each finished with fmix32: if they were correlated, positions would cluster and
 * false yeses would exceed what a filter of that size and k gives with independent hashes. Measured
 * on ids as mqim's are made (sequential, sharing long prefixes), at the sizes `sized` picks.
 */
import { Bloom } from '../../src/broker/bloom.js'

const cases: Array<[string, number, (i: number) => string]> = [
  ['2,000 sequential ids (the smallest filter sent as a filter)', 2000, i => `u${i}`],
  ['20,000 ids with a shared prefix', 20_000, i => `user.${i}`],
  ['5,000 bot ids in base 36', 5000, i => `bot:${i.toString(36)}`],
  ['200,000 ids (the largest filter)', 200_000, i => `u${i}`]
]

test.each(cases)('%s: false yeses as independent hashes would give (within 1.3x), and never a no for one added', (_name, n, id) => {
  const bloom = Bloom.sized(n)
  for (let i = 0; i < n; i++) bloom.add(id(i))
  for (let i = 0; i < n; i += 97) expect(bloom.has(id(i))).toBe(true)
  const trials = 100_000
  let yes = 0
  for (let i = n; i < n + trials; i++) if (bloom.has(id(i))) yes++
  const expected = Math.pow(1 - Math.exp(-bloom.k * n / bloom.bits), bloom.k)
  // (binomial noise at 100,000 trials: a few percent of the expected count at these rates)
  expect(yes / trials).toBeLessThan(expected * 1.3)
  // and the filter is sized for about 1 % at most
  expect(yes / trials).toBeLessThan(0.01)
  // the same filter through the wire
  const again = Bloom.fromWire(bloom.toWire() as unknown as Record<string, unknown>)
  expect(again?.has(id(0))).toBe(true)
})
