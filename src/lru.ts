/**
 * Bounded caches whose memory follows their entries.
 *
 * lru-cache given `max` allocates its storage for `max` entries at once: two arrays of `max` slots
 * (on the heap) and two typed arrays. A cache of 200,000 entries holds 3.2 MB of heap from the
 * start, used or not, and every major GC marks it. The server's bounds are set for production
 * (hundreds of thousands of conversations and users), so an ordinary node carried ~75 MB of empty
 * slots in a 160 MB heap (the soak's heap snapshot), and each major GC, every 10-30 s under load,
 * spent much of its marking on them: the soak's 10 s windows with a major GC had a send p99 half as
 * high again as the others.
 *
 * Bounded by size instead (each entry counting 1, or its own measure), lru-cache keeps the same
 * bound and grows its storage as entries come. The trade: its index arrays are then plain arrays,
 * so a cache filled to its bound takes ~20 bytes more per entry than a preallocated one (measured:
 * 100,000 entries of a 20-character key and a small object, 169 bytes each with `max`, 188 by
 * size); the bounds are unchanged.
 */
import { LRUCache } from 'lru-cache'

type CountOptions<K extends {}, V extends {}> = Omit<LRUCache.OptionsBase<K, V, unknown>, 'max' | 'maxSize' | 'maxEntrySize' | 'sizeCalculation'> & { ttl?: number }

/** An LRU cache of at most `max` entries (a positive integer), its storage growing with them. */
export function lruCache<K extends {}, V extends {}> (max: number, options: CountOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: bound('max', max), sizeCalculation: countOne })
}

/**
 * An LRU cache bounded twice: at most `max` entries, and `maxSize` in all by `size` (a value's own
 * measure; at least 1 is counted, and an entry measured above `maxSize` or not at all is not
 * kept), its storage growing with them.
 */
export function lruCacheSized<K extends {}, V extends {}> (max: number, maxSize: number, size: (value: V, key: K) => number, options: CountOptions<K, V> = {}): LRUCache<K, V> {
  const total = bound('maxSize', maxSize)
  return new EntryBounded<K, V>(bound('max', max), {
    ...options,
    maxSize: total,
    sizeCalculation: (value, key) => {
      const n = Math.ceil(size(value, key))
      // more than the whole, NaN or Infinity: not kept (lru-cache would throw for the last two)
      if (!(n <= total)) return total + 1
      return n >= 1 ? n : 1
    }
  })
}

/** lru-cache bounded by size, and by entries as well: the least recently used go past `maxEntries`. */
class EntryBounded<K extends {}, V extends {}> extends LRUCache<K, V> {
  constructor (private readonly maxEntries: number, options: LRUCache.Options<K, V, unknown>) {
    super(options)
  }

  override set (key: K, value: V | undefined, options?: LRUCache.SetOptions<K, V, unknown>): this {
    super.set(key, value, options)
    while (this.size > this.maxEntries) this.pop()
    return this
  }
}

function countOne (): number { return 1 }

/** A bound as lru-cache takes one: a positive whole number (0 would mean no bound at all). */
function bound (name: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new TypeError(`cache ${name} must be a positive integer, not ${String(n)}`)
  return n
}
