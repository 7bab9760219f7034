/**
 * Delivery: what happens once messages are stored. The sequencer hands each committed batch here
 * (in seq order per conversation, before it answers the senders): every message goes to every
 * member's inbox (Publisher), a channel's once to the channel's topic; then, in a cluster, the
 * other nodes learn the highest seq stored per conversation, so that their sequencers do not
 * collide with it (Sequencer.observe), which messages were changed (edit, delete, react), so
 * that they drop cached copies of them, and the small messages themselves, which they keep
 * (MessageStore.remember: their history reads then find them without a store query).
 *
 * Order across nodes: when members on two nodes write to one conversation at once, node B may
 * store seq S right after node A stored S-1 but before A has published it. B then waits (at most
 * ORDER_WAIT_MS) until A's fan-out of S-1 has reached B (its mark, src/broker/fanout.ts): B's
 * publish of S then follows it through Redis, so every device gets S-1 before S. Only a
 * conversation another node wrote to lately can wait: B knows the seqs published from the marks,
 * and for a conversation it has no mark of yet, takes A's commit notice of S-1 (sent at once, before
 * A publishes) to mean S-2 was. A notice can come after B has found S-1 in the store (B's first
 * write of the conversation, its notices queued behind other traffic): then the time S-1 was
 * stored, which B's sequencer read with it, tells whether A may still be publishing it. That time
 * is A's clock: the nodes' clocks must agree (NTP). A clock of A's ahead of B's makes B wait for
 * nothing (at most order.waitMs, once per conversation); one behind by more than UNPUBLISHED_MS
 * turns this rule off, as before it existed.
 *
 * A wait holds that conversation only: its messages of the batch, and of the batches after it until
 * the wait is over, are delivered after it, and the sequencer answers their senders then (`held`
 * in the result of committed); the batch's other conversations are delivered at once, and the
 * sequencer goes on with its next batch. The waits are best effort: A may itself wait for an
 * earlier seq before publishing S-1. Once a wait has run out, the marks are probably not coming
 * (A died): the waits of the next AFTER_TIMEOUT_MS are short.
 *
 * A wait that ran out does not give up the order: B reads the seqs A may not have published (above
 * the highest B knows published, the last FILL_MAX at most) from the store and delivers them itself,
 * with everything a delivery does (inboxes and offline queues on every node, webhooks, push,
 * mentions), before S (which ones: fillGap). When A was only late,
 * its own delivery of them comes after: devices get those seqs twice (they de-duplicate by
 * conversation and seq, topics.md) and receivers of webhooks may get `message.stored` twice. What
 * B knows published counts only while it listened without a break since it learnt it: the marks
 * of a break went by unheard, and a stale value would make it wait and fill for nothing.
 *
 * When nobody writes to the conversation again, no wait runs out: what A stored and never published
 * would reach the other members only when they sync. Two things bring it sooner. A's commit notice
 * goes out as soon as the store has the batch (`stored`, before its changes are applied and before
 * it is delivered): every other node that hears of seqs without their mark keeps a check of them,
 * and one of them (the first to claim the seqs in Redis; the others check again later) fills them
 * as above if no mark has come RESEND_CHECK_MS after the latest notice that raised the seq. And
 * A's sender, unanswered, sends it again through another node, which answers it as a resend (the
 * sequencer tells `resent`): the same check. What A stored and died before its notice left (the
 * store's reply on its way) waits for a resend or the next write (an order wait, which claims too).
 */
import { countOf, isChangeKind, lastRealOf, type StoredMessage } from '../store/types.js'
import { applyChangeTo } from '../store/changes.js'
import { within } from '../within.js'
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { ClusterBus } from '../broker/bus.js'
import { SEQ_TOPIC } from '../protocol/topics.js'
import { MENTION_ALL } from '../protocol/schemas.js'
import type { MentionLog } from './mentions.js'
import type { Webhooks } from './webhooks.js'
import type { PushService } from './push.js'
import { toEnvelope } from './envelopes.js'
import { lruCache } from '../lru.js'
import type { Redis } from 'ioredis'
import type { Metrics } from '../metrics.js'
import { warnEveryMinute, type Logger } from '../log.js'
import { QUEUE_TIMEOUT_MS } from '../broker/fanout.js'
import type { MessageStore } from '../store/types.js'
import { GapReads, READ_TIMEOUT_MS, type SeqKey } from './gap-reads.js'
import type { WallMs } from '../clocks.js'

/**
 * Longest wait for another node's mark that it published the seqs before ours (a lost mark, a node
 * that died between storing and publishing). Longer than a fan-out can be held behind the queueing
 * of the publishes before it (QUEUE_TIMEOUT_MS): a wait that ran out while the other node still held
 * its publish would deliver out of order.
 */
export const ORDER_WAIT_MS = QUEUE_TIMEOUT_MS + 1000
/**
 * A seq another node stored this recently (its clock against ours), in a conversation this node has
 * no mark or notice of, may not be published yet: the next one waits for its mark.
 */
const UNPUBLISHED_MS = 2 * ORDER_WAIT_MS
/**
 * After a wait ran out, the marks this node waits for are likely not coming (the node that stored
 * those seqs died, or its link to Redis broke): for this long, waits end after AFTER_TIMEOUT_WAIT_MS,
 * so that a node's death costs the others one full wait, not one per conversation it had written.
 */
const AFTER_TIMEOUT_MS = 2 * ORDER_WAIT_MS
const AFTER_TIMEOUT_WAIT_MS = 200
/**
 * After a wait ran out, at most this many seqs before the waiting one are read and delivered here
 * (a history page: a longer gap devices fill with `history {after}`, as they fill any).
 */
export const FILL_MAX = 100
/**
 * ... for a conversation this node knows no published seq of (its time rule made it wait), this
 * many at most: what a node that died had just stored of one conversation.
 */
export const FILL_UNKNOWN_MAX = 10
/**
 * After a short wait (AFTER_TIMEOUT_WAIT_MS) ran out, the mark is waited for on until the youngest
 * seq to fill was stored this long ago (the other node's clock against ours): a node that is alive
 * may hold its fan-out that long behind queueing (QUEUE_TIMEOUT_MS).
 */
const FILL_MIN_AGE_MS = QUEUE_TIMEOUT_MS
/**
 * An entry another node stored and this node has seen no delivery of (that node may have died
 * between storing it and delivering it), told of in that node's notice or resent here by its
 * sender: after this long without a mark of it, this node reads and delivers it, with what may be
 * unpublished before it (as after an order wait, fillGap). Longer than a live node holds a
 * delivery: an order wait (ORDER_WAIT_MS), its gap read (READ_TIMEOUT_MS), then its fan-out held
 * behind queueing (QUEUE_TIMEOUT_MS). (A live node slower still: its copy comes too, a duplicate.)
 */
export const RESEND_CHECK_MS = ORDER_WAIT_MS + READ_TIMEOUT_MS + QUEUE_TIMEOUT_MS + 2000
/**
 * ... for a conversation this node has seen no delivery of since it listens, only entries stored
 * this recently (a device resends its unanswered sends as it reconnects; older ones it syncs), and
 * after this node last forgot a conversation's marks (its LRU full: the marks of one stored before
 * may be what it forgot).
 */
export const RESEND_RECENT_MS = 5 * 60_000
/** How far the clock of the node that stored an entry may be behind this node's (mayHaveForgotten). */
const FORGOT_SKEW_MS = 1000
/**
 * Conversations with a check waiting at most, for resends and for notices of seqs whose mark has
 * not come, each (beyond: not checked, devices sync). A notice's check ends with its mark, within milliseconds in
 * normal operation: what waits is a dead node's last batches.
 */
export const CHECKS_MAX = 10_000
/** How long the claim's Redis command may take (beyond: not filled here). */
const CLAIM_TIMEOUT_MS = 2000
/**
 * Times a check comes due at most (another node's claim, a claim or read that failed: it waits
 * again). While this node's publishes back up it waits again too, without counting, but for
 * RESEND_RECENT_MS in all at most.
 */
export const CHECK_TRIES = 3
/** How long an order wait that found the seqs claimed by another node waits for that node's delivery. */
const CLAIMED_WAIT_MS = READ_TIMEOUT_MS + QUEUE_TIMEOUT_MS + 1000
/**
 * How long a claim of seqs to fill lasts in Redis: longer than a fill takes (its gap read, then the
 * delivery), shorter than the other nodes' checks wait again in all (CHECK_TRIES): when the node that
 * claimed dies before it delivers, the claim lapses and the next of them fills.
 */
export const CLAIM_MS = RESEND_CHECK_MS + 5000

export interface OrderOptions {
  /** The longest wait for another node's mark (default ORDER_WAIT_MS). */
  waitMs?: number
  /** The longest wait for a while after one ran out (default AFTER_TIMEOUT_WAIT_MS) ... */
  afterTimeoutWaitMs?: number
  /** ... that while (default AFTER_TIMEOUT_MS). */
  afterTimeoutMs?: number
  /** How recent a seq read from the store must be to be waited for (default UNPUBLISHED_MS). */
  unpublishedMs?: number
  /** How long ago a seq must have been stored to be filled after a wait ran out (default FILL_MIN_AGE_MS). */
  fillMinAgeMs?: number
  /** How long a check (a resend, a notice) waits for its mark before it is filled (default RESEND_CHECK_MS). */
  resendCheckMs?: number
  /**
   * Since when this node hears the other nodes' marks without a break, by Date.now (+Infinity
   * while it does not: BrokerBackends.connectedSince); default: since this Delivery was made.
   */
  listeningSince?: () => WallMs
}
/**
 * A commit notice carries the batch's messages for the other nodes' document caches (history there
 * then reads no store for them), bodies up to this many characters each ...
 */
const NOTICE_BODY_MAX = 2048
/** ... at most this many characters in all (bodies, mentions, ~100 for the rest of each) ... */
const NOTICE_BODIES_MAX = 64 * 1024
/** ... and at most this many messages (the rest are read from the store as before). */
const NOTICE_DOCS_MAX = 256

/**
 * Conversations of a batch whose delivery waits (order across nodes): conversation -> when its
 * messages of the batch have been delivered (never rejects).
 */
export type HeldDeliveries = ReadonlyMap<string, Promise<void>>
const NONE_HELD: HeldDeliveries = new Map()

/** What made a check (Delivery.watch): a resend answered with the entry, or its node's notice. */
type CheckCause = 'resend' | 'notice'

/** A check waiting (Delivery.watch). */
interface Check { seq: number, ts: number, known: number | undefined, began: number, due: number, tries: number }

/** DeliveryParts.claims on Redis: SET key <node id> NX PX ms (the first node to ask gets it), DEL. */
export function claimsIn (redis: Pick<Redis, 'set' | 'del'>, nodeId: string): FillClaims {
  return {
    claim: async (key, ms) => await redis.set(key, nodeId, 'PX', ms, 'NX') === 'OK',
    release: async (key) => { await redis.del(key) }
  }
}

/** The claim of the seqs of a conversation to fill (FillClaims): one at a time per conversation. */
function fillKey (conv: string): string {
  return `mqim:delivery-fill:${conv}`
}

/** The highest seq of each conversation among `stored`. */
function lastSeqs (stored: readonly StoredMessage[]): Map<string, number> {
  const last = new Map<string, number>()
  for (const m of stored) if (m.seq > (last.get(m.conversationId) ?? 0)) last.set(m.conversationId, m.seq)
  return last
}

/** What the sequencer calls with each batch of newly stored messages. */
export interface CommitListener {
  /**
   * Delivers the batch: resolves once the conversations delivered at once are, with those that
   * wait (void: none). `before`: for a conversation whose entry before its first one here the
   * sequencer read from the store, when that entry was stored (Tail.ts).
   */
  committed: (messages: StoredMessage[], before?: ReadonlyMap<string, number>, told?: boolean) => void | HeldDeliveries | Promise<void | HeldDeliveries>
  /**
   * Entries just stored, told at once: before the changes among them are applied and before any
   * other read or write for their batch (in a cluster the commit notice goes out: the other nodes
   * learn the tails, and what to check for should this node die before delivering them). They then
   * come to `committed` with `told` true.
   */
  stored?: (messages: StoredMessage[]) => void
  /** A resend was answered with this entry, stored before (not delivered again by the sequencer). */
  resent?: (message: StoredMessage) => void
}

/** What Delivery hands messages to besides the publisher, and how it keeps order across nodes. */
export interface DeliveryParts {
  mentions?: MentionLog | null
  webhooks?: Webhooks | null
  push?: PushService | null
  metrics?: Metrics | null
  /** Where a delivery that failed (a conversation's lookup) is told. */
  logger?: Logger | null
  order?: OrderOptions
  /** Where the seqs another node stored and never published are read from (absent: not filled). */
  messages?: Pick<MessageStore, 'getMany'> | null
  /** Applies a stored change to its target (Sequencer.applyChange): for changes among those filled. */
  applyChange?: ((change: StoredMessage) => Promise<unknown>) | null
  /**
   * Cluster: who fills what another node stored and never delivered (Redis), so that one node
   * does, not every node that heard of it. Absent: every node that finds it missing fills it.
   */
  claims?: FillClaims | null
}

/** Claims of seqs to fill (DeliveryParts.claims). */
export interface FillClaims {
  /** Claims `key` for `ms` for this node: true if no node had (Redis SET NX). */
  claim: (key: string, ms: number) => Promise<boolean>
  /** Gives a claim up (this node filled nothing: another may). */
  release: (key: string) => Promise<void>
}

export class Delivery implements CommitListener {
  /**
   * A `mention` event to each member the message mentions (`@all`: every member), the sender
   * left out, muted or not: a mention breaks through mute.
   */
  private mentioned (m: StoredMessage, memberIds: readonly string[]): void {
    const mentions = m.mentions ?? []
    const all = mentions.includes(MENTION_ALL)
    const named = new Set(mentions)
    const to = memberIds.filter(u => u !== m.senderId && (all || named.has(u)))
    if (to.length > 0) this.publisher.event(to, { type: 'mention', conv: m.conversationId, seq: m.seq, from: m.senderId, all })
  }

  private readonly mentions: MentionLog | null
  private readonly webhooks: Webhooks | null
  private readonly push: PushService | null
  private readonly metrics: Metrics | null
  private readonly logger: Logger | null
  private readonly gapReads: GapReads | null
  private readonly applyChange: ((change: StoredMessage) => Promise<unknown>) | null
  private readonly claims: FillClaims | null
  private readonly warn: ReturnType<typeof warnEveryMinute> | null

  constructor (
    private readonly directory: ConversationDirectory,
    private readonly publisher: Publisher,
    private readonly bus: ClusterBus,
    { mentions = null, webhooks = null, push = null, metrics = null, logger = null, order = {}, messages = null, applyChange = null, claims = null }: DeliveryParts = {}
  ) {
    this.claims = claims
    this.mentions = mentions
    this.webhooks = webhooks
    this.push = push
    this.metrics = metrics
    this.logger = logger
    this.applyChange = applyChange
    const warn = this.warn = logger === null ? null : warnEveryMinute(logger)
    this.gapReads = messages === null ? null : new GapReads(messages, (err) => { warn?.('gap-read', { err }, 'the seqs another node may not have delivered (an order wait ran out, or a resend found none) could not be read from the store: devices get them when they sync') })
    const waitMs = order.waitMs ?? ORDER_WAIT_MS
    this.order = {
      waitMs,
      afterTimeoutWaitMs: Math.min(order.afterTimeoutWaitMs ?? AFTER_TIMEOUT_WAIT_MS, waitMs),
      afterTimeoutMs: order.afterTimeoutMs ?? AFTER_TIMEOUT_MS,
      unpublishedMs: order.unpublishedMs ?? UNPUBLISHED_MS,
      fillMinAgeMs: order.fillMinAgeMs ?? FILL_MIN_AGE_MS,
      resendCheckMs: order.resendCheckMs ?? RESEND_CHECK_MS
    }
    // made after the subscriptions that bring the marks: the link may have been up before them
    const made = Date.now()
    const since = order.listeningSince
    this.listeningSince = since === undefined ? () => made : () => Math.max(made, since())
    if (bus.clustered) {
      // what another node published has reached this node (the marks of its fan-outs, behind them)
      publisher.onPublished((conv, seq) => { this.notePublished(conv, seq) })
      // another node stored up to seq (its notice, sent before it publishes): for a conversation
      // this node knows nothing of, the seqs before are taken as published, so that its next seq
      // waits for this one's mark
      bus.on(SEQ_TOPIC, (notice) => {
        const { seqs } = notice
        if (typeof seqs !== 'object' || seqs === null) return
        for (const [conv, seq] of Object.entries(seqs as Record<string, unknown>)) {
          if (typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq <= 0) continue
          // a check of it (ended by its mark: if none comes, that node died before delivering it),
          // stored about now (the notice goes out as soon as it is)
          this.watch(conv, seq, Date.now(), 'notice')
          // (not while this node waits or holds deliveries of it: it knows more than the notice)
          if (this.knownPublished(conv) === undefined && !this.orderWaits.has(conv) && !this.held.has(conv)) this.published.set(conv, { seq: seq - 1, at: Date.now(), guess: true })
        }
      })
    }
  }

  /**
   * Clustered: conversation -> the highest seq known published (by this node, or, a guess, from
   * another's notice; with a guess, the highest seq a mark said, `marked`), and when that was
   * learnt (Date.now). What was learnt before a break in listening is not known any more
   * (knownPublished): the marks of the break went by unheard.
   */
  private readonly published = lruCache<string, { seq: number, at: number, guess?: true, marked?: number }>(200_000, {
    dispose: (v, _k, reason) => { if (reason === 'evict') this.forgotAt = Math.max(this.forgotAt, v.at) }
  })

  /**
   * The latest time a mark was learnt (Date.now) of a conversation `published` forgot to make room:
   * an entry stored after it had no mark forgotten (a mark is learnt after its entry was stored).
   */
  private forgotAt = Number.NEGATIVE_INFINITY

  /** Whether the marks of an entry stored at `ts` (the storing node's clock) may have been forgotten. */
  private mayHaveForgotten (ts: number): boolean {
    return ts <= this.forgotAt + FORGOT_SKEW_MS
  }

  /**
   * The highest seq of the conversation known published, if learnt while listening without a
   * break since (`confirmed`: and from a mark, not a notice's guess).
   */
  private knownPublished (conv: string, confirmed = false): number | undefined {
    const p = this.published.get(conv)
    return p === undefined || p.at < this.listeningSince() || (confirmed && p.guess === true) ? undefined : p.seq
  }

  /** Deliveries waiting for another node's notice, per conversation. */
  private readonly orderWaits = new Map<string, Array<{ seq: number, go: () => void }>>()
  /**
   * Conversations whose delivery is held (an order wait, or behind one): conversation -> the end
   * of its last held delivery. An entry lives while its wait and delivery last (ORDER_WAIT_MS at
   * most, then a delivery).
   */
  private readonly held = new Map<string, Promise<void>>()

  private notePublished (conv: string, seq: number): void {
    const known = this.published.get(conv)
    // learnt now (also what was learnt before a break, or guessed, when a mark confirms it); a mark
    // below what is known (a late one) leaves that as it was
    if (known === undefined || seq >= known.seq) this.published.set(conv, { seq, at: Date.now() })
    else if (known.guess === true && seq > (known.marked ?? 0)) known.marked = seq
    for (const checks of Object.values(this.checks)) {
      const check = checks.get(conv)
      if (check !== undefined && seq >= check.seq) checks.delete(conv)
    }
    // also when not above what is known: that may be a notice's guess, or evicted
    const waits = this.orderWaits.get(conv)
    if (waits === undefined) return
    const left = waits.filter(w => {
      if (w.seq > seq) return true
      w.go()
      return false
    })
    if (left.length > 0) this.orderWaits.set(conv, left)
    else this.orderWaits.delete(conv)
  }

  private readonly order: Required<Omit<OrderOptions, 'listeningSince'>>
  /** When a full wait last ran out (performance.now()). */
  private lastTimeoutAt = Number.NEGATIVE_INFINITY
  /** Since when this node hears the marks (a mark sent before that, or during a break, never comes). */
  private readonly listeningSince: () => number

  /**
   * Resolves 'arrived' once `seq` of the conversation is known published, or, after order.waitMs
   * ('full') or afterTimeoutWaitMs within afterTimeoutMs of a full wait that ran out ('short').
   */
  private async publishedUpTo (conv: string, seq: number): Promise<'arrived' | 'full' | 'short'> {
    const full = performance.now() - this.lastTimeoutAt >= this.order.afterTimeoutMs
    if (await this.markWithin(conv, seq, full ? this.order.waitMs : this.order.afterTimeoutWaitMs)) return 'arrived'
    this.metrics?.orderWaitTimedOut()
    // a short wait that runs out does not renew the while: the next full wait tells again
    if (full) this.lastTimeoutAt = performance.now()
    return full ? 'full' : 'short'
  }

  /** Resolves true once `seq` of the conversation is known published, false after `ms`. */
  private async markWithin (conv: string, seq: number, ms: number): Promise<boolean> {
    return await new Promise<boolean>(resolve => {
      const timer = setTimeout(() => {
        const waits = this.orderWaits.get(conv)?.filter(w => w.go !== go)
        if (waits !== undefined && waits.length > 0) this.orderWaits.set(conv, waits)
        else this.orderWaits.delete(conv)
        resolve(false)
      }, ms)
      timer.unref()
      const go = (): void => { clearTimeout(timer); resolve(true) }
      const waits = this.orderWaits.get(conv)
      if (waits === undefined) this.orderWaits.set(conv, [{ seq, go }])
      else waits.push({ seq, go })
    })
  }

  stored (messages: StoredMessage[]): void {
    this.noticeStored(messages, 'stored')
  }

  async committed (stored: StoredMessage[], before?: ReadonlyMap<string, number>, told = false): Promise<HeldDeliveries> {
    const gates = this.bus.clustered ? this.orderGates(stored, before) : NONE_HELD
    // held conversations first, registered before anything is awaited: the next batch of one of
    // them is delivered behind this one
    const held = gates.size === 0 ? NONE_HELD : this.hold(stored, gates)
    // the other nodes learn the tails before anything is delivered: if this node dies while it
    // delivers, they know what to check (watch)
    // (told: the changes among them, now applied, only)
    this.noticeStored(stored, told ? 'changes' : 'all')
    try {
      await this.deliverNow(gates.size === 0 ? stored : stored.filter(m => !gates.has(m.conversationId)))
    } catch (err) {
      this.logger?.error({ err }, 'delivery of committed messages failed half-way (devices sync by seq)')
    } finally {
      // also when a lookup failed half-way: this node does not wait later for marks of seqs it was
      // the one to deliver (a held conversation's count once delivered)
      if (this.bus.clustered) for (const [conv, seq] of lastSeqs(stored)) if (!gates.has(conv)) this.notePublished(conv, seq)
    }
    return held
  }

  /**
   * Cluster: per conversation of the batch, what its delivery waits for: its held delivery before
   * (this node's own seqs, not published yet), or the seqs before its first one here, if another
   * node stored them lately and has not said yet that it published them.
   */
  private orderGates (stored: StoredMessage[], before: ReadonlyMap<string, number> | undefined): Map<string, Promise<void>> {
    const gates = new Map<string, Promise<void>>()
    const seen = new Set<string>()
    for (const m of stored) {
      // the conversation's first seq here (stored is in seq order)
      const conv = m.conversationId
      if (seen.has(conv)) continue
      seen.add(conv)
      const behind = this.held.get(conv)
      // behind this node's own held seqs, and then, as any other, behind another node's that came
      // between them and these (its notice of them is no mark)
      const gate = behind !== undefined ? behind.then(async () => { await this.orderWait(conv, m.seq, before?.get(conv)) }) : this.orderWait(conv, m.seq, before?.get(conv))
      if (gate !== undefined) gates.set(conv, gate)
    }
    return gates
  }

  /**
   * The wait for the seqs before `seq` to be known published, if another node may still be
   * publishing them (none while this node does not listen: no mark could come).
   */
  private orderWait (conv: string, seq: number, storedAt?: number): Promise<void> | undefined {
    const known = this.knownPublished(conv)
    const now = Date.now()
    // a check of this conversation waiting (a resend, or a notice whose delivery has not come): its
    // seqs as recent as it counts them
    const recentMs = this.checks.resend.has(conv) || this.checks.notice.has(conv) ? RESEND_RECENT_MS : this.order.unpublishedMs
    if (this.listeningSince() > now || (known === undefined ? !this.mayBeUnpublished(seq, storedAt, now, recentMs) : known >= seq - 1)) return undefined
    const started = performance.now()
    // (what a notice guessed is waited on, but not filled from: the seqs before it may be unpublished too)
    const confirmed = this.knownPublished(conv, true)
    return this.publishedUpTo(conv, seq - 1).then(async (ended) => {
      this.metrics?.orderWaited(performance.now() - started)
      if (ended === 'arrived') return
      // another node filling them now (a check of its own): its delivery is waited for, as long as
      // a fill takes (its read, then its fan-out held behind queueing); then, if it has not come
      // (that node died, or gave its claim up), filled here if the claim is free by then
      if (await this.claimed(fillKey(conv)) === 'taken') {
        if (await this.markWithin(conv, seq - 1, CLAIMED_WAIT_MS) || await this.claimed(fillKey(conv)) === 'taken') return
      }
      if (await this.fillGap(conv, seq, confirmed, now, ended === 'full', recentMs) === null) await this.release(fillKey(conv))
    })
  }

  /**
   * An order wait for the seqs before `seq`, begun at `began` (Date.now), ran out. Read from the
   * store: those above `known` (the highest known published from a mark when the wait began), the
   * last FILL_MAX at most; with no such knowledge, the last FILL_UNKNOWN_MAX, of which only those
   * stored while this node listened and lately when the wait began count (as mayBeUnpublished says:
   * older ones were published, or their marks went by unheard). Delivered here: those no mark said
   * since were published. After a short wait (`full` false: another wait ran out lately, so the
   * node that stored them is probably dead, but this one may be alive and only late) their marks
   * are waited for until the youngest of them is fillMinAgeMs old (a live node may hold its fan-out
   * that long). Never rejects (a failure: not filled).
   */
  private async fillGap (conv: string, seq: number, known: number | undefined, began: number, full: boolean, recentMs: number, why: 'wait' | CheckCause = 'wait'): Promise<number | null> {
    if (this.gapReads === null) return null
    try {
      const keys: SeqKey[] = []
      for (let s = Math.max(known ?? 0, seq - 1 - (known === undefined ? FILL_UNKNOWN_MAX : FILL_MAX)) + 1; s < seq; s++) keys.push({ conversationId: conv, seq: s })
      const found = await this.gapReads.read(keys)
      if (found === null) return null
      const unmarked = (m: StoredMessage): boolean => m.seq > this.markedUpTo(conv)
      let missing = found.filter(m => unmarked(m) && (known !== undefined || this.mayBeUnpublished(m.seq + 1, m.ts, began, recentMs)))
      if (!full && missing.length > 0) {
        const left = Math.min(this.order.fillMinAgeMs, Math.max(...missing.map(m => m.ts)) + this.order.fillMinAgeMs - Date.now())
        if (left > 0 && await this.markWithin(conv, seq - 1, left)) return 0
        missing = missing.filter(unmarked)
      }
      if (missing.length === 0) return 0
      missing.sort((a, b) => a.seq - b.seq)
      this.foldChanges(conv, missing)
      const delivered = await this.deliverNow(missing)
      if (why === 'wait') this.metrics?.orderFilled(delivered)
      else if (why === 'resend') this.metrics?.resendFilled(delivered)
      else this.metrics?.noticeFilled(delivered)
      // (after an order wait, the seq that waited is delivered next, and counts then)
      if (why !== 'wait') this.notePublished(conv, missing[missing.length - 1]?.seq ?? 0)
      return delivered
    } catch (err) {
      this.logger?.error({ err, conv }, why === 'wait' ? 'delivery of the seqs before an order wait that ran out failed (devices sync by seq)' : 'delivery of entries another node stored and never delivered failed (devices sync by seq)')
      return null
    }
  }

  /** The highest seq of the conversation a mark said was published (before a break too; a notice's guess is none). */
  private markedUpTo (conv: string): number {
    const p = this.published.get(conv)
    return p === undefined ? 0 : p.guess === true ? p.marked ?? 0 : p.seq
  }

  /**
   * Checks waiting for the mark of an entry another node stored, told of in its notice, and resent
   * here (two budgets: resends are not crowded out by a burst of notices): conversation -> the
   * highest seq, what was known published when the first came, when it came (Date.now), the
   * stored-at time of the first entry, when the check is due, and how many times it was due.
   */
  private readonly checks: Readonly<Record<CheckCause, Map<string, Check>>> = { notice: new Map(), resend: new Map() }
  /** Runs the checks that are due (one timer for all), while there are any. */
  private sweeper: NodeJS.Timeout | null = null
  private closed = false

  /**
   * Cluster: a resend was answered with `m`, stored before. If this node has seen no delivery of it
   * (another node stored it and may have died before publishing it; its sender, unanswered, sent it
   * again here), it is read and delivered here once order.resendCheckMs has passed without its mark
   * (watch).
   */
  resent (m: StoredMessage): void {
    this.watch(m.conversationId, m.seq, m.ts, 'resend')
  }

  /**
   * Cluster: `seq` of the conversation, stored at `ts` (the storing node's clock) by another node,
   * was resent here or told in its notice. Unless its mark comes, it is read and delivered here
   * once order.resendCheckMs has passed without one since the latest resend (or notice) of the
   * conversation that raised the seq, if this node claims it first (else the check waits again, as
   * when this node's publishes back up: CHECK_TRIES times at most), with what before it may be
   * unpublished too (fillGap: above the highest seq known published, or, for a conversation this
   * node knows no delivery of, of the last FILL_UNKNOWN_MAX those stored while it listened, within
   * RESEND_RECENT_MS and since it last forgot a conversation). The fill holds the conversation's
   * next deliveries here behind it, as an order wait does. One check per conversation and cause at
   * a time, CHECKS_MAX per cause at most; none while this node does not listen.
   */
  private watch (conv: string, seq: number, ts: number, cause: CheckCause): void {
    if (!this.bus.clustered || this.gapReads === null || this.closed) return
    const now = Date.now()
    if (this.listeningSince() > now || this.markedUpTo(conv) >= seq) return
    const checks = this.checks[cause]
    const waiting = checks.get(conv)
    if (waiting !== undefined) {
      // (a notice of the same seq: the second of a batch with changes, once they were applied)
      if (seq > waiting.seq || (cause === 'notice' && seq === waiting.seq)) {
        waiting.seq = seq
        waiting.ts = Math.min(waiting.ts, ts)
        waiting.due = now + this.order.resendCheckMs
      }
      return
    }
    const known = this.knownPublished(conv, true)
    if (known === undefined && (this.mayHaveForgotten(ts) || !this.mayBeUnpublished(seq + 1, ts, now, RESEND_RECENT_MS))) return
    if (checks.size >= CHECKS_MAX) {
      this.warn?.(`delivery-checks-${cause}`, { max: CHECKS_MAX, cause }, 'too many conversations with entries another node stored waiting for their delivery: this one not checked (its members get it when they sync)')
      return
    }
    checks.set(conv, { seq, ts, known, began: now, due: now + this.order.resendCheckMs, tries: 0 })
    this.sweepSoon()
  }

  private sweepSoon (): void {
    if (this.sweeper !== null || this.closed) return
    const every = Math.min(1000, Math.max(10, Math.floor(this.order.resendCheckMs / 5)))
    this.sweeper = setInterval(() => { this.sweep() }, every)
    this.sweeper.unref()
  }

  /** Runs the checks that are due. */
  private sweep (): void {
    const now = Date.now()
    for (const cause of ['notice', 'resend'] as const) {
      const checks = this.checks[cause]
      for (const [conv, check] of checks) {
        if (check.due > now) continue
        checks.delete(conv)
        this.fire(conv, check, cause)
      }
    }
    if (this.checks.notice.size + this.checks.resend.size === 0 && this.sweeper !== null) {
      clearInterval(this.sweeper)
      this.sweeper = null
    }
  }

  /** A check is due: the conversation's missing seqs filled here (watch), unless a guard says not. */
  private fire (conv: string, check: Check, cause: CheckCause): void {
    // not when a break in listening may have hidden its mark, nor when its mark came
    if (this.listeningSince() > check.began || this.markedUpTo(conv) >= check.seq) return
    // an order wait of the conversation (or a delivery behind one, or the other cause's fill) is
    // under way here: it fills what is missing, and its delivery ends this check; if not, later
    // (not counted as a try)
    if (this.orderWaits.has(conv) || this.held.has(conv)) {
      this.again(conv, check, cause, false)
      return
    }
    // nothing known published, and a mark learnt since may have been forgotten meanwhile
    if (check.known === undefined && this.mayHaveForgotten(check.ts)) return
    // held as an order wait is: the conversation's next deliveries here go behind it
    const fill = (async () => {
      try {
        // this node's publishes backed up (Redis slow: the marks may only be late, and a fill would
        // add to the backlog): later, without counting a try
        if (this.publisher.backlogged()) {
          this.again(conv, check, cause, false)
          return
        }
        const key = fillKey(conv)
        const claimed = await this.claimed(key)
        // another node fills it: its delivery ends the check when it waits again; if that node gave
        // its claim up or died (the claim lapses), this one may fill then
        if (claimed !== 'yes') {
          this.again(conv, check, cause)
          return
        }
        // stopping, or a conversation gone (its entries are delivered to nobody): the claim given up
        if (this.closed || (this.directory.peek(conv) === undefined && await this.directory.get(conv).catch(() => undefined) === null)) {
          await this.release(key)
          return
        }
        if (await this.fillGap(conv, check.seq + 1, check.known, check.began, true, RESEND_RECENT_MS, cause) === null) {
          // not read (the store failed, or too many reads wait): another node, or this one later
          await this.release(key)
          this.again(conv, check, cause)
        }
      } catch (err) {
        this.logger?.error({ err, conv }, 'a check of entries another node stored failed (devices sync by seq)')
      }
    })()
    this.held.set(conv, fill)
    void fill.then(() => { if (this.held.get(conv) === fill) this.held.delete(conv) })
    this.track(fill)
  }

  /**
   * The check waits once more (CHECK_TRIES in all, when `counted`; RESEND_RECENT_MS since it began
   * at most), merged into a newer one of the conversation if there is one.
   */
  private again (conv: string, check: Check, cause: CheckCause, counted = true): void {
    if (this.closed || (counted && ++check.tries >= CHECK_TRIES) || Date.now() - check.began > RESEND_RECENT_MS) return
    const checks = this.checks[cause]
    const newer = checks.get(conv)
    if (newer !== undefined) {
      newer.seq = Math.max(newer.seq, check.seq)
      newer.ts = Math.min(newer.ts, check.ts)
      return
    }
    if (checks.size >= CHECKS_MAX) return
    checks.set(conv, { ...check, due: Date.now() + this.order.resendCheckMs })
    this.sweepSoon()
  }

  /** Whether this node is the one to fill what `key` names: yes, taken (by another node), or failed (no answer). Never rejects. */
  private async claimed (key: string): Promise<'yes' | 'taken' | 'failed'> {
    if (this.claims === null) return 'yes'
    try {
      return await within(this.claims.claim(key, CLAIM_MS), CLAIM_TIMEOUT_MS, () => new Error(`no answer within ${CLAIM_TIMEOUT_MS} ms`)) ? 'yes' : 'taken'
    } catch (err) {
      this.warn?.('delivery-claim', { err, key }, 'could not claim entries another node stored and never delivered, to deliver them here (a check tries again later; an order wait fills them anyway)')
      return 'failed'
    }
  }

  /** Gives a claim up (nothing was filled: the read failed). Never rejects. */
  private async release (key: string): Promise<void> {
    if (this.claims === null) return
    await within(this.claims.release(key), CLAIM_TIMEOUT_MS, () => new Error(`no answer within ${CLAIM_TIMEOUT_MS} ms`)).catch((err: unknown) => {
      this.warn?.('delivery-release', { err, key }, 'could not give up a claim of entries to deliver (the other nodes do not deliver them before it lapses)')
    })
  }

  /**
   * Changes among filled entries: folded into the copies of their targets delivered with them (a
   * message deleted since goes as deleted, without push or mention), and applied to their targets
   * in the store (idempotent: the node that stored them may have died before; the delivery does
   * not wait for that, close() does); then the other nodes are told to drop what they cached of
   * those targets. Never rejects.
   */
  private foldChanges (conv: string, missing: StoredMessage[]): void {
    const changes = missing.filter(m => isChangeKind(m.kind) && m.target !== undefined)
    if (changes.length === 0) return
    const at = new Map(missing.map((m, i) => [m.seq, i]))
    for (const c of changes) {
      const i = at.get(c.target as number)
      const target = i === undefined ? undefined : missing[i]
      if (i !== undefined && target !== undefined) missing[i] = { ...target, changes: applyChangeTo(target.changes, c) }
    }
    const apply = this.applyChange
    if (apply === null) return
    const applied = Promise.all(changes.map(async (c) => {
      try {
        await apply(c)
      } catch (err) {
        this.logger?.error({ err, conv, seq: c.seq, target: c.target }, 'a stored change was not applied to its target')
      }
    })).then(() => {
      try {
        this.bus.publish(SEQ_TOPIC, { seqs: {}, tails: {}, changed: changes.map(c => [conv, c.target as number]) })
      } catch (err) {
        this.logger?.error({ err, conv }, 'the other nodes could not be told of changes applied (their cached copies expire within a minute)')
      }
    })
    this.track(applied)
  }

  /** Work in the background (changes of filled entries applied, resends filled): close() waits for it. */
  private readonly background = new Set<Promise<void>>()

  /** Kept until it settles (never rejects). */
  private track (work: Promise<void>): void {
    this.background.add(work)
    void work.finally(() => this.background.delete(work))
  }

  /**
   * Checks nothing more, and resolves when the background work is done (at most `ms`): before
   * the stores close. (The deliveries themselves are waited for by Sequencer.close.)
   */
  async close (ms = 2000): Promise<void> {
    this.closed = true
    if (this.sweeper !== null) clearInterval(this.sweeper)
    this.sweeper = null
    for (const checks of Object.values(this.checks)) checks.clear()
    if (this.background.size === 0) return
    // (what is still under way then is given up: the stores close)
    await within(Promise.all([...this.background]), ms, () => new Error('background work still under way')).catch(() => {})
  }

  /** Delivers each gated conversation's messages of the batch once its gate opens. */
  private hold (stored: StoredMessage[], gates: ReadonlyMap<string, Promise<void>>): HeldDeliveries {
    const held = new Map<string, Promise<void>>()
    for (const [conv, gate] of gates) {
      const messages = stored.filter(m => m.conversationId === conv)
      const done = (async () => {
        try {
          await gate
          await this.deliverNow(messages)
        } catch (err) {
          this.logger?.error({ err, conv }, 'delivery of committed messages failed (devices sync by seq)')
        } finally {
          this.notePublished(conv, messages[messages.length - 1]?.seq ?? 0)
        }
      })()
      this.held.set(conv, done)
      void done.then(() => { if (this.held.get(conv) === done) this.held.delete(conv) })
      held.set(conv, done)
    }
    return held
  }

  /**
   * Hands the messages (in seq order per conversation) to the publisher and the rest; resolves
   * with how many were (not those of a conversation gone).
   */
  private async deliverNow (stored: StoredMessage[]): Promise<number> {
    // per message: the webhook's envelope is built only when an endpoint wants it
    const hooked = this.webhooks?.wants('message.stored') === true
    let delivered = 0
    for (const m of stored) {
      const entry = this.directory.peek(m.conversationId) ?? await this.directory.get(m.conversationId)
      if (entry === null) continue
      delivered++
      if (entry.conversation.kind === 'channel') {
        // read diffusion: one publish to the channel topic, fanned out by the broker; no push, no mentions
        this.publisher.channelMessage(m)
        if (hooked) this.webhooks?.emit('message.stored', toEnvelope(m))
        continue
      }
      this.publisher.message(m, entry.memberIds)
      if (hooked) this.webhooks?.emit('message.stored', toEnvelope(m))
      // (one read back from the store after an order wait may have been deleted or edited since:
      // no push or mention of a deleted one; its edited text in a push)
      if (m.changes?.deleted !== undefined) continue
      this.push?.noteStored(m.changes?.edited === undefined ? m : { ...m, body: m.changes.edited.body })
      if (m.mentions !== undefined) {
        this.mentioned(m, entry.memberIds)
        this.mentions?.note(m)
      }
    }
    return delivered
  }

  /**
   * Cluster: the commit notice (at once, held conversations too): `all`, with the changes among the
   * entries (once they are applied: the other nodes drop what they cached of their targets);
   * `stored`, without them (before they are applied); `changes`, those changes only, with the
   * batch's seqs again (the rest was told by stored()). Never throws.
   */
  private noticeStored (stored: StoredMessage[], what: 'all' | 'stored' | 'changes'): void {
    if (!this.bus.clustered) return
    try {
      const changed: Array<[string, number]> = []
      for (const m of stored) if (m.target !== undefined) changed.push([m.conversationId, m.target])
      if (what === 'changes') {
        // (with the batch's seqs again: the checks of them on the other nodes count from now, as
        // applying the changes held the batch's delivery)
        if (changed.length > 0) this.bus.publish(SEQ_TOPIC, { seqs: Object.fromEntries(lastSeqs(stored)), tails: {}, changed })
        return
      }
      // (a target changed in this batch is not sent before the change is applied: read from the store there)
      const targets = what === 'all' || changed.length === 0 ? null : new Set(changed.map(([conv, seq]) => `${conv}\u0000${seq}`))
      // seqs: what nodes of the version before counts read; tails: [seq, count, lastReal]
      const seqs: Record<string, number> = {}
      const tails: Record<string, [number, number, number]> = {}
      const docs: StoredMessage[] = []
      let bodies = 0
      for (const m of stored) {
        if (m.seq > (seqs[m.conversationId] ?? 0)) {
          seqs[m.conversationId] = m.seq
          tails[m.conversationId] = [m.seq, countOf(m), lastRealOf(m)]
        }
        if (targets?.has(`${m.conversationId}\u0000${m.seq}`) === true) continue
        const size = bodySize(m)
        const weight = size + 100 + (m.mentions?.reduce((n, u) => n + u.length + 3, 0) ?? 0)
        if (size <= NOTICE_BODY_MAX && bodies + weight <= NOTICE_BODIES_MAX && docs.length < NOTICE_DOCS_MAX) {
          docs.push(m)
          bodies += weight
        }
      }
      // at once (the other nodes' sequencers learn the tails: fewer seq conflicts); that the seqs
      // were published, they learn from the fan-outs' marks
      this.bus.publish(SEQ_TOPIC, what === 'all' && changed.length > 0 ? { seqs, tails, changed, docs } : { seqs, tails, docs })
    } catch (err) {
      this.logger?.error({ err }, 'the commit notice could not be sent (the other nodes learn the tails from the store)')
    }
  }

  /**
   * A conversation this node has no mark or notice of: whether seq-1, stored at `storedAt` (when
   * known), may be another node's still on its way. Not when it was stored before this node
   * listened without a break (its mark went by, or was lost), nor long ago.
   */
  private mayBeUnpublished (seq: number, storedAt: number | undefined, now: number, recentMs = this.order.unpublishedMs): boolean {
    return seq > 1 && storedAt !== undefined && storedAt >= this.listeningSince() && now - storedAt < recentMs
  }
}

/** A message's body in characters (a text's length; other kinds' JSON). */
function bodySize (m: StoredMessage): number {
  if (typeof m.body === 'string') return m.body.length
  const json = JSON.stringify(m.body) as string | undefined
  return json === undefined ? Number.POSITIVE_INFINITY : json.length
}
