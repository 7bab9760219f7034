/**
 * A seeded pseudo-random source for the load generators: two runs with the same seed make the same
 * world (accounts shuffled, group sizes) and the same sequence of choices, so that an A/B of two
 * builds compares the same load (with Math.random the soak's groups had 727 members in one run and
 * 892 in the next). Mulberry32: fast, 32-bit state, plenty for picking load; not for anything secret.
 */
let state = 1

/** Restarts the sequence from `seed` (an integer). */
export function seedRandom (seed: number): void {
  state = seed >>> 0
}

/** A number in [0, 1), as Math.random. */
export function random (): number {
  state = (state + 0x6D2B79F5) >>> 0
  let t = state
  t = Math.imul(t ^ (t >>> 15), t | 1)
  t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
  return ((t ^ (t >>> 14)) >>> 0) / 4294967296
}
