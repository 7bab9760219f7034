/** A bounded number of async calls at a time (store lookups that the store cannot batch). */

/**
 * Runs `work` on every item, at most `limit` at a time; stops starting new items after the
 * first failure, which it rethrows.
 */
export async function forEachLimited<T> (items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = items.values() // shared by the workers: each item is taken by one of them
  let failed = false
  const worker = async (): Promise<void> => {
    for (const item of queue) {
      if (failed) return
      try {
        await work(item)
      } catch (err) {
        failed = true
        throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}
