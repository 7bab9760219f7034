/**
 * A Bloom filter of strings, to tell other nodes which users a node has in a fixed number of bytes
 * however many there are (src/broker/users-elsewhere.ts): `has` may say yes for a user never added
 * (about 1 % at the size `sized` picks), never no for one added. A false yes costs a publish routed
 * for nobody, as before there was a list at all.
 *
 * Positions: double hashing of two 32-bit hashes (FNV-1a from two offsets, each finished with
 * MurmurHash3's fmix32) over the string's UTF-16 code units: the same on every node. The two are
 * not correlated enough to matter: false yeses measure what independent hashes give, within noise,
 * on sequential ids at every size (test/unit/bloom.test.ts).
 */

/** The smallest filter sent (1 KiB), and the largest (256 KiB: ~200,000 users at 1 %; beyond, it says yes more often). */
export const BLOOM_BITS_MIN = 1 << 13
export const BLOOM_BITS_MAX = 1 << 21
/** Bits per user `sized` aims for (7 positions each: ~1 % false yes). */
const BITS_PER_ITEM = 10
const K_MAX = 16

function fmix32 (h: number): number {
  h ^= h >>> 16
  h = Math.imul(h, 0x85ebca6b)
  h ^= h >>> 13
  h = Math.imul(h, 0xc2b2ae35)
  h ^= h >>> 16
  return h >>> 0
}

function fnv1a (s: string, offset: number): number {
  let h = offset
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 16777619)
  }
  return fmix32(h)
}

export interface BloomWire { bloom: string, bits: number, k: number }

export class Bloom {
  private readonly mask: number
  private constructor (readonly bits: number, readonly k: number, private readonly bytes: Uint8Array) {
    this.mask = bits - 1
  }

  /** An empty filter for about `n` strings: 10 bits each (a power of two within the bounds), 7 positions. */
  static sized (n: number): Bloom {
    let bits = BLOOM_BITS_MIN
    while (bits < n * BITS_PER_ITEM && bits < BLOOM_BITS_MAX) bits *= 2
    return new Bloom(bits, 7, new Uint8Array(bits >>> 3))
  }

  /** A filter as another node sent it, or null if it is not one (any field out of bounds). */
  static fromWire (m: Record<string, unknown>): Bloom | null {
    const { bloom, bits, k } = m
    if (typeof bits !== 'number' || !Number.isInteger(bits) || bits < BLOOM_BITS_MIN || bits > BLOOM_BITS_MAX || (bits & (bits - 1)) !== 0) return null
    if (typeof k !== 'number' || !Number.isInteger(k) || k < 1 || k > K_MAX) return null
    const bytes = bits >>> 3
    // base64 of `bytes` bytes is exactly this long (padded): anything else is not this filter
    if (typeof bloom !== 'string' || bloom.length !== Math.ceil(bytes / 3) * 4) return null
    const buf = Buffer.from(bloom, 'base64')
    if (buf.length !== bytes) return null
    return new Bloom(bits, k, new Uint8Array(buf.buffer, buf.byteOffset, buf.length))
  }

  toWire (): BloomWire {
    return { bloom: Buffer.from(this.bytes.buffer, this.bytes.byteOffset, this.bytes.length).toString('base64'), bits: this.bits, k: this.k }
  }

  add (s: string): void {
    const h1 = fnv1a(s, 0x811c9dc5)
    const h2 = fnv1a(s, 0x9747b28c) | 1
    for (let i = 0; i < this.k; i++) {
      const p = ((h1 + Math.imul(i, h2)) >>> 0) & this.mask
      this.bytes[p >>> 3] = (this.bytes[p >>> 3] ?? 0) | (1 << (p & 7))
    }
  }

  has (s: string): boolean {
    const h1 = fnv1a(s, 0x811c9dc5)
    const h2 = fnv1a(s, 0x9747b28c) | 1
    for (let i = 0; i < this.k; i++) {
      const p = ((h1 + Math.imul(i, h2)) >>> 0) & this.mask
      if (((this.bytes[p >>> 3] ?? 0) & (1 << (p & 7))) === 0) return false
    }
    return true
  }
}
