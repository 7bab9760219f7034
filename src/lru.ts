/**
 * Bounded caches whose memory follows their entries.
 *
 * lru-cache given `max` allocates its storage for `max` entries at once: two arrays of `max` slots
 * (on the heap) and two typed arrays. A cache of 200,000 entries holds 3.2 MB of heap from the
 * start, used or not, and every major GC marks it. The server's bounds are set for production
 * (hundreds of thousands of conversations and users), so an ordinary node carried ~75 MB of empty
 * slots in a 160 MB heap (the soak's heap snapshot), and each major GC, every 10-30 s under load,
 * spent most of its marking on them: the latency spikes of the soak's worst 10 s windows.
 *
 * Bounded by size instead (each entry counting 1, or more), lru-cache keeps the same bound and
 * grows its storage as entries come.
 */
import { LRUCache } from 'lru-cache'

type CountOptions<K extends {}, V extends {}> = Omit<LRUCache.OptionsBase<K, V, unknown>, 'max' | 'maxSize' | 'maxEntrySize' | 'sizeCalculation'> & { ttl?: number }

/** An LRU cache of at most `max` entries (at least 1), its storage growing with them. */
export function lruCache<K extends {}, V extends {}> (max: number, options: CountOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: bound(max), sizeCalculation: countOne })
}

/**
 * An LRU cache bounded twice: at most `max` entries and `maxSize` in all by `size` (a value's own
 * measure, at least 1), its storage growing with them. Each entry counts `maxSize / max` at least,
 * so that the entries cannot outnumber `max`.
 */
export function lruCacheSized<K extends {}, V extends {}> (max: number, maxSize: number, size: (value: V, key: K) => number, options: CountOptions<K, V> = {}): LRUCache<K, V> {
  const floor = Math.ceil(bound(maxSize) / bound(max))
  return new LRUCache<K, V>({
    ...options,
    maxSize: bound(maxSize),
    sizeCalculation: (value, key) => {
      const n = Math.ceil(size(value, key))
      return n >= floor ? n : floor
    }
  })
}

function countOne (): number { return 1 }

/** A bound as lru-cache takes it: a whole number, at least 1 (0 would mean no bound at all). */
function bound (n: number): number {
  return Number.isFinite(n) && n >= 1 ? Math.floor(n) : 1
}
