/** Byte budgets of paged replies (limits.pageBytes), so that no reply outgrows a connection's outbound bound. */

/**
 * How many of the serialized items, from the first, fit in `budget` bytes of a JSON array; at
 * least one, so that a client can always make progress.
 */
export function countWithin (items: readonly Buffer[], budget: number): number {
  let bytes = 0
  let n = 0
  for (const item of items) {
    bytes += item.length + 1
    if (n > 0 && bytes > budget) break
    n++
  }
  return n
}
