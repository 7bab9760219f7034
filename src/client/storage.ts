/** ClientStorage implementations that work everywhere (memory) or in the browser (localStorage), and the SDK's persisted state. */
import type { ClientStorage } from './types.js'

export class MemoryStorage implements ClientStorage {
  private readonly data = new Map<string, string>()
  async get (key: string): Promise<string | null> { return this.data.get(key) ?? null }
  async set (key: string, value: string): Promise<void> { this.data.set(key, value) }
}

interface WebStorage { getItem: (key: string) => string | null, setItem: (key: string, value: string) => void }

/** Browser storage; `storage` defaults to `globalThis.localStorage`. */
export class LocalStorageStorage implements ClientStorage {
  private readonly storage: WebStorage
  constructor (storage?: WebStorage) {
    const fallback = (globalThis as { localStorage?: WebStorage }).localStorage
    const chosen = storage ?? fallback
    if (chosen === undefined) throw new Error('LocalStorageStorage: no localStorage in this environment')
    this.storage = chosen
  }

  async get (key: string): Promise<string | null> { return this.storage.getItem(key) }
  async set (key: string, value: string): Promise<void> { this.storage.setItem(key, value) }
}

/** A send that has not been acknowledged yet. */
export interface OutboxEntry {
  conv: string
  msgId: string
  kind: 'text' | 'custom' | 'file'
  body: unknown
  replyTo?: number
  mentions?: string[]
}

/** Everything the SDK persists, as one JSON value under one key so that every write is atomic. */
export interface PersistedState {
  v: 1
  /** True once a first sync has completed: conversations met later are not "old" any more. */
  initialized: boolean
  /** Per conversation: the highest seq held without a gap (everything up to it has been emitted). */
  synced: Record<string, number>
  outbox: OutboxEntry[]
}

export interface StateStoreOptions {
  /** Coalesced writes (`changed()`) are at least this far apart. Default 200. */
  saveIntervalMs?: number
  /** A coalesced write failed (nobody awaits it). Default: ignored. */
  onError?: (err: unknown) => void
}

/** Reads the persisted state; an empty storage (or an unknown version) gives a fresh one. */
export async function readState (storage: ClientStorage, key: string): Promise<PersistedState> {
  const raw = await storage.get(key)
  if (raw !== null) {
    const parsed = JSON.parse(raw) as Partial<PersistedState>
    if (parsed.v === 1) return { v: 1, initialized: parsed.initialized === true, synced: parsed.synced ?? {}, outbox: parsed.outbox ?? [] }
  }
  return { v: 1, initialized: false, synced: {}, outbox: [] }
}

/**
 * Owns the persisted state and decides when it is written. Every write hands the whole state to
 * `storage.set` at once, in the same tick as the call that caused it, so a synchronous storage
 * (FileStorage, localStorage, memory) has stored it before control returns; a ClientStorage must
 * apply `set` calls in the order they were made.
 *
 * Two kinds of write:
 *  - `saveNow()`: at once. The outbox uses it, so an unacknowledged send is stored before it is
 *    published (and before `send()` returns).
 *  - `changed()`: coalesced, for sync progress and settled sends. The first change after a quiet
 *    `saveIntervalMs` is written at once; later ones are written together at the end of the
 *    interval, so a burst of N messages costs about one write per interval instead of N. A crash
 *    loses at most the last interval of progress: those messages are emitted again after the
 *    restart (at least once across a crash), and a settled send is resent with the same msgId,
 *    which the server answers as a duplicate without storing it again.
 */
export class StateStore {
  private readonly intervalMs: number
  private readonly onError: (err: unknown) => void
  private timer: ReturnType<typeof setTimeout> | null = null
  private lastWriteAt = Number.NEGATIVE_INFINITY
  private last: Promise<void> = Promise.resolve()
  private closed = false

  constructor (private readonly storage: ClientStorage, private readonly key: string, readonly state: PersistedState, options: StateStoreOptions = {}) {
    this.intervalMs = options.saveIntervalMs ?? 200
    this.onError = options.onError ?? (() => {})
  }

  static async load (storage: ClientStorage, key: string, options: StateStoreOptions = {}): Promise<StateStore> {
    return new StateStore(storage, key, await readState(storage, key), options)
  }

  /** The state changed in a way that may be written late (see the class comment). */
  changed (): void {
    if (this.timer !== null) return
    const wait = this.lastWriteAt + this.intervalMs - Date.now()
    if (wait <= 0 || this.closed) {
      this.write().catch(this.onError)
      return
    }
    this.timer = setTimeout(() => {
      this.timer = null
      this.write().catch(this.onError)
    }, wait)
  }

  /** Writes the state now (with any coalesced change pending); resolves once it is stored. */
  async saveNow (): Promise<void> {
    await this.write()
  }

  /** Writes pending changes now and resolves when every write has finished. */
  async flush (): Promise<void> {
    if (this.timer !== null) this.write().catch(this.onError)
    await this.last
  }

  /** Flushes; from now on every change is written at once (nothing may wait for a timer any more). */
  async close (): Promise<void> {
    this.closed = true
    await this.flush()
  }

  private async write (): Promise<void> {
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    this.lastWriteAt = Date.now()
    const write = this.storage.set(this.key, JSON.stringify(this.state))
    this.last = write.catch(() => {})
    await write
  }
}
