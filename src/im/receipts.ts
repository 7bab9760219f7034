/**
 * Read receipts. Direct conversations: the other member gets the reader's readSeq at once.
 * Groups: an aggregate (how many members have read everything, the lowest read cursor), sent to
 * the members at most once per `windowMs` per conversation, never per-message reader lists.
 */
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { MetadataStore } from '../store/types.js'
import type { Logger } from '../log.js'

export interface GroupReceiptSummary {
  lastSeq: number
  members: number
  /** Members whose readSeq >= lastSeq. */
  readAll: number
  minReadSeq: number
}

export interface Timers {
  setTimeout: (fn: () => void, ms: number) => unknown
  clearTimeout: (handle: unknown) => void
}

const realTimers: Timers = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout)
}

export class ReceiptAggregator {
  private readonly pending = new Map<string, unknown>()

  constructor (
    private readonly directory: ConversationDirectory,
    private readonly meta: MetadataStore,
    /** The conversation's last stored seq (Sequencer.lastSeqFor). */
    private readonly lastSeqOf: (conversationId: string) => Promise<number>,
    private readonly publisher: Publisher,
    private readonly logger: Logger,
    private readonly windowMs = 1000,
    private readonly timers: Timers = realTimers
  ) {}

  /** Counts members that have read up to `seq`. */
  static summarize (readSeqs: number[], lastSeq: number): GroupReceiptSummary {
    let readAll = 0
    let minReadSeq = Number.MAX_SAFE_INTEGER
    for (const r of readSeqs) {
      if (r >= lastSeq) readAll++
      if (r < minReadSeq) minReadSeq = r
    }
    return { lastSeq, members: readSeqs.length, readAll, minReadSeq: readSeqs.length === 0 ? 0 : minReadSeq }
  }

  async noteRead (conversationId: string, readerId: string, readSeq: number): Promise<void> {
    const entry = await this.directory.get(conversationId)
    if (entry === null) return
    if (entry.conversation.kind === 'direct') {
      const others = [...entry.members.keys()].filter(u => u !== readerId)
      this.publisher.event(others, { type: 'receipt', conv: conversationId, kind: 'direct', user: readerId, readSeq })
      return
    }
    if (this.pending.has(conversationId)) return
    this.pending.set(conversationId, this.timers.setTimeout(() => {
      this.pending.delete(conversationId)
      this.flushGroup(conversationId).catch((err: unknown) => this.logger.warn({ conversationId, err }, 'group receipt failed'))
    }, this.windowMs))
  }

  private async flushGroup (conversationId: string): Promise<void> {
    const members = await this.meta.memberList(conversationId)
    const lastSeq = await this.lastSeqOf(conversationId)
    const s = ReceiptAggregator.summarize(members.map(m => m.readSeq), lastSeq)
    this.publisher.event(members.map(m => m.userId), { type: 'receipt', conv: conversationId, kind: 'group', ...s })
  }

  close (): void {
    for (const h of this.pending.values()) this.timers.clearTimeout(h)
    this.pending.clear()
  }
}
