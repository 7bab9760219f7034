import { random, seedRandom } from '../../scripts/lib/random.js'

describe('the load generators\' seeded random', () => {
  test('one seed, one sequence; another seed, another; every value in [0, 1)', () => {
    const draw = (seed: number): number[] => { seedRandom(seed); return Array.from({ length: 1000 }, () => random()) }
    const a = draw(1)
    expect(draw(1)).toEqual(a)
    const b = draw(2)
    expect(b).not.toEqual(a)
    for (const v of [...a, ...b]) expect(v >= 0 && v < 1).toBe(true)
    // spread over the range: each tenth gets some of a thousand draws
    const tenths = new Set(a.map(v => Math.floor(v * 10)))
    expect(tenths.size).toBe(10)
  })
})
