/**
 * Persistent sessions (clean=false) per user. Each one keeps subscriptions and a queue in the
 * broker's persistence after its connection ends, and every message to the user is queued once
 * per session, so their number is bounded per user: the connection cap counts open connections
 * only. A device beyond the bound still connects, with a clean session (CONNACK sessionPresent 0,
 * nothing kept after it ends; it syncs by seq like any device that was away).
 *
 * The sessions a user has are recorded when they start (in Redis when the broker's persistence
 * is there, shared by the nodes and kept across restarts; in memory otherwise, like the embedded
 * persistence itself) and forgotten when a clean connect with the same clientId wipes one.
 */
import { lruCache } from '../lru.js'
import type { Redis } from 'ioredis'

export interface SessionQuota {
  /** True if the user's persistent session `clientId` may exist (it is then recorded). */
  admit: (userId: string, clientId: string) => Promise<boolean>
  /** The session `clientId` was wiped (a clean connect with its clientId). */
  forget: (userId: string, clientId: string) => Promise<void>
}

/** Users whose sessions the embedded quota remembers (the least recently active forgotten first). */
const USERS_MAX = 200_000

export class MemorySessionQuota implements SessionQuota {
  private readonly byUser = lruCache<string, Set<string>>(USERS_MAX)

  constructor (private readonly max: number) {}

  async admit (userId: string, clientId: string): Promise<boolean> {
    let set = this.byUser.get(userId)
    if (set?.has(clientId) === true) return true
    if (set !== undefined && set.size >= this.max) return false
    if (set === undefined) this.byUser.set(userId, set = new Set())
    set.add(clientId)
    return true
  }

  async forget (userId: string, clientId: string): Promise<void> {
    this.byUser.get(userId)?.delete(clientId)
  }
}

/** KEYS[1] the user's set of session clientIds; ARGV[1] the clientId, ARGV[2] the bound. */
const ADMIT = `
if redis.call('SISMEMBER', KEYS[1], ARGV[1]) == 1 then return 1 end
if redis.call('SCARD', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('SADD', KEYS[1], ARGV[1])
return 1`

export class RedisSessionQuota implements SessionQuota {
  constructor (private readonly redis: Redis, private readonly max: number, private readonly prefix = 'mqim:sessions:') {}

  async admit (userId: string, clientId: string): Promise<boolean> {
    return await this.redis.eval(ADMIT, 1, this.prefix + userId, clientId, String(this.max)) === 1
  }

  async forget (userId: string, clientId: string): Promise<void> {
    await this.redis.srem(this.prefix + userId, clientId)
  }
}
