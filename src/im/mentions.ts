/**
 * Mention records for the unread mention counts of `list`, written to the metadata store off the
 * send path: the sequencer's commit queues them (Delivery), and groups are written one at a time
 * with mentionAddMany (one statement per 500). A failed write is retried with back-off for
 * RETRY_FOR_MS, then given up (logged): the messages themselves, with their `mentions`, are stored
 * either way; only the count in `list` would be low. At most QUEUE_MAX records wait.
 */
import type { MentionRecord, MetadataStore } from '../store/types.js'
import type { Logger } from '../log.js'
import { MENTION_ALL } from '../protocol/schemas.js'
import type { StoredMessage } from '../store/types.js'

const GROUP_MAX = 2000
const QUEUE_MAX = 100_000
const RETRY_FOR_MS = 30_000

export class MentionLog {
  private queue: MentionRecord[] = []
  private writing = false
  private closed = false
  /** Records dropped (queue full, or given up after retries) since start. */
  dropped = 0

  constructor (private readonly meta: MetadataStore, private readonly logger: Logger, private readonly sleep = async (ms: number) => await new Promise(resolve => setTimeout(resolve, ms))) {}

  /** Queues the mentions of a stored message (by name, or one '@all' record). */
  note (m: StoredMessage): void {
    const mentions = m.mentions
    if (mentions === undefined || this.closed) return
    const users = mentions.includes(MENTION_ALL) ? [MENTION_ALL] : mentions
    for (const userId of users) {
      if (this.queue.length >= QUEUE_MAX) {
        this.dropped++
        continue
      }
      this.queue.push({ conversationId: m.conversationId, userId, seq: m.seq, senderId: m.senderId })
    }
    if (!this.writing) {
      this.writing = true
      setImmediate(() => { void this.flush() })
    }
  }

  /** Writes what is queued (close: the last group, best effort). */
  async close (): Promise<void> {
    this.closed = true
    while (this.writing) await this.sleep(10)
    if (this.queue.length > 0) await this.meta.mentionAddMany(this.queue.splice(0)).catch(() => {})
  }

  private async flush (): Promise<void> {
    try {
      while (this.queue.length > 0) {
        const group = this.queue.splice(0, GROUP_MAX)
        const deadline = Date.now() + RETRY_FOR_MS
        for (let delay = 100; ; delay = Math.min(delay * 2, 5000)) {
          try {
            await this.meta.mentionAddMany(group)
            break
          } catch (err) {
            if (this.closed || Date.now() + delay > deadline) {
              this.dropped += group.length
              this.logger.error({ mentions: group.length, err }, 'mention records not written: unread mention counts will be low')
              break
            }
            await this.sleep(delay)
          }
        }
      }
    } finally {
      this.writing = false
    }
  }
}
