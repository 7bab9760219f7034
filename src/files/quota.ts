/**
 * Bytes per user per UTC day announced in `upload` requests (files.bytesPerUserPerDay). On one
 * node: an LRU of (user, day) counters (bounded); in a cluster: Redis counters that expire after
 * two days, shared by every node.
 */
import { lruCache } from '../lru.js'
import type { Redis } from 'ioredis'

export interface UploadQuota {
  /** Counts `bytes` for the user today unless that would pass `limit`; false (nothing counted) then. */
  take (userId: string, bytes: number, limit: number, now: number): Promise<boolean>
}

const DAY_MS = 24 * 3600 * 1000

/** Users counted at once on one node; the least recent beyond it are forgotten. */
const USERS_MAX = 100_000

export class MemoryUploadQuota implements UploadQuota {
  private readonly used = lruCache<string, number>(USERS_MAX)

  async take (userId: string, bytes: number, limit: number, now: number): Promise<boolean> {
    const key = `${userId}\u0000${Math.floor(now / DAY_MS)}`
    const used = this.used.get(key) ?? 0
    if (used + bytes > limit) return false
    this.used.set(key, used + bytes)
    return true
  }
}

/**
 * Counts ARGV[1] bytes on KEYS[1] unless the total would pass ARGV[3] (then nothing is counted):
 * 1 counted, 0 refused. The counter's expiry (ARGV[2] ms) is set every time, so that none outlives
 * two quiet days whatever ran before.
 */
const TAKE_LUA = `
local used = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if used > tonumber(ARGV[3]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1`

type QuotaRedis = Redis & { mqimUploadTake: (key: string, bytes: number, ttlMs: number, limit: number) => Promise<number> }

export class RedisUploadQuota implements UploadQuota {
  private readonly redis: QuotaRedis

  constructor (redis: Redis) {
    if (!('mqimUploadTake' in redis)) redis.defineCommand('mqimUploadTake', { numberOfKeys: 1, lua: TAKE_LUA })
    this.redis = redis as QuotaRedis
  }

  async take (userId: string, bytes: number, limit: number, now: number): Promise<boolean> {
    const key = `mqim:upload-bytes:${userId}:${Math.floor(now / DAY_MS)}`
    return await this.redis.mqimUploadTake(key, bytes, 2 * DAY_MS, limit) === 1
  }
}
