/**
 * LoginGuard on a virtual clock: backoff per user id and per address, the owner's known address,
 * the bounded line of password checks, the work of a login depending only on the secret's shape,
 * and no plaintext secret kept in memory.
 */
import { LoginBusyError, LoginGuard } from '../../src/auth/login-guard.js'
import { generateApiKey, hashApiKey, hashPassword } from '../../src/auth/secrets.js'

const OPTIONS = { maxConcurrentHashes: 1, maxQueuedLogins: 1, failuresBeforeBackoff: 3, backoffBaseMs: 1000, backoffMaxMs: 8000 }

describe('LoginGuard', () => {
  let now = 1_000_000
  const guard = (): LoginGuard => new LoginGuard({ ...OPTIONS, now: () => now })

  test('backoff starts at the threshold, doubles per failure, stops at the maximum, and ends', () => {
    const g = guard()
    for (let i = 0; i < 2; i++) g.failed('alice', '10.0.0.1')
    expect(g.retryAfter('alice', '10.0.0.1')).toBe(0)
    g.failed('alice', '10.0.0.1')
    expect(g.retryAfter('alice', '10.0.0.1')).toBe(1000)
    g.failed('alice', '10.0.0.1')
    expect(g.retryAfter('alice', '10.0.0.1')).toBe(2000)
    for (let i = 0; i < 10; i++) g.failed('alice', '10.0.0.1')
    expect(g.retryAfter('alice', '10.0.0.1')).toBe(8000)
    now += 8000
    expect(g.retryAfter('alice', '10.0.0.1')).toBe(0)
  })

  test("a guessed user id is in backoff on new addresses, not on the owner's known one; addresses are separate", () => {
    const g = guard()
    g.succeeded('bob', '10.0.0.9')
    for (let i = 0; i < 3; i++) g.failed('bob', '10.6.6.6')
    expect(g.retryAfter('bob', '10.6.6.6')).toBeGreaterThan(0)
    expect(g.retryAfter('bob', '10.1.2.3')).toBeGreaterThan(0)
    expect(g.retryAfter('bob', '10.0.0.9')).toBe(0)
    expect(g.retryAfter('carol', '10.1.2.3')).toBe(0)
    expect(g.retryAfter('carol', '10.6.6.6')).toBeGreaterThan(0)
    g.succeeded('bob', '10.0.0.9')
    expect(g.retryAfter('bob', '10.1.2.3')).toBe(0)
  })

  test('one password check at a time, one waiting; the next is refused at once (LoginBusyError)', async () => {
    const g = guard()
    const hash = await hashPassword('right-password')
    const first = g.verify('dave', 'wrong-1', hash)
    const second = g.verify('dave', 'wrong-2', hash)
    expect(g.load()).toEqual({ active: 1, waiting: 1 })
    await expect(g.verify('dave', 'wrong-3', hash)).rejects.toBeInstanceOf(LoginBusyError)
    expect(await first).toBe(false)
    expect(await second).toBe(false)
    expect(g.load()).toEqual({ active: 0, waiting: 0 })
    expect(await g.verify('dave', 'right-password', hash)).toBe(true)
  })

  test('an unknown user costs a password check like a known one; an API-key-shaped secret one SHA-256', async () => {
    const g = guard()
    const unknown = g.verify('ghost', 'some-password', null)
    expect(g.load().active).toBe(1)
    expect(await unknown).toBe(false)
    const key = generateApiKey()
    const bot = g.verify('robot', key, hashApiKey(key))
    expect(g.load().active).toBe(0) // no scrypt slot for an API key
    expect(await bot).toBe(true)
    // an API key presented for a password user, or a password for a bot, never matches
    const userHash = await hashPassword(key)
    expect(await g.verify('erin', key, userHash)).toBe(false)
    expect(await g.verify('robot', 'not-a-key', hashApiKey(key))).toBe(false)
  })

  test('a verified secret is remembered under a keyed hash: no plaintext in memory, a changed hash verifies again', async () => {
    const g = guard()
    const secret = 'correct horse battery staple'
    const hash = await hashPassword(secret)
    expect(await g.verify('frank', secret, hash)).toBe(true)
    const cache = (g as unknown as { verified: { keys: () => Iterable<string> } }).verified
    const keys = [...cache.keys()]
    expect(keys).toHaveLength(1)
    expect(keys.join('')).not.toContain(secret)
    expect(keys.join('')).not.toContain('frank')
    expect(await g.verify('frank', secret, hash)).toBe(true)
    expect(g.load().active).toBe(0)
    const newHash = await hashPassword('a new password')
    expect(await g.verify('frank', secret, newHash)).toBe(false)
  })
})
