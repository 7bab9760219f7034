/**
 * Read cursors, written in groups: every `read` moves one (conversation, user) cursor, and a busy
 * server gets hundreds a second. Each used to cost two metadata statements of its own; here the
 * cursors that arrive while a group is being written go into the next group, written with
 * memberAdvanceReadMany (two statements per group, however many cursors). One group is written at
 * a time; the first waits for the end of the current event-loop turn, so a lone read is not delayed.
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

export class ReadCursors {
  private queue: Pending[] = []
  private writing = false
  private scheduled = false

  constructor (private readonly meta: MetadataStore) {}

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
