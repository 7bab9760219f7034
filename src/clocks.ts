/**
 * The two clocks mqim reads, as types of their own, so that one cannot be passed where the other
 * is meant (a function returning plain numbers is neither; a test's fake clock says which it is).
 *
 * - MonotonicMs (performance.now): for how long something has lasted (a link up, a list's age).
 *   A wall clock stepped forward would make a link that just came back look old.
 * - WallMs (Date.now): when something happened, compared with times stored with messages or
 *   heard from other nodes.
 */
export type MonotonicMs = number & { readonly clock: 'monotonic' }
export type WallMs = number & { readonly clock: 'wall' }

export const monotonicNow = (): MonotonicMs => performance.now() as MonotonicMs
export const wallNow = (): WallMs => Date.now() as WallMs

/** "Not now" on each clock: a link that is down has been up since the future. */
export const MONOTONIC_NEVER = Number.POSITIVE_INFINITY as MonotonicMs
export const WALL_NEVER = Number.POSITIVE_INFINITY as WallMs
