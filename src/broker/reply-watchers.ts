/**
 * Reply watchers across a cluster. A reply is written straight to the device that asked
 * (Publisher.reply); a copy goes to the user's other connections that watch replies (a filter such
 * as im/u/<user>/# or im/u/<user>/r/+, see Sessions.addFilter). On one node those are written
 * directly. In a cluster a watcher may be connected to another node, and the copy has to be routed
 * through Redis; routing every reply "just in case" sent each one through Redis and back to the
 * requester's own node (which is subscribed to its reply topic) for nobody: a quarter of the
 * routed traffic of a busy node whose clients watch nothing (the SDK subscribes its own reply
 * topic only).
 *
 * So each node tells the others which users it has watchers for, over the cluster bus:
 *   {user, on}          a user's watchers on this node went from none to some (on) or back;
 *   {users} | {all}     the whole list, every `periodMs` and when another node says hello (a list
 *                       above SNAPSHOT_MAX users is sent as {all: true}: "assume every user");
 *   {hello}             sent once at start: the others answer with their lists.
 * A node's entry is dropped when it has not sent its list for 3.5 periods (it stopped). Until a
 * node has been up for one period plus a second, and whenever it cannot tell (too many nodes),
 * it assumes a watcher elsewhere and routes, as before. The copies stay best effort (QoS 0): a
 * watcher that subscribes on one node sees replies made on another from about when its notice
 * arrives there, a few milliseconds after its SUBACK.
 */
import type { ClusterBus } from './bus.js'
import { WATCHERS_TOPIC } from '../protocol/topics.js'

/** Users named in one list; beyond, a node says {all: true}. */
export const SNAPSHOT_MAX = 2000
/** Other nodes remembered; beyond, every reply is routed. */
const NODES_MAX = 256

export interface LocalWatchers {
  /** Users with a watching connection on this node. */
  watchedUsers: () => IterableIterator<string>
  watchedCount: () => number
}

interface NodeEntry { users: Set<string>, all: boolean, seenAt: number }

export class ReplyWatchers {
  private readonly nodes = new Map<string, NodeEntry>()
  private readonly startedAt: number
  private overflow = false
  private timer: NodeJS.Timeout | null = null
  private lastAnswer = 0

  constructor (
    private readonly bus: Pick<ClusterBus, 'clustered' | 'on' | 'publish'>,
    private readonly local: LocalWatchers,
    private readonly opts: { periodMs: number, now?: () => number } = { periodMs: 10_000 }
  ) {
    this.startedAt = this.now()
    if (!bus.clustered) return
    bus.on(WATCHERS_TOPIC, (m) => this.received(m))
    bus.publish(WATCHERS_TOPIC, { hello: true })
    this.timer = setInterval(() => this.tick(), opts.periodMs)
    this.timer.unref()
  }

  private now (): number {
    return (this.opts.now ?? Date.now)()
  }

  /** This node's watchers of `userId` went from none to some (true) or back to none (false). */
  changed (userId: string, on: boolean): void {
    if (this.bus.clustered) this.bus.publish(WATCHERS_TOPIC, { user: userId, on })
  }

  /** True when a connection on another node may watch this user's replies (or this node cannot tell). */
  elsewhere (userId: string): boolean {
    if (!this.bus.clustered) return false
    const now = this.now()
    if (now - this.startedAt < this.opts.periodMs + 1000 || this.overflow) return true
    const stale = now - this.opts.periodMs * 3.5
    for (const e of this.nodes.values()) {
      if (e.seenAt >= stale && (e.all || e.users.has(userId))) return true
    }
    return false
  }

  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
  }

  /** Each period: forgets nodes that stopped, and sends this node's list. */
  tick (): void {
    this.expire()
    this.sendList()
  }

  private sendList (): void {
    const n = this.local.watchedCount()
    this.bus.publish(WATCHERS_TOPIC, n > SNAPSHOT_MAX ? { all: true } : { users: [...this.local.watchedUsers()] })
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
      this.nodes.set(node, e = { users: new Set(), all: false, seenAt: this.now() })
    }
    return e
  }

  private received (m: Record<string, unknown>): void {
    const node = m.node
    if (typeof node !== 'string') return
    if (m.hello === true) {
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
      e.all = true
      e.users.clear()
      e.seenAt = this.now()
    } else if (Array.isArray(m.users)) {
      const users = m.users.filter((u): u is string => typeof u === 'string')
      e.all = users.length > SNAPSHOT_MAX
      e.users = e.all ? new Set() : new Set(users)
      e.seenAt = this.now()
    } else if (typeof m.user === 'string' && typeof m.on === 'boolean') {
      if (m.on) {
        if (!e.all) e.users.add(m.user)
        if (e.users.size > SNAPSHOT_MAX) {
          e.all = true
          e.users.clear()
        }
      } else {
        e.users.delete(m.user)
      }
    }
  }
}
