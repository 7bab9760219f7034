/**
 * In-process MessageStore: the embedded default (no database) and the store of the tests.
 * Nothing survives a restart, and nothing is ever deleted: the server keeps every message of its
 * lifetime here.
 *
 * It mirrors the MongoDB adapter's semantics exactly (see the shared contract suite in
 * test/contract/message-store.contract.ts): two unique keys per message, (conversation, sender,
 * clientMsgId) and (conversation, seq), and an ordered batch insert that stops at the first
 * conflict. Messages are copied on the way in and on the way out, so callers can never mutate
 * what is stored.
 *
 * Layout: as few JS objects per message as possible, because the garbage collector copies every
 * retained object on its way to the old generation and marks it again in every major GC, so its
 * cost grows with what is retained. Kept as a JS object with its strings, in arrays and Maps, a
 * message with a 100-byte text took ~350 bytes of heap (a million messages: 350 MB the collector
 * walks). Now it takes ~85 bytes of heap and ~170 bytes outside it; insert costs ~0.2 µs more,
 * which the smaller GC work repays once some hundreds of thousands of messages are kept:
 *   - Each message is serialized once and its UTF-8 bytes appended to large shared chunks
 *     (Buffers, outside the JS heap and never traced); a large message gets a chunk of its own.
 *     A record is the JSON header [clientMsgId, senderId, kind, replyTo, bodyIsJson], a '\n'
 *     (JSON.stringify never emits a raw newline, so the first one ends the header), then the
 *     body: the raw text of a string body (the common case: no escaping on the hot path), or
 *     the JSON of any other body, or of a string with lone surrogates (UTF-8 cannot hold them;
 *     JSON.stringify escapes them).
 *   - Per conversation, numbers only, in typed arrays sorted by seq: seq, ts, and where the
 *     record is (chunk, offset, length). Reads binary-search the seqs.
 *   - The uniqueness index: per conversation, a Map per sender from clientMsgId to seq. That is
 *     one small string per message, the caller's clientMsgId itself (no key string is built).
 * Reads decode records into fresh StoredMessage objects, so bodies are deep-copied in effect;
 * lastSeq decodes nothing. Bodies are JSON values, which serialization round-trips exactly.
 */
import { isChangeKind, lastRealOf, type ConversationHead, type InsertBatchResult, type MessageChanges, type MessageStore, type MessageKind, type RangeQuery, type StoredMessage } from './types.js'
import { applyChangeTo } from './changes.js'

/** Size of a shared chunk. */
const CHUNK_BYTES = 1024 * 1024
/**
 * Records larger than this get a chunk of their own; it bounds the bytes left unused at the end
 * of a shared chunk when the next record does not fit.
 */
const LARGE_RECORD = 64 * 1024
/** Initial capacity (messages) of a conversation's arrays; they double when full. */
const INITIAL_CAPACITY = 8
const NEWLINE = 0x0a

/**
 * The record header: [clientMsgId, senderId, kind, replyTo, bodyIsJson (0 or 1), count (null:
 * none given), then for changes: target, lastReal; for messages with mentions: null, null, mentions].
 */
type Header = [string, string, MessageKind, number | null, number, (number | null)?, (number | null)?, (number | null)?, string[]?]

/** String.prototype.isWellFormed (Node 20) is not in the ES2022 lib this project compiles with. */
function isWellFormed (text: string): boolean {
  return (text as string & { isWellFormed: () => boolean }).isWellFormed()
}

/** `array[index]` for an index the caller keeps in range: past the end a typed array reads undefined. */
function valueAt (array: Float64Array | Uint32Array, index: number): number {
  const value = array[index]
  if (value === undefined) throw new RangeError(`index ${index} is past the end of the array (${array.length})`)
  return value
}

/** Writes a record at `offset` (the caller made sure it fits); returns its length in bytes. */
function writeRecord (chunk: Buffer, offset: number, header: string, text: string): number {
  let end = offset + chunk.write(header, offset)
  chunk[end++] = NEWLINE
  end += chunk.write(text, end)
  return end - offset
}

class Conversation {
  /** Number of stored messages. */
  count = 0
  /** seqs[0..count) ascending (seqs are unique). Appends are the common case. */
  seqs = new Float64Array(INITIAL_CAPACITY)
  /** ts of the message at the same index. */
  timestamps = new Float64Array(INITIAL_CAPACITY)
  /** Where the record of the message at index i is: chunk index, byte offset, byte length at [3i, 3i + 3). */
  records = new Uint32Array(INITIAL_CAPACITY * 3)
  /** senderId -> clientMsgId -> seq. */
  readonly bySender = new Map<string, Map<string, number>>()
  /** seq -> what changes did to that message (only messages that were changed). */
  readonly changes = new Map<number, MessageChanges>()

  constructor (readonly id: string) {}

  /**
   * Index of the first message whose seq is >= `seq` (inclusive) or > `seq` (exclusive);
   * count if there is none.
   */
  bound (seq: number, inclusive: boolean): number {
    const seqs = this.seqs
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      const at = valueAt(seqs, mid)
      const before = inclusive ? at < seq : at <= seq
      if (before) lo = mid + 1
      else hi = mid
    }
    return lo
  }

  /** Inserts a message at index `at` (the caller keeps the seqs sorted). */
  insert (at: number, seq: number, ts: number, chunk: number, offset: number, length: number): void {
    const count = this.count
    if (count === this.seqs.length) this.grow()
    const { seqs, timestamps, records } = this
    if (at < count) {
      seqs.copyWithin(at + 1, at, count)
      timestamps.copyWithin(at + 1, at, count)
      records.copyWithin((at + 1) * 3, at * 3, count * 3)
    }
    seqs[at] = seq
    timestamps[at] = ts
    records[at * 3] = chunk
    records[at * 3 + 1] = offset
    records[at * 3 + 2] = length
    this.count = count + 1
  }

  private grow (): void {
    const seqs = new Float64Array(this.seqs.length * 2)
    seqs.set(this.seqs)
    this.seqs = seqs
    const timestamps = new Float64Array(this.timestamps.length * 2)
    timestamps.set(this.timestamps)
    this.timestamps = timestamps
    const records = new Uint32Array(this.records.length * 2)
    records.set(this.records)
    this.records = records
  }
}

export class MemoryMessageStore implements MessageStore {
  private readonly conversations = new Map<string, Conversation>()
  /** Records, appended to the last shared chunk (or to a chunk of their own). */
  private readonly chunks: Buffer[] = []
  /** Index in `chunks` of the shared chunk being filled, -1 before the first. */
  private current = -1
  /** Bytes used in the current shared chunk. */
  private used = CHUNK_BYTES

  async init (): Promise<void> {}

  async close (): Promise<void> {}

  async insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult> {
    let conversation: Conversation | undefined
    for (const [i, message] of messages.entries()) {
      if (conversation === undefined || conversation.id !== message.conversationId) {
        conversation = this.conversation(message.conversationId)
      }
      let byClientMsgId = conversation.bySender.get(message.senderId)
      // When both keys collide (a retried message), report clientMsgId: that is the conflict
      // the caller can resolve by looking the message up.
      if (byClientMsgId?.has(message.clientMsgId) === true) {
        return { inserted: i, conflict: { kind: 'clientMsgId' } }
      }
      const seq = message.seq
      const count = conversation.count
      let at = count
      if (count > 0 && seq <= valueAt(conversation.seqs, count - 1)) {
        at = conversation.bound(seq, true) // < count
        if (conversation.seqs[at] === seq) return { inserted: i, conflict: { kind: 'seq' } }
      }
      // Serialize (which may throw) before anything of this message is stored.
      const body = message.body
      let text: string
      let bodyIsJson = 0
      if (typeof body === 'string' && isWellFormed(body)) {
        text = body
      } else {
        const json = JSON.stringify(body) as string | undefined
        if (json === undefined) throw new TypeError(`message body is not a JSON value: ${message.conversationId}/${message.senderId}/${message.clientMsgId}`)
        text = json
        bodyIsJson = 1
      }
      const fields: Header = [message.clientMsgId, message.senderId, message.kind, message.replyTo, bodyIsJson, message.count ?? null]
      if (isChangeKind(message.kind)) fields.push(message.target ?? 0, message.lastReal ?? 0)
      else if (message.mentions !== undefined) fields.push(null, null, message.mentions)
      const header = JSON.stringify(fields)
      this.append(header, text, conversation, at, seq, message.ts)
      if (byClientMsgId === undefined) {
        byClientMsgId = new Map()
        conversation.bySender.set(message.senderId, byClientMsgId)
      }
      byClientMsgId.set(message.clientMsgId, seq)
    }
    return { inserted: messages.length }
  }

  async findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    const conversation = this.conversations.get(conversationId)
    const seq = conversation?.bySender.get(senderId)?.get(clientMsgId)
    if (conversation === undefined || seq === undefined) return null
    return this.decode(conversation, conversation.bound(seq, true))
  }

  async lastSeq (conversationId: string): Promise<number> {
    const conversation = this.conversations.get(conversationId)
    return conversation === undefined || conversation.count === 0 ? 0 : valueAt(conversation.seqs, conversation.count - 1)
  }

  async latest (conversationId: string): Promise<StoredMessage | null> {
    const conversation = this.conversations.get(conversationId)
    return conversation === undefined || conversation.count === 0 ? null : this.decode(conversation, conversation.count - 1)
  }

  async latestMany (conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    const result = new Map<string, ConversationHead>()
    for (const conversationId of conversationIds) {
      const conversation = this.conversations.get(conversationId)
      if (conversation === undefined || conversation.count === 0 || result.has(conversationId)) continue
      const latest = this.decode(conversation, conversation.count - 1)
      const real = lastRealOf(latest)
      const preview = real === latest.seq ? latest : this.at(conversation, real)
      result.set(conversationId, { latest, preview })
    }
    return result
  }

  async applyChange (change: StoredMessage): Promise<StoredMessage | null> {
    const conversation = this.conversations.get(change.conversationId)
    const target = change.target
    if (conversation === undefined || target === undefined) return null
    const index = conversation.bound(target, true)
    if (index >= conversation.count || conversation.seqs[index] !== target) return null
    conversation.changes.set(target, applyChangeTo(conversation.changes.get(target), change))
    return this.decode(conversation, index)
  }

  async getMany (keys: ReadonlyArray<{ conversationId: string, seq: number }>): Promise<StoredMessage[]> {
    const out: StoredMessage[] = []
    for (const { conversationId, seq } of keys) {
      const conversation = this.conversations.get(conversationId)
      const found = conversation === undefined ? null : this.at(conversation, seq)
      if (found !== null) out.push(found)
    }
    return out
  }

  /** One process holds everything: nothing is cached elsewhere. */
  forget (_keys: ReadonlyArray<{ conversationId: string, seq: number }>): void {}

  /** The message at `seq`, or null. */
  private at (conversation: Conversation, seq: number): StoredMessage | null {
    if (seq < 1) return null
    const index = conversation.bound(seq, true)
    return index < conversation.count && conversation.seqs[index] === seq ? this.decode(conversation, index) : null
  }

  async range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    const conversation = this.conversations.get(conversationId)
    if (conversation === undefined || query.limit <= 0 || query.fromSeq > query.toSeq) return []
    const start = conversation.bound(query.fromSeq, true)
    const end = conversation.bound(query.toSeq, false)
    const count = Math.min(end - start, query.limit)
    if (count <= 0) return []
    const first = query.direction === 'forward' ? start : end - count
    const out = new Array<StoredMessage>(count)
    for (let i = 0; i < count; i++) out[i] = this.decode(conversation, first + i)
    return out
  }

  private conversation (conversationId: string): Conversation {
    let conversation = this.conversations.get(conversationId)
    if (conversation === undefined) {
      conversation = new Conversation(conversationId)
      this.conversations.set(conversationId, conversation)
    }
    return conversation
  }

  /**
   * Appends the record `header` '\n' `text` (as UTF-8) to a chunk and indexes it in `conversation`
   * at index `at`.
   */
  private append (header: string, text: string, conversation: Conversation, at: number, seq: number, ts: number): void {
    // A UTF-16 code unit takes at most 3 UTF-8 bytes: measure only when that bound does not fit.
    if ((header.length + 1 + text.length) * 3 > CHUNK_BYTES - this.used) {
      const bytes = Buffer.byteLength(header) + 1 + Buffer.byteLength(text)
      if (bytes > LARGE_RECORD) {
        const own = Buffer.allocUnsafeSlow(bytes)
        this.chunks.push(own)
        conversation.insert(at, seq, ts, this.chunks.length - 1, 0, writeRecord(own, 0, header, text))
        return
      }
      if (bytes > CHUNK_BYTES - this.used) {
        this.chunks.push(Buffer.allocUnsafeSlow(CHUNK_BYTES))
        this.current = this.chunks.length - 1
        this.used = 0
      }
    }
    const offset = this.used
    const length = writeRecord(this.chunkAt(this.current), offset, header, text)
    this.used = offset + length
    conversation.insert(at, seq, ts, this.current, offset, length)
  }

  private chunkAt (index: number): Buffer {
    const chunk = this.chunks[index]
    if (chunk === undefined) throw new RangeError(`no chunk ${index} (${this.chunks.length} chunks)`)
    return chunk
  }

  private decode (conversation: Conversation, index: number): StoredMessage {
    const records = conversation.records
    const chunk = this.chunkAt(valueAt(records, index * 3))
    const start = valueAt(records, index * 3 + 1)
    const end = start + valueAt(records, index * 3 + 2)
    const newline = chunk.indexOf(NEWLINE, start)
    const [clientMsgId, senderId, kind, replyTo, bodyIsJson, count, target, lastReal, mentions] = JSON.parse(chunk.toString('utf8', start, newline)) as Header
    const text = chunk.toString('utf8', newline + 1, end)
    const seq = valueAt(conversation.seqs, index)
    const message: StoredMessage = {
      conversationId: conversation.id,
      seq,
      clientMsgId,
      senderId,
      ts: valueAt(conversation.timestamps, index),
      kind,
      body: bodyIsJson === 1 ? JSON.parse(text) : text,
      replyTo
    }
    if (count !== undefined && count !== null) message.count = count
    if (target !== undefined && target !== null) message.target = target
    if (lastReal !== undefined && lastReal !== null) message.lastReal = lastReal
    if (mentions !== undefined) message.mentions = mentions
    const changes = conversation.changes.get(seq)
    // a copy: callers can never mutate what is stored
    if (changes !== undefined) message.changes = structuredClone(changes)
    return message
  }
}
