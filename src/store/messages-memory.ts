/**
 * In-process MessageStore for tests and single-process development. Nothing survives a restart.
 *
 * It mirrors the MongoDB adapter's semantics exactly (see the shared contract suite in
 * test/contract/message-store.contract.ts): two unique keys per message, (conversation, sender,
 * clientMsgId) and (conversation, seq), and an ordered batch insert that stops at the first
 * conflict. Messages are copied on the way in and on the way out, so callers can never mutate
 * what is stored.
 */
import type { InsertBatchResult, MessageStore, RangeQuery, StoredMessage } from './types.js'

interface Conversation {
  /** Stored messages sorted by seq ascending (seqs are unique). Appends are the common case. */
  bySeq: StoredMessage[]
  /** Keyed by `${senderId}/${clientMsgId}` (ids never contain '/'). */
  byClientMsgId: Map<string, StoredMessage>
}

function senderKey (senderId: string, clientMsgId: string): string {
  return `${senderId}/${clientMsgId}`
}

function copy (message: StoredMessage): StoredMessage {
  // only object bodies can be shared mutable state; a shallow copy is enough for the rest (hot path)
  const m = message
  const body = typeof m.body !== 'object' || m.body === null ? m.body : structuredClone(m.body)
  return { conversationId: m.conversationId, seq: m.seq, clientMsgId: m.clientMsgId, senderId: m.senderId, ts: m.ts, kind: m.kind, body, replyTo: m.replyTo }
}

/**
 * Index of the first message whose seq is >= `seq` (inclusive) or > `seq` (exclusive);
 * messages.length if there is none.
 */
function bound (messages: StoredMessage[], seq: number, inclusive: boolean): number {
  let lo = 0
  let hi = messages.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    const before = inclusive ? messages[mid].seq < seq : messages[mid].seq <= seq
    if (before) lo = mid + 1
    else hi = mid
  }
  return lo
}

export class MemoryMessageStore implements MessageStore {
  private readonly conversations = new Map<string, Conversation>()

  async init (): Promise<void> {}

  async close (): Promise<void> {}

  async insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult> {
    for (let i = 0; i < messages.length; i++) {
      const message = messages[i]
      const conversation = this.conversation(message.conversationId)
      const key = senderKey(message.senderId, message.clientMsgId)
      // When both keys collide (a retried message), report clientMsgId: that is the conflict
      // the caller can resolve by looking the message up.
      if (conversation.byClientMsgId.has(key)) {
        return { inserted: i, conflict: { kind: 'clientMsgId' } }
      }
      const at = bound(conversation.bySeq, message.seq, true)
      if (at < conversation.bySeq.length && conversation.bySeq[at].seq === message.seq) {
        return { inserted: i, conflict: { kind: 'seq' } }
      }
      const stored = copy(message)
      conversation.bySeq.splice(at, 0, stored)
      conversation.byClientMsgId.set(key, stored)
    }
    return { inserted: messages.length }
  }

  async findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    const found = this.conversations.get(conversationId)?.byClientMsgId.get(senderKey(senderId, clientMsgId))
    return found === undefined ? null : copy(found)
  }

  async lastSeq (conversationId: string): Promise<number> {
    return this.last(conversationId)?.seq ?? 0
  }

  async latest (conversationId: string): Promise<StoredMessage | null> {
    const last = this.last(conversationId)
    return last === undefined ? null : copy(last)
  }

  async range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    const messages = this.conversations.get(conversationId)?.bySeq
    if (messages === undefined || query.limit <= 0 || query.fromSeq > query.toSeq) return []
    const start = bound(messages, query.fromSeq, true)
    const end = bound(messages, query.toSeq, false)
    const count = Math.min(end - start, query.limit)
    const slice = query.direction === 'forward'
      ? messages.slice(start, start + count)
      : messages.slice(end - count, end)
    return slice.map(copy)
  }

  private conversation (conversationId: string): Conversation {
    let conversation = this.conversations.get(conversationId)
    if (conversation === undefined) {
      conversation = { bySeq: [], byClientMsgId: new Map() }
      this.conversations.set(conversationId, conversation)
    }
    return conversation
  }

  private last (conversationId: string): StoredMessage | undefined {
    const messages = this.conversations.get(conversationId)?.bySeq
    return messages === undefined ? undefined : messages[messages.length - 1]
  }
}
