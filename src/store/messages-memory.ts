/**
 * In-process MessageStore: the embedded default (no database) and the store of the tests.
 * Nothing survives a restart. Messages are deleted only by retention (removeExpired, when it is
 * configured): otherwise the server keeps every message of its lifetime here.
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
 *
 * Retention (removeExpired) removes the oldest entries of a conversation from the front of its
 * arrays. Each chunk counts its live bytes: a chunk with none left is released, and the live
 * records of a chunk that is less than a quarter live are copied to the chunk being filled as the
 * sweep passes their conversations (the latest message of a conversation that went quiet would
 * otherwise keep a whole chunk), so the chunks held stay within about four times what is live.
 */
import { isChangeKind, keptFrom, lastRealOf, type ConversationHead, type ExpiryBounds, type ExpiryRule, type ExpirySweep, type InsertBatchResult, type MessageChanges, type MessageStore, type MessageKind, type RangeQuery, type StoredMessage } from './types.js'
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
/** A shared chunk less live than this is emptied by moving its records (see the header). */
const SPARSE_BYTES = CHUNK_BYTES / 4
/** Bytes of records moved out of sparse chunks per removeExpired step at most. */
const RELOCATE_BYTES_MAX = 4 * CHUNK_BYTES
/** What a released chunk is replaced with (chunk indexes stay as they are). */
const RELEASED = Buffer.alloc(0)

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
  /** Retention keeps the seqs from here on (see keptFrom): set when the latest entry is stored. */
  keepFrom = 0

  /** `index`: this conversation's place in the store's sweep order. */
  constructor (readonly id: string, readonly index: number) {}

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

  /** Removes the first `n` messages from the arrays (the caller released their records); arrays a quarter full shrink. */
  dropFirst (n: number): void {
    const count = this.count - n
    if (this.seqs.length > INITIAL_CAPACITY && count * 4 < this.seqs.length) {
      const size = Math.max(INITIAL_CAPACITY, count * 2)
      const seqs = new Float64Array(size)
      seqs.set(this.seqs.subarray(n, n + count))
      this.seqs = seqs
      const timestamps = new Float64Array(size)
      timestamps.set(this.timestamps.subarray(n, n + count))
      this.timestamps = timestamps
      const records = new Uint32Array(size * 3)
      records.set(this.records.subarray(n * 3, (n + count) * 3))
      this.records = records
    } else {
      this.seqs.copyWithin(0, n, n + count)
      this.timestamps.copyWithin(0, n, n + count)
      this.records.copyWithin(0, n * 3, (n + count) * 3)
    }
    this.count = count
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
  /** Every conversation, in the order they were first written: the order of the retention sweep. */
  private readonly order: Conversation[] = []
  /** Where the next removeExpired step starts in `order`. */
  private sweepAt = 0
  /** Records, appended to the last shared chunk (or to a chunk of their own); RELEASED once none is live. */
  private readonly chunks: Buffer[] = []
  /** Bytes of live records in each chunk. */
  private readonly live: number[] = []
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
      if (at === count) conversation.keepFrom = keptFrom(message)
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

  async latestPast (conversationId: string, seq: number): Promise<StoredMessage | null> {
    const latest = await this.latest(conversationId)
    return latest !== null && latest.seq > seq ? latest : null
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

  /** Nothing is stored elsewhere either. */
  remember (_messages: readonly StoredMessage[]): void {}

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

  async firstSeq (conversationId: string): Promise<number> {
    const conversation = this.conversations.get(conversationId)
    return conversation === undefined || conversation.count === 0 ? 0 : valueAt(conversation.seqs, 0)
  }

  /** Conversations are swept in the order they were first written; a step looks at `maxExamined` of them. */
  async removeExpired (rule: ExpiryRule, bounds: ExpiryBounds): Promise<ExpirySweep> {
    const start = this.sweepAt < this.order.length ? this.sweepAt : 0
    const end = Math.min(this.order.length, start + Math.max(1, bounds.maxExamined))
    const candidates: Conversation[] = []
    for (let i = start; i < end; i++) {
      const c = this.order[i]
      if (c !== undefined && this.expiring(c, rule.before)) candidates.push(c)
    }
    const cutoffs = candidates.length === 0 ? new Map<string, number>() : await rule.cutoffs(candidates.map(c => c.id))
    // from here on synchronous: nothing is stored meanwhile
    let removed = 0
    for (const c of candidates) {
      const cutoff = cutoffs.get(c.id)
      if (cutoff === undefined) continue
      const until = Math.min(cutoff, rule.before)
      removed += this.removePrefix(c, until, bounds.maxRemoved - removed)
      if (removed >= bounds.maxRemoved) {
        // out of budget: the next step starts here (at this conversation if it has more to remove)
        const next = this.expiring(c, until) ? c.index : c.index + 1
        this.sweepAt = next
        this.compact(start, next)
        return { removed, examined: next - start, done: false }
      }
    }
    this.sweepAt = end
    this.compact(start, end)
    return { removed, examined: end - start, done: end >= this.order.length }
  }

  /** Bytes of record chunks held (what retention gives back as it removes messages). */
  get heldBytes (): number {
    let bytes = 0
    for (const chunk of this.chunks) bytes += chunk.length
    return bytes
  }

  /** Whether the conversation's oldest entry is older than `before` and below what retention keeps. */
  private expiring (c: Conversation, before: number): boolean {
    return c.count > 0 && valueAt(c.timestamps, 0) < before && valueAt(c.seqs, 0) < c.keepFrom
  }

  /** Removes the conversation's entries from the first while older than `cutoff`, below keepFrom, at most `max`. */
  private removePrefix (c: Conversation, cutoff: number, max: number): number {
    let n = 0
    const limit = Math.min(max, c.count)
    while (n < limit && valueAt(c.timestamps, n) < cutoff && valueAt(c.seqs, n) < c.keepFrom) n++
    for (let i = 0; i < n; i++) {
      const seq = valueAt(c.seqs, i)
      const [clientMsgId, senderId] = this.header(c, i)
      const bySender = c.bySender.get(senderId)
      if (bySender?.get(clientMsgId) === seq) {
        bySender.delete(clientMsgId)
        if (bySender.size === 0) c.bySender.delete(senderId)
      }
      c.changes.delete(seq)
      this.release(valueAt(c.records, i * 3), valueAt(c.records, i * 3 + 2))
    }
    if (n > 0) c.dropFirst(n)
    return n
  }

  /** A record of `length` bytes in chunk `index` is gone: a chunk with nothing live is released. */
  private release (index: number, length: number): void {
    const left = (this.live[index] ?? 0) - length
    this.live[index] = left
    if (left <= 0 && index !== this.current) this.chunks[index] = RELEASED
  }

  /**
   * Moves the records of conversations order[from, to) that sit in sparse shared chunks to the chunk
   * being filled, up to RELOCATE_BYTES_MAX, so that those chunks empty and are released.
   */
  private compact (from: number, to: number): void {
    const sparse = new Set<number>()
    for (let i = 0; i < this.chunks.length; i++) {
      const live = this.live[i] ?? 0
      if (i !== this.current && live > 0 && live < SPARSE_BYTES && this.chunks[i]?.length === CHUNK_BYTES) sparse.add(i)
    }
    if (sparse.size === 0) return
    let moved = 0
    for (let n = from; n < to && moved < RELOCATE_BYTES_MAX; n++) {
      const c = this.order[n]
      if (c === undefined) continue
      const records = c.records
      for (let i = 0; i < c.count && moved < RELOCATE_BYTES_MAX; i++) {
        const index = valueAt(records, i * 3)
        if (!sparse.has(index)) continue
        const offset = valueAt(records, i * 3 + 1)
        const length = valueAt(records, i * 3 + 2)
        this.reserve(length)
        const target = this.chunkAt(this.current)
        this.chunkAt(index).copy(target, this.used, offset, offset + length)
        records[i * 3] = this.current
        records[i * 3 + 1] = this.used
        this.used += length
        this.live[this.current] = (this.live[this.current] ?? 0) + length
        this.release(index, length)
        if (this.live[index] === 0) sparse.delete(index)
        moved += length
      }
    }
  }

  /** Makes room for `bytes` (<= CHUNK_BYTES) in the current shared chunk, starting a new one if needed. */
  private reserve (bytes: number): void {
    if (bytes <= CHUNK_BYTES - this.used) return
    // the chunk being left is released now if nothing in it is live
    const left = this.current
    this.chunks.push(Buffer.allocUnsafeSlow(CHUNK_BYTES))
    this.live.push(0)
    this.current = this.chunks.length - 1
    this.used = 0
    if (left >= 0 && (this.live[left] ?? 0) <= 0) this.chunks[left] = RELEASED
  }

  private conversation (conversationId: string): Conversation {
    let conversation = this.conversations.get(conversationId)
    if (conversation === undefined) {
      conversation = new Conversation(conversationId, this.order.length)
      this.conversations.set(conversationId, conversation)
      this.order.push(conversation)
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
        this.live.push(bytes)
        conversation.insert(at, seq, ts, this.chunks.length - 1, 0, writeRecord(own, 0, header, text))
        return
      }
      this.reserve(bytes)
    }
    const offset = this.used
    const length = writeRecord(this.chunkAt(this.current), offset, header, text)
    this.used = offset + length
    this.live[this.current] = (this.live[this.current] ?? 0) + length
    conversation.insert(at, seq, ts, this.current, offset, length)
  }

  private chunkAt (index: number): Buffer {
    const chunk = this.chunks[index]
    if (chunk === undefined) throw new RangeError(`no chunk ${index} (${this.chunks.length} chunks)`)
    return chunk
  }

  /** The record header of the message at `index`. */
  private header (conversation: Conversation, index: number): Header {
    const records = conversation.records
    const chunk = this.chunkAt(valueAt(records, index * 3))
    const start = valueAt(records, index * 3 + 1)
    return JSON.parse(chunk.toString('utf8', start, chunk.indexOf(NEWLINE, start))) as Header
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
