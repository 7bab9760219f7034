/**
 * Read cursors as a batched ack: markRead only remembers the highest seq per conversation; one
 * `read` request per conversation goes out `debounceMs` after the first mark of a batch. Seqs at or
 * below the cursor the server already has are not sent at all.
 */
import { ImClientError, isTransient } from './errors.js'
import type { ReadResult } from './types.js'

export interface ReadDeps {
  debounceMs: number
  read: (conv: string, seq: number) => Promise<ReadResult>
  emitError: (err: ImClientError) => void
  isClosed: () => boolean
}

export class ReadBatcher {
  private readonly pending = new Map<string, number>()
  /** Per conversation: the highest seq the server has as read cursor (or we asked for). */
  private readonly cursor = new Map<string, number>()
  private timer: ReturnType<typeof setTimeout> | null = null

  constructor (private readonly deps: ReadDeps) {}

  mark (conv: string, seq: number): void {
    if (!Number.isSafeInteger(seq) || seq < 0) throw new ImClientError('BAD_REQUEST', `markRead: seq must be an integer >= 0, got ${seq}`, 'read')
    if (seq <= (this.cursor.get(conv) ?? -1) || seq <= (this.pending.get(conv) ?? -1)) return
    this.pending.set(conv, seq)
    this.timer ??= setTimeout(() => { void this.flush() }, this.deps.debounceMs)
  }

  /** The server's cursor, learnt from `read` events, `list` and `read` replies. */
  known (conv: string, readSeq: number): void {
    this.cursor.set(conv, Math.max(readSeq, this.cursor.get(conv) ?? -1))
  }

  /** Sends what is pending now and resolves when every reply (or failure) is in. */
  async flush (): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    const batch = [...this.pending]
    this.pending.clear()
    await Promise.all(batch.map(async ([conv, seq]) => {
      try {
        const r = await this.deps.read(conv, seq)
        this.known(conv, Math.max(seq, r.readSeq))
      } catch (err) {
        const e = err instanceof ImClientError ? err : new ImClientError('INTERNAL', String(err), 'read')
        if (e.code === 'CLOSED' || this.deps.isClosed()) return
        if (isTransient(e.code)) this.mark(conv, seq)
        else this.deps.emitError(e)
      }
    }))
  }

  stop (): void {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}
