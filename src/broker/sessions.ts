/**
 * Sessions: who is connected to this node, and what may be written to each connection.
 *
 * - One Session per authenticated connection, registered when authentication succeeds (so a
 *   revocation also reaches logins that have not finished connecting) and removed when the
 *   connection closes. `started` fires once the broker has the client ready, `ended` once after
 *   it closed, and only if it started: listeners (presence) always see them in pairs.
 * - Clients by user: to end every session of an account, to hold (coalesce) the writes of a
 *   commit's recipients (coalesce.ts), and to find the other connections of a user that watch
 *   a reply topic.
 * - Slow consumers: bytes waiting to be written to one connection are bounded
 *   (`outboundBufferBytes`), and a connection whose socket has not drained for `drainTimeoutMs`
 *   is disconnected. Its messages stay stored; the client syncs by seq when it returns.
 */
import { randomBytes } from 'node:crypto'
import type { Client } from 'aedes'
import mqttPacket from 'mqtt-packet'
import { lruCache } from '../lru.js'
import type { Logger } from '../log.js'
import { WriteCoalescer } from './coalesce.js'
import { filterMatches, replyTopic, userPrefix } from '../protocol/topics.js'
import { hasErrored, stopReading } from './upstream.js'

export interface Identity {
  userId: string
  deviceId: string
}

export interface Session extends Identity {
  /** Unique per connection (a clientId can reconnect, also on another node). */
  connId: string
  /** `<user>:<device>` */
  clientId: string
  /** im/u/<user>/ : the subtree this connection may receive. */
  prefix: string
  /** This device's reply topic: replies are written to it directly, never routed to it. */
  replyTopic: string
  /** The stored secret hash the connection authenticated against (a reset ends the session). */
  secretHash: string
  /** Source address of the connection. */
  address: string
  /** Subscription filters granted to this connection. */
  filters: Set<string>
  /** Of those, the filters that match other devices' reply topics (watchers, e.g. im/u/<user>/#). */
  watchFilters: Set<string>
  /** Channel topics (im/c/<conv>/m) this connection may receive: subscribed as a member, not left since. */
  channels: Set<string>
}

export interface SessionLimits {
  /** Bytes waiting to be written to one connection before it is cut. */
  outboundBufferBytes: number
  /** Time a connection may go without draining before it is cut. */
  drainTimeoutMs: number
  /** The largest reply (a page plus a packet): roomToReply keeps this much of outboundBufferBytes free for it. */
  replyBytes: number
}

type Listener = (session: Session) => void

interface Entry {
  session: Session
  started: boolean
  drainTimer: NodeJS.Timeout | null
  /** Requests waiting for room to reply (see roomToReply), all on one 'drain'. */
  drained: Promise<void> | null
}

export class Sessions {
  private readonly entries = new Map<Client, Entry>()
  private readonly byUser = new Map<string, Set<Client>>()
  /** Users with at least one connection that watches other devices' replies. */
  private readonly watching = new Map<string, Set<Client>>()
  private readonly coalescer = new WriteCoalescer()
  private readonly listeners: { started: Listener[], ended: Listener[] } = { started: [], ended: [] }
  /** Revocation marks: a counter, and the mark at which each user was last revoked. */
  private mark = 0
  private readonly revokedAt = lruCache<string, number>(100_000, { ttl: 10 * 60_000, ttlAutopurge: false })
  /** Connections cut for not reading (slow consumers), since start. */
  slowConsumersCut = 0
  /** Connections closed for flooding requests beyond the rate (see BrokerHooks.overRate). */
  floodsCut = 0

  constructor (private readonly limits: SessionLimits, private readonly logger: Logger) {}

  /** A child logger bound to the connection, made when there is something to say (a connection costs no logger). */
  private logOf (session: Session): Logger {
    return this.logger.child({ client: session.clientId, conn: session.connId })
  }

  on (event: 'started' | 'ended', listener: Listener): void {
    this.listeners[event].push(listener)
  }

  /** A new session for an authenticated client; it counts (and can be revoked) from now on. */
  add (client: Client, identity: Identity & { secretHash: string, address: string }): Session {
    const connId = randomBytes(8).toString('hex')
    const session: Session = {
      ...identity,
      connId,
      clientId: client.id,
      prefix: userPrefix(identity.userId),
      replyTopic: replyTopic(identity.userId, identity.deviceId),
      filters: new Set(),
      watchFilters: new Set(),
      channels: new Set()
    }
    this.entries.set(client, { session, started: false, drainTimer: null, drained: null })
    let set = this.byUser.get(identity.userId)
    const first = set === undefined
    if (set === undefined) this.byUser.set(identity.userId, set = new Set())
    set.add(client)
    client.conn.once('close', () => this.remove(client))
    if (first) this.tellConnected(identity.userId, true)
    return session
  }

  /** Authenticated sessions on this node. */
  get size (): number {
    return this.entries.size
  }

  get (client: Client): Session | undefined {
    return this.entries.get(client)?.session
  }

  /** The broker has the client ready (CONNACK sent). Ignored if it already closed. */
  start (client: Client): void {
    const entry = this.entries.get(client)
    if (entry === undefined || entry.started) return
    entry.started = true
    for (const l of this.listeners.started) l(entry.session)
  }

  private remove (client: Client): void {
    const entry = this.entries.get(client)
    if (entry === undefined) return
    this.entries.delete(client)
    if (entry.drainTimer !== null) clearTimeout(entry.drainTimer)
    const { userId } = entry.session
    removeFrom(this.byUser, userId, client)
    this.unwatch(userId, client)
    if (entry.started) for (const l of this.listeners.ended) l(entry.session)
    if (!this.byUser.has(userId)) this.tellConnected(userId, false)
  }

  /** Open connections of the user on this node, not counting one with the same clientId (it is being taken over). */
  countOf (userId: string, exceptClientId?: string): number {
    const clients = this.byUser.get(userId)
    if (clients === undefined) return 0
    let n = 0
    for (const c of clients) if (c.id !== exceptClientId) n++
    return n
  }

  private connectedListener: ((userId: string, on: boolean) => void) | null = null

  /** (last, and never throwing: the session's own bookkeeping is done by then) */
  private tellConnected (userId: string, on: boolean): void {
    try {
      this.connectedListener?.(userId, on)
    } catch (err) {
      this.logger.error({ err, userId }, 'connected-users listener failed')
    }
  }

  /** Told when a user's connections on this node go from none to some (true, at authentication) and back (false). */
  onConnected (listener: (userId: string, on: boolean) => void): void {
    this.connectedListener = listener
  }

  /** Users with at least one connection on this node. */
  connectedUsers (): IterableIterator<string> {
    return this.byUser.keys()
  }

  get connectedCount (): number {
    return this.byUser.size
  }

  /** Open connections of the user on this node. */
  clientsOf (userId: string): Client[] {
    return [...(this.byUser.get(userId) ?? [])]
  }

  sessionsOf (userId: string): Session[] {
    const out: Session[] = []
    for (const c of this.byUser.get(userId) ?? []) {
      const s = this.entries.get(c)?.session
      if (s !== undefined) out.push(s)
    }
    return out
  }

  // ---- revocation ---------------------------------------------------------------------------

  /** Taken before an authentication starts; see revokedSince. */
  revocationMark (): number {
    return this.mark
  }

  /** True if the user's sessions were ended after `mark` was taken (the login raced a revocation). */
  revokedSince (userId: string, mark: number): boolean {
    return (this.revokedAt.get(userId) ?? -1) > mark
  }

  /** Ends every session of the user on this node (those still connecting too); returns how many. */
  disconnectUser (userId: string, reason: string): number {
    return this.disconnectWhere(userId, () => true, reason)
  }

  /**
   * Ends the user's sessions that match; unless told otherwise also marks the user revoked, so that
   * logins in flight (which may have read the account before the change) are refused.
   */
  disconnectWhere (userId: string, match: (s: Session) => boolean, reason: string, options: { mark: boolean } = { mark: true }): number {
    if (options.mark) this.revokedAt.set(userId, ++this.mark)
    let n = 0
    for (const c of [...(this.byUser.get(userId) ?? [])]) {
      const s = this.entries.get(c)?.session
      if (s === undefined || !match(s)) continue
      this.logOf(s).info({ reason }, 'session ended by the server')
      c.close()
      n++
    }
    return n
  }

  // ---- subscriptions ------------------------------------------------------------------------

  /** Records a granted filter; notes whether it watches other devices' replies. */
  addFilter (client: Client, filter: string): void {
    const entry = this.entries.get(client)
    if (entry === undefined) return
    const s = entry.session
    s.filters.add(filter)
    // a wildcard that matches the reply topics of every device (im/u/<user>/#, .../r/+, ...), or
    // another device's reply topic by name
    const anyDevice = `${s.prefix}r/\u0000` // no device is named this: it stands for "any other"
    if (filterMatches(filter, anyDevice) || (filter.startsWith(`${s.prefix}r/`) && filter !== s.replyTopic)) {
      s.watchFilters.add(filter)
      let set = this.watching.get(s.userId)
      if (set === undefined) {
        this.watching.set(s.userId, set = new Set())
        this.watchListener?.(s.userId, true)
      }
      set.add(client)
    }
  }

  private unwatch (userId: string, client: Client): void {
    const set = this.watching.get(userId)
    if (set === undefined || !set.delete(client) || set.size > 0) return
    this.watching.delete(userId)
    this.watchListener?.(userId, false)
  }

  private watchListener: ((userId: string, on: boolean) => void) | null = null

  /** Told when a user's watching connections on this node go from none to some (true) and back (false). */
  onWatching (listener: (userId: string, on: boolean) => void): void {
    this.watchListener = listener
  }

  /** Users with a connection on this node that watches other devices' replies. */
  watchedUsers (): IterableIterator<string> {
    return this.watching.keys()
  }

  get watchedCount (): number {
    return this.watching.size
  }

  removeFilters (client: Client, filters: readonly string[]): void {
    const s = this.entries.get(client)?.session
    if (s === undefined) return
    for (const f of filters) {
      s.filters.delete(f)
      s.watchFilters.delete(f)
      s.channels.delete(f)
    }
    if (s.watchFilters.size === 0) this.unwatch(s.userId, client)
  }

  /**
   * Connections of the user on this node, other than the requester, with a subscription matching
   * `topic` (a reply topic). Only connections that watch replies at all are looked at.
   */
  watchers (userId: string, topic: string, requester: Client | undefined): Client[] {
    const clients = this.watching.get(userId)
    if (clients === undefined) return []
    const out: Client[] = []
    for (const c of clients) {
      if (c === requester) continue
      const s = this.entries.get(c)?.session
      if (s === undefined) continue
      for (const f of s.watchFilters) {
        if (filterMatches(f, topic)) { out.push(c); break }
      }
    }
    return out
  }

  // ---- writes -------------------------------------------------------------------------------

  /** Coalesces what is written to every connection of these users this turn (see coalesce.ts). */
  hold (userIds: readonly string[]): void {
    for (const userId of userIds) {
      const clients = this.byUser.get(userId)
      if (clients === undefined) continue
      for (const c of clients) this.coalescer.hold(c.conn)
    }
  }

  holdClient (client: Client): void {
    this.coalescer.hold(client.conn)
  }

  /** Writes a QoS 0 publish to one connection now, bypassing routing. False if it is not connected. */
  writeDirect (client: Client, topic: string, payload: Buffer): boolean {
    // the same test as Aedes' own writes: `connecting` stays true until a resumed session's queue
    // has been sent, and requests are handled (and answered) during that time
    if ((!client.connected && !client.connecting) || hasErrored(client) || client.conn.destroyed || client.conn.writableEnded) return false
    const flushed = mqttPacket.writeToStream({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, client.conn)
    if (!flushed) this.backpressure(client)
    return true
  }

  /**
   * True if the connection has room for a reply: what waits to be written leaves the largest reply
   * room under outboundBufferBytes (nearly always). A client that asks for more at a time than it
   * reads (concurrent history pages, say) is answered as it reads (see `drained`), instead of
   * being cut as a slow reader. Also true once the connection is gone (the write is then a no-op).
   */
  hasRoom (client: Client): boolean {
    const conn = client.conn
    return conn.destroyed || !this.entries.has(client) || conn.writableLength <= Math.max(0, this.limits.outboundBufferBytes - this.limits.replyBytes)
  }

  /**
   * Resolves when the connection's buffer has drained, or it closed (one that stops reading is cut
   * by `backpressure` after drainTimeoutMs). Every waiter of a connection shares one listener.
   */
  async drained (client: Client): Promise<void> {
    const entry = this.entries.get(client)
    if (entry === undefined) return
    const conn = client.conn
    entry.drained ??= new Promise<void>(resolve => {
      const done = (): void => {
        entry.drained = null
        conn.off('drain', done)
        conn.off('close', done)
        resolve()
      }
      conn.on('drain', done)
      conn.on('close', done)
    })
    await entry.drained
  }

  /**
   * A write found the connection's buffer full. Cut the connection if too much is waiting, else
   * give it drainTimeoutMs to drain. Called by the broker's writes (upstream.neverWaitForDrain)
   * and by writeDirect.
   */
  readonly backpressure = (client: Client): void => {
    const conn = client.conn
    if (conn.destroyed) return
    if (conn.writableLength > this.limits.outboundBufferBytes) {
      this.cut(client, `more than ${this.limits.outboundBufferBytes} bytes waiting to be written`)
      return
    }
    const entry = this.entries.get(client)
    if (entry === undefined || entry.drainTimer !== null) return
    entry.drainTimer = setTimeout(() => {
      entry.drainTimer = null
      this.cut(client, `socket did not drain within ${this.limits.drainTimeoutMs} ms`)
    }, this.limits.drainTimeoutMs)
    entry.drainTimer.unref()
    conn.once('drain', () => {
      if (entry.drainTimer !== null) clearTimeout(entry.drainTimer)
      entry.drainTimer = null
    })
  }

  /**
   * Closes a connection that floods the server with requests beyond its rate. Nothing more it
   * sends is read; what was written to it (the refusals it was answered) goes out first, then the
   * connection ends: closed when the peer ends too, or after drainTimeoutMs at the latest.
   */
  cutFlood (client: Client, why: string): void {
    const conn = client.conn
    if (conn.writableEnded || !this.close(client, { reason: why }, 'request flood: connection closed', false)) return
    this.floodsCut++
    stopReading(client)
    const timer = setTimeout(() => conn.destroy(), this.limits.drainTimeoutMs)
    timer.unref()
    conn.once('close', () => clearTimeout(timer))
    conn.end()
  }

  private cut (client: Client, why: string): void {
    if (this.close(client, { reason: why, queuedBytes: client.conn.writableLength }, 'slow consumer disconnected')) this.slowConsumersCut++
  }

  /** Destroys the connection (unless told not to) with a warning in its session's log; false if it was gone already. */
  private close (client: Client, fields: Record<string, unknown>, message: string, destroy = true): boolean {
    if (client.conn.destroyed) return false
    const session = this.entries.get(client)?.session
    const log = session === undefined ? this.logger : this.logOf(session)
    log.warn(fields, message)
    if (destroy) client.conn.destroy()
    return true
  }
}

function removeFrom (map: Map<string, Set<Client>>, key: string, client: Client): void {
  const set = map.get(key)
  if (set === undefined) return
  set.delete(client)
  if (set.size === 0) map.delete(key)
}
