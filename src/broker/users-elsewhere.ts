/**
 * Which users have connections of some kind on the other nodes of a cluster, so that a publish
 * meant only for those connections crosses Redis only when one may be elsewhere. Two lists use it
 * (src/server.ts):
 *
 * - Reply watchers. A reply is written straight to the device that asked (Publisher.reply); a copy
 *   goes to the user's other connections that watch replies (a filter such as im/u/<user>/# or
 *   im/u/<user>/r/+, see Sessions.addFilter). In a cluster a watcher may be on another node, and
 *   the copy has to be routed; routing every reply "just in case" sent each one through Redis and
 *   back to the requester's own node for nobody (a quarter of a busy node's routed traffic).
 * - Connected users. A `read` event goes to the reader's other devices (Publisher.toOtherDevices);
 *   most readers have one device, and in the cluster soak these events, routed to the reader's own
 *   node and dropped there for the requester, were three publishes in four that crossed Redis.
 *
 * Each node tells the others its list, over the cluster bus (one topic per list):
 *   {user, on}            a user went from none to some on this node (on) or back;
 *   {users}               the whole list, every `periodMs` and when another node says hello;
 *   {bloom, bits, k}      the whole list when it names more than SNAPSHOT_MAX users: a Bloom filter
 *                         (src/broker/bloom.ts; ~1 % of other users counted in by mistake, which
 *                         only routes their publish as before);
 *   {all}                 "assume every user" (sent by older versions above SNAPSHOT_MAX);
 *   {hello}               sent once at start: the others answer with their lists.
 * A node's entry is dropped when it has not sent its list for 3.5 periods (it stopped). Until a
 * node has been up for one period plus a second, and whenever it cannot tell (too many nodes, a
 * list it cannot read), it says "elsewhere" and the publish is routed, as before. What these lists
 * save stays best effort (QoS 0 copies and events): a connection that arrives on one node is
 * counted on another from about when its notice arrives there, a few milliseconds (the notice is
 * sent when the connection authenticates, before its first subscription reaches Redis); after a
 * break in a node's link to Redis, within a second of its return (its list; meanwhile the others
 * keep what they had, and it routes everything for a period).
 */
import type { ClusterBus } from './bus.js'
import { Bloom } from './bloom.js'
import { USER_ID_PATTERN } from '../protocol/topics.js'
import { monotonicNow, type MonotonicMs } from '../clocks.js'

/** Users named in one list; beyond, a node sends a Bloom filter. */
export const SNAPSHOT_MAX = 2000
/** Other nodes remembered; beyond, every publish is routed. */
const NODES_MAX = 256

export interface LocalUsers {
  /** Users with such a connection on this node. */
  users: () => IterableIterator<string>
  count: () => number
}

export interface UsersElsewhereOptions {
  /** The bus topic of this list (WATCHERS_TOPIC, CONNECTED_TOPIC). */
  topic: string
  periodMs: number
  /**
   * A monotonic clock (default performance.now): a wall clock stepped forward would expire every
   * node's list at once (routing everything for a period) or make a link that just came back look
   * old; stepped back, it would keep a stopped node's list.
   */
  now?: () => MonotonicMs
  /**
   * Since when this node's link to the others has been up, by `now` (+Infinity while it is down):
   * notices of a break went by unheard, and this node's own were dropped. For a period and a
   * second after the link is back it says "elsewhere", as after its start, and it sends its list
   * within a second.
   */
  linkSince?: () => MonotonicMs
}

/** How often a node looks whether its link came back (to send its list then). */
const LINK_CHECK_MS = 1000

interface NodeEntry { users: Set<string>, bloom: Bloom | null, all: boolean, seenAt: number }

export class UsersElsewhere {
  private readonly nodes = new Map<string, NodeEntry>()
  private readonly startedAt: number
  private overflow = false
  private timer: NodeJS.Timeout | null = null
  private lastAnswer = Number.NEGATIVE_INFINITY
  private closed = false
  /** When this node last sent its list (by `now`). */
  private lastList = 0

  constructor (
    private readonly bus: Pick<ClusterBus, 'clustered' | 'on' | 'publish'>,
    private readonly local: LocalUsers,
    private readonly opts: UsersElsewhereOptions
  ) {
    this.startedAt = this.now()
    this.lastList = this.startedAt
    if (!bus.clustered) return
    bus.on(opts.topic, (m) => this.received(m))
    bus.publish(opts.topic, { hello: true })
    this.timer = setInterval(() => this.check(), Math.min(opts.periodMs, LINK_CHECK_MS))
    this.timer.unref()
  }

  /** Every second at most (the timer; public for tests): the periodic list, or the list at once after the link came back. */
  check (): void {
    const link = this.opts.linkSince?.() ?? this.startedAt
    if (this.now() - this.lastList >= this.opts.periodMs || (Number.isFinite(link) && link > this.lastList)) this.tick()
  }

  private now (): MonotonicMs {
    return this.opts.now?.() ?? monotonicNow()
  }

  /** This node's list gained (true) or lost (false) `userId`. */
  changed (userId: string, on: boolean): void {
    if (this.bus.clustered && !this.closed) this.bus.publish(this.opts.topic, { user: userId, on })
  }

  /** True when another node may have `userId` in its list (or this node cannot tell). */
  elsewhere (userId: string): boolean {
    if (!this.bus.clustered) return false
    const now = this.now()
    const since = Math.max(this.startedAt, this.opts.linkSince?.() ?? this.startedAt)
    if (!(now - since >= this.opts.periodMs + 1000) || this.overflow) return true
    const stale = now - this.opts.periodMs * 3.5
    for (const e of this.nodes.values()) {
      if (e.seenAt >= stale && (e.all || e.users.has(userId) || e.bloom?.has(userId) === true)) return true
    }
    return false
  }

  /**
   * The node is stopping (its connections are about to be closed): tells the others its list is
   * empty, and says nothing more (the bus closes with the broker).
   */
  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    if (this.bus.clustered && !this.closed) this.bus.publish(this.opts.topic, { users: [] })
    this.closed = true
  }

  /** Each period: forgets nodes that stopped, and sends this node's list. */
  tick (): void {
    this.expire()
    this.sendList()
  }

  private sendList (): void {
    this.lastList = this.now()
    const n = this.local.count()
    if (n <= SNAPSHOT_MAX) {
      this.bus.publish(this.opts.topic, { users: [...this.local.users()] })
      return
    }
    const bloom = Bloom.sized(n)
    for (const u of this.local.users()) bloom.add(u)
    this.bus.publish(this.opts.topic, { ...bloom.toWire() })
  }

  private expire (): void {
    const stale = this.now() - this.opts.periodMs * 3.5
    for (const [node, e] of this.nodes) if (e.seenAt < stale) this.nodes.delete(node)
    if (this.nodes.size < NODES_MAX) this.overflow = false
  }

  private entry (node: string): NodeEntry | null {
    let e = this.nodes.get(node)
    if (e === undefined) {
      if (this.nodes.size >= NODES_MAX) {
        this.overflow = true
        return null
      }
      this.nodes.set(node, e = { users: new Set(), bloom: null, all: false, seenAt: this.now() })
    }
    return e
  }

  /** The node's whole list: exactly these users, or a filter, or all. */
  private replace (e: NodeEntry, users: Set<string>, bloom: Bloom | null, all: boolean): void {
    e.users = users
    e.bloom = bloom
    e.all = all
    e.seenAt = this.now()
  }

  private received (m: Record<string, unknown>): void {
    const node = m.node
    if (typeof node !== 'string') return
    if (m.hello === true) {
      if (this.closed) return
      // one answer a second at most, however many nodes start at once
      const now = this.now()
      if (now - this.lastAnswer >= 1000) {
        this.lastAnswer = now
        this.sendList()
      }
      return
    }
    const e = this.entry(node)
    if (e === null) return
    if (m.all === true) {
      this.replace(e, new Set(), null, true)
    } else if (Array.isArray(m.users)) {
      const users = m.users.filter((u): u is string => typeof u === 'string' && USER_ID_PATTERN.test(u))
      const all = users.length > SNAPSHOT_MAX
      this.replace(e, all ? new Set() : new Set(users), null, all)
    } else if (m.bloom !== undefined) {
      // a filter that does not parse tells nothing: assume everyone there until the next list
      const bloom = Bloom.fromWire(m)
      this.replace(e, new Set(), bloom, bloom === null)
    } else if (typeof m.user === 'string' && USER_ID_PATTERN.test(m.user) && typeof m.on === 'boolean') {
      if (m.on) {
        // (a filter cannot forget: a user gone stays counted in until the next list)
        if (e.bloom !== null) e.bloom.add(m.user)
        else if (!e.all) e.users.add(m.user)
        if (e.users.size > SNAPSHOT_MAX) this.replace(e, new Set(), null, true)
      } else {
        e.users.delete(m.user)
      }
    }
  }
}
