/**
 * A MessageStore that wraps MemoryMessageStore and injects the failures the sequencer must
 * survive. Every fault is explicit and deterministic (the tests drive randomness from a seed):
 *
 *   - failInserts(n, { storePrefix: k }): the next n insertBatch calls store the first k
 *     messages (an unknown-outcome failure: the write reached the database, the answer did not),
 *     or nothing with k = 0, and then throw.
 *   - setDown(true): every call throws until setDown(false) (the database is unreachable);
 *     setDown(true, ['findByClientMsgId']) fails only the named operations.
 *   - beforeInsert: an async hook run before each insertBatch, e.g. to let another node take
 *     seqs (otherNodeInsert) or to delay the write.
 *   - delayMs: a fixed delay before each insertBatch answers.
 *
 * `inner` is the truth: tests read it back through the MessageStore interface.
 */
import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import type { ConversationHead, ExpiryBounds, ExpiryRule, ExpirySweep, InsertBatchResult, MessageStore, RangeQuery, StoredMessage } from '../../src/store/types.js'

export class InjectedFault extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'InjectedFault'
  }
}

export interface InsertFault {
  /** How many messages of the batch are stored before the call throws. */
  storePrefix: number
}

export class FaultyMessageStore implements MessageStore {
  readonly inner = new MemoryMessageStore()
  /** Sizes of the batches passed to insertBatch, in call order (failed calls included). */
  readonly insertBatchSizes: number[] = []
  /** Messages stored by insertBatch calls that then threw. */
  readonly storedByFailedCalls: StoredMessage[] = []
  beforeInsert: ((messages: StoredMessage[]) => Promise<void>) | null = null
  delayMs = 0
  private faults: InsertFault[] = []
  /** null: up; otherwise the operations that throw (empty set: all of them). */
  private down: Set<string> | null = null

  get insertCalls (): number {
    return this.insertBatchSizes.length
  }

  /** The next `count` insertBatch calls store `storePrefix` messages, then throw. */
  failInserts (count: number, fault: InsertFault = { storePrefix: 0 }): void {
    for (let i = 0; i < count; i++) this.faults.push({ ...fault })
  }

  /** Faults queued by failInserts that have not fired yet. */
  pendingFaults (): number {
    return this.faults.length
  }

  setDown (down: boolean, ops: Array<keyof MessageStore> = []): void {
    this.down = down ? new Set(ops) : null
  }

  async init (): Promise<void> { await this.inner.init() }
  async close (): Promise<void> { await this.inner.close() }

  async insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult> {
    this.insertBatchSizes.push(messages.length)
    if (this.beforeInsert !== null) await this.beforeInsert(messages)
    this.check('insertBatch')
    if (this.delayMs > 0) await new Promise(resolve => setTimeout(resolve, this.delayMs))
    const fault = this.faults.shift()
    if (fault !== undefined) {
      const prefix = messages.slice(0, fault.storePrefix)
      const result = await this.inner.insertBatch(prefix)
      this.storedByFailedCalls.push(...prefix.slice(0, result.inserted))
      throw new InjectedFault(`insertBatch failed after storing ${result.inserted} of ${messages.length}`)
    }
    return await this.inner.insertBatch(messages)
  }

  async findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    this.check('findByClientMsgId')
    return await this.inner.findByClientMsgId(conversationId, senderId, clientMsgId)
  }

  async lastSeq (conversationId: string): Promise<number> {
    this.check('lastSeq')
    return await this.inner.lastSeq(conversationId)
  }

  async latest (conversationId: string): Promise<StoredMessage | null> {
    this.check('latest')
    return await this.inner.latest(conversationId)
  }

  async latestPast (conversationId: string, seq: number): Promise<StoredMessage | null> {
    this.check('latestPast')
    return await this.inner.latestPast(conversationId, seq)
  }

  async latestMany (conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    this.check('latestMany')
    return await this.inner.latestMany(conversationIds)
  }

  async applyChange (change: StoredMessage): Promise<StoredMessage | null> {
    this.check('applyChange')
    return await this.inner.applyChange(change)
  }

  async getMany (keys: ReadonlyArray<{ conversationId: string, seq: number }>): Promise<StoredMessage[]> {
    this.check('getMany')
    return await this.inner.getMany(keys)
  }

  forget (keys: ReadonlyArray<{ conversationId: string, seq: number }>): void {
    this.inner.forget(keys)
  }

  remember (messages: readonly StoredMessage[]): void {
    this.inner.remember(messages)
  }

  async range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    this.check('range')
    return await this.inner.range(conversationId, query)
  }

  async firstSeq (conversationId: string): Promise<number> {
    this.check('firstSeq')
    return await this.inner.firstSeq(conversationId)
  }

  async removeExpired (rule: ExpiryRule, bounds: ExpiryBounds): Promise<ExpirySweep> {
    this.check('removeExpired')
    return await this.inner.removeExpired(rule, bounds)
  }

  /** Every stored message of a conversation, in seq order (read from the inner store). */
  async all (conversationId: string): Promise<StoredMessage[]> {
    return await this.inner.range(conversationId, { fromSeq: 1, toSeq: Number.MAX_SAFE_INTEGER, limit: Number.MAX_SAFE_INTEGER, direction: 'forward' })
  }

  /**
   * Another node takes the next `count` seqs of the conversation: it writes straight into the
   * inner store, as a sequencer on another process would, with sender `senderId`, stored at `ts`.
   */
  async otherNodeInsert (conversationId: string, count: number, senderId = 'other-node', ts = 0): Promise<StoredMessage[]> {
    const out: StoredMessage[] = []
    for (let i = 0; i < count; i++) {
      for (;;) {
        const seq = (await this.inner.lastSeq(conversationId)) + 1
        const message: StoredMessage = {
          conversationId,
          seq,
          clientMsgId: `n${seq}-${Math.random().toString(36).slice(2, 10)}`,
          senderId,
          ts,
          kind: 'text',
          body: `from another node, seq ${seq}`,
          replyTo: null
        }
        const result = await this.inner.insertBatch([message])
        if (result.inserted === 1) {
          out.push(message)
          break
        }
      }
    }
    return out
  }

  private check (op: string): void {
    if (this.down !== null && (this.down.size === 0 || this.down.has(op))) throw new InjectedFault(`${op}: store is down`)
  }
}
