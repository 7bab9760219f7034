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
 *   Two lines, each of maxQueuedLogins: one for a user on an address they have logged in from
 *   before, served first, and one for everybody else, where one address (an IPv6 /64) holds at
 *   most loginsPerAddress places. A flood of guesses from many addresses then fills only the second
 *   line: returning users on their usual addresses still get in (a first login from a new address
 *   competes with the flood; see README "Production").
 * - Timing that does not tell whether an account exists: the work done depends only on the shape
 *   of the presented secret (an API key `mqk_…` costs one SHA-256, anything else one scrypt),
 *   checked against a dummy hash when the account is unknown.
 * - Successful checks are remembered (a reconnect storm does not cost one scrypt each) under a
 *   keyed hash of (user, stored hash, secret): no plaintext secret is kept in memory.
 */
import { createHmac, randomBytes } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import { lruCache } from '../lru.js'
import { API_KEY_PREFIX, hashApiKey, hashPassword, verifySecret } from './secrets.js'

export interface LoginGuardOptions {
  maxConcurrentHashes: number
  maxQueuedLogins: number
  /** Places (running or waiting) one address may hold among the password checks of the open line. */
  loginsPerAddress: number
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

/**
 * The address a limit counts by: IPv4 addresses as they are, IPv6 by their /64 (one subscriber
 * commonly has a whole /64 to pick from). IPv4-mapped IPv6 counts as IPv4.
 */
export function addressKey (address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  if (mapped !== null) return mapped[1] as string
  if (!address.includes(':')) return address
  const [head = '', tail] = address.toLowerCase().split('%')[0]?.split('::') ?? []
  const left = head === '' ? [] : head.split(':')
  const right = tail === undefined || tail === '' ? [] : tail.split(':')
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, 8 - left.length - right.length)).fill('0'), ...right]
  return groups.slice(0, 4).map(g => g.replace(/^0+(?=.)/, '')).join(':') + '::/64'
}

type Lane = 'known' | 'open'

export class LoginGuard {
  private readonly now: () => number
  private readonly failures: LRUCache<string, Failures>
  /** `user\0address` pairs that logged in successfully. */
  private readonly knownGood = lruCache<string, true>(FAILURES_MAX)
  private readonly verified = lruCache<string, true>(VERIFIED_MAX)
  private readonly cacheKey = randomBytes(32)
  private readonly dummyPasswordHash: Promise<string>
  private readonly dummyApiKeyHash = hashApiKey(API_KEY_PREFIX + randomBytes(32).toString('base64url'))
  private active = 0
  private readonly waiting: Record<Lane, Array<() => void>> = { known: [], open: [] }
  /** Places each address holds in the open line (running or waiting). */
  private readonly openByAddress = new Map<string, number>()

  constructor (private readonly opts: LoginGuardOptions) {
    this.now = opts.now ?? Date.now
    // a failure record is forgotten once its backoff could no longer matter
    this.failures = lruCache(FAILURES_MAX, { ttl: Math.max(opts.backoffMaxMs * 4, 60_000), ttlAutopurge: false })
    this.dummyPasswordHash = hashPassword(randomBytes(18).toString('base64url'))
  }

  /** Milliseconds this attempt must wait before a password is checked (0: go ahead). */
  retryAfter (userId: string, address: string): number {
    const now = this.now()
    const byAddress = this.failures.get(`a\u0000${addressKey(address)}`)
    let until = Math.max(byAddress?.until ?? 0, this.failures.get(`f\u0000${userId}`)?.until ?? 0)
    if (!this.knownGood.has(`${userId}\u0000${address}`)) until = Math.max(until, this.failures.get(`u\u0000${userId}`)?.until ?? 0)
    return Math.max(0, until - now)
  }

  /**
   * A connection of the user was closed for flooding requests: the user's logins are refused for
   * a while, from every address (known ones included; no other user is affected). Backoff as
   * for failed logins, from the first one.
   */
  flooded (userId: string): void {
    const key = `f\u0000${userId}`
    const f = this.failures.get(key) ?? { count: 0, until: 0 }
    const now = this.now()
    // connections cut together (the same flood over several) count once
    if (f.until > now) return
    f.count++
    f.until = now + Math.min(this.opts.backoffBaseMs * 2 ** Math.min(f.count + 1, 30), this.opts.backoffMaxMs)
    this.failures.set(key, f)
  }

  /** Milliseconds the address itself stays in backoff (whoever logs in from it); 0 if it is not. */
  addressBackoffMs (address: string): number {
    return Math.max(0, (this.failures.get(`a\u0000${addressKey(address)}`)?.until ?? 0) - this.now())
  }

  failed (userId: string, address: string): void {
    this.count(`u\u0000${userId}`)
    this.count(`a\u0000${addressKey(address)}`)
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
   * `address` picks the line (see the top of this file).
   */
  async verify (userId: string, secret: string, storedHash: string | null, address = ''): Promise<boolean> {
    const key = storedHash === null ? null : createHmac('sha256', this.cacheKey).update(`${userId}\u0000${storedHash}\u0000${secret}`).digest('base64url')
    if (key !== null && this.verified.has(key)) return true
    const isApiKey = secret.startsWith(API_KEY_PREFIX)
    // a hash of the other kind can never match this secret: check the dummy of the right kind
    const matchingKind = storedHash !== null && storedHash.startsWith(isApiKey ? 'sha256$' : 'scrypt$')
    const ok = isApiKey
      ? await verifySecret(secret, matchingKind ? storedHash : this.dummyApiKeyHash) && matchingKind
      : await this.limited(this.knownGood.has(`${userId}\u0000${address}`) ? 'known' : 'open', addressKey(address),
        async () => await verifySecret(secret, matchingKind ? storedHash : await this.dummyPasswordHash)) && matchingKind
    if (ok && key !== null) this.verified.set(key, true)
    return ok
  }

  /** Runs a password hash when a slot is free; waits in its bounded line otherwise. */
  private async limited<T> (lane: Lane, address: string, work: () => Promise<T>): Promise<T> {
    const line = this.waiting[lane]
    // an address the server cannot tell (an in-process connection) is not counted
    const counted = lane === 'open' && address !== 'unknown' && address !== ''
    const held = counted ? this.openByAddress.get(address) ?? 0 : 0
    if (held >= this.opts.loginsPerAddress) throw new LoginBusyError()
    if (this.active >= this.opts.maxConcurrentHashes && line.length >= this.opts.maxQueuedLogins) throw new LoginBusyError()
    if (counted) this.openByAddress.set(address, held + 1)
    try {
      if (this.active >= this.opts.maxConcurrentHashes) await new Promise<void>(resolve => line.push(resolve))
      else this.active++
      try {
        return await work()
      } finally {
        // the slot passes to the next in line, the known line first
        const next = this.waiting.known.shift() ?? this.waiting.open.shift()
        if (next !== undefined) next()
        else this.active--
      }
    } finally {
      if (counted) {
        const left = (this.openByAddress.get(address) ?? 1) - 1
        if (left > 0) this.openByAddress.set(address, left)
        else this.openByAddress.delete(address)
      }
    }
  }

  /** Password checks running and waiting (for tests and health). */
  load (): { active: number, waiting: number } {
    return { active: this.active, waiting: this.waiting.known.length + this.waiting.open.length }
  }
}
