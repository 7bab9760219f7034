/**
 * Message envelopes as the wire carries them (topics.md "Message envelope"), serialized once per
 * message: the delivery to members, history pages and list previews all reuse the same bytes
 * while the message is in this cache (bounded by bytes, least recently used first out). A
 * changed message (edit, delete, react) has a new version, and the version is part of the key,
 * so an entry never goes stale.
 */
import { LRUCache } from 'lru-cache'
import type { MessageEnvelope } from '../protocol/schemas.js'
import type { StoredMessage } from '../store/types.js'
import { reactionsOf } from '../store/changes.js'

/** Bytes of serialized envelopes kept per node by default. */
export const ENVELOPE_CACHE_BYTES = 16 * 1024 * 1024
/** What an entry costs beyond its bytes (key, Buffer object, its own ArrayBuffer, LRU node). */
const ENTRY_OVERHEAD = 300

/**
 * The JSON as bytes in a buffer of its own. Buffer.from(string) takes a small string's bytes from
 * a shared 8 KiB pool slab, and a cached slice keeps the whole slab alive (measured: ~5 KB of
 * memory held per cached envelope of ~250 bytes, so the cache's byte bound said nothing about its
 * memory); a buffer of its own is freed with its entry.
 */
function ownBytes (text: string): Buffer {
  const bytes = Buffer.allocUnsafeSlow(Buffer.byteLength(text))
  bytes.write(text)
  return bytes
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
  private readonly cache: LRUCache<string, Buffer>

  constructor (maxBytes = ENVELOPE_CACHE_BYTES) {
    this.cache = new LRUCache({ maxSize: maxBytes, sizeCalculation: (b, key) => b.length + key.length + ENTRY_OVERHEAD })
  }

  /** The message's envelope as JSON bytes. */
  of (m: StoredMessage): Buffer {
    const key = `${m.conversationId}\u0000${m.seq}\u0000${m.changes?.version ?? 0}`
    let bytes = this.cache.get(key)
    if (bytes === undefined) {
      bytes = ownBytes(JSON.stringify(toEnvelope(m)))
      this.cache.set(key, bytes)
    }
    return bytes
  }

  get size (): number {
    return this.cache.calculatedSize
  }
}
