/**
 * Read receipts. Direct conversations: the other member gets the reader's readSeq at once.
 * Groups: an aggregate (how many members have read everything, the lowest read cursor), sent to
 * the members at most once per `windowMs` per conversation, never per-message reader lists. In a
 * cluster the window is the cluster's (ReceiptWindows: a Redis key per conversation): the node
 * whose reads come second waits for the window to end, and its summary, read from the store,
 * counts every node's reads. (Before, each node sent its own: twice the events and the member
 * lists with two nodes.) A group of more than RECEIPT_MEMBERS_PER_SECOND members gets its aggregate
 * less often, so that one group's receipts cost about that many events a second at most.
 */
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { MetadataStore } from '../store/types.js'
import type { Logger } from '../log.js'
import type { Redis } from 'ioredis'
import { within } from '../within.js'

/**
 * A group's aggregate goes to every member: one of 1,000 members that people keep reading would
 * cost 1,000 events a second for as long as they do (ten times its messages' deliveries at a
 * message every ten seconds). The window is a second per this many members (or part of it): 1 s
 * up to 100 members, 10 s at 1,000, as typing stops at 100 members.
 */
export const RECEIPT_MEMBERS_PER_SECOND = 100
/** The longest window, whatever the group's size (limits.groupMembersMax may be raised far beyond 1,000): a minute. */
export const RECEIPT_WINDOW_MAX_MS = 60_000

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

/** Who may send a conversation's group receipt now. */
export interface ReceiptWindows {
  /** 0: this node sends it now (and the window of `ms` starts); else how many ms the current window has left. */
  claim: (conversationId: string, ms: number) => Promise<number>
}

/** One node: the aggregator's own timer spaces a conversation's receipts. */
export const localReceiptWindows: ReceiptWindows = { claim: async () => 0 }

const CLAIM_LUA = `
if redis.call('SET', KEYS[1], '1', 'PX', ARGV[1], 'NX') then return 0 end
local left = redis.call('PTTL', KEYS[1])
if left > 0 then return left end
-- a key without an expiry (written by something else): take the window
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return 0`

type ClaimingRedis = Redis & { mqimReceiptClaim: (key: string, ms: number) => Promise<number> }

/** The cluster's windows: one key per conversation, set if absent, expiring with the window. */
export class RedisReceiptWindows implements ReceiptWindows {
  private readonly redis: ClaimingRedis

  constructor (redis: Redis, private readonly prefix = 'mqim:receipt-window:') {
    if (!('mqimReceiptClaim' in redis)) redis.defineCommand('mqimReceiptClaim', { numberOfKeys: 1, lua: CLAIM_LUA })
    this.redis = redis as ClaimingRedis
  }

  async claim (conversationId: string, ms: number): Promise<number> {
    return Number(await this.redis.mqimReceiptClaim(this.prefix + conversationId, ms))
  }
}

export class ReceiptAggregator {
  private readonly pending = new Map<string, unknown>()
  private closed = false

  constructor (
    private readonly directory: ConversationDirectory,
    private readonly meta: MetadataStore,
    /**
     * The conversation's last stored seq, at least `atLeast` (Sequencer.lastSeqFor: in a cluster,
     * what this node knows when that covers `atLeast`, with no store read).
     */
    private readonly lastSeqOf: (conversationId: string, atLeast: number) => Promise<number>,
    private readonly publisher: Publisher,
    private readonly logger: Logger,
    private readonly windowMs = 1000,
    private readonly timers: Timers = realTimers,
    private readonly windows: ReceiptWindows = localReceiptWindows
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
    if (this.closed) return
    const entry = await this.directory.get(conversationId)
    if (entry === null) return
    if (entry.conversation.kind === 'direct') {
      const others = [...entry.members.keys()].filter(u => u !== readerId)
      this.publisher.event(others, { type: 'receipt', conv: conversationId, kind: 'direct', user: readerId, readSeq })
      return
    }
    if (this.pending.has(conversationId)) return
    const window = this.windowOf(entry.members.size)
    this.arm(conversationId, window, window)
  }

  /** A group's window: `windowMs` per RECEIPT_MEMBERS_PER_SECOND members or part of them, at most RECEIPT_WINDOW_MAX_MS (or `windowMs`, if longer). */
  windowOf (members: number): number {
    const window = this.windowMs * Math.max(1, Math.ceil(members / RECEIPT_MEMBERS_PER_SECOND))
    return Math.min(window, Math.max(this.windowMs, RECEIPT_WINDOW_MAX_MS))
  }

  /** The conversation's receipt goes out in `ms`, or when the cluster's window (`window` long) for it ends. */
  private arm (conversationId: string, ms: number, window: number): void {
    this.pending.set(conversationId, this.timers.setTimeout(() => {
      void this.claim(conversationId, window).then(left => {
        if (this.closed) return
        if (left > 0) {
          this.arm(conversationId, left, window)
          return
        }
        this.pending.delete(conversationId)
        this.flushGroup(conversationId).catch((err: unknown) => this.logger.warn({ conversationId, err }, 'group receipt failed'))
      })
    }, ms))
  }

  /**
   * The window (see ReceiptWindows.claim). One that cannot be told (Redis down, or no answer
   * within a window's time) counts as free: the receipt is sent rather than lost.
   */
  private async claim (conversationId: string, window: number): Promise<number> {
    try {
      return await within(this.windows.claim(conversationId, window), this.windowMs, () => new Error('no answer about the receipt window'))
    } catch (err) {
      this.logger.debug({ conversationId, err }, 'receipt window unknown')
      return 0
    }
  }

  private async flushGroup (conversationId: string): Promise<void> {
    const members = await this.meta.memberList(conversationId)
    // No cursor is past the last seq: what this node knows of the tail is enough when it covers
    // every cursor (in a cluster, a message another node stored in the last moments may be counted
    // by the next aggregate only, which the first read of it starts).
    let highest = 0
    for (const m of members) if (m.readSeq > highest) highest = m.readSeq
    const lastSeq = await this.lastSeqOf(conversationId, highest)
    const s = ReceiptAggregator.summarize(members.map(m => m.readSeq), lastSeq)
    // QoS 0 (the next aggregate supersedes it; a device that comes back asks `receipts`); a direct
    // receipt stays QoS 1, queued for a persistent session: it is the peer's one tick
    this.publisher.ephemeral(members.map(m => m.userId), { type: 'receipt', conv: conversationId, kind: 'group', ...s })
  }

  close (): void {
    this.closed = true
    for (const h of this.pending.values()) this.timers.clearTimeout(h)
    this.pending.clear()
  }
}
