/**
 * Request rate limits per user, across all of the user's connections and, in a cluster, across
 * nodes.
 *
 * Each node keeps a token bucket per active user (rate per second, burst). In a cluster, every
 * second each node adds what it granted each user in the second that just ended to a Redis
 * counter for that second, and reads the totals of the second before, which every node has
 * reported by then: what the other nodes granted is taken from the local bucket (it may go into
 * debt). So a user spreading requests over nodes gets the configured rate overall, give or take
 * two seconds' worth.
 */
import { lruCache } from '../lru.js'
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'

/** Token bucket: `rate` tokens per second, at most `burst` saved up, at most `burst` owed. Clock injectable for tests. */
export class TokenBucket {
  private tokens: number
  private last: number

  constructor (private readonly rate: number, private readonly burst: number, private readonly now: () => number = Date.now) {
    this.tokens = burst
    this.last = now()
  }

  private refill (): void {
    const t = this.now()
    this.tokens = Math.min(this.burst, this.tokens + ((t - this.last) / 1000) * this.rate)
    this.last = t
  }

  /** Requests refused since `refusedSince` (a window of about a second). */
  refused = 0
  private refusedSince = 0

  take (): boolean {
    this.refill()
    if (this.tokens >= 1) {
      this.tokens -= 1
      return true
    }
    if (this.last - this.refusedSince >= 1000) {
      this.refusedSince = this.last
      this.refused = 0
    }
    this.refused++
    return false
  }

  /** Milliseconds until a token can be taken (0: now). */
  msUntilToken (): number {
    this.refill()
    return this.tokens >= 1 ? 0 : Math.ceil(((1 - this.tokens) / this.rate) * 1000)
  }

  /** Spends tokens used elsewhere (other nodes); the bucket may go into debt, at most -burst. Returns the tokens actually taken. */
  debit (n: number): number {
    this.refill()
    const before = this.tokens
    this.tokens = Math.max(-this.burst, this.tokens - n)
    return before - this.tokens
  }

  /** Gives back tokens charged in advance and not used (never above the burst). */
  credit (n: number): void {
    this.refill()
    this.tokens = Math.min(this.burst, this.tokens + n)
  }
}

/** Active users tracked at once; an evicted (idle) user starts again with a full bucket. */
const USERS_MAX = 200_000

export class UserRateLimiter {
  private readonly buckets = lruCache<string, TokenBucket>(USERS_MAX)
  /** second -> user -> requests granted here (cluster only) */
  private readonly granted = new Map<number, Map<string, number>>()
  private timer: NodeJS.Timeout | null = null

  constructor (
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly sync: { redis: Redis, logger: Logger, prefix?: string } | null = null
  ) {
    if (sync !== null) {
      this.timer = setInterval(() => { void this.exchange() }, 1000)
      this.timer.unref()
    }
  }

  private bucket (userId: string): TokenBucket {
    let b = this.buckets.get(userId)
    if (b === undefined) this.buckets.set(userId, b = new TokenBucket(this.rate, this.burst, this.now))
    return b
  }

  /** Milliseconds until the user may make a request again (0: now). */
  msUntilNext (userId: string): number {
    return this.buckets.get(userId)?.msUntilToken() ?? 0
  }

  /** Requests of the user refused within the last second or so. */
  recentRefusals (userId: string): number {
    return this.buckets.get(userId)?.refused ?? 0
  }

  take (userId: string): boolean {
    if (!this.bucket(userId).take()) return false
    this.record(userId, 1)
    return true
  }

  /**
   * Charges `n` more tokens for a request that turned out to be expensive (a large reply): the
   * bucket may go into debt (at most -burst), so the user's next requests wait longer. Returns the
   * tokens actually taken (what a refund may give back).
   */
  charge (userId: string, n: number): number {
    if (n <= 0) return 0
    const taken = this.bucket(userId).debit(n)
    this.record(userId, taken)
    return taken
  }

  /** Gives back `n` tokens charged in advance (see charge) that the request did not use. */
  refund (userId: string, n: number): void {
    if (n <= 0) return
    this.bucket(userId).credit(n)
    this.record(userId, -n)
  }

  private record (userId: string, n: number): void {
    if (this.sync === null) return
    const second = Math.floor(this.now() / 1000)
    let users = this.granted.get(second)
    if (users === undefined) this.granted.set(second, users = new Map())
    users.set(userId, (users.get(userId) ?? 0) + n)
  }

  /** Reports the last complete second, and charges what other nodes granted the second before. */
  private async exchange (): Promise<void> {
    if (this.sync === null) return
    const { redis, logger } = this.sync
    const prefix = this.sync.prefix ?? 'mqim:rl:'
    const current = Math.floor(this.now() / 1000)
    const report = current - 1
    const settle = current - 2
    const mine = this.granted.get(report)
    const settled = this.granted.get(settle)
    for (const s of this.granted.keys()) if (s < settle) this.granted.delete(s)
    this.granted.delete(settle)
    try {
      const m = redis.multi()
      for (const [user, n] of mine ?? []) m.incrby(`${prefix}${report}:${user}`, n).expire(`${prefix}${report}:${user}`, 10)
      const settleUsers = [...(settled ?? new Map<string, number>()).keys()]
      for (const user of settleUsers) m.get(`${prefix}${settle}:${user}`)
      const res = await m.exec()
      const offset = 2 * (mine?.size ?? 0)
      settleUsers.forEach((user, i) => {
        const total = Number(res?.[offset + i]?.[1] ?? 0)
        const others = total - (settled?.get(user) ?? 0)
        if (others > 0) this.bucket(user).debit(others)
      })
    } catch (err) {
      logger.debug({ err }, 'rate limit exchange failed')
    }
  }

  close (): void {
    if (this.timer !== null) clearInterval(this.timer)
  }
}
