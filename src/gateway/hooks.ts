/**
 * Aedes hooks: who may connect, publish, subscribe and receive.
 *
 * - authenticate: username = user id, password = password (users), API key (bots) or, when
 *   auth.jwt is on, a JWT (see auth/jwt.ts); clientId must be `<user>:<device>` [topics.md
 *   "Connecting"]. In order: credentials present (else CONNACK 4) -> clientId bound to the user
 *   (2) -> failed-login backoff of the user id and the source address (3) -> for a password:
 *   account lookup (3 if the store is down) -> secret check, a bounded number at a time (4 if
 *   wrong, 3 if too many are waiting); for a JWT: token check (4 if bad, 3 if its keys cannot be
 *   fetched) -> account lookup or creation (3 if the store is down, 4 if unknown) -> not disabled,
 *   and for a JWT not a bot (5) -> not revoked while this login was in flight (3) -> under the
 *   per-user connection limit (3) -> a session (for a JWT, ended when the token expires).
 * - authorizePublish: clients publish requests to im/req/<op> only, under a per-user rate limit.
 *   The request is handled here, before Aedes writes PUBACK, so for `send` a PUBACK means
 *   "stored"; the reply is written to the connection just before it. The packet is then
 *   re-pointed at a sink topic that Aedes does not route (upstream.skipSinkPublishes). Publishes
 *   anywhere else are answered with an error reply and dropped; the connection stays up
 *   [MQTT-3.3.5-2 allows dropping].
 * - authorizeSubscribe: only filters inside the caller's own im/u/<user>/ subtree, at most
 *   `subscriptionsPerConnection` of them, and the topics of channels the user is a member of (see
 *   channels.ts); anything else gets SUBACK 0x80 and the connection stays.
 * - authorizeForward: O(1): only topics of the receiving user's subtree, never a device's own
 *   reply topic (its replies are written to it directly), never the connection a packet names as
 *   left out (FanOut.publish `except`: the device that sent `read` gets no `read` event); a
 *   channel topic only to a connection that holds it (a member that has not left since).
 */
import type { Aedes, AedesPublishPacket, Client, PublishPacket, Subscription, AuthenticateError } from 'aedes'
import { lruCache } from '../lru.js'
import { ImError, toWireError } from '../errors.js'
import type { Logger } from '../log.js'
import type { MetadataStore, UserRecord } from '../store/types.js'
import { CHANNEL_PREFIX, REQUEST_PREFIX, SINK_TOPIC, isOwnFilter, parseClientId } from '../protocol/topics.js'
import type { ChannelSubscriptions } from './channels.js'
import type { Dispatcher } from '../im/dispatcher.js'
import type { Publisher } from '../im/publisher.js'
import type { Metrics } from '../metrics.js'
import type { OpName, Reply } from '../protocol/schemas.js'
import type { Sessions, Session } from '../broker/sessions.js'
import type { UserRateLimiter } from '../broker/rate-limit.js'
import { LoginBusyError, type LoginGuard } from '../auth/login-guard.js'
import { JwtLoginError, type JwtLogin } from '../auth/jwt.js'
import { isWillOf, makeSessionClean, pauseReading, skipSinkPublishes, wholePacketWrites } from '../broker/upstream.js'
import { mqttPacketTraced } from '../broker/quiet-debug.js'
import type { SessionQuota } from '../broker/session-quota.js'
import { PageGateFullError, type PageGate } from './page-gate.js'
import { addressOf } from './listeners.js'

export interface HookOptions {
  meta: MetadataStore
  sessions: Sessions
  dispatcher: Dispatcher
  publisher: Publisher
  logins: LoginGuard
  rates: UserRateLimiter
  quota: SessionQuota
  pages: PageGate
  /** Who may receive channel topics. */
  channels: ChannelSubscriptions
  logger: Logger
  /** JWT login (auth.jwt); absent or null: passwords and API keys only. */
  jwt?: JwtLogin | null
  /** Requests answered here rather than by the dispatcher (refusals for the rate, a full page gate). */
  metrics?: Metrics
  /**
   * False while the broker's Redis connections are not ready (BrokerBackends.available): a login
   * is then answered CONNACK 3 at once (Aedes could not set its session up: a clean one was closed
   * without a CONNACK after 5 s, a persistent one held for up to a minute).
   */
  brokerAvailable?: () => boolean
  limits: {
    requestsPerSecond: number
    /** A request costs one token more per this many bytes of its payload. */
    requestBytesPerToken: number
    subscriptionsPerConnection: number
    connectionsPerUser: number
    persistentSessionsPerUser: number
    pageBytes: number
  }
}

/** Reply bytes that cost one more token of the user's request rate (a 1 MiB page costs 17). */
const REPLY_BYTES_PER_TOKEN = 64 * 1024
/**
 * After a publish refused for the rate (answered RATE_LIMITED at once), its connection is not
 * read until the user may make a request again, at most this long: a client that keeps asking
 * beyond its rate is held back by TCP instead of costing a refusal per packet as fast as it can
 * send them.
 */
const RATE_LIMITED_HOLD_MAX_MS = 1000
const RATE_LIMITED_HOLD_MIN_MS = 25
/**
 * Refusals of a user within a second after which a connection that sends one more is closed (a
 * flood). Below that every refusal is answered: a client that pipelines requests must never
 * wait for an answer that does not come. (Holding a flooding connection for longer pauses, or
 * leaving its refusals unanswered, was tried: its requests then came in bursts, which the
 * bystanders felt more than the refusals; see BENCHMARKS.md.)
 */
const RATE_LIMITED_CUT_REFUSALS = 2000
/**
 * Above this size (the default request payload limit) a refused request's id is looked for in its
 * first bytes only: refusing a request never costs more than handling one of the largest allowed.
 */
const ID_PARSE_MAX_BYTES = 64 * 1024
const LEADING_ID = /^\s*\{\s*"id"\s*:\s*"([^"\\]{1,64})"/

/**
 * Best-effort request id of a payload, so that even a refused request can be correlated. Unless
 * `whole`, a large payload is not parsed for it (a flood of refused requests must stay cheap): its
 * id is found only when it is the first field, as the SDK and the examples write it.
 */
function requestIdOf (payload: Buffer, whole = false): string | null {
  if (payload.length > ID_PARSE_MAX_BYTES && !whole) return LEADING_ID.exec(payload.subarray(0, 256).toString('utf8'))?.[1] ?? null
  try {
    const json: unknown = JSON.parse(payload.toString('utf8'))
    const id = typeof json === 'object' && json !== null ? (json as Record<string, unknown>).id : undefined
    return typeof id === 'string' && id.length > 0 && id.length <= 64 ? id : null
  } catch {
    return null
  }
}

/** The connection has closed (Aedes' close ran, or the socket is destroyed): a reply has nowhere to go. */
function isGone (client: Client): boolean {
  return client.closed || client.conn.destroyed
}

function authError (returnCode: 2 | 3 | 4 | 5, message: string): AuthenticateError {
  const err = new Error(message) as AuthenticateError
  err.returnCode = returnCode
  return err
}

/**
 * Replies of recent requests per device, so that a request redelivered by MQTT (DUP flag, e.g.
 * mqtt.js resending unacknowledged publishes of a persistent session after a reconnect) is
 * answered again instead of run again (a second create-group would make a second group).
 */
export const RECENT_REPLIES_MAX = 40_000
const EMPTY = Buffer.alloc(0)
/**
 * Requests whose replies are not kept: those that change nothing are simply run again, and a
 * `send` is idempotent by itself (the sequencer answers a resent msgId with its seq, as a
 * duplicate).
 */
// (`read` only moves a cursor forward: run again, it answers the cursor as it is now. Cached, the
// replies of a device reading as messages come, ~2,000 a second in the soak, pushed out of the
// cache in 20 s the replies that do need it, and were each kept long enough to burden the GC.)
export const UNCACHED_OPS: ReadonlySet<string> = new Set(['history', 'list', 'members', 'receipts', 'presence', 'send', 'edit', 'delete', 'react', 'read', 'typing', 'blocks', 'push-targets', 'channel-info', 'invites', 'file-url'] satisfies OpName[])
/** Requests answered with pages of up to limits.pageBytes: they go through the PageGate. */
const PAGE_OPS: ReadonlySet<string> = new Set(['history', 'list'] satisfies OpName[])

function replyKey (session: Session, op: string, id: string | null): string | null {
  // flat (join), not a tree of string objects kept by the reply memory (see Sequencer's keyOf)
  return id === null ? null : [session.clientId, op, id].join('\u0000')
}

export class BrokerHooks {
  private readonly recentReplies = lruCache<string, Reply>(RECENT_REPLIES_MAX)
  private readonly sessions: Sessions

  constructor (private readonly opts: HookOptions) {
    this.sessions = opts.sessions
  }

  install (broker: Aedes): void {
    skipSinkPublishes(broker)
    // (not while DEBUG traces mqtt-packet's writes: the trace would miss the broker's packets)
    if (!mqttPacketTraced('mqtt-packet:writeToStream')) wholePacketWrites()
    broker.authenticate = (client, username, password, done) => {
      this.authenticate(client, username, password).then(() => done(null, true), (err: AuthenticateError) => done(err, false))
    }
    broker.authorizePublish = (client, packet, done) => {
      this.authorizePublish(client, packet).then(() => done(null), (err: Error) => done(err))
    }
    broker.authorizeSubscribe = (client, sub, done) => {
      if (!sub.topic.startsWith(CHANNEL_PREFIX)) {
        done(null, this.authorizeSubscribe(client, sub))
        return
      }
      const session = this.sessions.get(client)
      if (session === undefined) {
        done(null, null)
        return
      }
      // a store that cannot answer refuses this one subscription (SUBACK 0x80), not the connection
      this.opts.channels.authorize(client, session, sub).then(granted => done(null, granted), (err: unknown) => {
        this.opts.logger.warn({ err, topic: sub.topic }, 'channel subscription check failed')
        done(null, null)
      })
    }
    broker.authorizeForward = (client, packet) => this.authorizeForward(client, packet)
    broker.on('clientReady', (client) => this.sessions.start(client))
    broker.on('unsubscribe', (filters, client) => this.sessions.removeFilters(client, filters))
  }

  private async authenticate (client: Client, username: string | undefined, password: Buffer | undefined): Promise<void> {
    if (username === undefined || password === undefined) throw authError(4, 'username and password are required')
    const bound = parseClientId(client.id)
    if (bound === null || bound.userId !== username) {
      throw authError(2, 'clientId must be "<username>:<device>" with device of 1-64 of A-Z a-z 0-9 _ -')
    }
    const { logins, sessions, jwt } = this.opts
    const address = addressOf(client)
    const wait = logins.retryAfter(username, address)
    if (wait > 0) throw authError(3, `logins refused for a while (too many failed logins, or a request flood); retry in ${Math.ceil(wait / 1000)} s`)
    // (before the password is checked: a reconnect storm into an outage costs no hashing)
    if (this.opts.brokerAvailable?.() === false) throw authError(3, 'server unavailable: its Redis cannot be reached; retry later')
    const mark = sessions.revocationMark()
    const secret = password.toString('utf8')
    const { user, endsAt } = jwt != null && jwt.isToken(secret)
      ? await this.tokenAccount(jwt, username, secret, address)
      : { user: await this.passwordAccount(username, secret, address), endsAt: null }
    logins.succeeded(username, address)
    if (user.disabled) throw authError(5, 'account disabled')
    if (endsAt !== null && user.kind !== 'user') throw authError(5, 'bots log in with their API key, not a JWT')
    if (sessions.revokedSince(user.id, mark)) throw authError(3, 'the account changed during login; retry')
    if (sessions.countOf(user.id, client.id) >= this.opts.limits.connectionsPerUser) {
      throw authError(3, `more than ${this.opts.limits.connectionsPerUser} connections of this user`)
    }
    await this.boundPersistentSessions(client, user.id)
    // the connection may have gone while the account was looked up: its 'close' has fired already,
    // and a session added now would never be removed
    if (isGone(client)) throw authError(3, 'connection closed during login')
    const session = sessions.add(client, { userId: user.id, deviceId: bound.deviceId, secretHash: user.secretHash, address })
    if (endsAt !== null) jwt?.endAt(client, session, endsAt)
  }

  /** The account a password or API key logs in to; CONNACK 4 (a failed login) if it does not match. */
  private async passwordAccount (username: string, secret: string, address: string): Promise<UserRecord> {
    const { logins } = this.opts
    let user: UserRecord | null
    try {
      user = await this.opts.meta.userGet(username)
    } catch (err) {
      this.opts.logger.error({ err }, 'authentication lookup failed')
      throw authError(3, 'server unavailable')
    }
    let ok: boolean
    try {
      ok = await logins.verify(username, secret, user?.secretHash ?? null, address)
    } catch (err) {
      if (err instanceof LoginBusyError) throw authError(3, err.message)
      throw err
    }
    if (user === null || !ok) {
      logins.failed(username, address)
      throw authError(4, 'bad username or password')
    }
    return user
  }

  /**
   * The account a JWT logs in to, and when its session ends. A bad token, or one for an unknown
   * account (not created: auth.jwt.createUsers is off), is CONNACK 4 and a failed login; keys that
   * cannot be fetched, or a store that is down, CONNACK 3.
   */
  private async tokenAccount (jwt: JwtLogin, username: string, token: string, address: string): Promise<{ user: UserRecord, endsAt: number }> {
    const { logins, logger } = this.opts
    let endsAt: number
    try {
      ({ endsAt } = await jwt.verify(token, username))
    } catch (err) {
      if (!(err instanceof JwtLoginError)) throw err
      if (err.refusal === 'unavailable') throw authError(3, err.message)
      logins.failed(username, address)
      throw authError(4, err.message)
    }
    let user: UserRecord | null
    try {
      user = await jwt.account(username)
    } catch (err) {
      logger.error({ err }, 'authentication lookup failed')
      throw authError(3, 'server unavailable')
    }
    if (user === null) {
      logins.failed(username, address)
      throw authError(4, 'no such user (and auth.jwt.createUsers is off)')
    }
    return { user, endsAt }
  }

  /**
   * A clean connect wipes its clientId's persistent session, so it no longer counts (forgotten once
   * the connect is through, when Aedes has wiped it: a connect that fails first wipes nothing); a
   * persistent one beyond limits.persistentSessionsPerUser is made clean (see broker/session-quota.ts).
   */
  private async boundPersistentSessions (client: Client, userId: string): Promise<void> {
    const { quota, logger, limits } = this.opts
    let admitted: boolean
    try {
      if (client.clean) {
        client.once('connected', () => {
          quota.forget(userId, client.id).catch((err: unknown) => logger.warn({ err }, 'session quota unavailable'))
        })
        return
      }
      admitted = await quota.admit(userId, client.id)
    } catch (err) {
      logger.warn({ err }, 'session quota unavailable')
      throw authError(3, 'server unavailable')
    }
    if (admitted) return
    const max = limits.persistentSessionsPerUser
    if (!makeSessionClean(client)) throw authError(3, `more than ${max} persistent sessions of this user`)
    logger.debug({ client: client.id, max }, 'persistent sessions per user reached: a clean session instead')
  }

  private async authorizePublish (client: Client | null, packet: PublishPacket): Promise<void> {
    // Wills are accepted at CONNECT but never published: the only topics clients may write are
    // requests, and a request should not run after its client has gone. Aedes passes the will
    // packet itself (client.will), or client === null for a will left by a dead node.
    const isWill = client === null || isWillOf(client, packet)
    const session = client === null ? undefined : this.sessions.get(client)
    const topic = packet.topic
    packet.topic = SINK_TOPIC
    packet.retain = false
    if (session === undefined || client === null || isWill) return
    const { publisher, rates } = this.opts
    // what the publish carries (topic and payload) costs one token more per requestBytesPerToken,
    // charged before it is handled: publishes that arrive together cannot all pass on one token each
    const sizeCost = Math.floor((topic.length + (packet.payload as Buffer).length) / this.opts.limits.requestBytesPerToken)
    if (!topic.startsWith(REQUEST_PREFIX)) {
      // answered within the user's request rate; beyond it dropped (the earlier answers said why)
      if (!rates.take(session.userId)) {
        this.overRate(client, session.userId)
        return
      }
      rates.charge(session.userId, sizeCost)
      const code = topic.startsWith('im/') || topic.startsWith('$') ? 'FORBIDDEN' : 'UNKNOWN_OP'
      const err = new ImError(code, `clients may publish only to im/req/<op>; "${topic}" is not allowed`)
      publisher.reply(session, { id: null, op: topic, ok: false, error: toWireError(err) }, client)
      return
    }
    const op = topic.slice(REQUEST_PREFIX.length)
    const payload = packet.payload as Buffer
    packet.payload = EMPTY
    if (!rates.take(session.userId)) {
      if (this.overRate(client, session.userId)) {
        const err = new ImError('RATE_LIMITED', `this user's request rate is used up (${this.opts.limits.requestsPerSecond}/s; large requests and replies count more); retry in a second`)
        publisher.reply(session, { id: requestIdOf(payload), op, ok: false, error: toWireError(err) }, client)
      }
      this.opts.metrics?.request(op, 'RATE_LIMITED')
      return
    }
    // requests answered with pages run a bounded number at a time (see page-gate.ts), until
    // their reply is written; each is charged its largest cost before it runs (the rest is given
    // back once its size is known), so that many asked for at once cannot all pass on one token
    let leave: (() => void) | undefined
    rates.charge(session.userId, sizeCost)
    let advance = 0
    if (PAGE_OPS.has(op)) {
      advance = rates.charge(session.userId, Math.floor(this.opts.limits.pageBytes / REPLY_BYTES_PER_TOKEN))
      try {
        leave = await this.opts.pages.enter(session.userId)
      } catch (err) {
        rates.refund(session.userId, advance)
        if (!(err instanceof PageGateFullError)) throw err
        const busy = new ImError('UNAVAILABLE', 'too many history and list requests are waiting on this server; retry later')
        publisher.reply(session, { id: requestIdOf(payload), op, ok: false, error: toWireError(busy) }, client)
        this.opts.metrics?.request(op, 'UNAVAILABLE')
        return
      }
    }
    try {
      // a page request that waited for its turn while its connection went away is not run: a
      // connection can bring hundreds at once (one read of its socket), and each builds a page of
      // up to limits.pageBytes that nobody will get (an attacker's slow readers, closed together,
      // held the event loop for seconds that way); its PUBACK was never sent
      if (leave !== undefined && isGone(client)) return
      await this.answer(client, session, op, payload, packet.dup, advance)
    } finally {
      leave?.()
    }
  }

  /**
   * A publish of the user was refused for the rate: true if the refusal should be answered.
   * Reads nothing more from the connection until the user may make a request again (at most
   * RATE_LIMITED_HOLD_MAX_MS), when that is at least RATE_LIMITED_HOLD_MIN_MS away: a user just
   * over the rate is only refused (pausing for a few milliseconds at a time makes the user's
   * traffic come in bursts, which the bystanders feel more than the refusals). At
   * RATE_LIMITED_CUT_REFUSALS refusals within a second the connection is closed (false: nothing
   * to answer).
   */
  private overRate (client: Client, userId: string): boolean {
    const { rates } = this.opts
    const refusals = rates.recentRefusals(userId)
    if (refusals >= RATE_LIMITED_CUT_REFUSALS) {
      // the user's logins are refused for a while (4 s, doubling): a client that reconnects to
      // flood again is answered CONNACK 3 before anything else is spent on it
      if (!client.conn.destroyed && !client.conn.writableEnded) this.opts.logins.flooded(userId)
      this.sessions.cutFlood(client, `more than ${RATE_LIMITED_CUT_REFUSALS} requests refused for the rate within a second`)
      return false
    }
    const ms = Math.min(rates.msUntilNext(userId), RATE_LIMITED_HOLD_MAX_MS)
    if (ms >= RATE_LIMITED_HOLD_MIN_MS) pauseReading(client, ms)
    return true
  }

  /** Answers a request; `advance` tokens were charged for it beforehand (settled here against its real cost). */
  private async answer (client: Client, session: Session, op: string, payload: Buffer, dup: boolean, advance = 0): Promise<void> {
    const { publisher, rates } = this.opts
    const cached = !UNCACHED_OPS.has(op)
    // only a DUP publish can be a redelivery; parsing its id twice is fine, it is rare
    const dupKey = cached && dup ? replyKey(session, op, requestIdOf(payload, true)) : null
    const earlier = dupKey === null ? undefined : this.recentReplies.get(dupKey)
    let reply: Reply
    try {
      reply = earlier ?? await this.opts.dispatcher.handle(session, op, payload)
    } catch (err) {
      rates.refund(session.userId, advance)
      throw err
    }
    const key = cached && earlier === undefined ? replyKey(session, op, reply.id) : null
    if (key !== null) this.recentReplies.set(key, reply)
    // a client that asks faster than it reads its replies waits for its socket here (checked
    // with no await between the check and the write: replies finishing together take turns)
    while (!this.sessions.hasRoom(client)) await this.sessions.drained(client)
    // (gone while it ran or waited: nothing to write it to, and no watcher copy of it either)
    if (isGone(client)) return
    // the reply, the PUBACK (written when this resolves) and the sender's own copy of a message
    // leave in one write
    this.sessions.holdClient(client)
    const bytes = publisher.reply(session, reply, client)
    // the rate counts requests; a large reply costs more of it (a large request was charged its
    // size before it ran: what it carries is parsed, stored and delivered to every member)
    const cost = Math.floor(bytes / REPLY_BYTES_PER_TOKEN)
    if (cost >= advance) rates.charge(session.userId, cost - advance)
    else rates.refund(session.userId, advance - cost)
  }

  private authorizeSubscribe (client: Client, sub: Subscription): Subscription | null {
    const session = this.sessions.get(client)
    if (session === undefined) return null
    if (!isOwnFilter(sub.topic, session.userId)) return null
    if (!session.filters.has(sub.topic) && session.filters.size >= this.opts.limits.subscriptionsPerConnection) return null
    if (sub.qos > 1) sub.qos = 1
    this.sessions.addFilter(client, sub.topic)
    return sub
  }

  private authorizeForward (client: Client, packet: AedesPublishPacket): AedesPublishPacket | null {
    const session = this.sessions.get(client)
    if (session === undefined) return null
    if (!packet.topic.startsWith(session.prefix)) return session.channels.has(packet.topic) ? packet : null
    // this device got its replies directly (Publisher.reply); the routed copy is for watchers
    if (packet.topic === session.replyTopic) return null
    // an event for the user's other devices (FanOut.publish `except`: the packet names the device
    // that caused it; clients publish to nothing they can subscribe to, so no other packet does)
    if (packet.clientId === client.id) return null
    return packet
  }
}
