/**
 * Where the broker keeps its state. Embedded default: Aedes' in-memory persistence and emitter
 * (one process). Cluster: aedes-persistence-redis (sessions, subscriptions, offline QoS 1 queues,
 * retained messages, wills) and mqemitter-redis (a publish on one node reaches subscribers on
 * every node), both on the same Redis.
 */
import { Redis } from 'ioredis'
import mqemitterRedis from 'mqemitter-redis'
import aedesPersistenceRedis from 'aedes-persistence-redis'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'

export interface BrokerBackends {
  persistence?: unknown
  mq?: unknown
  /** A Redis connection for mqim's own use (presence, health), or null on the embedded default. */
  redis: Redis | null
  /** False while a Redis connection the broker routes through is down (publishes would hang or be lost). */
  available: () => boolean
  close: () => Promise<void>
}

interface SubscriptionStore {
  addSubscriptions: (client: { id: string }, subs: Array<{ topic: string, qos: number }>) => Promise<unknown>
}

/**
 * Aedes 1.2 calls persistence.addSubscriptions(client, allSubscriptionsOfThePacket) once per
 * subscription of a SUBSCRIBE packet, concurrently. aedes-persistence-redis then waits for its
 * own `$SYS/sub/add` broadcast to come back through the emitter, keyed by (client, first topic):
 * with mqemitter-redis the replies arrive after all the calls have registered, the waiters
 * overwrite each other, and a multi-topic SUBSCRIBE of a clean=false client never gets its
 * SUBACK. Identical concurrent calls are therefore made once and share the result.
 */
export function coalesceAddSubscriptions<T> (persistence: T): T {
  const store = persistence as unknown as SubscriptionStore
  const add = store.addSubscriptions.bind(store)
  const inFlight = new Map<string, Promise<unknown>>()
  store.addSubscriptions = (client, subs) => {
    const key = `${client.id}\u0000${subs.map(s => `${s.topic}\u0001${s.qos}`).join('\u0000')}`
    const running = inFlight.get(key)
    if (running !== undefined) return running
    const p = add(client, subs).finally(() => inFlight.delete(key))
    inFlight.set(key, p)
    return p
  }
  return persistence
}

export function createBrokerBackends (config: Config['broker']['persistence'], logger: Logger): BrokerBackends {
  if (config.adapter === 'memory') return { redis: null, available: () => true, close: async () => {} }
  const ttl = config.packetTTLSeconds
  const connect = (name: string): Redis => {
    const conn = new Redis(config.url, { connectionName: `mqim-${name}`, maxRetriesPerRequest: 3, lazyConnect: false })
    conn.on('error', (err: Error) => logger.debug('redis error', { conn: name, err: err.message }))
    return conn
  }
  const persistenceConn = connect('persistence')
  const pub = connect('pub')
  const sub = connect('sub')
  const redis = connect('mqim')
  const mq = mqemitterRedis({ pubConn: pub, subConn: sub, matchEmptyLevels: true } as unknown as Parameters<typeof mqemitterRedis>[0])
  // mqemitter-redis re-emits connection errors on `state`; unheard, they would crash the process
  // while Redis is down. ioredis reconnects by itself.
  ;(mq as unknown as { state: NodeJS.EventEmitter }).state.on('error', (err: Error) => logger.warn('redis emitter error', { err: err.message }))
  // mqemitter-redis.close() (called by Aedes' broker.close()) quits both connections without
  // handling the promises: when one is already closed the rejection is unhandled and kills the
  // process during a graceful stop. Close only the emitter here; close() below quits the connections.
  const emitter = mq as unknown as { closing: boolean, _close: (cb: () => void) => void, close: (cb?: () => void) => void }
  emitter.close = (cb) => {
    emitter.closing = true
    emitter._close(cb ?? (() => {}))
  }
  const persistence = aedesPersistenceRedis({
    conn: persistenceConn,
    maxSessionDelivery: config.maxSessionDelivery,
    // offline QoS 1 messages expire; clients sync by seq for anything older
    packetTTL: () => ttl
  })
  return {
    persistence: coalesceAddSubscriptions(persistence),
    mq,
    redis,
    available: () => persistenceConn.status === 'ready' && pub.status === 'ready' && sub.status === 'ready',
    close: async () => {
      await Promise.allSettled([persistenceConn, pub, sub, redis].map(async c => { await c.quit().catch(() => c.disconnect()) }))
    }
  }
}
