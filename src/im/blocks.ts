/**
 * Blocks: whom each user blocks. A user refuses direct conversations with the people they block
 * and with the people who block them (both sides get BLOCKED: the one blocked must not reach the
 * blocker, and the blocker does not write to someone who cannot answer), is not added to groups
 * by someone they block, and hides their presence from them. Groups are not affected otherwise.
 *
 * The checks sit on the send path, so each user's list is cached (a read-through LRU, bounded by
 * the number of ids it holds: a list has at most limits.blocksPerUser). A change made here drops
 * the user's entry on this node and, over the cluster bus, on every other node. The bus is best
 * effort, so entries also expire after `ttlMs`: a node that missed a notice (Redis failing over)
 * is right again within that time. A list used in the last quarter of its time is read again in
 * the background (the cached one answers meanwhile), so an active user's list is renewed before
 * it expires and a send does not wait for the store: with a 60 s expiry every direct-chat user's
 * list ran out once a minute, and in the cluster soak one direct send in twenty waited for a
 * metadata read. A load that races a change does not cache what it read (the same numbering of
 * invalidations as ConversationDirectory).
 */
import { LRUCache } from 'lru-cache'
import { lruCache, lruCacheSized } from '../lru.js'
import { ImError } from '../errors.js'
import type { ClusterBus } from '../broker/bus.js'
import { BLOCKS_TOPIC } from '../protocol/topics.js'
import type { BlockRecord, MetadataStore } from '../store/types.js'
import type { ConversationEntry } from './directory.js'
import type { Caller, Services } from './context.js'

export interface BlockServiceOptions {
  /** Users one user may block (limits.blocksPerUser); `add` answers 'full' beyond. */
  maxPerUser: number
  /** Users whose lists are cached. Default 100,000. */
  maxEntries?: number
  /** Ids held by the cache over all its entries (an entry costs its list's length + 1). Default 1,000,000. */
  maxCachedIds?: number
  /** A cached list is read again after this long, whatever the bus said. Default 60,000 ms. */
  ttlMs?: number
  /** The clock the expiry is read on, in ms (tests); default performance.now. */
  now?: () => number
}

/** How long background reads pause after one failed. */
const RENEW_PAUSE_MS = 1000

/** Between a user and another: nothing, the user blocks the other, or the other blocks the user. */
export type BlockState = 'none' | 'blocking' | 'blockedBy'

const EMPTY: ReadonlySet<string> = new Set()

export class BlockService {
  readonly maxPerUser: number
  /** user -> whom they block */
  private readonly lists: LRUCache<string, ReadonlySet<string>>
  /** A list with less than this left of its time is read again in the background when used (a quarter of ttlMs). */
  private readonly renewWithinMs: number
  private readonly now: () => number
  /** After a background read failed (the store down), none is started before this (by `now`): one a second at most, not one per use. */
  private renewPausedUntil = Number.NEGATIVE_INFINITY
  private readonly loading = new Map<string, Promise<ReadonlySet<string>>>()
  /** user -> number of the last invalidation of their list */
  private readonly invalidatedAt: LRUCache<string, number>
  private clock = 0
  /** The highest invalidation number forgotten by invalidatedAt (evicted). */
  private forgottenUpTo = 0

  constructor (private readonly meta: MetadataStore, private readonly bus: ClusterBus, options: BlockServiceOptions) {
    this.maxPerUser = options.maxPerUser
    const maxEntries = options.maxEntries ?? 100_000
    const ttl = options.ttlMs ?? 60_000
    this.renewWithinMs = ttl / 4
    this.now = options.now ?? (() => performance.now())
    this.lists = lruCacheSized(maxEntries, options.maxCachedIds ?? 1_000_000, (list) => list.size + 1, {
      ttl,
      ...(options.now === undefined ? {} : { perf: { now: options.now }, ttlResolution: 0 })
    })
    this.invalidatedAt = lruCache(maxEntries * 2, {
      dispose: (n, _user, reason) => { if (reason === 'evict') this.forgottenUpTo = Math.max(this.forgottenUpTo, n) }
    })
    bus.on(BLOCKS_TOPIC, (notice) => {
      if (typeof notice.user === 'string') this.invalidateLocal(notice.user)
    })
  }

  /** The cached list, if any; one near its expiry starts a read in the background (see the top). */
  private cached (userId: string): ReadonlySet<string> | undefined {
    const list = this.lists.get(userId)
    if (list !== undefined && !this.loading.has(userId) && this.lists.getRemainingTTL(userId) < this.renewWithinMs && this.now() >= this.renewPausedUntil) {
      // (a failed read leaves the list to expire: the next use after that reads and reports it)
      this.load(userId).catch(() => { this.renewPausedUntil = this.now() + RENEW_PAUSE_MS })
    }
    return list
  }

  /** Whom the user blocks: from the cache, else one store read. */
  async blocking (userId: string): Promise<ReadonlySet<string>> {
    return this.cached(userId) ?? await this.load(userId)
  }

  /** One store read of the user's list (joined by whoever asks meanwhile), cached unless a change raced it. */
  private async load (userId: string): Promise<ReadonlySet<string>> {
    const inFlight = this.loading.get(userId)
    if (inFlight !== undefined) return await inFlight
    const started = this.clock
    const load = (async () => {
      const records = await this.meta.blockList(userId)
      const list = records.length === 0 ? EMPTY : new Set(records.map(r => r.blockedId))
      if ((this.invalidatedAt.get(userId) ?? this.forgottenUpTo) <= started) this.lists.set(userId, list)
      return list
    })()
    this.loading.set(userId, load)
    try {
      return await load
    } finally {
      if (this.loading.get(userId) === load) this.loading.delete(userId)
    }
  }

  /** Whether either of the two blocks the other (both lists, read at once when not cached). */
  async between (userId: string, other: string): Promise<BlockState> {
    return this.cachedBetween(userId, other) ?? stateOf(userId, other, ...await Promise.all([this.blocking(userId), this.blocking(other)]))
  }

  /** between() without a promise when both lists are cached; undefined when one is not. */
  cachedBetween (userId: string, other: string): BlockState | undefined {
    const mine = this.cached(userId)
    if (mine === undefined) return undefined
    const theirs = this.cached(other)
    return theirs === undefined ? undefined : stateOf(userId, other, mine, theirs)
  }

  /** Of `others`, those who block the user: one store read (not cached: many users at once, rarely). */
  async blockersAmong (userId: string, others: readonly string[]): Promise<Set<string>> {
    if (others.length === 0) return new Set()
    return await this.meta.blockersAmong(userId, others)
  }

  /** The user blocks `other` from `at` on; 'full' when they block maxPerUser users already. */
  async add (userId: string, other: string, at: number): Promise<'added' | 'exists' | 'full'> {
    const outcome = await this.meta.blockAdd(userId, other, at, this.maxPerUser)
    if (outcome === 'added') this.invalidate(userId)
    return outcome
  }

  /** Returns false if the user did not block `other`. */
  async remove (userId: string, other: string): Promise<boolean> {
    const removed = await this.meta.blockRemove(userId, other)
    if (removed) this.invalidate(userId)
    return removed
  }

  /** Whom the user blocks and since when, oldest first (from the store: the list op). */
  async list (userId: string): Promise<BlockRecord[]> {
    return await this.meta.blockList(userId)
  }

  /** After a change of the user's list: drop it here and on every node. */
  invalidate (userId: string): void {
    this.invalidateLocal(userId)
    this.bus.publish(BLOCKS_TOPIC, { user: userId })
  }

  invalidateLocal (userId: string): void {
    this.lists.delete(userId)
    this.loading.delete(userId)
    this.invalidatedAt.set(userId, ++this.clock)
  }
}

function stateOf (userId: string, other: string, mine: ReadonlySet<string>, theirs: ReadonlySet<string>): BlockState {
  if (mine.has(other)) return 'blocking'
  if (theirs.has(userId)) return 'blockedBy'
  return 'none'
}

/**
 * The caller may write to this conversation as far as blocks go: in a direct conversation,
 * neither member blocks the other (BLOCKED otherwise). Groups are not affected. When both
 * members' lists are cached it costs no store read and no promise (it returns undefined, or
 * throws): the send path awaits only what it gets back.
 */
export function requireNotBlocked (services: Services, caller: Caller, entry: ConversationEntry): Promise<void> | undefined {
  if (entry.conversation.kind !== 'direct') return
  const peer = entry.memberIds.find(u => u !== caller.userId)
  if (peer === undefined) return
  const state = services.blocks.cachedBetween(caller.userId, peer)
  if (state === undefined) return requireUnblocked(services, caller.userId, peer)
  refuseBlocked(state, peer)
}

/** Neither user blocks the other; BLOCKED says which way it is. */
export async function requireUnblocked (services: Services, userId: string, peer: string): Promise<void> {
  refuseBlocked(await services.blocks.between(userId, peer), peer)
}

function refuseBlocked (state: BlockState, peer: string): void {
  if (state === 'blocking') throw new ImError('BLOCKED', `you have blocked ${peer}; unblock them first`)
  if (state === 'blockedBy') throw new ImError('BLOCKED', `${peer} has blocked you`)
}
