/**
 * Message envelopes as the wire carries them (topics.md "Message envelope"), serialized once per
 * message: the delivery to members, history pages and list previews all reuse the same bytes
 * while the message is in this cache (bounded by bytes). A changed message (edit, delete, react)
 * has a new version, and the version is part of the key, so an entry never goes stale.
 *
 * Two generations, each holding its entries' bytes in slabs of its own: when the newer one is
 * full, the older one is dropped whole and a new one started; an entry found in the older one is
 * copied into the newer one. Every operation is O(1), and there is one ArrayBuffer per slab
 * (64 KiB), not per message: the garbage collector tracks each ArrayBuffer on its own, and one per
 * delivered message was a measurable part of its work.
 */
import type { MessageEnvelope } from '../protocol/schemas.js'
import type { StoredMessage } from '../store/types.js'
import { reactionsOf } from '../store/changes.js'

/** Bytes of serialized envelopes kept per node by default. */
export const ENVELOPE_CACHE_BYTES = 16 * 1024 * 1024
/** Slab size (smaller for a small cache: at most an eighth of it). */
const SLAB_BYTES = 64 * 1024
/** What an entry costs beyond its bytes (key, Buffer object, map entry). */
const ENTRY_OVERHEAD = 200

/**
 * One generation: its entries and the slabs their bytes live in. A Buffer.from(string) would take
 * a small string's bytes from Node's shared 8 KiB pool, and a cached slice would keep the whole
 * pool slab (and its unrelated short-lived neighbours) alive: the cache's byte bound would then
 * say nothing about its memory. Here every byte counted is a byte held, slabs included whole.
 */
class Generation {
  readonly entries = new Map<string, Buffer>()
  /** slab bytes, entries too large for a slab, and each entry's overhead */
  bytes = 0
  private slab: Buffer | null = null
  private used = 0

  constructor (private readonly slabBytes: number) {}

  /** What holding `n` more bytes under a key of `keyLength` would add to `bytes`. */
  cost (n: number, keyLength: number): number {
    const own = n > this.slabBytes / 4
    const fits = this.slab !== null && this.used + n <= this.slab.length
    return (own ? n : fits ? 0 : this.slabBytes) + keyLength + ENTRY_OVERHEAD
  }

  add (key: string, n: number, fill: (bytes: Buffer) => void): Buffer {
    this.bytes += this.cost(n, key.length)
    let bytes: Buffer
    if (n > this.slabBytes / 4) {
      bytes = Buffer.allocUnsafeSlow(n)
    } else {
      if (this.slab === null || this.used + n > this.slab.length) {
        this.slab = Buffer.allocUnsafeSlow(this.slabBytes)
        this.used = 0
      }
      bytes = this.slab.subarray(this.used, this.used + n)
      this.used += n
    }
    fill(bytes)
    this.entries.set(key, bytes)
    return bytes
  }
}

/** A message as it is now (with what changes did to it), or a change as it was made. */
export function toEnvelope (m: StoredMessage): MessageEnvelope {
  const e: MessageEnvelope = { conv: m.conversationId, seq: m.seq, msgId: m.clientMsgId, from: m.senderId, ts: m.ts, kind: m.kind, body: m.body }
  if (m.replyTo !== null) e.replyTo = m.replyTo
  if (m.mentions !== undefined) e.mentions = m.mentions
  if (m.target !== undefined) e.target = m.target
  const changes = m.changes
  if (changes !== undefined) {
    if (changes.edited !== undefined) {
      e.body = changes.edited.body
      e.edited = { seq: changes.edited.seq, ts: changes.edited.ts }
    }
    if (changes.deleted !== undefined) {
      e.body = null
      delete e.edited
      delete e.replyTo
      delete e.mentions
      e.deleted = { seq: changes.deleted.seq, ts: changes.deleted.ts, by: changes.deleted.by }
    } else {
      const reactions = reactionsOf(changes)
      if (reactions !== undefined) e.reactions = reactions
    }
  }
  return e
}

export class EnvelopeCache {
  private readonly half: number
  private readonly slabBytes: number
  private current: Generation
  private older: Generation

  constructor (maxBytes = ENVELOPE_CACHE_BYTES) {
    this.half = maxBytes / 2
    this.slabBytes = Math.max(1024, Math.min(SLAB_BYTES, Math.floor(maxBytes / 8)))
    this.current = new Generation(this.slabBytes)
    this.older = new Generation(this.slabBytes)
  }

  /** The message's envelope as JSON bytes. */
  of (m: StoredMessage): Buffer {
    // flat (join), not a tree of string objects kept with the entry (see Sequencer's keyOf)
    const key = [m.conversationId, m.seq, m.changes?.version ?? 0].join('\u0000')
    const hit = this.current.entries.get(key)
    if (hit !== undefined) return hit
    const aged = this.older.entries.get(key)
    if (aged !== undefined) return this.keep(key, aged.length, bytes => aged.copy(bytes))
    const text = JSON.stringify(toEnvelope(m))
    return this.keep(key, Buffer.byteLength(text), bytes => bytes.write(text))
  }

  private keep (key: string, n: number, fill: (bytes: Buffer) => void): Buffer {
    if (this.current.bytes + this.current.cost(n, key.length) > this.half) {
      this.older = this.current
      this.current = new Generation(this.slabBytes)
      // larger than a generation may hold (not with the default bound): not kept
      if (this.current.cost(n, key.length) > this.half) {
        const bytes = Buffer.allocUnsafeSlow(n)
        fill(bytes)
        return bytes
      }
    }
    return this.current.add(key, n, fill)
  }

  /** Bytes held (slabs whole), at most the bound given to the constructor. */
  get size (): number {
    return this.current.bytes + this.older.bytes
  }
}
