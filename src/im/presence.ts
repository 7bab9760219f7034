/**
 * Presence: a user is online while any of their devices is connected to any node. Each
 * connection is an entry with an expiry that its node refreshes (heartbeat), so the entries of a
 * node that died lapse on their own. Last-seen is kept per user. Contacts (the members of the
 * user's conversations, up to a size limit) get `presence` events on transitions, at most one per
 * user per `notifyIntervalMs` (the latest state wins). Going offline is told only once the user has
 * been gone for `offlineGraceMs`, and an event is sent only when the state differs from the one
 * last told (kept in the store, so every node agrees): a phone that drops and reconnects within
 * the grace causes no events and no contact lookups. A user's presence is hidden from the people
 * they block: those see them offline and never seen, and get no events of theirs.
 */
import type { Redis } from 'ioredis'
import { LRUCache } from 'lru-cache'
import { lruCache } from '../lru.js'
import type { Logger } from '../log.js'
import type { MetadataStore } from '../store/types.js'
import type { ConversationDirectory } from './directory.js'
import type { BlockService } from './blocks.js'
import type { Publisher } from './publisher.js'

export interface PresenceStatus { user: string, online: boolean, lastSeen: number | null }

/** How a user whose presence is hidden from the viewer looks: offline and never seen. */
function hidden (user: string): PresenceStatus {
  return { user, online: false, lastSeen: null }
}

export interface PresenceStore {
  /** Adds a live connection; true if the user had none before. */
  add (userId: string, connId: string, expiresAt: number, now: number): Promise<boolean>
  /** Removes a connection; true if the user has none left. */
  remove (userId: string, connId: string, now: number): Promise<boolean>
  refresh (entries: Array<{ userId: string, connId: string }>, expiresAt: number): Promise<void>
  status (userIds: string[], now: number): Promise<PresenceStatus[]>
  /** Records the state the user's contacts were last told; returns the one recorded before (null: none). */
  swapTold (userId: string, online: boolean): Promise<boolean | null>
  /**
   * Offline checks due (a user whose last device went, to be told when the grace is over), kept
   * where every node sees them: the node that set one normally does it, and any node's heartbeat
   * does those it left behind (stopped in the meantime). One entry per user.
   */
  addDue (userId: string, at: number): Promise<void>
  removeDue (userId: string): Promise<void>
  /** Takes (removes and returns) up to `max` users whose check was due before `before`. */
  takeDue (before: number, max: number): Promise<string[]>
  close (): Promise<void>
}

/** A failed notify is tried again after at least this long. */
const NOTIFY_RETRY_MS = 1000

/** Offline checks a heartbeat takes over at most (the rest wait for the next one). */
const DUE_PER_SWEEP = 1000

/** How long a told state is remembered (a lost one only costs one repeated event). */
const TOLD_TTL_MS = 86_400_000

export class MemoryPresenceStore implements PresenceStore {
  private readonly live = new Map<string, Map<string, number>>()
  private readonly lastSeen = new Map<string, number>()
  /** Bounded like the store's other per-user state by the accounts; an evicted entry repeats one event. */
  private readonly told = lruCache<string, boolean>(100_000)

  private liveCount (userId: string, now: number): number {
    const conns = this.live.get(userId)
    if (conns === undefined) return 0
    let n = 0
    for (const [id, exp] of conns) {
      if (exp > now) n++
      else conns.delete(id)
    }
    if (conns.size === 0) this.live.delete(userId)
    return n
  }

  async add (userId: string, connId: string, expiresAt: number, now: number): Promise<boolean> {
    const before = this.liveCount(userId, now)
    let conns = this.live.get(userId)
    if (conns === undefined) this.live.set(userId, conns = new Map())
    conns.set(connId, expiresAt)
    return before === 0
  }

  async remove (userId: string, connId: string, now: number): Promise<boolean> {
    this.live.get(userId)?.delete(connId)
    this.lastSeen.set(userId, now)
    return this.liveCount(userId, now) === 0
  }

  async refresh (entries: Array<{ userId: string, connId: string }>, expiresAt: number): Promise<void> {
    for (const e of entries) this.live.get(e.userId)?.set(e.connId, expiresAt)
  }

  async status (userIds: string[], now: number): Promise<PresenceStatus[]> {
    return userIds.map(user => ({ user, online: this.liveCount(user, now) > 0, lastSeen: this.lastSeen.get(user) ?? null }))
  }

  private readonly due = new Map<string, number>()

  async addDue (userId: string, at: number): Promise<void> {
    this.due.set(userId, at)
  }

  async removeDue (userId: string): Promise<void> {
    this.due.delete(userId)
  }

  async takeDue (before: number, max: number): Promise<string[]> {
    const taken: string[] = []
    for (const [user, at] of this.due) {
      if (taken.length >= max) break
      if (at < before) taken.push(user)
    }
    for (const user of taken) this.due.delete(user)
    return taken
  }

  async swapTold (userId: string, online: boolean): Promise<boolean | null> {
    const before = this.told.get(userId) ?? null
    this.told.set(userId, online)
    return before
  }

  async close (): Promise<void> {}
}

/** Redis: a sorted set per user (member = connection id, score = expiry) and a last-seen key. */
export class RedisPresenceStore implements PresenceStore {
  constructor (private readonly redis: Redis, private readonly prefix = 'mqim:') {}

  private key (userId: string): string { return `${this.prefix}presence:${userId}` }
  private seenKey (userId: string): string { return `${this.prefix}lastseen:${userId}` }
  private toldKey (userId: string): string { return `${this.prefix}presence-told:${userId}` }

  async add (userId: string, connId: string, expiresAt: number, now: number): Promise<boolean> {
    const res = await this.redis.multi()
      .zremrangebyscore(this.key(userId), '-inf', now)
      .zcard(this.key(userId))
      .zadd(this.key(userId), expiresAt, connId)
      .pexpireat(this.key(userId), expiresAt)
      .exec()
    const before = Number(res?.[1]?.[1] ?? 0)
    return before === 0
  }

  async remove (userId: string, connId: string, now: number): Promise<boolean> {
    const res = await this.redis.multi()
      .zrem(this.key(userId), connId)
      .set(this.seenKey(userId), String(now))
      .zcount(this.key(userId), `(${now}`, '+inf')
      .exec()
    return Number(res?.[2]?.[1] ?? 0) === 0
  }

  async refresh (entries: Array<{ userId: string, connId: string }>, expiresAt: number): Promise<void> {
    if (entries.length === 0) return
    const m = this.redis.multi()
    for (const e of entries) {
      m.zadd(this.key(e.userId), expiresAt, e.connId)
      m.pexpireat(this.key(e.userId), expiresAt)
    }
    await m.exec()
  }

  async status (userIds: string[], now: number): Promise<PresenceStatus[]> {
    if (userIds.length === 0) return []
    const m = this.redis.multi()
    for (const u of userIds) {
      m.zcount(this.key(u), `(${now}`, '+inf')
      m.get(this.seenKey(u))
    }
    const res = await m.exec()
    return userIds.map((user, i) => {
      const seen = res?.[2 * i + 1]?.[1]
      return { user, online: Number(res?.[2 * i]?.[1] ?? 0) > 0, lastSeen: typeof seen === 'string' ? Number(seen) : null }
    })
  }

  private get dueKey (): string { return `${this.prefix}presence-due` }

  async addDue (userId: string, at: number): Promise<void> {
    await this.redis.zadd(this.dueKey, at, userId)
  }

  async removeDue (userId: string): Promise<void> {
    await this.redis.zrem(this.dueKey, userId)
  }

  async takeDue (before: number, max: number): Promise<string[]> {
    const users = await this.redis.zrangebyscore(this.dueKey, '-inf', `(${before}`, 'LIMIT', 0, max)
    if (users.length === 0) return []
    // whoever removes an entry takes it (two nodes sweeping at once take each user once)
    const removed = await Promise.all(users.map(async u => await this.redis.zrem(this.dueKey, u)))
    return users.filter((_, i) => removed[i] === 1)
  }

  async swapTold (userId: string, online: boolean): Promise<boolean | null> {
    // one atomic SET ... GET (Redis 6.2+): two nodes telling at once see each other's value
    const before = await this.redis.call('SET', this.toldKey(userId), online ? '1' : '0', 'PX', String(TOLD_TTL_MS), 'GET')
    return before === '1' ? true : before === '0' ? false : null
  }

  async close (): Promise<void> {}
}

export interface PresenceOptions {
  /** Called when a user's first device connects anywhere in the cluster (true), or the last one goes (false): webhooks. */
  onChange?: (userId: string, online: boolean) => void
  store: PresenceStore
  meta: MetadataStore
  directory: ConversationDirectory
  /** Whom each user blocks: they see none of the user's presence. */
  blocks: BlockService
  publisher: Publisher
  logger: Logger
  /** Entries live this long unless refreshed. */
  ttlMs?: number
  notifyIntervalMs?: number
  /** Going offline is told once the user has been gone this long (a reconnect within it is not seen). */
  offlineGraceMs?: number
  /** Conversations larger than this do not get presence events of their members. */
  maxAudience?: number
  now?: () => number
}

export class PresenceService {
  /** connId -> userId of this node's connections (Sessions reports starts and ends in pairs). */
  private readonly local = new Map<string, string>()
  /** When each user's contacts were last told (kept while it can still delay the next event). */
  private readonly lastNotified: LRUCache<string, number>
  private readonly pendingNotify = new Map<string, NodeJS.Timeout>()
  /** Users whose next notify tells their state even if it is the one last told (at most one per pending notify). */
  private readonly forced = new Set<string>()
  private readonly heartbeat: NodeJS.Timeout
  private readonly heartbeatMs: number
  private readonly ttlMs: number
  private readonly notifyIntervalMs: number
  private readonly offlineGraceMs: number
  private readonly maxAudience: number
  private readonly now: () => number

  constructor (private readonly opts: PresenceOptions) {
    this.ttlMs = opts.ttlMs ?? 90_000
    this.notifyIntervalMs = opts.notifyIntervalMs ?? 5_000
    this.offlineGraceMs = opts.offlineGraceMs ?? 10_000
    this.maxAudience = opts.maxAudience ?? 500
    this.now = opts.now ?? Date.now
    this.lastNotified = lruCache(100_000, { ttl: Math.max(1, this.notifyIntervalMs), ttlAutopurge: false })
    this.heartbeatMs = Math.max(1000, this.ttlMs / 3)
    this.heartbeat = setInterval(() => { void this.refresh() }, this.heartbeatMs)
    this.heartbeat.unref()
  }

  async connected (userId: string, connId: string): Promise<void> {
    if (this.closed) return
    this.local.set(connId, userId)
    try {
      if (await this.opts.store.add(userId, connId, this.now() + this.ttlMs, this.now())) {
        this.scheduleNotify(userId, 0)
        this.opts.onChange?.(userId, true)
      }
    } catch (err) {
      this.opts.logger.warn({ userId, err }, 'presence update failed')
    }
  }

  async disconnected (userId: string, connId: string): Promise<void> {
    this.local.delete(connId)
    // close() has marked this node's connections gone already
    if (this.closed) return
    try {
      if (await this.opts.store.remove(userId, connId, this.now())) {
        this.scheduleNotify(userId, this.offlineGraceMs)
        this.opts.onChange?.(userId, false)
        await this.opts.store.addDue(userId, this.now() + this.offlineGraceMs)
      }
    } catch (err) {
      this.opts.logger.warn({ userId, err }, 'presence update failed')
    }
  }

  /** This node's connections as presence counts them (for health and tests). */
  localConnections (): number {
    return this.local.size
  }

  async status (userIds: string[]): Promise<PresenceStatus[]> {
    return await this.opts.store.status(userIds, this.now())
  }

  /**
   * The users' presence as `viewer` may see it, in the order asked: real for the viewer and for
   * those who share a conversation with them (see contactsOf) and do not block them; everyone else
   * looks offline and never seen, so presence leaks neither to strangers nor to the blocked.
   */
  async statusFor (viewer: string, userIds: string[]): Promise<PresenceStatus[]> {
    const contacts = await this.contactsOf(viewer)
    contacts.add(viewer)
    const candidates = [...new Set(userIds)].filter(u => contacts.has(u))
    const [statuses, blockers] = await Promise.all([this.status(candidates), this.opts.blocks.blockersAmong(viewer, candidates)])
    const visible = new Map(statuses.filter(s => !blockers.has(s.user)).map(s => [s.user, this.asTold(s)]))
    return userIds.map(u => visible.get(u) ?? hidden(u))
  }

  /**
   * A status as contacts are told it: a user gone for less than offlineGraceMs is still online to
   * them (their offline event comes when the grace is over; had the request said offline, a return
   * within the grace would leave the viewer with no event to correct it).
   */
  private asTold (s: PresenceStatus): PresenceStatus {
    if (s.online || s.lastSeen === null || this.now() - s.lastSeen >= this.offlineGraceMs) return s
    return { ...s, online: true }
  }

  /**
   * After `userId` blocked or unblocked `viewer`: tells the viewer's devices the user's presence as
   * they may see it now (offline and never seen while blocked, so a client does not keep showing
   * the blocker online), if the two share a conversation; strangers are told nothing.
   */
  async retell (userId: string, viewer: string): Promise<void> {
    if (this.closed || !(await this.contactsOf(userId)).has(viewer)) return
    const blocked = (await this.opts.blocks.blocking(userId)).has(viewer)
    const [status] = blocked ? [hidden(userId)] : (await this.status([userId])).map(st => this.asTold(st))
    if (status === undefined) return
    this.opts.publisher.event([viewer], { type: 'presence', user: userId, online: status.online, lastSeen: status.lastSeen })
  }

  /**
   * Everyone who shares a conversation (of at most maxAudience members, channels left out) with the
   * user: five batched store calls at most (memberships, their conversations, member counts, and
   * the conversations and members of the small ones that are not cached), whatever the number of
   * conversations. Channels are left out before counting: counting a channel of 100,000 members
   * reads 100,000 index entries.
   */
  async contactsOf (userId: string): Promise<Set<string>> {
    const memberships = (await this.opts.meta.memberListByUser(userId)).map(m => m.conversationId)
    const channels = new Set((await this.opts.meta.conversationGetMany(memberships)).filter(c => c.kind === 'channel').map(c => c.id))
    const convIds = memberships.filter(c => !channels.has(c))
    const counts = await this.opts.meta.memberCountMany(convIds)
    const small = convIds.filter(c => (counts.get(c) ?? 0) <= this.maxAudience)
    const contacts = new Set<string>()
    for (const entry of (await this.opts.directory.getMany(small)).values()) {
      if (entry.members.size > this.maxAudience) continue
      for (const u of entry.members.keys()) if (u !== userId) contacts.add(u)
    }
    return contacts
  }

  /**
   * Tells the user's contacts their state in `minWait` ms at the earliest (and one interval after
   * the last event); `force`: even if it is the state last told (see notify).
   */
  private scheduleNotify (userId: string, minWait: number, force = false): void {
    if (this.closed) return
    if (force) this.forced.add(userId)
    if (this.pendingNotify.has(userId)) return
    const wait = Math.max(minWait, (this.lastNotified.get(userId) ?? 0) + this.notifyIntervalMs - this.now())
    const timer = setTimeout(() => {
      this.pendingNotify.delete(userId)
      const forced = this.forced.delete(userId)
      this.notify(userId, forced).catch((err: unknown) => {
        this.opts.logger[this.closed ? 'debug' : 'warn']({ userId, err }, 'presence notify failed')
        // try again, forced (the swap may have recorded a state nobody was told), no sooner than a
        // second later while the store is failing
        if (!this.closed) this.scheduleNotify(userId, Math.max(NOTIFY_RETRY_MS, this.notifyIntervalMs), true)
      })
    }, wait)
    timer.unref()
    this.pendingNotify.set(userId, timer)
  }

  private async notify (userId: string, force: boolean): Promise<void> {
    if (this.closed) return
    const [status] = await this.status([userId])
    if (status === undefined) return
    // gone for less than the grace (a timer set while the user was online fired): wait out the rest
    const away = status.lastSeen === null ? Infinity : this.now() - status.lastSeen
    if (!status.online && away < this.offlineGraceMs) {
      this.scheduleNotify(userId, Math.min(this.offlineGraceMs, this.offlineGraceMs - away), force)
      return
    }
    await this.opts.store.removeDue(userId)
    // the contacts know this state already (a reconnect within the grace, or another node told
    // them): nothing to look up. A lookup that fails after the swap is retried forced (below).
    if (await this.opts.store.swapTold(userId, status.online) === status.online && !force) return
    const [contacts, blocking] = await Promise.all([this.contactsOf(userId), this.opts.blocks.blocking(userId)])
    this.lastNotified.set(userId, this.now())
    // the people the user blocks are not told (the list is cached: no store read per event)
    for (const u of blocking) contacts.delete(u)
    this.opts.publisher.event(contacts, { type: 'presence', user: userId, online: status.online, lastSeen: status.lastSeen })
    // Another node may have read the other state and told it in the meantime, or skipped telling it
    // because this node's swap had not happened yet: whichever event the contacts get last, the
    // state now is told once more if it is not the one just sent.
    const [now] = await this.status([userId])
    if (now !== undefined && this.asTold(now).online !== status.online) this.scheduleNotify(userId, 0, true)
  }

  private async refresh (): Promise<void> {
    const entries = [...this.local].map(([connId, userId]) => ({ userId, connId }))
    try {
      await this.opts.store.refresh(entries, this.now() + this.ttlMs)
      // offline checks a stopped node left behind (its own are a heartbeat late at most)
      const due = await this.opts.store.takeDue(this.now() - this.heartbeatMs, DUE_PER_SWEEP)
      for (const userId of due) this.scheduleNotify(userId, 0)
    } catch (err) {
      this.opts.logger.warn({ err }, 'presence heartbeat failed')
    }
  }

  private closed = false

  async close (): Promise<void> {
    this.closed = true
    clearInterval(this.heartbeat)
    for (const t of this.pendingNotify.values()) clearTimeout(t)
    // the checks this node was still to make (its own, retries, and those its sweep took) are left
    // to the other nodes
    const pending = [...this.pendingNotify.keys()]
    this.pendingNotify.clear()
    this.forced.clear()
    await Promise.allSettled(pending.map(async userId => await this.opts.store.addDue(userId, this.now())))
    // this node's connections end with it: mark them gone rather than waiting for expiry, and leave
    // the offline checks to the other nodes (those who reconnect there in time are not told)
    await Promise.allSettled([...this.local].map(async ([connId, userId]) => {
      if (await this.opts.store.remove(userId, connId, this.now())) await this.opts.store.addDue(userId, this.now() + this.offlineGraceMs)
    }))
    this.local.clear()
    await this.opts.store.close()
  }
}
