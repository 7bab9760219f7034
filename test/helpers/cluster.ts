/** Config for nodes of one test cluster: Redis (a database of its own, emptied), MongoDB and MySQL. */
import { Redis } from 'ioredis'
import { freshMongo, freshMysqlUrl, redisUrl } from './db.js'

export async function clusterOverrides (redisDb: number, extra: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const mongo = freshMongo()
  const redis = new URL(redisUrl())
  redis.pathname = `/${redisDb}`
  const conn = new Redis(redis.toString())
  await conn.flushdb() // sessions of an earlier run must not leak into this one
  await conn.quit()
  return {
    messageStore: { adapter: 'mongodb', url: mongo.url, database: mongo.dbName },
    metadataStore: { adapter: 'mysql', url: await freshMysqlUrl() },
    // reply watchers listed twice a second: a node knows the others' within 1.5 s of its start
    broker: { persistence: { adapter: 'redis', url: redis.toString(), watchersListMs: 500 } },
    limits: { requestsPerSecond: 100000, requestBurst: 100000 },
    presence: { ttlMs: 90000, notifyIntervalMs: 50, offlineGraceMs: 0, maxAudience: 500 },
    ...extra
  }
}
