/**
 * LoginGuard on a virtual clock: backoff per user id and per address, the owner's known address,
 * the bounded line of password checks, the work of a login depending only on the secret's shape,
 * and no plaintext secret kept in memory.
 */
import { LoginBusyError, LoginGuard, addressKey } from '../../src/auth/login-guard.js'
import { generateApiKey, hashApiKey, hashPassword } from '../../src/auth/secrets.js'

const OPTIONS = { maxConcurrentHashes: 1, maxQueuedLogins: 1, loginsPerAddress: 2, failuresBeforeBackoff: 3, backoffBaseMs: 1000, backoffMaxMs: 8000 }

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

  test('a request flood refuses the user from every address, known ones too, and nobody else; cuts that come together count once', () => {
    const g = guard()
    g.succeeded('mallory', '10.0.0.5')
    g.flooded('mallory')
    g.flooded('mallory') // a second connection of the same flood
    expect(g.retryAfter('mallory', '10.0.0.5')).toBe(4000)
    expect(g.retryAfter('mallory', '10.9.9.9')).toBe(4000)
    expect(g.retryAfter('carol', '10.0.0.5')).toBe(0)
    now += 4000
    expect(g.retryAfter('mallory', '10.0.0.5')).toBe(0)
    g.flooded('mallory') // flooding again after the backoff: twice as long, up to the maximum
    expect(g.retryAfter('mallory', '10.0.0.5')).toBe(8000)
    now += 8000
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

  test('a flood of guesses fills only the open line: a user on an address they logged in from before goes first', async () => {
    const g = guard()
    const hash = await hashPassword('right-password')
    g.succeeded('owner', '10.0.0.9')
    // guesses for unknown users from many addresses: one runs, one waits, the rest are refused
    const flood = Array.from({ length: 6 }, async (_, i) => await g.verify(`x${i}`, 'guess', null, `10.9.0.${i}`))
    const outcomes = Promise.allSettled(flood)
    expect(g.load()).toEqual({ active: 1, waiting: 1 })
    // the owner on their known address is not refused and is served before the waiting guess
    const order: string[] = []
    const owner = g.verify('owner', 'right-password', hash, '10.0.0.9').then(ok => { order.push('owner'); return ok })
    void flood[1]?.then(() => order.push('guess'), () => {})
    expect(g.load()).toEqual({ active: 1, waiting: 2 })
    expect(await owner).toBe(true)
    const settled = await outcomes
    expect(settled.map(r => r.status)).toEqual(['fulfilled', 'fulfilled', 'rejected', 'rejected', 'rejected', 'rejected'])
    expect(order).toEqual(['owner', 'guess'])
    // the same owner on a new address is in the open line like anyone
    expect(g.load()).toEqual({ active: 0, waiting: 0 })
  })

  test('one address holds at most loginsPerAddress places in the open line; an IPv6 /64 counts as one address', async () => {
    const g = new LoginGuard({ ...OPTIONS, maxQueuedLogins: 10, now: () => now })
    const a = [g.verify('u1', 'guess', null, '10.0.0.1'), g.verify('u2', 'guess', null, '10.0.0.1')]
    await expect(g.verify('u3', 'guess', null, '10.0.0.1')).rejects.toBeInstanceOf(LoginBusyError)
    const b = [g.verify('u4', 'guess', null, '2001:db8:1:2::1'), g.verify('u5', 'guess', null, '2001:db8:1:2:ffff::9')]
    await expect(g.verify('u6', 'guess', null, '2001:db8:1:2:0:0:0:7')).rejects.toBeInstanceOf(LoginBusyError)
    // another /64 and another IPv4 address still get places
    const c = [g.verify('u7', 'guess', null, '2001:db8:1:3::1'), g.verify('u8', 'guess', null, '10.0.0.2')]
    expect(g.load()).toEqual({ active: 1, waiting: 5 })
    await Promise.all([...a, ...b, ...c])
    // places are given back
    expect(await g.verify('u3', 'guess', null, '10.0.0.1')).toBe(false)
  })

  test('addressKey: IPv4 as is, IPv4-mapped as IPv4, IPv6 by its /64 whatever the notation', () => {
    expect(addressKey('192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('::ffff:192.0.2.7')).toBe('192.0.2.7')
    expect(addressKey('2001:db8:1:2::1')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:0DB8:0001:0002:aaaa:bbbb:cccc:dddd')).toBe('2001:db8:1:2::/64')
    expect(addressKey('2001:db8::1')).toBe('2001:db8:0:0::/64')
    expect(addressKey('::1')).toBe('0:0:0:0::/64')
    expect(addressKey('fe80::1%eth0')).toBe('fe80:0:0:0::/64')
    expect(addressKey('unknown')).toBe('unknown')
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
