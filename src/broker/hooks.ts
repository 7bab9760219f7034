/**
 * Aedes hooks: who may connect, publish, subscribe and receive.
 *
 * - authenticate: username = user id, password = password (users) or API key (bots);
 *   clientId must be `<user>:<device>` [topics.md "Connecting"]. Wrong credentials: CONNACK 4;
 *   disabled account: CONNACK 5; a clientId not bound to the username: CONNACK 2.
 * - authorizePublish: clients publish requests to im/req/<op> only. The request is handled
 *   here, before Aedes writes PUBACK, so for `send` a PUBACK means "stored"; the reply is written
 *   to the connection just before it. The packet is then re-pointed at a sink topic, whose
 *   publishes skip Aedes' pipeline (see install). Publishes anywhere else are answered with an
 *   error reply and dropped; the connection stays up [MQTT-3.3.5-2 allows dropping].
 * - authorizeSubscribe: only filters inside the caller's own im/u/<user>/ subtree; anything
 *   else gets SUBACK 0x80 and the connection stays up.
 * - authorizeForward: O(1) defense in depth: only topics of the receiving user's subtree, and
 *   never a device's own reply topic (its replies are written to it directly).
 */
import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription, AuthenticateError } from 'aedes'
import { randomBytes } from 'node:crypto'
import type { Writable } from 'node:stream'
import { ImError, toWireError } from '../errors.js'
import type { Logger } from '../log.js'
import type { MetadataStore } from '../store/types.js'
import { verifySecret } from '../auth/secrets.js'
import { REQUEST_PREFIX, SINK_TOPIC, filterMatches, isOwnFilter, parseClientId, replyTopic, userPrefix } from '../protocol/topics.js'
import type { Dispatcher } from '../im/dispatcher.js'
import type { Publisher } from '../im/publisher.js'
import type { Caller } from '../im/context.js'
import type { OpName, Reply } from '../protocol/schemas.js'
import { TokenBucket } from './rate-limit.js'
import { WriteCoalescer } from './coalesce.js'
import { BoundedMap } from '../util/bounded-map.js'

interface Session extends Caller {
  /** Unique per connection (a clientId can reconnect, also on another node). */
  connId: string
  /** `<user>:<device>` */
  clientId: string
  prefix: string
  /** This device's reply topic: replies are written to it directly, never routed to it. */
  replyTopic: string
  bucket: TokenBucket
}

export interface HookOptions {
  meta: MetadataStore
  dispatcher: Dispatcher
  publisher: Publisher
  logger: Logger
  requestsPerSecond: number
  requestBurst: number
  /** True when other nodes share the broker (Redis): reply watchers may be connected elsewhere. */
  clustered: boolean
  now?: () => number
  /** Called when an authenticated session is ready, and when it ends. */
  onSessionStart?: (caller: Caller, connId: string) => void
  onSessionEnd?: (caller: Caller, connId: string) => void
}

/** Best-effort request id of a payload, so that even a refused request can be correlated. */
function requestIdOf (payload: Buffer): string | null {
  if (payload.length > 1024 * 1024) return null
  try {
    const json: unknown = JSON.parse(payload.toString('utf8'))
    const id = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).id : undefined
    return typeof id === 'string' && id.length > 0 && id.length <= 64 ? id : null
  } catch {
    return null
  }
}

function connOf (client: Client): Writable | undefined {
  return (client as unknown as { conn?: Writable }).conn
}

function authError (returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  const err = new Error(message) as AuthenticateError
  err.returnCode = returnCode
  return err
}

/** Successful (user, secret, hash) checks, so a reconnect storm does not cost one scrypt each. */
const VERIFIED_MAX = 20_000

/**
 * Replies of recent requests per device, so that a request redelivered by MQTT (DUP flag, e.g.
 * mqtt.js resending unacknowledged publishes of a persistent session after a reconnect) is
 * answered again instead of run again (a second create-group would make a second group).
 */
const RECENT_REPLIES_MAX = 40_000
const EMPTY = Buffer.alloc(0)
/**
 * Requests whose replies are not kept: those that change nothing are simply run again, and a
 * `send` is idempotent by itself (the sequencer answers a resent msgId with its seq, as a
 * duplicate).
 */
const UNCACHED_OPS: ReadonlySet<string> = new Set(['history', 'list', 'members', 'receipts', 'presence', 'send'] satisfies OpName[])

function replyKey (session: Session, op: string, id: string | null): string | null {
  return id === null ? null : `${session.clientId}\u0000${op}\u0000${id}`
}

export class BrokerHooks {
  private readonly sessions = new WeakMap<Client, Session>()
  private readonly recentReplies = new BoundedMap<string, Reply>(RECENT_REPLIES_MAX)
  /** Connected clients per user, to end the sessions of a disabled account. */
  private readonly clientsByUser = new Map<string, Set<Client>>()
  private readonly verified = new BoundedMap<string, true>(VERIFIED_MAX)
  private readonly coalescer = new WriteCoalescer()
  private readonly now: () => number

  constructor (private readonly opts: HookOptions) {
    this.now = opts.now ?? Date.now
  }

  install (broker: Aedes): void {
    // Handled requests are re-pointed at SINK_TOPIC: skip Aedes' whole publish pipeline for them
    // (offline-queue lookup, emitter, published hook) instead of routing them nowhere.
    const publish = broker.publish.bind(broker) as (packet: PublishPacket, client: unknown, done?: (err?: Error) => void) => void
    const patched = broker as unknown as { publish: (packet: PublishPacket, client?: unknown, done?: (err?: Error) => void) => void }
    patched.publish = (packet, client, done) => {
      if (packet.topic !== SINK_TOPIC) { publish(packet, client, done); return }
      const cb = typeof client === 'function' ? client as (err?: Error) => void : done
      if (cb !== undefined) process.nextTick(cb)
    }
    this.opts.publisher.holdWrites = (userIds) => { this.holdUsers(userIds) }
    // On one node every watcher of a reply topic is a local connection; in a cluster it may be on
    // another node, so the publisher routes a copy.
    if (!this.opts.clustered) this.opts.publisher.replyWatchers = (userId, topic, requester) => this.localWatchers(userId, topic, requester)
    broker.authenticate = (client, username, password, done) => {
      this.authenticate(client, username, password).then(() => done(null, true), (err: AuthenticateError) => done(err, false))
    }
    broker.authorizePublish = (client, packet, done) => {
      this.authorizePublish(client, packet).then(() => done(null), (err: Error) => done(err))
    }
    broker.authorizeSubscribe = (client, sub, done) => { done(null, this.authorizeSubscribe(client, sub)) }
    broker.authorizeForward = (client, packet) => this.authorizeForward(client, packet)
    broker.on('clientReady', (client) => {
      const s = this.sessions.get(client)
      if (s === undefined) return
      let set = this.clientsByUser.get(s.userId)
      if (set === undefined) this.clientsByUser.set(s.userId, set = new Set())
      set.add(client)
      this.opts.onSessionStart?.(s, s.connId)
    })
    broker.on('clientDisconnect', (client) => {
      const s = this.sessions.get(client)
      const set = s === undefined ? undefined : this.clientsByUser.get(s.userId)
      if (set === undefined || s === undefined) return
      set.delete(client)
      if (set.size === 0) this.clientsByUser.delete(s.userId)
      this.opts.onSessionEnd?.(s, s.connId)
    })
  }

  /** Disconnects every session of the user on this node (account disabled or secret reset). */
  disconnectUser (userId: string): number {
    const clients = [...(this.clientsByUser.get(userId) ?? [])]
    for (const c of clients) c.close()
    return clients.length
  }

  /** Coalesces what is written to every connection of these users this turn (see coalesce.ts). */
  holdUsers (userIds: readonly string[]): void {
    for (const userId of userIds) {
      const clients = this.clientsByUser.get(userId)
      if (clients === undefined) continue
      for (const c of clients) this.coalescer.hold(connOf(c))
    }
  }

  /** Connections of the user on this node, other than the requester, subscribed to a filter matching `topic`. */
  private localWatchers (userId: string, topic: string, requester: Client | undefined): Client[] {
    const clients = this.clientsByUser.get(userId)
    if (clients === undefined || (clients.size === 1 && requester !== undefined && clients.has(requester))) return []
    const watchers: Client[] = []
    for (const c of clients) {
      if (c === requester) continue
      const subs = (c as unknown as { subscriptions?: Record<string, unknown> }).subscriptions ?? {}
      if (Object.keys(subs).some(filter => filterMatches(filter, topic))) watchers.push(c)
    }
    return watchers
  }

  /** The identity of a connected client (for events such as presence). */
  sessionOf (client: Client): Caller | undefined {
    return this.sessions.get(client)
  }

  private async authenticate (client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
    if (username === undefined || password === undefined) throw authError(4, 'username and password are required')
    const bound = parseClientId(client.id)
    if (bound === null || bound.userId !== username) {
      throw authError(2, 'clientId must be "<username>:<device>" with device of 1-64 of A-Z a-z 0-9 _ -')
    }
    let user
    try {
      user = await this.opts.meta.userGet(username)
    } catch (err) {
      this.opts.logger.error('authentication lookup failed', { err: String(err) })
      throw authError(3, 'server unavailable')
    }
    const secret = password.toString('utf8')
    if (user === null) throw authError(4, 'bad username or password')
    const cacheKey = `${user.id}\u0000${user.secretHash}\u0000${secret}`
    if (!this.verified.has(cacheKey)) {
      if (!(await verifySecret(secret, user.secretHash))) throw authError(4, 'bad username or password')
      this.verified.set(cacheKey, true)
    }
    if (user.disabled) throw authError(5, 'account disabled')
    this.sessions.set(client, {
      userId: user.id,
      deviceId: bound.deviceId,
      connId: randomBytes(8).toString('hex'),
      clientId: client.id,
      prefix: userPrefix(user.id),
      replyTopic: replyTopic(user.id, bound.deviceId),
      bucket: new TokenBucket(this.opts.requestsPerSecond, this.opts.requestBurst, this.now)
    })
  }

  private async authorizePublish (client: Client | null, packet: PublishPacket): Promise<void> {
    // Wills are accepted at CONNECT but never published: the only topics clients may write are
    // requests, and a request should not run after its client has gone. Aedes passes the will
    // packet itself (client.will), or client === null for a will left by a dead node.
    const isWill = client === null || packet === (client as unknown as { will?: unknown }).will
    const session = client === null ? undefined : this.sessions.get(client)
    const topic = packet.topic
    packet.topic = SINK_TOPIC
    packet.retain = false
    if (session === undefined || client === null || isWill) return
    if (!topic.startsWith(REQUEST_PREFIX)) {
      const code = topic.startsWith('im/') || topic.startsWith('$') ? 'FORBIDDEN' : 'UNKNOWN_OP'
      const err = new ImError(code, `clients may publish only to im/req/<op>; "${topic}" is not allowed`)
      this.opts.publisher.reply(session.userId, session.deviceId, { id: null, op: topic, ok: false, error: toWireError(err) }, client)
      return
    }
    const op = topic.slice(REQUEST_PREFIX.length)
    if (!session.bucket.take()) {
      const err = new ImError('RATE_LIMITED', `more than ${this.opts.requestsPerSecond} requests per second; retry later`)
      this.opts.publisher.reply(session.userId, session.deviceId, { id: requestIdOf(packet.payload as Buffer), op, ok: false, error: toWireError(err) }, client)
      return
    }
    const payload = packet.payload as Buffer
    const cached = !UNCACHED_OPS.has(op)
    // only a DUP publish can be a redelivery; parsing its id twice is fine, it is rare
    const dupKey = cached && packet.dup ? replyKey(session, op, requestIdOf(payload)) : null
    const earlier = dupKey === null ? undefined : this.recentReplies.get(dupKey)
    const reply = earlier ?? await this.opts.dispatcher.handle(session, op, payload)
    const key = cached && earlier === undefined ? replyKey(session, op, reply.id) : null
    if (key !== null) this.recentReplies.set(key, reply)
    // the reply, the PUBACK (written when this resolves) and the sender's own copy of a message
    // leave in one write
    this.coalescer.hold(connOf(client))
    this.opts.publisher.reply(session.userId, session.deviceId, reply, client)
    packet.payload = EMPTY
  }

  private authorizeSubscribe (client: Client, sub: Subscription): Subscription | null {
    const session = this.sessions.get(client)
    if (session === undefined) return null
    if (!isOwnFilter(sub.topic, session.userId)) return null
    if (sub.qos > 1) sub.qos = 1
    return sub
  }

  private authorizeForward (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const session = this.sessions.get(client)
    if (session === undefined || !packet.topic.startsWith(session.prefix)) return null
    // this device got its replies directly (Publisher.reply); the routed copy is for watchers
    if (packet.topic === session.replyTopic) return null
    return packet
  }
}
