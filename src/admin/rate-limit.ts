/**
 * The admin API's rate limit: a token bucket per admin token (the TokenBucket of the MQTT request
 * limit, src/broker/rate-limit.ts), refilled at admin.requestsPerSecond and holding at most
 * admin.requestBurst. Bounded: one bucket per token of admin.tokens (at most 100) and one for the
 * loopback token, all made at start-up; the map never grows, whatever callers send (a request
 * without a valid token is refused before it gets here). A request beyond its token's bucket is
 * answered 429 before its body is read, so one token's flood costs the others only those answers.
 */
import { TokenBucket } from '../broker/rate-limit.js'
import type { Principal } from './auth.js'

export class AdminRateLimiter {
  private readonly buckets: ReadonlyMap<Principal, TokenBucket>

  constructor (principals: readonly Principal[], readonly rate: number, readonly burst: number, now: () => number = Date.now) {
    this.buckets = new Map(principals.map(p => [p, new TokenBucket(rate, burst, now)]))
  }

  /** Takes a token of the principal's bucket: 0 if it had one, else the milliseconds until it will. */
  take (principal: Principal): number {
    const bucket = this.buckets.get(principal)
    // every principal AdminAuth answers was given a bucket at start-up
    if (bucket === undefined) throw new Error(`admin rate limit: no bucket for the token "${principal.name}"`)
    return bucket.take() ? 0 : Math.max(1, bucket.msUntilToken())
  }
}
