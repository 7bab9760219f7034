/**
 * Store reads for the seqs another node stored and never published (Delivery, after an order wait
 * ran out). When a node dies, the waits of every conversation it had just written run out within a
 * few seconds of each other: their reads are merged, one store read in flight per node, at most
 * READ_KEYS seqs a read, and at most QUEUE_MAX requests waiting (beyond, a request is answered null
 * at once: not read, as for a store error; the wait's delivery then goes on without it). A request
 * not answered within READ_TIMEOUT_MS is answered null then (a slow or hanging store adds that much
 * to the wait at most); if it was still queued, it is not read. A store read that does not answer
 * within that time is given up too, so that the next one is not stuck behind it (at most one
 * abandoned read a READ_TIMEOUT_MS while the store hangs; the driver's own timeout ends it).
 */
import type { MessageStore, StoredMessage } from '../store/types.js'
import { within } from '../within.js'

export interface SeqKey { conversationId: string, seq: number }

/** Seqs per store read (several requests' seqs together; a request is never split). */
export const READ_KEYS = 500
/** Requests waiting for a read at most. */
export const QUEUE_MAX = 10_000
/** A request's answer at the latest (null after that). */
export const READ_TIMEOUT_MS = 2000

interface Request { keys: readonly SeqKey[], done: (found: StoredMessage[] | null) => void, answered: boolean }

export class GapReads {
  private queue: Request[] = []
  private reading = false

  constructor (
    private readonly store: Pick<MessageStore, 'getMany'>,
    private readonly onError: (err: unknown) => void,
    private readonly timeoutMs = READ_TIMEOUT_MS
  ) {}

  /** The stored messages of `keys` in the order of `keys` (absent ones left out), or null when not read. */
  async read (keys: readonly SeqKey[]): Promise<StoredMessage[] | null> {
    if (keys.length === 0) return []
    if (this.queue.length >= QUEUE_MAX) return null
    const found = new Promise<StoredMessage[] | null>(resolve => {
      const request: Request = {
        keys,
        answered: false,
        done: (answer) => {
          if (request.answered) return
          request.answered = true
          clearTimeout(timer)
          resolve(answer)
        }
      }
      const timer = setTimeout(() => {
        request.done(null)
        // not read if still queued
        const at = this.queue.indexOf(request)
        if (at !== -1) this.queue.splice(at, 1)
      }, this.timeoutMs)
      timer.unref()
      this.queue.push(request)
    })
    if (!this.reading) void this.drain()
    return await found
  }

  private async drain (): Promise<void> {
    this.reading = true
    try {
      while (this.queue.length > 0) {
        // requests in arrival order until READ_KEYS (the first one always, however many it has)
        let count = 0
        let taken = 0
        while (taken < this.queue.length && (taken === 0 || count + (this.queue[taken] as Request).keys.length <= READ_KEYS)) {
          count += (this.queue[taken] as Request).keys.length
          taken++
        }
        const batch = this.queue.splice(0, taken)
        let found: StoredMessage[] | null
        try {
          // a read that does not answer within a request's time is given up (its requests are
          // answered null by then): the next goes on, not stuck behind a store that hangs
          found = await within(this.store.getMany(batch.flatMap(r => r.keys)), this.timeoutMs, () => new Error(`no answer from the store within ${this.timeoutMs} ms`))
        } catch (err) {
          try {
            this.onError(err)
          } catch {}
          found = null
        }
        if (found === null) {
          for (const r of batch) r.done(null)
          continue
        }
        const byKey = new Map(found.map(m => [`${m.seq}:${m.conversationId}`, m]))
        for (const r of batch) r.done(r.keys.map(k => byKey.get(`${k.seq}:${k.conversationId}`)).filter((m): m is StoredMessage => m !== undefined))
      }
    } finally {
      this.reading = false
    }
  }
}
