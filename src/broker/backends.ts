/**
 * Where the broker keeps its state. Embedded default: Aedes' in-memory persistence with bounded
 * offline queues, and an in-process emitter (one process). Cluster: aedes-persistence-redis
 * (sessions, subscriptions, offline QoS 1 queues, retained messages, wills) and mqemitter-redis
 * (a publish on one node reaches subscribers on every node), both on the same Redis.
 * The workarounds applied to these packages are in upstream.ts.
 */
import { Redis } from 'ioredis'
import aedesPersistenceRedis from 'aedes-persistence-redis'
import type { Config } from '../config.js'
import { warnEveryMinute, type Logger } from '../log.js'
import { FAN_TOPIC } from '../protocol/topics.js'
import { startClockCheck } from './clock-check.js'
import { BoundedMemoryPersistence, SUBSCRIPTION_BROADCAST_TIMEOUT_MS, repairSubscriptionMatcher, ackKeysPerConnection, boundRedisQueues, leanRedisAcks, closeEmitterQuietly, coalesceAddSubscriptions, createEmitter, type SubscriptionRepairStats, type AckReports, createRedisEmitter, emitterChannel, emitterState, scopeChannelsToDatabase, guardEmitterDecode, recordQueueReplays, noRedisWills, batchRedisReplays, socketTimeoutAfterReads, failUnanswered } from './upstream.js'
import { MONOTONIC_NEVER, monotonicNow, WALL_NEVER, wallNow, type MonotonicMs, type WallMs } from '../clocks.js'

export interface BrokerBackends {
  persistence: unknown
  mq: unknown
  /** To call once the broker is made (its persistence set up): the matcher of offline sessions' subscriptions is checked against Redis (upstream.ts 19). */
  brokerStarted: () => void
  /** Cluster: the reads of Redis that checked that matcher (at start, then after each break in the Redis link). */
  matcherRepairs: () => number
  /** What the matcher's repairs did (cluster only; null on one node). */
  matcherStats: () => SubscriptionRepairStats | null
  /** Cluster: this node's clock minus the Redis server's, in seconds (null on one node, or before the first check). */
  clockOffset: () => number | null
  /** A Redis connection for mqim's own use (presence, rate limits, health), or null on the embedded default. */
  redis: Redis | null
  /** False while a Redis connection the broker routes through is down (publishes would hang or be lost). */
  available: () => boolean
  /**
   * Since when (Date.now clock) this node has heard every other node's publishes without a break:
   * its start, or the last time the subscriber connection to Redis was ready again; +Infinity
   * while it is down.
   */
  connectedSince: () => WallMs
  /**
   * The same on the monotonic clock (performance.now), for how long the link has been up: a wall
   * clock stepped forward would make a link that just came back look old.
   */
  linkUpSince: () => MonotonicMs
  close: () => Promise<void>
}

/**
 * The log of acknowledgements Redis did not release (leanRedisAcks): a warning a minute at most,
 * with how many failed since the last one, and a line when the kept ones were released after all.
 */
export function ackReports (logger: Logger, now: () => number = () => performance.now()): AckReports {
  let failed = 0
  let givenUp = 0
  let lastErr: string | undefined
  let warnedAt = Number.NEGATIVE_INFINITY
  let pending: NodeJS.Timeout | null = null
  const flush = (): void => {
    if (failed === 0 && givenUp === 0) return
    warnedAt = now()
    logger.warn({ ...(lastErr === undefined ? {} : { err: lastErr }), acks: failed, givenUp },
      'acknowledgements not released in Redis: kept and released again when Redis answers; those given up stay queued and come again after the clients\' next reconnect')
    failed = 0
    givenUp = 0
  }
  const warn = (err?: unknown): void => {
    if (err !== undefined) lastErr = String((err as Error | null)?.message ?? err)
    const wait = warnedAt + 60_000 - now()
    if (wait <= 0) {
      flush()
      return
    }
    // what failed since the last warning is told at the end of its minute, also when nothing fails after
    if (pending === null) {
      pending = setTimeout(() => { pending = null; flush() }, wait)
      pending.unref()
    }
  }
  return {
    onFailure: (err, acks) => { failed += acks; warn(err) },
    onGivenUp: (acks) => { givenUp += acks; warn() },
    onRetried: (acks) => { logger.info({ acks }, 'acknowledgements that had failed in Redis released') }
  }
}

/** What a command made while its Redis connection was down fails with (failQueuedOnClose). */
export class RedisDownError extends Error {
  override name = 'RedisDownError'
  constructor () { super('Redis connection down: not sent (retry later)') }
}

interface OfflineQueueInternals { flushQueue: (err: Error, options: { offlineQueue: boolean, commandQueue: boolean }) => void }

/**
 * The commands waiting for the connection to be back (ioredis' offline queue) fail each time an
 * attempt to connect fails, rather than after maxRetriesPerRequest more attempts (each of them
 * socketTimeoutMs long against a Redis that hangs). The commands the lost connection had written
 * are failUnanswered's (its 'close' comes after ioredis set them aside).
 */
function failQueuedOnClose (conn: Redis): void {
  conn.on('close', () => { (conn as unknown as OfflineQueueInternals).flushQueue(new RedisDownError(), { offlineQueue: true, commandQueue: false }) })
}

/**
 * What Redis does when it is full (`maxmemory-policy`), read whenever the connection is ready
 * (INFO needs no CONFIG permission). Anything but noeviction evicts keys in place of refusing
 * writes: sessions, subscriptions, queued messages and their counts can vanish (a count evicted
 * makes the next acknowledgement delete a packet other queues still hold), so it is warned about.
 * Returns the policy, or null when it could not be read.
 */
export async function checkEvictionPolicy (conn: Pick<Redis, 'info'>, logger: Logger): Promise<string | null> {
  try {
    const policy = /maxmemory_policy:(\S+)/.exec(await conn.info('memory'))?.[1] ?? null
    if (policy !== null && policy !== 'noeviction') {
      logger.warn({ maxmemoryPolicy: policy }, 'Redis evicts keys when it is full: sessions, subscriptions and queued messages can vanish without a trace; set maxmemory-policy noeviction on this Redis (README, "Redis memory")')
    }
    return policy
  } catch (err) {
    logger.debug({ err }, 'could not read Redis\' maxmemory-policy')
    return null
  }
}

export function createBrokerBackends (
  config: Config['broker']['persistence'],
  limits: Pick<Config['limits'], 'sessionQueueMessages' | 'sessionQueueBytes'>,
  logger: Logger
): BrokerBackends {
  if (config.adapter === 'memory') {
    return {
      persistence: recordQueueReplays(new BoundedMemoryPersistence({ messages: limits.sessionQueueMessages, bytes: limits.sessionQueueBytes }), limits.sessionQueueMessages),
      mq: createEmitter(),
      redis: null,
      brokerStarted: () => {},
      matcherRepairs: () => 0,
      matcherStats: () => null,
      clockOffset: () => null,
      available: () => true,
      connectedSince: () => 0 as WallMs,
      linkUpSince: () => 0 as MonotonicMs,
      close: async () => {}
    }
  }
  const ttl = config.packetTTLSeconds
  // commands issued in one event-loop turn leave in one write (auto-pipelining): the persistence
  // sends several per delivery, one write each otherwise (a fifth of a node's CPU in the cluster
  // soak). Not on the subscriber connection, which only subscribes.
  // A connection waiting for an answer that receives nothing for socketTimeoutMs is closed, and
  // ioredis opens it again: a Redis stuck or cut off no longer holds a node until the kernel gives
  // up (~15 minutes), and a failover's new primary is found. Sends are answered UNAVAILABLE
  // meanwhile (`available`), acknowledgements kept (workaround 15). Commands that were waiting are
  // not sent again on the new connection where running one twice would do harm: a Redis that was
  // only paused runs what it had received when it resumes, so a resent script, INCRBY or SET NX would
  // run twice (a packet queued twice with its count reset, a claim a node takes for another's, a
  // quota charged twice); they fail instead, as when Redis is unreachable, and their callers act on
  // that. Only the publisher's (PUBLISH: a copy twice at worst, which clients drop by conv and seq)
  // and the subscriber's are sent again. The timeout does not fire for an answer that a stalled event
  // loop has not read yet (workaround 23).
  // a minute's warnings of each kind, with the count since the last
  const warn = warnEveryMinute(logger)
  // A failover that demotes the primary without closing its connections leaves the node on a
  // replica, READONLY to every write, for good: a READONLY answer on any connection opens all four
  // again (the pub/sub ones too: a PUBLISH on a replica reaches only that server's subscribers), to
  // whatever the URL leads to now; at most once per half socket timeout, twice as long each time it
  // comes again within a minute, up to 5 minutes (a URL that leads to a replica for good must not
  // have the node reconnect, and read every session's subscriptions again, every few seconds).
  const conns: Redis[] = []
  let movedAt = Number.NEGATIVE_INFINITY
  let followWaitMs = config.socketTimeoutMs / 2
  let closing = false
  const followFailover = (name: string): void => {
    const now = performance.now()
    if (closing || now - movedAt < followWaitMs) return
    followWaitMs = now - movedAt < followWaitMs + 60_000 ? Math.min(followWaitMs * 2, 300_000) : config.socketTimeoutMs / 2
    movedAt = now
    warn('readonly', { conn: name }, 'Redis answered READONLY (the URL leads to a replica: a failover?): every Redis connection opened again (README, "Redis stuck or cut off")')
    setImmediate(() => { if (!closing) for (const c of conns) c.disconnect(true) })
  }
  const connect = (name: string, opts: { pipelined: boolean, resend: boolean, waitForReconnect?: boolean }): Redis => {
    const conn = new Redis(config.url, {
      connectionName: `mqim-${name}`,
      maxRetriesPerRequest: 3,
      lazyConnect: false,
      enableAutoPipelining: opts.pipelined,
      autoResendUnfulfilledCommands: opts.resend,
      socketTimeout: config.socketTimeoutMs,
      reconnectOnError: (err: Error) => {
        if (err.message.startsWith('READONLY')) followFailover(name)
        return false
      }
    })
    conns.push(conn)
    socketTimeoutAfterReads(conn)
    if (!opts.resend) failUnanswered(conn)
    if (opts.waitForReconnect === false) failQueuedOnClose(conn)
    conn.on('error', (err: Error) => {
      if (err.message.startsWith('Socket timeout')) {
        warn(`socket-timeout:${name}`, { conn: name, socketTimeoutMs: config.socketTimeoutMs }, 'Redis sent nothing back for socketTimeoutMs while a command waited (stuck, or cut off): connection closed and opened again (README, "Redis stuck or cut off")')
      } else logger.debug({ conn: name, err }, 'redis error')
    })
    return conn
  }
  const persistenceConn = connect('persistence', { pipelined: true, resend: false })
  const pub = connect('pub', { pipelined: true, resend: true })
  const sub = connect('sub', { pipelined: false, resend: true })
  // (ioredis sets status 'ready' a tick before it emits 'ready': the times of the connection before
  // a break must not be read in between)
  let subReadySince: WallMs = WALL_NEVER
  let subReadyAt: MonotonicMs = MONOTONIC_NEVER
  sub.on('ready', () => {
    subReadySince = wallNow()
    subReadyAt = monotonicNow()
  })
  sub.on('close', () => {
    subReadySince = WALL_NEVER
    subReadyAt = MONOTONIC_NEVER
  })
  // A command made while this one is down fails when the reconnect attempt under way fails, not
  // after three more: against a Redis that hangs, each attempt waits socketTimeoutMs, and requests
  // that need Redis (presence, an upload's quota, a clean=false login's session count) were
  // answered UNAVAILABLE after ~4 × socketTimeoutMs (30-57 s), or held until it was back
  const redis = connect('mqim', { pipelined: true, resend: false, waitForReconnect: false })
  // the timeout counts only while a command waits: a PING on each ready connection every half of
  // it, so that an idle one (the subscriber only ever waits for messages) is found cut off too
  const liveness = setInterval(() => {
    for (const c of conns) if (c.status === 'ready') c.ping().catch(() => {})
  }, Math.floor(config.socketTimeoutMs / 2))
  liveness.unref()
  // at start and after each reconnect (a failover may land on a server configured otherwise)
  redis.on('ready', () => { void checkEvictionPolicy(redis, logger) })
  // (a foreign publisher could send many undecodable messages, and many broadcasts are lost in an
  // outage: warned once a minute each)
  const db = pub.options.db ?? 0
  logger.info({ db, channels: emitterChannel(db, FAN_TOPIC) }, 'cluster pub/sub channels named after the Redis database (none on 0): deployments on other databases of this Redis server do not hear these')
  const mq = guardEmitterDecode(scopeChannelsToDatabase(createRedisEmitter(pub, sub), db), (err, topic) => {
    warn('undecodable', { err: err.message, topic }, 'messages on the cluster emitter that are not its own: dropped')
  })
  // mqemitter-redis re-emits connection errors on `state`; unheard, they would crash the process
  // while Redis is down. ioredis reconnects by itself.
  emitterState(mq).on('error', (err: Error) => logger.warn({ err }, 'redis emitter error'))
  closeEmitterQuietly(mq)
  // a lost subscription broadcast (upstream.ts 5)
  const broadcastLost = (call: string, clientId: string): void => {
    warn('broadcast', { call, client: clientId }, 'a subscription broadcast did not come back through Redis: the connection is closed (the client subscribes again)')
  }
  const persistence = aedesPersistenceRedis({
    conn: persistenceConn,
    maxSessionDelivery: config.maxSessionDelivery,
    // offline QoS 1 messages expire; clients sync by seq for anything older
    packetTTL: () => ttl
  })
  // broadcasts missed while the subscriber connection was down (upstream.ts 19)
  const matcher = repairSubscriptionMatcher(mq, redis, sub, logger, [persistenceConn])
  // delivery order across nodes compares their clocks: each node's against Redis' (clock-check.ts)
  const clock = startClockCheck(redis, logger)
  const queues = boundRedisQueues(coalesceAddSubscriptions(persistence, SUBSCRIPTION_BROADCAST_TIMEOUT_MS, broadcastLost), persistenceConn, { max: config.maxSessionDelivery, ttlSeconds: ttl })
  const acks = leanRedisAcks(queues, persistenceConn, {
    perConnection: ackKeysPerConnection(config.maxSessionDelivery),
    queueMax: config.maxSessionDelivery,
    ...ackReports(logger)
  })
  return {
    persistence: recordQueueReplays(batchRedisReplays(noRedisWills(acks, persistenceConn), persistenceConn, config.maxSessionDelivery), config.maxSessionDelivery + 1),
    mq,
    redis,
    brokerStarted: matcher.start,
    matcherRepairs: matcher.repairs,
    matcherStats: matcher.stats,
    clockOffset: clock.offsetSeconds,
    available: () => persistenceConn.status === 'ready' && pub.status === 'ready' && sub.status === 'ready',
    // while the subscriber is down, notices are being missed: "not connected" (the future)
    connectedSince: () => sub.status === 'ready' ? subReadySince : WALL_NEVER,
    linkUpSince: () => sub.status === 'ready' ? subReadyAt : MONOTONIC_NEVER,
    close: async () => {
      closing = true
      clearInterval(liveness)
      matcher.close()
      clock.close()
      await Promise.allSettled(conns.map(async c => { await c.quit().catch(() => c.disconnect()) }))
    }
  }
}
