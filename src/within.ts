/**
 * A bound on how long something may take: `within(p, ms, error)` settles as `p` does, or rejects
 * with `error()` after `ms` (the timer unref'd and cleared either way; `p` itself goes on, and a
 * later rejection of it is handled here).
 */
export async function within<T> (p: Promise<T>, ms: number, error: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(error()), ms)
      timer.unref()
    })])
  } finally {
    clearTimeout(timer)
  }
}
