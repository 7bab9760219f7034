/**
 * Retention: messages older than the configured age of their conversation's kind are removed, in
 * the background, off the send path. The store does the removing (MessageStore.removeExpired: one
 * bounded step of a sweep over its conversations, the oldest entries first, never a conversation's
 * latest real message or what follows it); this job decides when, and how old is too old.
 *
 * Each step removes at most `maxPerRun` entries and looks at most at `conversationsPerRun`
 * conversations. A step that leaves work (a sweep not finished, or the removal bound reached) is
 * followed by the next one a second later; a finished sweep waits `intervalMs`. Conversation kinds
 * come from the metadata store (they never change: kept in an LRU), asked only for conversations
 * the store found old entries in.
 *
 * Every node of a cluster runs the job: two nodes removing the same entries is harmless (removing
 * is idempotent), only redundant.
 */
import { lruCache } from '../lru.js'
import type { ConversationKind, ExpirySweep, MessageStore, MetadataStore } from '../store/types.js'
import type { Logger } from '../log.js'

export interface RetentionOptions {
  /** How long messages of direct conversations are kept, in ms; null: forever. */
  directMs: number | null
  /** The same for groups. */
  groupMs: number | null
  /** Pause after a sweep that found nothing more to remove. */
  intervalMs: number
  /** Entries removed per step at most. */
  maxPerRun: number
  /** Conversations looked at per step at most. */
  conversationsPerRun: number
  logger: Logger
  now?: () => number
}

/** Conversation kinds remembered. */
const KINDS_MAX = 200_000
/** Pause between two steps of a sweep that has more to do. */
const BUSY_PAUSE_MS = 1000

/** The retention settings of config.json in ms (days may be fractions). */
export function retentionMs (days: number | null): number | null {
  return days === null ? null : Math.round(days * 24 * 3600 * 1000)
}

export class RetentionJob {
  private readonly now: () => number
  private readonly kinds = lruCache<string, ConversationKind>(KINDS_MAX)
  private timer: NodeJS.Timeout | null = null
  private running: Promise<void> | null = null
  private closed = false
  /** Removed in the sweep under way (logged when it ends). */
  private sweepRemoved = 0

  constructor (
    private readonly store: MessageStore,
    private readonly meta: Pick<MetadataStore, 'conversationGetMany'>,
    private readonly opts: RetentionOptions
  ) {
    this.now = opts.now ?? Date.now
  }

  /** Whether any kind has a maximum age. */
  get enabled (): boolean {
    return this.opts.directMs !== null || this.opts.groupMs !== null
  }

  /** Starts the schedule (nothing when retention is off); the first step runs after `intervalMs`. */
  start (): void {
    if (this.enabled) this.schedule(this.opts.intervalMs)
  }

  /** Stops the schedule and waits for a step under way. */
  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.running
  }

  /** One step of the sweep, now. */
  async step (): Promise<ExpirySweep> {
    const now = this.now()
    const direct = this.opts.directMs === null ? null : now - this.opts.directMs
    const group = this.opts.groupMs === null ? null : now - this.opts.groupMs
    const cutoffs = [direct, group].filter((c): c is number => c !== null)
    if (cutoffs.length === 0) return { removed: 0, examined: 0, done: true }
    return await this.store.removeExpired({
      before: Math.max(...cutoffs),
      cutoffs: async (ids) => {
        const out = new Map<string, number>()
        for (const [id, kind] of await this.kindsOf(ids)) {
          const cutoff = kind === 'direct' ? direct : group
          if (cutoff !== null) out.set(id, cutoff)
        }
        return out
      }
    }, { maxRemoved: this.opts.maxPerRun, maxExamined: this.opts.conversationsPerRun })
  }

  private async kindsOf (ids: readonly string[]): Promise<Map<string, ConversationKind>> {
    const out = new Map<string, ConversationKind>()
    const missing: string[] = []
    for (const id of ids) {
      const kind = this.kinds.get(id)
      if (kind === undefined) missing.push(id)
      else out.set(id, kind)
    }
    if (missing.length > 0) {
      for (const c of await this.meta.conversationGetMany(missing)) {
        this.kinds.set(c.id, c.kind)
        out.set(c.id, c.kind)
      }
    }
    return out
  }

  private schedule (delayMs: number): void {
    if (this.closed) return
    this.timer = setTimeout(() => {
      this.timer = null
      this.running = this.run().finally(() => { this.running = null })
    }, delayMs)
    this.timer.unref()
  }

  private async run (): Promise<void> {
    let next = this.opts.intervalMs
    try {
      const { removed, done } = await this.step()
      this.sweepRemoved += removed
      if (!done) {
        next = Math.min(BUSY_PAUSE_MS, this.opts.intervalMs)
      } else if (this.sweepRemoved > 0) {
        this.opts.logger.info({ removed: this.sweepRemoved }, 'retention: expired messages removed')
        this.sweepRemoved = 0
      }
    } catch (err) {
      this.opts.logger.warn({ err }, 'retention: a removal step failed; retried later')
    } finally {
      this.schedule(next)
    }
  }
}
