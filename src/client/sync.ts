/**
 * Per-conversation ordering: every message is emitted exactly once, in seq order, gaps filled first.
 *
 * For each conversation the device keeps `synced`, the highest seq it holds without a gap (persisted):
 * a message with seq <= synced is a duplicate and dropped, seq = synced + 1 is emitted, and a higher
 * seq is held back while `history {after: synced}` is paged until `hasMore` is false (topics.md,
 * "Delivery guarantees"). A page with `firstSeq` (retention removed the messages before it) moves
 * `synced` up to firstSeq - 1 first: those messages are gone, and waiting for them would never end. `synced` is persisted after the `message` listeners ran, coalesced
 * (StateStore.changed: about one write per 200 ms however many messages arrive), which makes
 * delivery to the app exactly once while the process lives and at least once across a crash: what
 * was emitted after the last write is emitted again after a restart.
 *
 * Where a conversation starts (the first seq emitted is start + 1):
 *  - first sync of an empty storage: every listed conversation starts at its lastSeq; older messages
 *    are history (`ImClient.history`), not events;
 *  - added while connected (a `member` event naming this user): right after the join, i.e. just
 *    before the first message that arrives live;
 *  - met in any other way later (it shows up in `list`, or a message arrives before its event): at
 *    most `maxBackfill` messages back from the newest seq known.
 */
import type { MessageEnvelope } from '../protocol/schemas.js'
import { applyChange, isChange } from './changes.js'
import { ImClientError } from './errors.js'
import type { ConversationList } from './list.js'
import type { StateStore } from './storage.js'
import type { HistoryResult } from './types.js'

/** Local copies keep at most this many messages per conversation (the oldest go first). */
const LOCAL_MESSAGES_MAX = 10000
/** Conversations caught up at the same time after a reconnect (each pages its history one request at a time). */
const CATCH_UP_CONCURRENCY = 8

export interface SyncDeps {
  store: StateStore
  history: (conv: string, after: number) => Promise<HistoryResult>
  emitMessage: (m: MessageEnvelope) => void
  /** A message of the local copy changed (an edit, delete or reaction was applied to it). */
  emitUpdated: (m: MessageEnvelope) => void
  emitSynced: (conv: string, seq: number) => void
  emitError: (err: ImClientError) => void
  maxBackfill: number
  retryMs: number
  isClosed: () => boolean
}

interface ConvState {
  /** Highest contiguous seq; undefined until the start is decided. */
  synced: number | undefined
  /** Joined while connected: the first live message decides the start. */
  joinedLive: boolean
  /** Highest seq known to exist. */
  target: number
  /** Messages received ahead of a gap. */
  ahead: Map<number, MessageEnvelope>
  /** Local copy, seq ascending, unique. */
  local: MessageEnvelope[]
  filling: Promise<void> | null
  retry: ReturnType<typeof setTimeout> | null
}

export class ConversationSync {
  private readonly convs = new Map<string, ConvState>()

  constructor (private readonly deps: SyncDeps) {}

  messages (conv: string): MessageEnvelope[] {
    return [...(this.convs.get(conv)?.local ?? [])]
  }

  /** A message from im/u/<user>/m. */
  receive (m: MessageEnvelope): void {
    const c = this.conv(m.conv)
    if (c.synced === undefined) {
      const start = c.joinedLive || !this.deps.store.state.initialized ? m.seq - 1 : Math.max(0, m.seq - this.deps.maxBackfill)
      this.setSynced(m.conv, c, start)
    }
    this.accept(m.conv, c, [m])
  }

  /** History fetched by the app: older messages join the local copy, newer ones go through ordering. */
  merge (conv: string, messages: MessageEnvelope[]): void {
    const c = this.conv(conv)
    const synced = c.synced
    const newer = synced === undefined ? [] : messages.filter(m => m.seq > synced)
    for (const m of messages) if (synced === undefined || m.seq <= synced) insert(c.local, m)
    if (newer.length > 0) this.accept(conv, c, newer)
  }

  /** This user was added to `conv` while connected. */
  joined (conv: string): void {
    const c = this.conv(conv)
    if (c.synced === undefined) c.joinedLive = true
  }

  /**
   * This user joined a channel whose last seq was `lastSeq` once its topic was subscribed: the
   * conversation starts there (unless it started already).
   */
  joinedAt (conv: string, lastSeq: number): void {
    const c = this.conv(conv)
    if (c.synced === undefined) this.setSynced(conv, c, lastSeq)
  }

  /** This user left or was removed: forget the conversation (a later re-add starts afresh). */
  forget (conv: string): void {
    const c = this.convs.get(conv)
    if (c?.retry !== null && c?.retry !== undefined) clearTimeout(c.retry)
    this.convs.delete(conv)
    if (conv in this.deps.store.state.synced) {
      delete this.deps.store.state.synced[conv]
      this.deps.store.changed()
    }
  }

  /**
   * After (re)connecting: pull what was missed in every conversation of `list`. Conversations known
   * before the list was requested and missing from a complete list were left while offline and are
   * forgotten (one that appears while the request runs is kept).
   */
  async catchUp (list: () => Promise<ConversationList>): Promise<void> {
    const { state } = this.deps.store
    const knownBefore = Object.keys(state.synced)
    const { conversations: summaries, complete } = await list()
    const listed = new Set(summaries.map(s => s.conv))
    if (complete) for (const conv of knownBefore) if (!listed.has(conv)) this.forget(conv)
    for (const s of summaries) {
      const c = this.conv(s.conv)
      if (c.synced === undefined) this.setSynced(s.conv, c, state.initialized ? Math.max(0, s.lastSeq - this.deps.maxBackfill) : s.lastSeq)
      c.target = Math.max(c.target, s.lastSeq)
    }
    state.initialized = true
    this.deps.store.changed()
    const queue = [...summaries]
    const worker = async (): Promise<void> => {
      for (let s = queue.shift(); s !== undefined; s = queue.shift()) {
        const c = this.convs.get(s.conv)
        if (c === undefined) continue
        const before = c.synced
        await this.fill(s.conv, c)
        // fillLoop announces conversations it advanced; announce the others too, once per sync.
        if (c.synced !== undefined && c.synced === before) this.deps.emitSynced(s.conv, c.synced)
      }
    }
    await Promise.all(Array.from({ length: CATCH_UP_CONCURRENCY }, worker))
  }

  /** True when every known conversation is contiguous up to the newest seq known. */
  get idle (): boolean {
    for (const c of this.convs.values()) if (c.filling !== null || (c.synced ?? 0) < c.target) return false
    return true
  }

  /**
   * Replaces the local copy of message `seq` by `change(it)` (when the copy holds it and it
   * changes) and announces it; returns the copy as it was (undefined: not held).
   */
  updateLocal (conv: string, seq: number, change: (m: MessageEnvelope) => MessageEnvelope): MessageEnvelope | undefined {
    const c = this.convs.get(conv)
    return c === undefined ? undefined : this.update(c, seq, change)
  }

  private update (c: ConvState, seq: number, change: (m: MessageEnvelope) => MessageEnvelope): MessageEnvelope | undefined {
    const i = indexOf(c.local, seq)
    const before = i < 0 ? undefined : c.local[i]
    if (before === undefined) return undefined
    const after = change(before)
    if (after !== before) {
      c.local[i] = after
      this.deps.emitUpdated(after)
    }
    return before
  }

  stop (): void {
    for (const c of this.convs.values()) if (c.retry !== null) clearTimeout(c.retry)
  }

  private conv (conv: string): ConvState {
    let c = this.convs.get(conv)
    if (c === undefined) {
      const synced = this.deps.store.state.synced[conv]
      c = { synced, joinedLive: false, target: synced ?? 0, ahead: new Map(), local: [], filling: null, retry: null }
      this.convs.set(conv, c)
    }
    return c
  }

  private accept (conv: string, c: ConvState, messages: MessageEnvelope[]): void {
    const synced = c.synced ?? 0
    for (const m of messages) {
      if (m.seq <= synced) continue
      c.ahead.set(m.seq, m)
      c.target = Math.max(c.target, m.seq)
    }
    this.drain(conv, c)
    if (c.ahead.size > 0) void this.fill(conv, c)
  }

  /** Emits the messages that continue the contiguous run. */
  private drain (conv: string, c: ConvState): void {
    if (c.synced === undefined) return
    for (let next = c.ahead.get(c.synced + 1); next !== undefined; next = c.ahead.get(c.synced + 1)) {
      c.ahead.delete(next.seq)
      insert(c.local, next)
      if (c.local.length > LOCAL_MESSAGES_MAX) c.local.shift()
      this.setSynced(conv, c, next.seq)
      this.deps.emitMessage(next)
      if (isChange(next) && next.target !== undefined) this.update(c, next.target, target => applyChange(target, next))
      this.deps.store.changed()
    }
    for (const seq of c.ahead.keys()) if (seq <= c.synced) c.ahead.delete(seq)
  }

  /** Pages history after `synced` until the conversation is contiguous up to `target`. One fill per conversation at a time. */
  private async fill (conv: string, c: ConvState): Promise<void> {
    // A message may have been held back just as the running fill finished: check again after it.
    while (c.filling !== null) await c.filling
    if (c.synced === undefined || (c.synced >= c.target && c.ahead.size === 0)) return
    c.filling = this.fillLoop(conv, c).finally(() => { c.filling = null })
    await c.filling
  }

  private async fillLoop (conv: string, c: ConvState): Promise<void> {
    try {
      while (c.synced !== undefined && (c.synced < c.target || c.ahead.size > 0) && this.convs.get(conv) === c) {
        const page = await this.deps.history(conv, c.synced)
        c.target = Math.max(c.target, page.lastSeq)
        const before = c.synced
        // retention removed the seqs below firstSeq: they can never be filled, the run goes on from there
        if (page.firstSeq !== undefined && page.firstSeq - 1 > c.synced) {
          this.setSynced(conv, c, page.firstSeq - 1)
          this.deps.store.changed()
        }
        for (const m of page.messages) if (m.seq > c.synced) c.ahead.set(m.seq, m)
        this.drain(conv, c)
        if (!page.hasMore && c.synced === before) {
          // The server says nothing lies beyond: what is still held back cannot be completed.
          c.target = c.synced
          c.ahead.clear()
          throw new ImClientError('INTERNAL', `history of ${conv} has a gap after seq ${c.synced}`, 'history')
        }
      }
      if (c.synced !== undefined && this.convs.get(conv) === c) this.deps.emitSynced(conv, c.synced)
    } catch (err) {
      const e = err instanceof ImClientError ? err : new ImClientError('INTERNAL', String(err), 'history')
      if (e.code === 'NOT_MEMBER') {
        this.forget(conv)
      } else if (e.code !== 'CLOSED' && !this.deps.isClosed() && c.retry === null && this.convs.get(conv) === c) {
        c.retry = setTimeout(() => { c.retry = null; void this.fill(conv, c) }, this.deps.retryMs)
      }
      if (e.code !== 'CLOSED') this.deps.emitError(e)
    }
  }

  private setSynced (conv: string, c: ConvState, seq: number): void {
    c.synced = seq
    c.target = Math.max(c.target, seq)
    this.deps.store.state.synced[conv] = seq
  }
}

/** Index of `seq` in a seq-ascending array, or -1. */
function indexOf (list: MessageEnvelope[], seq: number): number {
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    const at = list[mid]
    if (at !== undefined && at.seq < seq) lo = mid + 1
    else hi = mid
  }
  return list[lo]?.seq === seq ? lo : -1
}

/** Inserts into a seq-ascending array unless that seq is already there. */
function insert (list: MessageEnvelope[], m: MessageEnvelope): void {
  const last = list[list.length - 1]
  if (last !== undefined && last.seq < m.seq) {
    list.push(m)
    return
  }
  let lo = 0
  let hi = list.length
  while (lo < hi) {
    const mid = (lo + hi) >> 1
    const at = list[mid]
    if (at !== undefined && at.seq < m.seq) lo = mid + 1
    else hi = mid
  }
  if (list[lo]?.seq !== m.seq) list.splice(lo, 0, m)
}
