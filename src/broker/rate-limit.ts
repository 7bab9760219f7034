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
 *
 * The counters of one second are one Redis hash (`<prefix><second>`, a field per user, expiring
 * after COUNT_TTL_SECONDS), written and read by a script per EXCHANGE_USERS users: a node's
 * exchange is one command a second per EXCHANGE_USERS users. (It was a MULTI of an INCRBY and an
 * EXPIRE per user reported and a GET per user settled, each on a key of its own: about 400
 * commands a second per node in the cluster soak, each an ioredis command object, all made at
 * once and all alive until the EXEC came back; up to 600,000 in one MULTI at USERS_MAX users.)
 *
 * The exchange runs EXCHANGE_PHASE_MS after each second begins (on the node's clock), not on a
 * free-running interval: an interval whose ticks fall just before a second's end skipped a
 * second's report whenever a tick came a little late. One exchange at a time: while one waits
 * for Redis, the next seconds are not exchanged (their grants are counted by this node alone),
 * so a slow Redis holds one exchange's scripts, not one more each second.
 */
import { lruCache } from '../lru.js'
import type { Redis } from 'ioredis'
import { warnEveryMinute, type Logger, type MinuteWarner } from '../log.js'

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
/**
 * Users reported, and users settled, by one exchange script at most (more go in several; the
 * script's `unpack` of the settled users stays far below Lua 5.1's limit of ~8,000 values).
 */
export const EXCHANGE_USERS = 1000
/** When in each second the exchange runs (ms after the second begins). */
export const EXCHANGE_PHASE_MS = 250
/** How long a second's counters stay in Redis (they are read one second after they are written). */
const COUNT_TTL_SECONDS = 10

/**
 * KEYS[1]: the hash of the second reported, KEYS[2]: the hash of the second settled (one Redis, as
 * the persistence's scripts). ARGV[1]: the expiry in seconds, ARGV[2]: the number r of users
 * reported, then r pairs (user, tokens granted here: a float, negative for a refund), then the
 * users settled. Returns the settled users' totals over all nodes, in their order (false where no
 * node reported one).
 */
const EXCHANGE_LUA = `
local r = tonumber(ARGV[2])
for i = 3, 2 + 2 * r, 2 do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  -- the expiry with the first write: a later write that fails leaves nothing without one
  if i == 3 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
end
if #ARGV < 3 + 2 * r then return {} end
return redis.call('HMGET', KEYS[2], unpack(ARGV, 3 + 2 * r))`

type ExchangeRedis = Redis & { mqimRateExchange: (...args: Array<string | number>) => Promise<Array<string | null>> }

function exchanging (conn: Redis): ExchangeRedis {
  if (!('mqimRateExchange' in conn)) conn.defineCommand('mqimRateExchange', { numberOfKeys: 2, lua: EXCHANGE_LUA })
  return conn as ExchangeRedis
}

export class UserRateLimiter {
  private readonly buckets = lruCache<string, TokenBucket>(USERS_MAX)
  /** second -> user -> requests granted here (cluster only) */
  private readonly granted = new Map<number, Map<string, number>>()
  private timer: NodeJS.Timeout | null = null
  private closed = false
  /** An exchange waits for Redis (the next ones are skipped until it is done). */
  private inFlight = false
  /** The last second reported (a clock stepped back does not report one twice). */
  private lastReported = Number.NEGATIVE_INFINITY
  private readonly warn: MinuteWarner | null

  constructor (
    private readonly rate: number,
    private readonly burst: number,
    private readonly now: () => number = Date.now,
    private readonly sync: { redis: Redis, logger: Logger, prefix?: string } | null = null
  ) {
    this.warn = sync === null ? null : warnEveryMinute(sync.logger)
    if (sync !== null) this.schedule()
  }

  /** The next exchange, EXCHANGE_PHASE_MS into the next second. */
  private schedule (): void {
    if (this.closed) return
    const t = this.now()
    this.timer = setTimeout(() => {
      // every second, also while an earlier exchange still waits for Redis (this one then skips)
      this.schedule()
      this.exchange().catch((err: unknown) => { this.warn?.('exchange', { err: String(err) }, 'request rate exchange failed') })
    }, 1000 - (((t % 1000) + 1000) % 1000) + EXCHANGE_PHASE_MS)
    this.timer.unref()
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
    if (this.sync === null || !Number.isFinite(n) || n === 0) return
    const second = Math.floor(this.now() / 1000)
    let users = this.granted.get(second)
    if (users === undefined) {
      // a new second: none older than the one to settle is kept, whether exchanges run or not
      for (const s of this.granted.keys()) if (s < second - 2) this.granted.delete(s)
      this.granted.set(second, users = new Map())
    }
    users.set(userId, (users.get(userId) ?? 0) + n)
  }

  /**
   * Reports the last complete second, and charges what other nodes granted the second before.
   * Run every second by the timer (public for tests). A script that fails (Redis down, writes
   * refused) loses its users' reports and settlements for that second only: their buckets count
   * this node alone.
   */
  async exchange (): Promise<void> {
    if (this.sync === null) return
    const current = Math.floor(this.now() / 1000)
    const report = current - 1
    const settle = current - 2
    // (the grants of seconds not exchanged are dropped by record, as new seconds begin)
    if (this.inFlight || report <= this.lastReported) return
    this.lastReported = report
    this.inFlight = true
    let results: Array<PromiseSettledResult<void>>
    try {
      const mine = [...(this.granted.get(report) ?? [])]
      const settled = this.granted.get(settle) ?? new Map<string, number>()
      const settleUsers = [...settled.keys()]
      const prefix = this.sync.prefix ?? 'mqim:rl:'
      const conn = exchanging(this.sync.redis)
      const scripts: Array<Promise<void>> = []
      for (let start = 0; start < Math.max(mine.length, settleUsers.length); start += EXCHANGE_USERS) {
        const reported = mine.slice(start, start + EXCHANGE_USERS)
        const users = settleUsers.slice(start, start + EXCHANGE_USERS)
        scripts.push(conn.mqimRateExchange(`${prefix}${report}`, `${prefix}${settle}`, COUNT_TTL_SECONDS, reported.length, ...reported.flat(), ...users)
          .then(totals => {
            users.forEach((user, i) => {
              const others = Number(totals[i] ?? 0) - (settled.get(user) ?? 0)
              if (others > 0) this.bucket(user).debit(others)
            })
          }))
      }
      results = await Promise.allSettled(scripts)
    } finally {
      this.inFlight = false
    }
    for (const result of results) {
      if (result.status === 'rejected') {
        this.warn?.('exchange', { err: String((result.reason as Error | null)?.message ?? result.reason) },
          'request rates could not be exchanged with the other nodes through Redis: each node counts its own for now (README, "Request rates across nodes")')
      }
    }
  }

  close (): void {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
  }
}
