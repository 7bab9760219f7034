/**
 * Sends that survive reconnects and restarts. A send is stored in the outbox before it is published
 * (written at once, not coalesced: `StateStore.saveNow`, before `add` returns its promise), and
 * published again (same msgId, so the server stores it once) after timeouts, reconnects,
 * RATE_LIMITED and UNAVAILABLE, until a reply settles it. Per conversation the outbox sends one
 * message at a time, in order, because concurrent requests may be sequenced in any order (topics.md).
 */
import { ImClientError, isTransient } from './errors.js'
import type { OutboxEntry, StateStore } from './storage.js'
import type { SendResult } from './types.js'

export interface OutboxDeps {
  store: StateStore
  send: (entry: OutboxEntry) => Promise<SendResult>
  /** Resolves when the client is online; rejects with CLOSED once it is closed. */
  whenOnline: () => Promise<void>
  emitSent: (r: SendResult) => void
  emitError: (err: ImClientError) => void
  /** First delay after RATE_LIMITED / UNAVAILABLE; doubles up to 32 times this. */
  retryMs: number
  isClosed: () => boolean
}

interface Waiter { resolve: (r: SendResult) => void, reject: (err: ImClientError) => void }

const key = (e: { conv: string, msgId: string }): string => `${e.conv}\n${e.msgId}`

export class Outbox {
  private readonly waiters = new Map<string, Waiter[]>()
  private readonly running = new Set<string>()

  constructor (private readonly deps: OutboxDeps) {}

  /** Stores the entry (unless the same conv+msgId is already waiting), then sends it. */
  async add (entry: OutboxEntry): Promise<SendResult> {
    const { state } = this.deps.store
    const result = new Promise<SendResult>((resolve, reject) => {
      const k = key(entry)
      this.waiters.set(k, [...(this.waiters.get(k) ?? []), { resolve, reject }])
    })
    if (!state.outbox.some(e => key(e) === key(entry))) {
      state.outbox.push(entry)
      try {
        await this.deps.store.saveNow()
      } catch (err) {
        state.outbox.splice(state.outbox.indexOf(entry), 1)
        this.waiters.delete(key(entry))
        throw new ImClientError('INTERNAL', `storage: ${String(err)}`, 'send')
      }
    }
    this.run(entry.conv)
    return await result
  }

  /** Starts sending what is stored (after a restart, or once online). */
  resume (): void {
    for (const e of this.deps.store.state.outbox) this.run(e.conv)
  }

  /** Rejects the promises of pending sends with CLOSED; the entries stay stored for the next run. */
  stop (): void {
    for (const list of this.waiters.values()) for (const w of list) w.reject(new ImClientError('CLOSED', 'the client was closed before the message was acknowledged; it is still in the outbox', 'send'))
    this.waiters.clear()
  }

  get size (): number {
    return this.deps.store.state.outbox.length
  }

  private run (conv: string): void {
    if (this.running.has(conv)) return
    this.running.add(conv)
    void this.loop(conv).finally(() => { this.running.delete(conv) })
  }

  private async loop (conv: string): Promise<void> {
    let delay = this.deps.retryMs
    for (let entry = this.next(conv); entry !== undefined; entry = this.next(conv)) {
      try {
        await this.deps.whenOnline()
        const result = await this.deps.send(entry)
        delay = this.deps.retryMs
        this.settle(entry, result)
      } catch (err) {
        const e = err instanceof ImClientError ? err : new ImClientError('INTERNAL', String(err), 'send')
        if (e.code === 'CLOSED' || this.deps.isClosed()) return
        if (isTransient(e.code)) {
          if (e.code !== 'TIMEOUT') {
            await sleep(delay)
            delay = Math.min(delay * 2, this.deps.retryMs * 32)
          }
          continue
        }
        this.settle(entry, e)
      }
    }
  }

  private next (conv: string): OutboxEntry | undefined {
    return this.deps.store.state.outbox.find(e => e.conv === conv)
  }

  private settle (entry: OutboxEntry, outcome: SendResult | ImClientError): void {
    const { state } = this.deps.store
    const i = state.outbox.indexOf(entry)
    if (i >= 0) state.outbox.splice(i, 1)
    // Coalesced: should the process die before it is written, the entry is resent with the same msgId
    // and the server answers it as a duplicate without storing it again.
    this.deps.store.changed()
    const k = key(entry)
    const waiting = this.waiters.get(k) ?? []
    this.waiters.delete(k)
    if (outcome instanceof ImClientError) {
      if (waiting.length === 0) this.deps.emitError(outcome)
      for (const w of waiting) w.reject(outcome)
    } else {
      this.deps.emitSent(outcome)
      for (const w of waiting) w.resolve(outcome)
    }
  }
}

async function sleep (ms: number): Promise<void> {
  await new Promise(resolve => setTimeout(resolve, ms))
}
