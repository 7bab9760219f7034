/**
 * JWT login over real sockets (topics.md "Credentials"): a server whose keys come from a JWKS
 * served by this test (node:http), one with a static ES256 public key, one with an HS256 secret,
 * and one whose JWKS URL answers nothing. Good tokens log in and chat beside password logins; bad
 * ones get the CONNACK codes of topics.md and count as failed logins; a new `kid` refetches the
 * set; a JWKS that hangs or is down costs a JWT login at most the timeout and nobody else
 * anything; accounts are created on first login only when configured; sessions end at `exp`.
 */
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import { SignJWT, exportJWK, exportSPKI, generateKeyPair, type CryptoKey, type JWK } from 'jose'
import { RawClient } from '../scripts/lib/raw-mqtt.js'
import { createBot, setDisabled } from '../src/admin/accounts.js'
import { JWT_ONLY_SECRET_HASH } from '../src/auth/jwt.js'
import { loadConfig } from '../src/config.js'
import type { MqimServer } from '../src/server.js'
import { addUser, connect, startServer, waitUntil, type ImClient } from './helpers/im.js'

const ISSUER = 'https://idp.test'
const AUDIENCE = 'mqim'
const JWKS_TIMEOUT_MS = 3000
const JWKS_COOLDOWN_MS = 1000
const MAX_TOKEN_BYTES = 2048

/**
 * A JWKS endpoint: serves `keys`, counts requests, and can be told to hang, to answer an endless
 * body (`endless`: 64 KiB chunks as fast as the socket takes them; `sent` counts the bytes and
 * `closed` resolves when the client cut the connection), or a set padded with `padKeys` keys
 * (`padded`, chunked, or with its Content-Length when `withLength`).
 */
class JwksServer {
  keys: JWK[] = []
  mode: 'ok' | 'hang' | 'endless' | 'padded' = 'ok'
  padKeys = 0
  withLength = true
  requests = 0
  sent = 0
  closed: Promise<number> = Promise.resolve(0)
  private constructor (private readonly server: http.Server, readonly url: string) {}

  static async start (): Promise<JwksServer> {
    const server = http.createServer()
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const jwks = new JwksServer(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}/.well-known/jwks.json`)
    server.on('request', (req, res) => {
      jwks.requests++
      if (jwks.mode === 'hang') return
      if (jwks.mode === 'endless') {
        jwks.sent = 0
        jwks.closed = new Promise(resolve => res.once('close', () => resolve(Date.now())))
        res.writeHead(200, { 'content-type': 'application/json' })
        res.write('{"keys":[')
        const chunk = Buffer.alloc(64 * 1024, ' ')
        const pump = (): void => {
          while (!res.destroyed) {
            const more = res.write(chunk)
            jwks.sent += chunk.length
            if (!more) { res.once('drain', pump); return }
          }
        }
        pump()
        return
      }
      const pad = Array.from({ length: jwks.padKeys }, (_, i) => ({ ...jwks.keys[0], kid: `pad-${i}` }))
      const body = JSON.stringify({ keys: [...jwks.keys, ...pad] })
      res.writeHead(200, { 'content-type': 'application/json', ...(jwks.withLength ? { 'content-length': Buffer.byteLength(body) } : {}) }).end(body)
    })
    return jwks
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise(resolve => this.server.close(resolve))
  }
}

interface Signer { kid: string, alg: string, privateKey: CryptoKey, publicKey: CryptoKey, jwk: JWK }

async function signer (kid: string, alg = 'RS256'): Promise<Signer> {
  const { publicKey, privateKey } = await generateKeyPair(alg, { extractable: true })
  return { kid, alg, privateKey, publicKey, jwk: { ...await exportJWK(publicKey), kid, alg, use: 'sig' } }
}

interface TokenOptions { iss?: string, aud?: string, expIn?: number | null, alg?: string, kid?: string }

/** A token for alice unless `claims` say otherwise, valid for an hour unless `expIn` says otherwise. */
async function token (key: Signer | Uint8Array, claims: Record<string, unknown> = {}, options: TokenOptions = {}): Promise<string> {
  const { iss = ISSUER, aud = AUDIENCE, expIn = 3600 } = options
  const alg = options.alg ?? (key instanceof Uint8Array ? 'HS256' : key.alg)
  const kid = options.kid ?? (key instanceof Uint8Array ? undefined : key.kid)
  const jwt = new SignJWT({ sub: 'alice', ...claims }).setProtectedHeader({ alg, ...(kid === undefined ? {} : { kid }) }).setIssuer(iss).setAudience(aud).setIssuedAt()
  if (expIn !== null) jwt.setExpirationTime(Math.floor(Date.now() / 1000) + expIn)
  return await jwt.sign(key instanceof Uint8Array ? key : key.privateKey)
}

function b64 (json: unknown): string {
  return Buffer.from(JSON.stringify(json)).toString('base64url')
}

/** The CONNACK return code of a login with `password` from `localAddress`, or 'closed' without one. */
async function loginCode (server: MqimServer, user: string, password: string, localAddress = '127.0.0.1'): Promise<number | 'closed'> {
  try {
    const { client, code } = await RawClient.login(server.ports.mqtt, user, 'dev', password, { localAddress })
    client.end()
    return code
  } catch (err) {
    if (String(err).includes('connection closed before a connack arrived')) return 'closed'
    throw err
  }
}

async function timed<T> (work: Promise<T>): Promise<{ value: T, ms: number }> {
  const started = Date.now()
  const value = await work
  return { value, ms: Date.now() - started }
}

function jwtConfig (keySource: Record<string, unknown>, more: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    enabled: true,
    issuer: ISSUER,
    audience: AUDIENCE,
    clockToleranceSec: 0,
    maxTokenBytes: MAX_TOKEN_BYTES,
    jwksTimeoutMs: JWKS_TIMEOUT_MS,
    jwksCooldownMs: JWKS_COOLDOWN_MS,
    ...keySource,
    ...more
  }
}

describe('JWT login with keys from a JWKS URL', () => {
  let jwks: JwksServer
  let server: MqimServer
  let k1: Signer
  const clients: ImClient[] = []

  beforeAll(async () => {
    jwks = await JwksServer.start()
    k1 = await signer('k1')
    jwks.keys.push(k1.jwk, (await signer('e1', 'ES256')).jwk)
    server = await startServer({
      auth: { failuresBeforeBackoff: 1000, jwt: jwtConfig({ algorithms: ['RS256', 'ES256'], jwksUrl: jwks.url }) }
    })
    for (const u of ['alice', 'bob', 'dis']) await addUser(server, u)
    await setDisabled(server.services.meta, 'dis', true)
    await createBot(server.services.meta, { id: 'robot' })
  })
  afterEach(async () => { await Promise.allSettled(clients.splice(0).map(async c => await c.end())) })
  afterAll(async () => {
    await server.stop()
    await jwks.close()
  })

  test('a good token logs in (over WebSocket) and chats with a user who logged in with a password', async () => {
    const alice = await connect(server, 'alice', 'phone', { password: await token(k1), transport: 'ws' })
    const bob = await connect(server, 'bob', 'phone')
    clients.push(alice, bob)
    const { conv } = await alice.request('direct', { user: 'bob' })
    const sent = await alice.request('send', { conv, msgId: 'm1', kind: 'text', body: 'hello from a JWT' })
    expect(sent.seq).toBe(1)
    await bob.waitFor(() => bob.messages.some(m => m.body === 'hello from a JWT'))
    // side by side: alice's password still works, and so does an ES256 key of the set
    expect(await loginCode(server, 'alice', 'password-alice')).toBe(0)
    expect(jwks.requests).toBe(1)
  })

  test('bad tokens are refused with CONNACK 4 (5 for a disabled account or a bot), and nothing breaks', async () => {
    const other = await signer('k1')
    const hs = new TextEncoder().encode('a-shared-secret-of-at-least-32-bytes!')
    const ps = await signer('k1', 'PS256')
    const good = await token(k1)
    const [head, , sig] = good.split('.') as [string, string, string]
    const now = Math.floor(Date.now() / 1000)
    const cases: Array<[string, string, string, number]> = [
      ['wrong issuer', 'alice', await token(k1, {}, { iss: 'https://evil.test' }), 4],
      ['wrong audience', 'alice', await token(k1, {}, { aud: 'other-service' }), 4],
      ['algorithm not allowed (PS256)', 'alice', await token(ps), 4],
      ['HS256 signed with nothing we hold', 'alice', await token(hs), 4],
      ['signature by another key under the same kid', 'alice', await token(other), 4],
      ['payload changed after signing', 'alice', `${head}.${b64({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: now + 3600, admin: true })}.${sig}`, 4],
      ['alg none', 'alice', `${b64({ alg: 'none' })}.${b64({ sub: 'alice', iss: ISSUER, aud: AUDIENCE, exp: now + 3600 })}.`, 4],
      ['expired', 'alice', await token(k1, {}, { expIn: -5 }), 4],
      ['not yet valid', 'alice', await token(k1, { nbf: now + 60 }), 4],
      ['no exp', 'alice', await token(k1, {}, { expIn: null }), 4],
      ['no sub', 'alice', await token(k1, { sub: undefined }), 4],
      ['sub is not a user id', 'alice', await token(k1, { sub: 'Alice' }), 4],
      ['sub is another user', 'alice', await token(k1, { sub: 'bob' }), 4],
      ['unknown kid', 'alice', await token(await signer('nobody')), 4],
      ['oversize', 'alice', await token(k1, { pad: 'x'.repeat(MAX_TOKEN_BYTES) }), 4],
      ['a JWT header, then garbage (a password)', 'alice', `${b64({ alg: 'RS256', kid: 'k1' })}.not-json.###`, 4],
      ['garbage in three parts', 'alice', `${b64({ alg: 'RS256', kid: 'k1' })}.bm90LWpzb24.c2ln`, 4],
      ['unknown user (createUsers off)', 'newbie', await token(k1, { sub: 'newbie' }), 4],
      ['disabled account', 'dis', await token(k1, { sub: 'dis' }), 5],
      ['a bot', 'robot', await token(k1, { sub: 'robot' }), 5]
    ]
    const got: Array<[string, number | 'closed']> = []
    for (const [name, user, password] of cases) got.push([name, await loginCode(server, user, password)])
    expect(got).toEqual(cases.map(([name, , , code]) => [name, code]))
    expect(await server.services.meta.userGet('newbie')).toBeNull()
    // the server is fine, and a good token still logs in
    expect(await loginCode(server, 'alice', await token(k1))).toBe(0)
  })

  test('key rotation: a token with a new kid refetches the set once; within the cooldown an unknown kid fetches nothing', async () => {
    const k2 = await signer('k2')
    jwks.keys.push(k2.jwk)
    // tokens made first: within the cooldown below nothing slow may happen
    const [withK2, withK3, withK1] = [await token(k2), await token(await signer('k3')), await token(k1)]
    await sleep(JWKS_COOLDOWN_MS + 100)
    const before = jwks.requests
    expect(await loginCode(server, 'alice', withK2)).toBe(0)
    expect(jwks.requests).toBe(before + 1)
    expect(await loginCode(server, 'alice', withK3)).toBe(4)
    expect(await loginCode(server, 'alice', withK2)).toBe(0)
    expect(await loginCode(server, 'alice', withK1)).toBe(0)
    expect(jwks.requests).toBe(before + 1)
  })

  test('a JWKS that hangs: the login that needs it gets CONNACK 3 after the timeout; other logins do not wait', async () => {
    await sleep(JWKS_COOLDOWN_MS + 100)
    jwks.mode = 'hang'
    const k4 = await signer('k4')
    jwks.keys.push(k4.jwk)
    const fetches = jwks.requests
    const stalled = timed(loginCode(server, 'alice', await token(k4)))
    await waitUntil(() => jwks.requests > fetches, 5000, 'the fetch')
    const password = await timed(loginCode(server, 'bob', 'password-bob'))
    const cachedKey = await timed(loginCode(server, 'alice', await token(k1)))
    const { value: code, ms } = await stalled
    expect({ code, password: password.value, cachedKey: cachedKey.value }).toEqual({ code: 3, password: 0, cachedKey: 0 })
    expect(ms).toBeGreaterThanOrEqual(JWKS_TIMEOUT_MS - 50)
    expect(ms).toBeLessThan(JWKS_TIMEOUT_MS + 1500)
    expect(password.ms).toBeLessThan(JWKS_TIMEOUT_MS / 2)
    expect(cachedKey.ms).toBeLessThan(JWKS_TIMEOUT_MS / 2)
    console.log(`JWKS hanging: JWT login refused after ${ms} ms (timeout ${JWKS_TIMEOUT_MS}); meanwhile a password login took ${password.ms} ms, a JWT with a cached key ${cachedKey.ms} ms`)
    // back up: the next login fetches the set again and gets in
    jwks.mode = 'ok'
    expect(await loginCode(server, 'alice', await token(k4))).toBe(0)
  })

  test('the session ends at exp', async () => {
    const exp = Math.floor(Date.now() / 1000) + 2
    const alice = await connect(server, 'alice', 'short', { password: await token(k1, { exp }, { expIn: null }) })
    clients.push(alice)
    let closedAt = 0
    alice.mqtt.stream.once('close', () => { closedAt = Date.now() })
    expect(server.internals.sessions.sessionsOf('alice').some(s => s.deviceId === 'short')).toBe(true)
    await waitUntil(() => closedAt > 0, 5000, 'the session to end')
    expect(closedAt).toBeGreaterThanOrEqual(exp * 1000 - 5)
    expect(closedAt).toBeLessThan(exp * 1000 + 1000)
    expect(server.internals.sessions.sessionsOf('alice').some(s => s.deviceId === 'short')).toBe(false)
  })
})

describe('JWT login with a JWKS that answers too much', () => {
  const MAX_BYTES = 262_144
  const MAX_KEYS = 100
  let jwks: JwksServer
  let server: MqimServer
  let k1: Signer

  beforeAll(async () => {
    jwks = await JwksServer.start()
    k1 = await signer('k1')
    jwks.keys.push(k1.jwk)
    // the documented defaults of jwksMaxBytes and jwksMaxKeys
    server = await startServer({ auth: { failuresBeforeBackoff: 1000, jwt: jwtConfig({ algorithms: ['RS256'], jwksUrl: jwks.url }) } })
    expect([server.services.config.auth.jwt?.jwksMaxBytes, server.services.config.auth.jwt?.jwksMaxKeys]).toEqual([MAX_BYTES, MAX_KEYS])
    await addUser(server, 'alice')
    await addUser(server, 'bob')
  })
  afterAll(async () => {
    await server.stop()
    await jwks.close()
  })

  test('an endless body: the JWT login gets CONNACK 3 as soon as jwksMaxBytes are read, the connection is cut; a password login meanwhile is unaffected', async () => {
    jwks.mode = 'endless'
    const started = Date.now()
    const [jwt, password] = await Promise.all([timed(loginCode(server, 'alice', await token(k1))), timed(loginCode(server, 'bob', 'password-bob'))])
    const closedAt = await jwks.closed
    console.log(`JWKS endless: JWT login refused (CONNACK ${String(jwt.value)}) after ${jwt.ms} ms, the JWKS connection cut after ${closedAt - started} ms having written ${jwks.sent} bytes (timeout ${JWKS_TIMEOUT_MS} ms); a password login meanwhile took ${password.ms} ms`)
    expect({ jwt: jwt.value, password: password.value }).toEqual({ jwt: 3, password: 0 })
    // refused for the size, not after the timeout
    expect(jwt.ms).toBeLessThan(JWKS_TIMEOUT_MS / 2)
    expect(closedAt - started).toBeLessThan(JWKS_TIMEOUT_MS / 2)
    // what was written: what was read (at most the cap) and what the socket buffers held
    expect(jwks.sent).toBeLessThan(64 * MAX_BYTES)
    expect(password.ms).toBeLessThan(JWKS_TIMEOUT_MS / 2)
  })

  test('a set larger than jwksMaxBytes (with or without Content-Length) or with more than jwksMaxKeys keys is refused (CONNACK 3), though it holds the right key; a set within both is used', async () => {
    jwks.mode = 'padded'
    const got: Record<string, number | 'closed'> = {}
    // about 1 MiB of keys, the signing key first
    jwks.padKeys = Math.ceil((4 * MAX_BYTES) / JSON.stringify(k1.jwk).length)
    jwks.withLength = true
    got.largeWithLength = await loginCode(server, 'alice', await token(k1))
    jwks.withLength = false
    got.largeChunked = await loginCode(server, 'alice', await token(k1))
    // under the byte cap, one key too many
    jwks.padKeys = MAX_KEYS
    expect(JSON.stringify({ keys: [k1.jwk, ...Array.from({ length: MAX_KEYS }, () => k1.jwk)] }).length).toBeLessThan(MAX_BYTES)
    got.tooManyKeys = await loginCode(server, 'alice', await token(k1))
    jwks.padKeys = MAX_KEYS - 1
    got.atTheLimits = await loginCode(server, 'alice', await token(k1))
    expect(got).toEqual({ largeWithLength: 3, largeChunked: 3, tooManyKeys: 3, atTheLimits: 0 })
    expect(await loginCode(server, 'bob', 'password-bob')).toBe(0)
  })

  test('config: jwksMaxBytes 1 KiB to 16 MiB, jwksMaxKeys 1 to 10,000', async () => {
    const load = (more: Record<string, unknown>): unknown => loadConfig({ env: {}, overrides: { auth: { jwt: jwtConfig({ algorithms: ['RS256'], jwksUrl: jwks.url }, more) } } })
    expect(() => load({ jwksMaxBytes: 1023 })).toThrow(/auth\.jwt\.jwksMaxBytes/)
    expect(() => load({ jwksMaxBytes: 16 * 1024 * 1024 + 1 })).toThrow(/auth\.jwt\.jwksMaxBytes/)
    expect(() => load({ jwksMaxKeys: 0 })).toThrow(/auth\.jwt\.jwksMaxKeys/)
    expect(() => load({ jwksMaxKeys: 1.5 })).toThrow(/auth\.jwt\.jwksMaxKeys/)
  })
})

describe('JWT login with a JWKS that is down', () => {
  let server: MqimServer

  beforeAll(async () => {
    // a port nothing listens on
    const closed = http.createServer()
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve))
    const port = (closed.address() as AddressInfo).port
    await new Promise(resolve => closed.close(resolve))
    server = await startServer({
      auth: { failuresBeforeBackoff: 3, backoffBaseMs: 60_000, jwt: jwtConfig({ algorithms: ['RS256'], jwksUrl: `http://127.0.0.1:${port}/jwks` }) }
    })
    await addUser(server, 'alice')
  })
  afterAll(async () => { await server.stop() })

  test('JWT logins get CONNACK 3 at once and do not count as failed logins; passwords work', async () => {
    const k1 = await signer('k1')
    for (let i = 0; i < 5; i++) {
      const { value, ms } = await timed(loginCode(server, 'alice', await token(k1), '127.0.0.30'))
      expect(value).toBe(3)
      expect(ms).toBeLessThan(JWKS_TIMEOUT_MS)
    }
    expect(await loginCode(server, 'alice', 'password-alice', '127.0.0.30')).toBe(0)
  })
})

describe('JWT login with a static ES256 public key, accounts created on first login', () => {
  let server: MqimServer
  let key: Signer

  beforeAll(async () => {
    key = await signer('any', 'ES256')
    server = await startServer({
      auth: { failuresBeforeBackoff: 1000, jwt: jwtConfig({ algorithms: ['ES256'], publicKeyPem: await exportSPKI(key.publicKey) }, { createUsers: true }) }
    })
    await addUser(server, 'bob')
    await createBot(server.services.meta, { id: 'robot' })
  })
  afterAll(async () => { await server.stop() })

  test('a good token logs in; another key, or another algorithm, does not', async () => {
    await addUser(server, 'alice')
    expect(await loginCode(server, 'alice', await token(key))).toBe(0)
    expect(await loginCode(server, 'alice', await token(await signer('any', 'ES256')))).toBe(4)
    expect(await loginCode(server, 'alice', await token(await signer('any', 'RS256')))).toBe(4)
  })

  test('the first login of an unknown user creates the account (kind user, no password); bots stay out', async () => {
    expect(await server.services.meta.userGet('newbie')).toBeNull()
    const newbie = await connect(server, 'newbie', 'phone', { password: await token(key, { sub: 'newbie' }) })
    expect(await server.services.meta.userGet('newbie')).toMatchObject({ id: 'newbie', kind: 'user', disabled: false, secretHash: JWT_ONLY_SECRET_HASH })
    // a new account can chat at once
    const { conv } = await newbie.request('direct', { user: 'bob' })
    expect((await newbie.request('send', { conv, msgId: 'hi', kind: 'text', body: 'hi' })).seq).toBe(1)
    await newbie.end()
    // no password logs it in; its next token does (no second creation)
    expect(await loginCode(server, 'newbie', 'newbie')).toBe(4)
    expect(await loginCode(server, 'newbie', 'jwt$')).toBe(4)
    expect(await loginCode(server, 'newbie', await token(key, { sub: 'newbie' }))).toBe(0)
    // two first logins at once: both get in, one account
    const both = await Promise.all([1, 2].map(async () => await loginCode(server, 'twin', await token(key, { sub: 'twin' }))))
    expect(both).toEqual([0, 0])
    expect(await loginCode(server, 'robot', await token(key, { sub: 'robot' }))).toBe(5)
  })
})

describe('JWT login with an HS256 secret', () => {
  const secret = new TextEncoder().encode('another-shared-secret-of-32-bytes-or-more')
  let server: MqimServer

  beforeAll(async () => {
    server = await startServer({
      auth: { failuresBeforeBackoff: 3, backoffBaseMs: 60_000, backoffMaxMs: 60_000, tarpitMs: 200, jwt: jwtConfig({ algorithms: ['HS256'], secret: new TextDecoder().decode(secret) }) }
    })
    for (const u of ['alice', 'carol', 'dave']) await addUser(server, u)
  })
  afterAll(async () => { await server.stop() })

  test('a good token logs in; a token signed with another secret, or RS256, does not', async () => {
    expect(await loginCode(server, 'alice', await token(secret), '127.0.0.40')).toBe(0)
    expect(await loginCode(server, 'alice', await token(new TextEncoder().encode('x'.repeat(40))), '127.0.0.40')).toBe(4)
    expect(await loginCode(server, 'alice', await token(await signer('k1')), '127.0.0.40')).toBe(4)
  })

  test('failed JWT logins count toward the login backoff like wrong passwords', async () => {
    const forged = await token(new TextEncoder().encode('y'.repeat(40)), { sub: 'carol' })
    for (let i = 0; i < 3; i++) expect(await loginCode(server, 'carol', forged, '127.0.0.50')).toBe(4)
    // the address is in backoff: held and closed without a CONNACK, even with a good token
    expect(await loginCode(server, 'carol', await token(secret, { sub: 'carol' }), '127.0.0.50')).toBe('closed')
    // carol's id is in backoff elsewhere too (she never logged in from there); dave is not
    expect(await loginCode(server, 'carol', await token(secret, { sub: 'carol' }), '127.0.0.51')).toBe(3)
    expect(await loginCode(server, 'dave', await token(secret, { sub: 'dave' }), '127.0.0.51')).toBe(0)
  })
})
