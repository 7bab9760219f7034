/**
 * Bytes per user per UTC day announced in `upload` requests (files.bytesPerUserPerDay). On one
 * node: an LRU of (user, day) counters (bounded); in a cluster: Redis counters that expire after
 * two days, shared by every node.
 */
import { LRUCache } from 'lru-cache'
import type { Redis } from 'ioredis'

export interface UploadQuota {
  /** Counts `bytes` for the user today unless that would pass `limit`; false (nothing counted) then. */
  take (userId: string, bytes: number, limit: number, now: number): Promise<boolean>
}

const DAY_MS = 24 * 3600 * 1000

/** Users counted at once on one node; the least recent beyond it are forgotten. */
const USERS_MAX = 100_000

export class MemoryUploadQuota implements UploadQuota {
  private readonly used = new LRUCache<string, number>({ max: USERS_MAX })

  async take (userId: string, bytes: number, limit: number, now: number): Promise<boolean> {
    const key = `${userId}\u0000${Math.floor(now / DAY_MS)}`
    const used = this.used.get(key) ?? 0
    if (used + bytes > limit) return false
    this.used.set(key, used + bytes)
    return true
  }
}

export class RedisUploadQuota implements UploadQuota {
  constructor (private readonly redis: Redis) {}

  async take (userId: string, bytes: number, limit: number, now: number): Promise<boolean> {
    const key = `mqim:upload-bytes:${userId}:${Math.floor(now / DAY_MS)}`
    const used = await this.redis.incrby(key, bytes)
    if (used === bytes) await this.redis.pexpire(key, 2 * DAY_MS)
    if (used > limit) {
      await this.redis.decrby(key, bytes)
      return false
    }
    return true
  }
}
