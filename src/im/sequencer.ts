/**
 * The sequencer: gives every message of a conversation the next seq (1, 2, 3 ... no gap, no
 * duplicate) and makes it durable before the sender is answered.
 *
 * - One writer per conversation inside this process: seqs are assigned from a cached lastSeq,
 *   and only one batch is being written at a time, so commits (and deliveries) happen in seq order.
 * - Across processes, the unique index (conversation, seq) is the arbiter: a seq conflict means
 *   another node got there first; the message is retried after that node's tail (from its commit
 *   notice when it came during the write, else the entry that won, read by key; the whole tail
 *   reloaded after MAX_SEQ_STEPS conflicts in a row).
 * - Idempotency rests on the unique key (conversation, sender, clientMsgId): a resend finds the
 *   stored message and gets its seq back, and is not delivered again (but for a cluster's rule:
 *   Delivery.resent).
 * - Group commit: messages that arrive while a batch is being written (or within batchDelayMs)
 *   go into the next batch: one ordered insert for many senders and conversations.
 * - Gapless under failure: inserts are ordered and stop at the first conflict, so what is stored
 *   of a conversation is always a prefix of the seqs handed out; the unstored rest is written
 *   next (that of a conversation whose delivery was just held: after the hold). A write that
 *   fails for another reason is retried with the same documents (safe: a stored one reports a
 *   clientMsgId conflict with its own seq) until writeRetryMs has passed; then the senders get
 *   UNAVAILABLE and the conversations' lastSeq is reloaded from the store before the next write.
 *   Whatever such an abandoned write did store ("orphans") is delivered, in seq order, when that
 *   lastSeq is reloaded; a later resend of it is then answered as a duplicate.
 */
import { LRUCache } from 'lru-cache'
import { lruCache } from '../lru.js'
import { ImError } from '../errors.js'
import { countOf, isChangeKind, isStoredMessage, lastRealOf, type MessageStore, type StoredMessage, type MessageKind } from '../store/types.js'
import type { Logger } from '../log.js'
import type { CommitListener, HeldDeliveries } from './delivery.js'
import type { ClusterBus } from '../broker/bus.js'
import { SEQ_TOPIC } from '../protocol/topics.js'
import type { Metrics } from '../metrics.js'
import { monotonicNow, wallNow, type MonotonicMs, type WallMs } from '../clocks.js'

export interface Draft {
  conversationId: string
  senderId: string
  clientMsgId: string
  kind: MessageKind
  body: unknown
  replyTo: number | null
  /** Changes (edit, delete, react): the seq of the message changed. */
  target?: number
  /** Messages: who the sender mentioned. */
  mentions?: string[]
}

/**
 * The end of a conversation as this process knows it: its last seq, the real messages up to it
 * (changes are not counted, see StoredMessage.count) and the seq of the last real message.
 */
export interface Tail {
  seq: number
  count: number
  lastReal: number
  /**
   * When the entry at `seq` was stored (the clock of the node that stored it), when this process
   * read it from the store; not when it wrote it itself, nor from another node's notice. See
   * Delivery.committed.
   */
  ts?: number
}

/** A notice's tail, [seq, count, lastReal], as a node writes it: anything else is ignored. */
function isTail (t: unknown): t is [number, number, number] {
  if (!Array.isArray(t) || t.length !== 3 || !t.every(n => Number.isSafeInteger(n))) return false
  const [seq, count, lastReal] = t as [number, number, number]
  return seq >= 1 && count >= 0 && count <= seq && lastReal >= 0 && lastReal <= seq
}

export function tailOf (m: StoredMessage | null): Tail {
  return m === null ? { seq: 0, count: 0, lastReal: 0 } : { seq: m.seq, count: countOf(m), lastReal: lastRealOf(m), ts: m.ts }
}

export interface SubmitResult {
  message: StoredMessage
  /**
   * True if this clientMsgId had been stored before: the seq and ts are the ones assigned then
   * (the kind, body and replyTo may be the resend's: a resend answered from memory is not read back).
   */
  duplicate: boolean
}

export interface SequencerOptions {
  batchMaxMessages: number
  batchDelayMs: number
  writeRetryMs: number
  logger: Logger
  /** The other nodes' committed seqs arrive here (cluster); null on a single node. */
  peers?: ClusterBus | null
  /**
   * Cluster: since when (by `clock`) the notices of the other nodes have arrived without a break
   * (BrokerBackends.linkUpSince; +Infinity while they do not).
   */
  peersSince?: () => MonotonicMs
  /**
   * The monotonic clock `peersSince` is read on (default performance.now): how long the link has
   * been up decides whether the tails here are complete, and a wall clock stepped forward would
   * say so too early.
   */
  clock?: () => MonotonicMs
  /** Conversations whose lastSeq is kept (least recently written evicted; reloaded from the store). */
  conversationsMax?: number
  /**
   * Remember recently stored keys so that a resend is answered without a store round trip (at
   * least half this many; default 20,000). 0 when the store's own duplicate lookup is as cheap
   * (the in-memory store): a resend then costs one insert that reports the conflict.
   */
  recentMax?: number
  /** The wall clock messages are stamped with (default Date.now). */
  now?: () => WallMs
  sleep?: (ms: number) => Promise<void>
  /** Batch sizes and submit -> stored latency. */
  metrics?: Metrics
}

interface Pending {
  draft: Draft
  key: string
  resolve: (r: SubmitResult) => void
  reject: (e: unknown) => void
  /** Other submits of the same key that arrived while this one was pending. */
  followers: Array<{ resolve: (r: SubmitResult) => void, reject: (e: unknown) => void }>
  /** When it was submitted. */
  at: number
  /**
   * When it could be written first: its submit, or the end of the hold of its conversation it was
   * queued behind (see heldConversations). It is answered (stored or UNAVAILABLE) about
   * writeRetryMs after this at the latest.
   */
  since: number
}

/** A seq and ts this process tried to store a key under, in a write whose outcome is unknown. */
interface Attempt { seq: number, ts: number }

/** Where a recently stored key is. */
interface Stored {
  seq: number
  ts: number
  /** Changes: what it changes (`<kind>:<target>`), so that a resend of another request with its msgId is told apart. */
  change?: string
}

/** What a change changes, `<kind>:<target>`; undefined for a message. */
function changeOf (m: { kind: MessageKind, target?: number }): string | undefined {
  return isChangeKind(m.kind) ? `${m.kind}:${m.target ?? 0}` : undefined
}

/**
 * Recently stored keys kept for resends: a resend comes within seconds of the original (a reply
 * lost to a reconnect); one after that is looked up in the store (off the write loop). Each entry
 * is a key and two numbers (~200 bytes), filled in ~70 s at 300 sends/s, then constant.
 */
const RECENT_MAX = 20_000
/** Keys whose write had an unknown outcome, kept until it is known. */
const UNCERTAIN_MAX = 200_000
/** Conversations whose lastSeq is cached. */
const CONVERSATIONS_MAX = 200_000
/** Conversations whose fan-out marks went past the known tail (see noteMarked), remembered at most. */
const MARKED_PAST_MAX = 50_000
/** A cached tail is forgotten this long after it was last set (see the constructor). */
const TAIL_TTL_MS = 60_000
/** Resends of unremembered messages looked up at once (each may scan the collection on FerretDB). */
const RESEND_LOOKUPS = 4
/** Resends waiting for a lookup; beyond, UNAVAILABLE. */
const RESEND_WAITING = 1000
/** Seq conflicts in a row after which a conversation's lastSeq is reloaded from the store. */
const MAX_SEQ_STEPS = 16
/** How long after another node's notice of a conversation (or a seq conflict) its messages go last in a batch. */
const CONTENDED_MS = 2000

/** CONFLICT: a request reused the msgId of a stored message or change of another kind. */
export function msgIdInUse (msgId: string, storedChange: string | undefined): ImError {
  const what = storedChange === undefined ? 'a message' : `a change (${storedChange.replace(':', ' of seq ')})`
  return new ImError('CONFLICT', `msgId ${msgId} is already used for ${what}; use a new msgId for each send and each change`)
}

/** The stored copy of a resend is of what the request asks for (same kind of entry, same target). */
export function sameEntry (stored: StoredMessage, asked: { kind: MessageKind, target?: number }): boolean {
  return changeOf(stored) === changeOf(asked)
}

function keyOf (d: { conversationId: string, senderId: string, clientMsgId: string }): string {
  // one flat string: a template literal builds a tree of four string objects that the key keeps for
  // as long as the memory of recent keys does (20,000 keys: 80,000 objects for every full GC to mark)
  return [d.conversationId, d.senderId, d.clientMsgId].join('/')
}

export class Sequencer {
  private readonly store: MessageStore
  private readonly delivery: CommitListener
  private readonly opts: SequencerOptions
  private readonly now: () => WallMs
  private readonly clock: () => MonotonicMs
  private readonly sleep: (ms: number) => Promise<void>
  /** conversation -> its tail (highest seq known to be stored); absent = unknown, load from the store. */
  private readonly tails: LRUCache<string, Tail>
  /** conversation -> the highest fan-out mark past the tail known then (see noteMarked). */
  private readonly markedPast = lruCache<string, number>(MARKED_PAST_MAX)
  /** conversation -> seq conflicts in a row (see writeBatch) */
  private readonly seqSteps = lruCache<string, number>(10_000)
  /**
   * conversation -> when another node last said it wrote it, or a write here met its seq (see
   * contendedLast, which compares the time; the TTL only lets go of the entries in time)
   */
  private readonly contendedAt = lruCache<string, number>(10_000, { ttl: 10 * CONTENDED_MS })
  /** key -> pending submit (in the queue or in the batch being written) */
  private readonly pendingByKey = new Map<string, Pending>()
  /** Recently stored keys -> message, so that a resend is answered without a store round trip. */
  private readonly recent: LRUCache<string, Stored> | null
  /**
   * Keys whose write had an unknown outcome (the store failed mid-write), with the seq and ts of
   * each attempt. If such a key later turns out to be stored under one of these, this process
   * stored it and never delivered it: it is delivered then. Stored under anything else, it was
   * stored (and delivered) by someone else: a plain resend.
   */
  private readonly uncertain = lruCache<string, Attempt[]>(UNCERTAIN_MAX)
  /**
   * conversation -> uncertain keys whose senders were answered UNAVAILABLE. Whatever of them is
   * stored is delivered when the conversation's lastSeq is next loaded, before anything newer.
   */
  private readonly orphans = new Map<string, Set<string>>()
  /** message (conversation:seq) -> the end of the changes of it being applied (see applyChange). */
  private readonly applying = new Map<string, Promise<void>>()
  private queue: Pending[] = []
  private writing = false
  /** The scheduled flush: a timer (batchDelayMs) or an immediate (a full batch, or batchDelayMs 0). */
  private timer: { kind: 'timeout', handle: NodeJS.Timeout } | { kind: 'immediate', handle: NodeJS.Immediate } | null = null
  private idleWaiters: Array<() => void> = []
  /**
   * Conversations whose delivery is held (Delivery: order across nodes) -> the end of it. Their
   * queued messages are not written meanwhile: they go as one block after it (one wait for the other
   * node's seqs per block, not one per batch). Entries live as long as their hold.
   */
  private readonly heldConversations = new Map<string, Promise<void>>()
  /** Held deliveries and the answers waiting for them: close() waits for them. */
  private readonly heldWork = new Set<Promise<void>>()
  /** Resend lookups running outside the write loop (lookUpResend), and those waiting for their turn. */
  private resendLookups = 0
  private readonly resendWaiting: Pending[] = []
  private closed = false

  constructor (store: MessageStore, delivery: CommitListener, opts: SequencerOptions) {
    this.store = store
    this.delivery = delivery
    this.opts = opts
    this.now = opts.now ?? wallNow
    this.clock = opts.clock ?? monotonicNow
    const recentMax = opts.recentMax ?? RECENT_MAX
    this.recent = recentMax > 0 ? lruCache(recentMax) : null
    // In a cluster a tail is forgotten a minute after it was last set: readers look past a known
    // tail only (latestPast), which is exact as long as the seq after it cannot have been removed
    // by retention since; a tail that old is read again from the head instead. (A single node
    // writes every message itself: its tails are exact however old.)
    // (An expired tail stays until evicted: lowerTail still answers with it.)
    this.tails = lruCache(opts.conversationsMax ?? CONVERSATIONS_MAX, { ttl: opts.peers != null ? TAIL_TTL_MS : 0, ttlAutopurge: false, noDeleteOnStaleGet: true })
    this.sleep = opts.sleep ?? ((ms) => new Promise(resolve => setTimeout(resolve, ms)))
    opts.peers?.on(SEQ_TOPIC, (notice) => {
      const { seqs, tails, changed, docs } = notice
      if (typeof tails === 'object' && tails !== null) {
        for (const [conv, t] of Object.entries(tails)) {
          if (isTail(t)) this.observe(conv, { seq: t[0], count: t[1], lastReal: t[2] })
        }
      } else if (typeof seqs === 'object' && seqs !== null) {
        // a node that sends seqs only (an older version): the counts are not known
        for (const [conv, seq] of Object.entries(seqs)) if (typeof seq === 'number') this.observe(conv, seq)
      }
      // what it stored (its small messages), before what it changed: a message changed in the
      // batch that stored it is sent as it was stored, and is forgotten right after
      if (Array.isArray(docs)) this.store.remember(docs.filter(isStoredMessage))
      // messages another node changed: what this process has cached of them is stale
      if (Array.isArray(changed)) {
        const keys = changed.filter((k): k is [string, number] => Array.isArray(k) && typeof k[0] === 'string' && typeof k[1] === 'number')
        this.store.forget(keys.map(([conversationId, seq]) => ({ conversationId, seq })))
      }
    })
  }

  /**
   * Stores the message (or finds the earlier copy of a resend) and resolves with its seq. A resend
   * is told to delivery (CommitListener.resent): in a cluster, the node that stored it may have died
   * before delivering it.
   */
  async submit (draft: Draft): Promise<SubmitResult> {
    const result = await this.enqueue(draft)
    if (result.duplicate) this.resent(result.message)
    return result
  }

  /** Tells delivery that a resend was answered with `message` (submit; a change's refusal that found it). */
  resent (message: StoredMessage): void {
    try {
      this.delivery.resent?.(message)
    } catch (err) {
      // the sender's answer stands
      this.opts.logger.error({ err, conv: message.conversationId, seq: message.seq }, 'a resend could not be told to delivery')
    }
  }

  private enqueue (draft: Draft): Promise<SubmitResult> {
    if (this.closed) return Promise.reject(new ImError('UNAVAILABLE', 'server is shutting down'))
    const key = keyOf(draft)
    const known = this.recent?.get(key)
    if (known !== undefined) {
      // the msgId was used for something else (a send and an edit, two changes of different kinds)
      if (known.change !== changeOf(draft)) return Promise.reject(msgIdInUse(draft.clientMsgId, known.change))
      // the stored seq and ts; the rest is the resend's own (a resend carries the same message)
      const { conversationId, senderId, clientMsgId, kind, body, replyTo, target } = draft
      const message: StoredMessage = { conversationId, senderId, clientMsgId, kind, body, replyTo, seq: known.seq, ts: known.ts }
      if (target !== undefined) message.target = target
      return Promise.resolve({ message, duplicate: true })
    }
    const inFlight = this.pendingByKey.get(key)
    if (inFlight !== undefined) {
      return new Promise((resolve, reject) => {
        inFlight.followers.push({ resolve: (r) => resolve({ ...r, duplicate: true }), reject })
      })
    }
    return new Promise((resolve, reject) => {
      const at = this.now()
      const p: Pending = { draft, key, resolve, reject, followers: [], at, since: at }
      this.pendingByKey.set(key, p)
      this.queue.push(p)
      this.schedule()
    })
  }

  /**
   * The stored entry of this msgId of this sender, if this process can tell cheaply: by primary key
   * when it remembers the seq; without a memory of recent keys (the in-memory store, whose key
   * lookup is a Map) by the store's key lookup. Never a key lookup on a store that may scan for it
   * (FerretDB): refusals ask (ops/changes.ts), and a client could make them at will.
   */
  async findStored (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    if (this.recent === null) return await this.store.findByClientMsgId(conversationId, senderId, clientMsgId)
    const known = this.recent.get(keyOf({ conversationId, senderId, clientMsgId }))
    if (known === undefined) return null
    const [m] = await this.store.getMany([{ conversationId, seq: known.seq }])
    return m !== undefined && m.senderId === senderId && m.clientMsgId === clientMsgId ? m : null
  }

  /**
   * Another node stored up to `tail` in this conversation, so every seq up to it is stored (stored
   * seqs are always a prefix). Raises the cached tail so the next write does not collide with it,
   * and caches it for a conversation without one (readers take it instead of a head record that may
   * lag: see tailsComplete), except while an abandoned write of it waits to be delivered (the
   * conversation loads its tail then, and recovers those first). A bare seq (no counts) beyond the
   * cached tail makes it unknown: it is loaded next time.
   */
  observe (conversationId: string, tail: Tail | number): void {
    this.contendedAt.set(conversationId, this.now())
    const known = this.tails.get(conversationId)
    if (known === undefined) {
      if (typeof tail !== 'number' && !this.orphans.has(conversationId)) this.tails.set(conversationId, tail)
      return
    }
    if (typeof tail === 'number') {
      if (tail > known.seq) this.tails.delete(conversationId)
    } else if (tail.seq > known.seq) {
      this.tails.set(conversationId, tail)
    }
  }

  /**
   * A conversation just created under a new random id (newConversationId): nothing is stored under
   * it on any node, so its tail is known, and its first write reads no store (a head and a probe,
   * in the write loop, where every conversation's batch waits for them).
   */
  created (conversationId: string): void {
    if (!this.tails.has(conversationId)) this.tails.set(conversationId, { seq: 0, count: 0, lastReal: 0 })
  }

  /** The highest seq this process knows to be stored, if it knows. */
  knownLastSeq (conversationId: string): number | undefined {
    return this.tails.get(conversationId)?.seq
  }

  /** The tail this process knows, if it knows. */
  knownTail (conversationId: string): Tail | undefined {
    return this.tails.get(conversationId)
  }

  /**
   * A tail this process wrote or was told of, however long ago (expired ones included): a lower
   * bound of the conversation's tail, as seqs never go back. What list and unread counts raise a
   * head record to.
   */
  lowerTail (conversationId: string): Tail | undefined {
    return this.tails.get(conversationId, { allowStale: true })
  }

  /** How long the other nodes' notices have arrived without a break, by the monotonic clock (-Infinity: not now). */
  private linkUpMs (): number {
    return this.clock() - (this.opts.peersSince?.() ?? Number.POSITIVE_INFINITY)
  }

  /**
   * Whether a tail this process does not know is the one in the store's head record, or one above
   * it this process knows (lowerTail). Not while the store has not checked its heads since it
   * started (a process that died may have left heads behind, see MessageStore.headsChecked). Then
   * always on one node. In a cluster, a head record may lag what another node stored by up to
   * headLagMs, and whatever another node stores reaches this one's tails: so once the notices have
   * arrived without a break for longer than that, every conversation whose head may lag has a
   * tail here. Until then (a node that just started, or whose link to Redis is down or just came
   * back) readers ask tailFor instead.
   */
  tailsComplete (): boolean {
    if (this.store.headsChecked === false) return false
    if (this.opts.peers == null) return true
    const lag = this.store.headLagMs ?? 0
    if (lag === 0) return true
    if (lag >= TAIL_TTL_MS) return false
    return this.linkUpMs() > lag
  }

  /**
   * The conversation's last stored seq, for readers (read, history, list, receipts), without a
   * store query when this process can tell: on a single node every write goes through it, so
   * what it knows is what is stored. In a cluster the other nodes' seqs arrive over the bus a
   * little after they are stored, so what it knows answers only a caller that needs no more than
   * `atLeast` (read: the seq being marked). Otherwise the store answers (exactly: see
   * MessageStore.lastSeq; past the known tail only, when there is one), and the answer is kept.
   */
  async lastSeqFor (conversationId: string, atLeast = Number.POSITIVE_INFINITY): Promise<number> {
    return (await this.tailFor(conversationId, atLeast)).seq
  }

  /**
   * The last seq for `history`, whose caller holds the messages up to some seq and asks for the
   * rest: in a cluster, the tail this node knows, without a store query, when it has heard the
   * other nodes without a break for longer than a tail is kept (so the tail was set, and every
   * notice since has arrived, while it listened); else as lastSeqFor. What another node stored and
   * this one has not heard of yet reaches the caller live: that node publishes its commit notice
   * (`$mqim/seq`) before the message's fan-out, on its one Redis publishing connection, and every
   * stored message's fan-out goes on `$mqim-fan` (it carries a mark; see FanOut.publishChunk),
   * which this node, like the notices' `$mqim/+`, hears on its one subscriber connection: it
   * handles the notice before the fan-out. If it handled the fan-out before the caller's
   * subscription took effect, it handled the notice before too, so before this request (made
   * after the subscription), and the tail has the seq; else the fan-out is delivered to the
   * caller. A caller that polls without subscribing may see such a message on its next request,
   * milliseconds later. This took a store lookup off every `history`: in the cluster soak, 46 a
   * second, each a FerretDB query that waited behind the inserts.
   */
  async lastSeqForSync (conversationId: string): Promise<number> {
    return this.syncTail(conversationId)?.seq ?? await this.lastSeqFor(conversationId)
  }

  /**
   * The tail a reader that syncs (history's lastSeq, list) is answered with without a store query,
   * if there is one: on one node the tail this process knows (every write goes through it); in a
   * cluster the one it knows once it has heard the other nodes without a break for longer than a
   * tail is kept, as lastSeqForSync argues, and no fan-out mark past it has arrived (noteMarked).
   */
  syncTail (conversationId: string): Tail | undefined {
    const known = this.tails.get(conversationId)
    if (known === undefined || this.opts.peers == null) return known
    return known.seq >= (this.markedPast.get(conversationId) ?? 0) && this.linkUpMs() > TAIL_TTL_MS
      ? known
      : undefined
  }

  /**
   * Cluster: a fan-out of `seq` arrived (its mark; called as it is delivered here, in the same
   * turn). Past the tail this node knows, its commit notice did not come first (dropped while the
   * storing node's link was partly down, or a tail set lower since by another node's late notice):
   * lastSeqForSync asks the store for this conversation until a tail at least that high is known.
   */
  noteMarked (conversationId: string, seq: number): void {
    const known = this.tails.get(conversationId)
    if ((known === undefined || seq > known.seq) && seq > (this.markedPast.get(conversationId) ?? 0)) this.markedPast.set(conversationId, seq)
  }

  /** The conversation's tail, as lastSeqFor finds its seq. */
  async tailFor (conversationId: string, atLeast = Number.POSITIVE_INFINITY): Promise<Tail> {
    const known = this.tails.get(conversationId)
    if (known !== undefined && (this.opts.peers == null || known.seq >= atLeast)) return known
    // a known tail is stored: only what other nodes stored past it is to be found
    const stored = known === undefined
      ? tailOf(await this.store.latest(conversationId))
      : await this.store.latestPast(conversationId, known.seq).then(past => past === null ? known : tailOf(past))
    // Not while an abandoned write of this conversation waits to be delivered: loadLastSeqs does that.
    if (!this.orphans.has(conversationId) && stored.seq > (this.tails.get(conversationId)?.seq ?? -1)) this.tails.set(conversationId, stored)
    return stored
  }

  /** Resolves when nothing is queued or being written. */
  drain (): Promise<void> {
    if (!this.writing && this.queue.length === 0) return Promise.resolve()
    return new Promise(resolve => this.idleWaiters.push(resolve))
  }

  /** Refuses new submits and waits for the queued ones to be written. */
  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) {
      if (this.timer.kind === 'timeout') clearTimeout(this.timer.handle)
      else clearImmediate(this.timer.handle)
      this.timer = null
      void this.flush()
    }
    await this.drain()
    // held deliveries and their senders (at most an order wait away)
    await Promise.all([...this.heldWork])
  }

  private schedule (): void {
    if (this.writing || this.timer !== null) return
    if (this.writableQueued() >= this.opts.batchMaxMessages || this.opts.batchDelayMs === 0) {
      // at the end of this loop turn: whatever the turn's reads submitted is in the batch
      this.timer = { kind: 'immediate', handle: setImmediate(() => { this.timer = null; void this.flush() }) }
    } else {
      this.timer = { kind: 'timeout', handle: setTimeout(() => { this.timer = null; void this.flush() }, this.opts.batchDelayMs) }
    }
  }

  private async flush (): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      for (let batch = this.takeBatch(); batch.length > 0; batch = this.takeBatch()) await this.writeBatch(batch)
    } finally {
      this.writing = false
      if (this.writableQueued() > 0) {
        this.schedule()
      } else if (this.queue.length === 0) {
        const waiters = this.idleWaiters
        this.idleWaiters = []
        for (const w of waiters) w()
      }
    }
  }

  /** Queued messages that may be written now (not of a held conversation). */
  private writableQueued (): number {
    if (this.heldConversations.size === 0) return this.queue.length
    let n = 0
    for (const p of this.queue) if (!this.heldConversations.has(p.draft.conversationId)) n++
    return n
  }

  /** The next batch: the oldest queued messages, those of held conversations left queued. */
  private takeBatch (): Pending[] {
    if (this.heldConversations.size === 0) return this.contendedLast(this.queue.splice(0, this.opts.batchMaxMessages))
    const batch: Pending[] = []
    const rest: Pending[] = []
    for (const p of this.queue) (batch.length < this.opts.batchMaxMessages && !this.heldConversations.has(p.draft.conversationId) ? batch : rest).push(p)
    this.queue = rest
    return this.contendedLast(batch)
  }

  /**
   * The batch with the messages of conversations another node writes too (its notice of them, or
   * a seq conflict here, within CONTENDED_MS) after the others, each conversation's in their order.
   * An ordered insert stops at a seq conflict and the rest of the batch takes another round trip:
   * behind the ones that may conflict, the others are stored in the first. (Only the order across
   * conversations changes: one sender's sends to two conversations may be stored and answered in
   * the other order, which nothing depends on: seqs, delivery order and reply ids are per
   * conversation and request.)
   */
  private contendedLast (batch: Pending[]): Pending[] {
    if (batch.length < 2 || this.contendedAt.size === 0) return batch
    const since = this.now() - CONTENDED_MS
    const first: Pending[] = []
    let last: Pending[] | null = null
    for (const p of batch) {
      if ((this.contendedAt.get(p.draft.conversationId) ?? -Infinity) >= since) (last ??= []).push(p)
      else first.push(p)
    }
    return last === null || first.length === 0 ? batch : first.concat(last)
  }

  /** Step 1 of a batch: make sure every conversation in it has a known lastSeq. */
  private async loadLastSeqs (batch: Pending[]): Promise<void> {
    if (batch.every(p => this.tails.has(p.draft.conversationId))) return
    const unknown = [...new Set(batch.map(p => p.draft.conversationId))].filter(c => !this.tails.has(c))
    await Promise.all(unknown.map(async (c) => {
      const tail = tailOf(await this.store.latest(c))
      await this.recoverOrphans(c, tail.seq)
      this.tails.set(c, tail)
    }))
  }

  /**
   * Step 1b: deliver what an abandoned (UNAVAILABLE) write of this conversation stored, so that
   * deliveries stay in seq order. A later resend of those keys is then a plain duplicate.
   */
  private async recoverOrphans (conversationId: string, lastSeq: number): Promise<void> {
    const keys = this.orphans.get(conversationId)
    if (keys === undefined) return
    const attempts = [...keys].flatMap(k => this.uncertain.get(k) ?? [])
    const fromSeq = Math.min(...attempts.map(a => a.seq))
    // only the seqs those attempts used can hold them
    const toSeq = Math.min(lastSeq, Math.max(...attempts.map(a => a.seq)))
    const found = attempts.length === 0 || fromSeq > toSeq
      ? []
      : (await this.store.range(conversationId, { fromSeq, toSeq, limit: toSeq - fromSeq + 1, direction: 'forward' }))
          .filter(m => this.isOurs(keyOf(m), m))
    this.orphans.delete(conversationId)
    for (const m of found) {
      this.uncertain.delete(keyOf(m))
      this.remember(keyOf(m), m)
    }
    if (found.length > 0) {
      this.tellStored(found)
      await this.applyChanges(found)
      await this.deliver(found, new Map())
    }
  }

  /**
   * Step 2: hand out seqs in arrival order; each pending message with its document. A change also
   * gets its target and the seq of the last real message before it; the count of real messages is
   * stored only where it differs from the seq (the conversation had changes before).
   */
  private assignSeqs (batch: Pending[], ts: number): Array<[Pending, StoredMessage]> {
    const next = new Map<string, Tail>()
    return batch.map(p => {
      const d = p.draft
      const c = d.conversationId
      const before = next.get(c) ?? this.tails.get(c) ?? { seq: 0, count: 0, lastReal: 0 }
      const seq = before.seq + 1
      const change = isChangeKind(d.kind)
      const count = change ? before.count : before.count + 1
      next.set(c, { seq, count, lastReal: change ? before.lastReal : seq })
      // spelled out: a spread of the draft is several times slower on this hot path
      const doc: StoredMessage = { conversationId: c, senderId: d.senderId, clientMsgId: d.clientMsgId, kind: d.kind, body: d.body, replyTo: d.replyTo, seq, ts }
      if (count !== seq) doc.count = count
      if (d.mentions !== undefined) doc.mentions = d.mentions
      if (change) {
        doc.target = d.target ?? 0
        doc.lastReal = before.lastReal
      }
      return [p, doc]
    })
  }

  private async writeBatch (batch: Pending[]): Promise<void> {
    // Counted from the oldest submit (or end of a hold): messages queued behind a failing write do
    // not wait for that write's retries and then for their own.
    if (batch.length === 0) return
    const deadline = batch.reduce((t, p) => Math.min(t, p.since), Number.POSITIVE_INFINITY) + this.opts.writeRetryMs
    let attempt = 0
    let remaining = batch
    /** After a failed store call: false (senders answered UNAVAILABLE) past the deadline, else back off. */
    const backOff = async (err: unknown): Promise<boolean> => {
      if (this.now() >= deadline || this.closedAndStuck(attempt)) {
        this.opts.logger.error({ messages: remaining.length, err }, 'message write failed; answering UNAVAILABLE')
        const error = new ImError('UNAVAILABLE', 'message store unavailable; resend with the same msgId', { cause: err })
        for (const p of remaining) {
          if (this.uncertain.has(p.key)) this.addOrphan(p.draft.conversationId, p.key)
          // reloaded before the conversation's next write, which delivers what this write may
          // have stored first (an orphan), in seq order; a tail kept here (a retry that found the
          // stored prefix, then failed a lookup) would let the next message be delivered before it
          this.tails.delete(p.draft.conversationId)
          this.fail(p, error)
        }
        // Queued messages whose time is up as well are answered now rather than after one more
        // failing attempt each (they were never written, so nothing of them can be stored).
        const now = this.now()
        const expired = this.queue.filter(p => p.since + this.opts.writeRetryMs <= now && !this.uncertain.has(p.key) && !this.heldConversations.has(p.draft.conversationId))
        if (expired.length > 0) {
          this.queue = this.queue.filter(p => !expired.includes(p))
          for (const p of expired) this.fail(p, error)
        }
        return false
      }
      attempt++
      this.opts.logger.warn({ attempt, err }, 'message write failed; retrying')
      await this.sleep(Math.min(50 * 2 ** Math.min(attempt, 5), 1000))
      return true
    }
    while (remaining.length > 0) {
      let assigned: Array<[Pending, StoredMessage]> = []
      let result
      try {
        await this.loadLastSeqs(remaining)
        assigned = this.assignSeqs(remaining, this.now())
        result = await this.store.insertBatch(assigned.map(([, doc]) => doc))
      } catch (err) {
        // Unknown outcome: an unknown prefix may be stored. Forget the cached lastSeqs of these
        // conversations (reloaded next time) and retry until the deadline.
        for (const p of remaining) this.tails.delete(p.draft.conversationId)
        for (const [, d] of assigned) this.markUncertain(keyOf(d), { seq: d.seq, ts: d.ts })
        if (!(await backOff(err))) return
        continue
      }
      const inserted = assigned.slice(0, result.inserted)
      const stored = inserted.map(([, m]) => m)
      // at once, before anything else is read or written: in a cluster the other nodes learn of them
      this.tellStored(stored)
      if (inserted.length > 0 && this.opts.metrics?.enabled === true) this.opts.metrics.committed(inserted.map(([p]) => p.at), this.now())
      /** For delivery's order: when the entry before each conversation's first one here was stored, if read from the store. */
      const before = new Map<string, number>()
      for (const m of stored) {
        const tail = this.tails.get(m.conversationId)
        if (tail?.ts !== undefined && tail.seq === m.seq - 1 && !before.has(m.conversationId)) before.set(m.conversationId, tail.ts)
        if (m.seq > (tail?.seq ?? 0)) this.tails.set(m.conversationId, { seq: m.seq, count: countOf(m), lastReal: lastRealOf(m) })
        this.seqSteps.delete(m.conversationId)
      }
      let rest = remaining.slice(result.inserted)
      let lookupError: unknown
      const resolved: Array<[Pending, SubmitResult]> = inserted.map(([p, message]) => [p, { message, duplicate: false }])
      const conflicting = assigned[result.inserted] // the first one not inserted, when there is a conflict
      if (result.conflict !== undefined && conflicting !== undefined) {
        const [p, doc] = conflicting
        if (result.conflict.kind === 'seq') {
          this.opts.metrics?.seqConflict()
          // Another node stored this seq first. Stored seqs are always a prefix 1..M, so every seq
          // up to this one is stored: retry at once after it, without a store round trip. (A node
          // that reloads lastSeq while another node keeps writing the conversation can lose every
          // race; on FerretDB lastSeq is a collection scan.) Reload after repeated conflicts.
          // Its count is what the entry stored there says: one primary-key read, unless the other
          // node's commit notice came while this write was on its way (it goes out as soon as that
          // node's write returns): its tail is then known, up to what its notices told, with no
          // read and no second conflict on the seqs they told of. Delivery's order gets now as the
          // time the entry before the retry was stored (an upper bound: the notice goes out as soon
          // as that node's write returns, during this one): if it knows nothing else of the
          // conversation, it waits for that node's fan-out, as it would with the time read.
          const c = doc.conversationId
          const now = this.now()
          this.contendedAt.set(c, now)
          const steps = (this.seqSteps.get(c) ?? 0) + 1
          const told = this.tails.get(c)
          let there: Tail | undefined
          if (steps <= MAX_SEQ_STEPS) {
            if (told !== undefined && told.seq >= doc.seq) {
              there = told.ts === undefined ? { ...told, ts: now } : told
              this.opts.metrics?.seqConflictTold()
            } else {
              try {
                const [stored] = await this.store.getMany([{ conversationId: c, seq: doc.seq }])
                if (stored !== undefined) there = tailOf(stored)
              } catch (err) {
                lookupError = err
              }
            }
          }
          if (there === undefined) {
            this.seqSteps.delete(c)
            this.tails.delete(c)
          } else {
            this.seqSteps.set(c, steps)
            // (the same seq too: with the time it was stored)
            if (there.seq >= (this.tails.get(c)?.seq ?? 0)) this.tails.set(c, there)
          }
        } else {
          let existing: StoredMessage | null = result.conflict.existing ?? null
          const attempts = this.uncertain.get(p.key)
          try {
            // ours, maybe: look where our unknown-outcome writes put it (by seq: a key read)
            if (existing === null && attempts !== undefined) existing = await this.storedAttempt(doc, attempts)
            // A plain resend of a message stored before what `recent` remembers: looking it up by
            // its key may be slow (a collection scan on FerretDB), so it is done off the write
            // loop and only its sender waits for it.
            if (existing === null && attempts === undefined) {
              rest = rest.slice(1)
              this.lookUpResend(p)
            } else {
              existing ??= await this.store.findByClientMsgId(doc.conversationId, doc.senderId, doc.clientMsgId)
            }
          } catch (err) {
            lookupError = err
          }
          if (attempts === undefined && existing === null && lookupError === undefined) {
            // handed to lookUpResend
          } else if (existing === null) {
            this.tails.delete(doc.conversationId)
          } else {
            rest = rest.slice(1)
            // Stored by an earlier attempt of ours whose outcome was unknown: it was never
            // delivered, so it counts as newly stored. Otherwise it is a resend.
            const ours = this.isOurs(p.key, existing)
            this.uncertain.delete(p.key)
            resolved.push([p, { message: existing, duplicate: !ours }])
            if (ours) {
              stored.push(existing)
              this.tellStored([existing])
            }
          }
        }
      }
      await this.commit(stored, resolved, before)
      remaining = rest
      // After a conflict, the rest of a conversation held now (commit just held it, mostly) goes
      // back to the front of the queue: it is written after the hold, as one block with what queued
      // behind it (per conversation it stays ahead of that: the batch was taken in queue order).
      // The others are retried at once. (Putting the whole rest back, to ride with what arrived
      // meanwhile, was measured worse: bigger batches met more conflicts, 0.37 → 0.87 a commit
      // in the cluster soak.)
      if (remaining.length > 0 && this.heldConversations.size > 0) {
        const waiting = remaining.filter(p => this.heldConversations.has(p.draft.conversationId))
        if (waiting.length > 0) {
          remaining = remaining.filter(p => !this.heldConversations.has(p.draft.conversationId))
          this.queue.unshift(...waiting)
        }
      }
      if (lookupError !== undefined && remaining.length > 0 && !(await backOff(lookupError))) return
    }
  }

  /** The copy of `doc`'s key that one of this process's unknown-outcome writes stored, if any. */
  private async storedAttempt (doc: StoredMessage, attempts: readonly Attempt[]): Promise<StoredMessage | null> {
    for (const a of attempts) {
      const [atSeq] = await this.store.range(doc.conversationId, { fromSeq: a.seq, toSeq: a.seq, limit: 1, direction: 'forward' })
      if (atSeq !== undefined && atSeq.senderId === doc.senderId && atSeq.clientMsgId === doc.clientMsgId) return atSeq
    }
    return null
  }

  /**
   * Answers a resend whose earlier copy is stored but not remembered, outside the write loop (a
   * resend is never delivered again, so its answer needs no place in the commit order). At most
   * RESEND_LOOKUPS at once, the next RESEND_WAITING wait their turn (a restart makes every device
   * resend its outbox), beyond that UNAVAILABLE (resend later). A failing lookup is retried with
   * back-off until writeRetryMs after the submit.
   */
  private lookUpResend (p: Pending): void {
    if (this.resendLookups >= RESEND_LOOKUPS) {
      if (this.resendWaiting.length < RESEND_WAITING) this.resendWaiting.push(p)
      else this.fail(p, new ImError('UNAVAILABLE', 'too many resends of old messages being looked up; resend later with the same msgId'))
      return
    }
    this.resendLookups++
    const { conversationId, senderId, clientMsgId } = p.draft
    void (async () => {
      for (let attempt = 1; ; attempt++) {
        try {
          const existing = await this.store.findByClientMsgId(conversationId, senderId, clientMsgId)
          if (existing === null) {
            // the key conflicted, yet nothing has it: write it again, in order, with the others
            this.queue.push(p)
            this.schedule()
            return
          }
          this.remember(p.key, existing)
          this.pendingByKey.delete(p.key)
          p.resolve({ message: existing, duplicate: true })
          for (const f of p.followers) f.resolve({ message: { ...existing }, duplicate: true })
          return
        } catch (err) {
          if (this.now() >= p.since + this.opts.writeRetryMs || this.closedAndStuck(attempt)) {
            this.fail(p, new ImError('UNAVAILABLE', 'message store unavailable; resend with the same msgId', { cause: err }))
            return
          }
          await this.sleep(Math.min(50 * 2 ** Math.min(attempt, 5), 1000))
        }
      }
    })().finally(() => {
      this.resendLookups--
      const next = this.resendWaiting.shift()
      if (next !== undefined) this.lookUpResend(next)
    })
  }

  private closedAndStuck (attempt: number): boolean {
    return this.closed && attempt >= 3
  }

  /**
   * Step 3: apply the newly stored changes to their targets, deliver the newly stored entries (in
   * seq order), then answer the senders. A client that gets a change can read its target changed.
   * A conversation whose delivery waits for another node (Delivery: order across nodes) is answered
   * once it is delivered, without holding the next batch; delivery keeps its order.
   */
  private async commit (stored: StoredMessage[], resolved: Array<[Pending, SubmitResult]>, before: ReadonlyMap<string, number>): Promise<void> {
    let held: HeldDeliveries | undefined
    if (stored.length > 0) {
      await this.applyChanges(stored)
      held = await this.deliver(stored, before)
    }
    const anyUncertain = this.uncertain.size > 0
    for (const [p, r] of resolved) {
      if (anyUncertain) this.uncertain.delete(p.key)
      // a conversation whose delivery waits (order across nodes): its senders are answered once
      // it is delivered; the write loop goes on meanwhile
      // (a resend found stored earlier was delivered then: answered at once)
      const after = r.duplicate ? undefined : held?.get(r.message.conversationId)
      if (after === undefined) this.answer(p, r)
      else this.track(after.then(() => { this.answer(p, r) }))
    }
  }

  /** Kept until it settles (close waits for it); never rejects. */
  private track (work: Promise<void>): void {
    const settled = work.catch((err: unknown) => { this.opts.logger.error({ err }, 'a held delivery failed') })
    this.heldWork.add(settled)
    void settled.then(() => this.heldWork.delete(settled))
  }

  private answer (p: Pending, r: SubmitResult): void {
    this.remember(p.key, r.message)
    this.pendingByKey.delete(p.key)
    p.resolve(r)
    for (const f of p.followers) f.resolve({ message: { ...r.message }, duplicate: true })
  }

  /**
   * Applies the stored changes among `stored` to their targets (order-free, see store/changes.ts).
   * A change whose application fails stays stored and is delivered (clients apply it themselves);
   * it is applied again when its sender resends it (see ops/changes.ts), and until then `history`
   * shows its target unchanged.
   */
  private async applyChanges (stored: StoredMessage[]): Promise<void> {
    const changes = stored.filter(m => isChangeKind(m.kind))
    if (changes.length === 0) return
    await Promise.all(changes.map(async (m) => {
      try {
        await this.applyChange(m)
      } catch (err) {
        this.opts.logger.error({ conv: m.conversationId, seq: m.seq, target: m.target, err }, 'a stored change was not applied to its target')
      }
    }))
  }

  /**
   * Applies a stored change to its target, after the changes of the same message already being
   * applied on this node: one update of a message at a time (FerretDB loses concurrent updates of
   * one document, see messages-mongo.ts). Entries live only while an application runs.
   */
  async applyChange (change: StoredMessage): Promise<StoredMessage | null> {
    const key = `${change.conversationId}:${change.target ?? 0}`
    const before = this.applying.get(key) ?? Promise.resolve()
    const run = before.then(async () => await this.store.applyChange(change))
    const settled = run.then(() => {}, () => {})
    this.applying.set(key, settled)
    void settled.then(() => { if (this.applying.get(key) === settled) this.applying.delete(key) })
    return await run
  }

  /** Tells delivery of newly stored entries (CommitListener.stored), if it listens; never throws. */
  private tellStored (stored: StoredMessage[]): void {
    if (stored.length === 0 || this.delivery.stored === undefined) return
    try {
      this.delivery.stored(stored)
    } catch (err) {
      this.opts.logger.error({ err }, 'delivery could not be told of entries just stored')
    }
  }

  /** Hands the batch, told already (tellStored), to delivery; resolves with the conversations whose delivery waits. */
  private async deliver (stored: StoredMessage[], before: ReadonlyMap<string, number>): Promise<HeldDeliveries | undefined> {
    stored.sort((a, b) => a.seq - b.seq)
    try {
      const held = (await this.delivery.committed(stored, before, this.delivery.stored !== undefined)) ?? undefined
      for (const [conv, done] of held ?? []) {
        this.track(done)
        // its queued messages wait for it; written after it as one block
        this.heldConversations.set(conv, done)
        void done.catch(() => {}).then(() => {
          if (this.heldConversations.get(conv) !== done) return
          this.heldConversations.delete(conv)
          // what waited for the hold gets its own writeRetryMs from now
          const now = this.now()
          for (const p of this.queue) if (p.draft.conversationId === conv) p.since = Math.max(p.since, now)
          this.schedule()
        })
      }
      return held
    } catch (err) {
      this.opts.logger.error({ err }, 'delivery of committed messages threw')
      return undefined
    }
  }

  /** True if `stored` is the copy of `key` that one of this process's unknown-outcome writes stored. */
  private isOurs (key: string, stored: StoredMessage): boolean {
    return this.uncertain.get(key)?.some(a => a.seq === stored.seq && a.ts === stored.ts) ?? false
  }

  private addOrphan (conversationId: string, key: string): void {
    let keys = this.orphans.get(conversationId)
    if (keys === undefined) {
      keys = new Set()
      this.orphans.set(conversationId, keys)
    }
    keys.add(key)
  }

  private fail (p: Pending, err: unknown): void {
    this.pendingByKey.delete(p.key)
    p.reject(err)
    for (const f of p.followers) f.reject(err)
  }

  private markUncertain (key: string, attempt: Attempt): void {
    const attempts = this.uncertain.get(key)
    if (attempts !== undefined) {
      attempts.push(attempt)
      return
    }
    this.uncertain.set(key, [attempt])
  }

  private remember (key: string, message: StoredMessage): void {
    const stored: Stored = { seq: message.seq, ts: message.ts }
    const change = changeOf(message)
    if (change !== undefined) stored.change = change
    this.recent?.set(key, stored)
  }
}
