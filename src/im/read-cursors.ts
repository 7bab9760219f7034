/**
 * Read cursors, written in groups: every `read` moves one (conversation, user) cursor, and a busy
 * server gets hundreds a second. Each used to cost two metadata statements of its own; here the
 * cursors that arrive while a group is being written go into the next group, written with
 * memberAdvanceReadMany (two statements per group, however many cursors). One group is written at
 * a time, and groups start at least `groupIntervalMs` apart: a read that comes after a quiet spell
 * waits only for the end of the current event-loop turn, while under load the reads of that
 * interval share a group (at ~1,000 reads/s, ~25 per group instead of ~3: an eighth of the
 * statements, for at most the interval of latency). 25 ms rather than 10: in the cluster soak (two
 * nodes, ~1,000 reads/s each) groups fell from 157 to 78 a second and MariaDB from 0.18 to 0.12 of
 * a core (the whole machine from 95 % to 82 %, the nodes also sending fewer statements), while a
 * read's p50 grew by a few ms.
 */
import { ImError } from '../errors.js'
import type { MetadataStore } from '../store/types.js'

interface Pending {
  conversationId: string
  userId: string
  seq: number
  resolve: (readSeq: number | null) => void
  reject: (err: unknown) => void
}

/** Cursors per group; more wait for the next one. */
const GROUP_MAX = 1000
/** Cursors waiting at most; beyond, a read is answered UNAVAILABLE (the metadata store is not keeping up). */
const QUEUE_MAX = 50_000
/** Shortest time between the starts of two groups. */
export const GROUP_INTERVAL_MS = 25

export class ReadCursors {
  private queue: Pending[] = []
  private writing = false
  private scheduled = false
  /** When the last group started (by `now`; -Infinity: never). */
  private lastStart = Number.NEGATIVE_INFINITY

  constructor (
    private readonly meta: MetadataStore,
    private readonly groupIntervalMs = GROUP_INTERVAL_MS,
    /** A monotonic clock: a wall clock stepped back would hold every read for the size of the step. */
    private readonly now: () => number = () => performance.now()
  ) {}

  /** How long the next group waits: never more than the interval, whatever the clock did. */
  private waitMs (): number {
    return Math.min(this.groupIntervalMs, this.lastStart + this.groupIntervalMs - this.now())
  }

  /** readSeq = max(readSeq, seq); the resulting readSeq, or null if not a member. */
  async advance (conversationId: string, userId: string, seq: number): Promise<number | null> {
    if (this.queue.length >= QUEUE_MAX) throw new ImError('UNAVAILABLE', 'too many read cursors waiting to be written; try again')
    return await new Promise((resolve, reject) => {
      this.queue.push({ conversationId, userId, seq, resolve, reject })
      this.schedule()
    })
  }

  private schedule (): void {
    if (this.writing || this.scheduled) return
    this.scheduled = true
    // (flush waits for the interval, if a group started less than that ago)
    setImmediate(() => {
      this.scheduled = false
      void this.flush()
    })
  }

  /** One group; once more after a deadlock (InnoDB picked this group to roll back; nothing was changed). */
  private async write (group: Pending[]): Promise<Array<number | null>> {
    try {
      return await this.meta.memberAdvanceReadMany(group)
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ER_LOCK_DEADLOCK') throw err
      return await this.meta.memberAdvanceReadMany(group)
    }
  }

  private async flush (): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      while (this.queue.length > 0) {
        const wait = this.waitMs()
        if (wait > 0) await new Promise(resolve => setTimeout(resolve, wait))
        this.lastStart = this.now()
        const group = this.queue.splice(0, GROUP_MAX)
        try {
          const results = await this.write(group)
          group.forEach((p, i) => p.resolve(results[i] ?? null))
        } catch (err) {
          for (const p of group) p.reject(err)
        }
      }
    } finally {
      this.writing = false
    }
  }
}
