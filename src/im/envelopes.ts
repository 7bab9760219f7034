/**
 * Message envelopes as the wire carries them (topics.md "Message envelope"), serialized once per
 * message: the delivery to members, history pages and list previews all reuse the same bytes
 * while the message is in this cache (bounded by bytes, least recently used first out). A
 * stored message never changes, so an entry never goes stale.
 */
import { LRUCache } from 'lru-cache'
import type { MessageEnvelope } from '../protocol/schemas.js'
import type { StoredMessage } from '../store/types.js'

/** Bytes of serialized envelopes kept per node by default. */
export const ENVELOPE_CACHE_BYTES = 16 * 1024 * 1024
/** What an entry costs beyond its bytes (key, Buffer object, LRU node). */
const ENTRY_OVERHEAD = 200

export function toEnvelope (m: StoredMessage): MessageEnvelope {
  const e: MessageEnvelope = { conv: m.conversationId, seq: m.seq, msgId: m.clientMsgId, from: m.senderId, ts: m.ts, kind: m.kind, body: m.body }
  if (m.replyTo !== null) e.replyTo = m.replyTo
  return e
}

export class EnvelopeCache {
  private readonly cache: LRUCache<string, Buffer>

  constructor (maxBytes = ENVELOPE_CACHE_BYTES) {
    this.cache = new LRUCache({ maxSize: maxBytes, sizeCalculation: (b, key) => b.length + key.length + ENTRY_OVERHEAD })
  }

  /** The message's envelope as JSON bytes. */
  of (m: StoredMessage): Buffer {
    const key = `${m.conversationId}\u0000${m.seq}`
    let bytes = this.cache.get(key)
    if (bytes === undefined) {
      bytes = Buffer.from(JSON.stringify(toEnvelope(m)))
      this.cache.set(key, bytes)
    }
    return bytes
  }

  get size (): number {
    return this.cache.calculatedSize
  }
}
