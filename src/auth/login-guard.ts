/**
 * Login defence, in front of password checks:
 *
 * - Backoff: after `failuresBeforeBackoff` failed logins of one user id, or from one source
 *   address, further attempts are refused without checking the password until a backoff has
 *   passed (backoffBaseMs, doubling per further failure, at most backoffMaxMs). A user's backoff
 *   does not apply on an address that user has logged in from successfully before, so someone
 *   guessing elsewhere cannot lock the owner out.
 * - A bounded number of password hashes in flight (scrypt runs on libuv's small shared thread
 *   pool, which also serves file reads): the rest wait in a bounded line; beyond it, at once Busy.
 * - Timing that does not tell whether an account exists: the work done depends only on the shape
 *   of the presented secret (an API key `mqk_…` costs one SHA-256, anything else one scrypt),
 *   checked against a dummy hash when the account is unknown.
 * - Successful checks are remembered (a reconnect storm does not cost one scrypt each) under a
 *   keyed hash of (user, stored hash, secret): no plaintext secret is kept in memory.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { API_KEY_PREFIX, hashApiKey, hashPassword, verifySecret } from './secrets.js'

export interface LoginGuardOptions {
  maxConcurrentHashes: number
  maxQueuedLogins: number
  failuresBeforeBackoff: number
  backoffBaseMs: number
  backoffMaxMs: number
  now?: () => number
}

/** Too many password checks waiting: the login is refused at once (CONNACK 3). */
export class LoginBusyError extends Error {
  constructor () {
    super('too many logins in progress; retry later')
    this.name = 'LoginBusyError'
  }
}

interface Failures { count: number, until: number }

/** Successful (user, stored hash, secret) checks remembered, at most this many. */
const VERIFIED_MAX = 20_000
/** Failure records kept (per user id and per address), at most this many. */
const FAILURES_MAX = 100_000

export class LoginGuard {
  private readonly now: () => number
  private readonly failures: LRUCache<string, Failures>
  /** `user\0address` pairs that logged in successfully. */
  private readonly knownGood = new LRUCache<string, true>({ max: FAILURES_MAX })
  private readonly verified = new LRUCache<string, true>({ max: VERIFIED_MAX })
  private readonly cacheKey = randomBytes(32)
  private readonly dummyPasswordHash: Promise<string>
  private readonly dummyApiKeyHash = hashApiKey(API_KEY_PREFIX + randomBytes(32).toString('base64url'))
  private active = 0
  private readonly waiting: Array<() => void> = []

  constructor (private readonly opts: LoginGuardOptions) {
    this.now = opts.now ?? Date.now
    // a failure record is forgotten once its backoff could no longer matter
    this.failures = new LRUCache({ max: FAILURES_MAX, ttl: Math.max(opts.backoffMaxMs * 4, 60_000), ttlAutopurge: false })
    this.dummyPasswordHash = hashPassword(randomBytes(18).toString('base64url'))
  }

  /** Milliseconds this attempt must wait before a password is checked (0: go ahead). */
  retryAfter (userId: string, address: string): number {
    const now = this.now()
    const byAddress = this.failures.get(`a\u0000${address}`)
    let until = byAddress?.until ?? 0
    if (!this.knownGood.has(`${userId}\u0000${address}`)) until = Math.max(until, this.failures.get(`u\u0000${userId}`)?.until ?? 0)
    return Math.max(0, until - now)
  }

  /** True while the address itself is in backoff (whoever logs in from it). */
  addressInBackoff (address: string): boolean {
    return (this.failures.get(`a\u0000${address}`)?.until ?? 0) > this.now()
  }

  failed (userId: string, address: string): void {
    this.count(`u\u0000${userId}`)
    this.count(`a\u0000${address}`)
  }

  succeeded (userId: string, address: string): void {
    this.failures.delete(`u\u0000${userId}`)
    this.knownGood.set(`${userId}\u0000${address}`, true)
  }

  private count (key: string): void {
    const f = this.failures.get(key) ?? { count: 0, until: 0 }
    f.count++
    const over = f.count - this.opts.failuresBeforeBackoff
    if (over >= 0) f.until = this.now() + Math.min(this.opts.backoffBaseMs * 2 ** Math.min(over, 30), this.opts.backoffMaxMs)
    this.failures.set(key, f)
  }

  /**
   * Checks a secret against the stored hash of an account (null: unknown account). The work done
   * depends only on the secret's shape. Throws LoginBusyError when too many checks are waiting.
   */
  async verify (userId: string, secret: string, storedHash: string | null): Promise<boolean> {
    const key = storedHash === null ? null : createHmac('sha256', this.cacheKey).update(`${userId}\u0000${storedHash}\u0000${secret}`).digest('base64url')
    if (key !== null && this.verified.has(key)) return true
    const isApiKey = secret.startsWith(API_KEY_PREFIX)
    // a hash of the other kind can never match this secret: check the dummy of the right kind
    const matchingKind = storedHash !== null && storedHash.startsWith(isApiKey ? 'sha256$' : 'scrypt$')
    const ok = isApiKey
      ? await verifySecret(secret, matchingKind ? storedHash : this.dummyApiKeyHash) && matchingKind
      : await this.limited(async () => await verifySecret(secret, matchingKind ? storedHash : await this.dummyPasswordHash)) && matchingKind
    if (ok && key !== null) this.verified.set(key, true)
    return ok
  }

  /** Runs a password hash when a slot is free; waits in a bounded line otherwise. */
  private async limited<T> (work: () => Promise<T>): Promise<T> {
    if (this.active >= this.opts.maxConcurrentHashes) {
      if (this.waiting.length >= this.opts.maxQueuedLogins) throw new LoginBusyError()
      await new Promise<void>(resolve => this.waiting.push(resolve))
    } else {
      this.active++
    }
    try {
      return await work()
    } finally {
      const next = this.waiting.shift()
      if (next !== undefined) next() // the slot passes to the next in line
      else this.active--
    }
  }

  /** Password checks running and waiting (for tests and health). */
  load (): { active: number, waiting: number } {
    return { active: this.active, waiting: this.waiting.length }
  }
}
