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
  kind: 'text' | 'custom'
  body: unknown
  replyTo?: number
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

/**
 * Owns the persisted state. Every `save()` hands the whole state to `storage.set` at once, in the same
 * tick, so a synchronous storage (FileStorage, localStorage, memory) has stored it before control
 * returns; a ClientStorage must apply `set` calls in the order they were made.
 */
export class StateStore {
  readonly state: PersistedState
  private last: Promise<void> = Promise.resolve()

  private constructor (private readonly storage: ClientStorage, private readonly key: string, state: PersistedState) {
    this.state = state
  }

  static async load (storage: ClientStorage, key: string): Promise<StateStore> {
    const raw = await storage.get(key)
    let state: PersistedState = { v: 1, initialized: false, synced: {}, outbox: [] }
    if (raw !== null) {
      const parsed = JSON.parse(raw) as Partial<PersistedState>
      if (parsed.v === 1) state = { v: 1, initialized: parsed.initialized === true, synced: parsed.synced ?? {}, outbox: parsed.outbox ?? [] }
    }
    return new StateStore(storage, key, state)
  }

  /** Resolves once this state is stored. */
  async save (): Promise<void> {
    const write = this.storage.set(this.key, JSON.stringify(this.state))
    this.last = write.catch(() => {})
    await write
  }

  /** Resolves when the last write has finished. */
  async flush (): Promise<void> {
    await this.last
  }
}
