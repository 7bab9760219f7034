/**
 * JWT login without sockets: the `auth.jwt` config rules (each bad value names its field), which
 * passwords are taken for tokens, and the token checks against an injected clock.
 */
import { generateKeyPairSync } from 'node:crypto'
import { SignJWT, generateKeyPair, type CryptoKey } from 'jose'
import { ConfigError, loadConfig, type JwtConfig } from '../../src/config.js'
import { JwtLogin, JwtLoginError } from '../../src/auth/jwt.js'
import { Sessions } from '../../src/broker/sessions.js'
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import { createLogger } from '../../src/log.js'

const SECRET = 'a-shared-secret-of-at-least-32-bytes!'
const BASE = { enabled: true, issuer: 'https://idp.test', audience: 'mqim', algorithms: ['HS256'], secret: SECRET }

function jwtConfig (jwt: Record<string, unknown>): JwtConfig {
  const config = loadConfig({ env: {}, overrides: { auth: { jwt } } }).auth.jwt
  if (config === undefined) throw new Error('no auth.jwt')
  return config
}

/** loadConfig must fail with a ConfigError naming `field`. */
function refused (jwt: Record<string, unknown>, field: string): string {
  let caught: unknown
  try {
    jwtConfig(jwt)
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(ConfigError)
  expect((caught as Error).message).toContain(field)
  return (caught as Error).message
}

function pem (type: 'rsa' | 'ec' | 'ed25519', options: Record<string, unknown> = {}): string {
  const { publicKey } = generateKeyPairSync(type as 'rsa', { modulusLength: 2048, ...options })
  return publicKey.export({ type: 'spki', format: 'pem' }).toString()
}

describe('auth.jwt configuration', () => {
  test('off by default; the defaults are documented in config/default.json', () => {
    expect(loadConfig({ env: {} }).auth.jwt).toEqual({
      enabled: false, clockToleranceSec: 30, userClaim: 'sub', createUsers: false, maxTokenBytes: 4096, jwksTimeoutMs: 2000, jwksCooldownMs: 30000, jwksCacheMaxAgeMs: 600000, jwksMaxBytes: 262144, jwksMaxKeys: 100
    })
  })

  test('a valid configuration of each key source', () => {
    expect(jwtConfig(BASE).secret).toBe(SECRET)
    expect(jwtConfig({ ...BASE, secret: undefined, algorithms: ['RS256', 'PS256'], jwksUrl: 'https://idp.test/.well-known/jwks.json' }).jwksUrl).toContain('jwks.json')
    expect(jwtConfig({ ...BASE, secret: undefined, algorithms: ['ES256'], publicKeyPem: pem('ec', { namedCurve: 'P-256' }) }).algorithms).toEqual(['ES256'])
  })

  test('each bad value stops start-up naming its field', () => {
    expect(refused({ ...BASE, algorithms: ['none'] }, 'auth.jwt.algorithms.0')).toContain('"none" is never accepted')
    expect(refused({ ...BASE, algorithms: ['HS256'], secret: undefined, jwksUrl: 'https://idp.test/jwks' }, 'auth.jwt.algorithms')).toContain('need a shared secret')
    expect(refused({ ...BASE, secret: 'short' }, 'auth.jwt.secret')).toContain('at least 32 bytes')
    expect(refused({ ...BASE, algorithms: ['HS512'], secret: SECRET }, 'auth.jwt.secret')).toContain('at least 64 bytes')
    refused({ ...BASE, algorithms: ['HS256', 'RS256'] }, 'auth.jwt.algorithms')
    refused({ ...BASE, issuer: undefined }, 'auth.jwt.issuer')
    refused({ ...BASE, audience: undefined }, 'auth.jwt.audience')
    refused({ ...BASE, algorithms: [] }, 'auth.jwt.algorithms')
    refused({ ...BASE, secret: undefined }, 'auth.jwt.jwksUrl')
    refused({ ...BASE, jwksUrl: 'https://idp.test/jwks' }, 'auth.jwt.jwksUrl')
    refused({ ...BASE, secret: undefined, algorithms: ['RS256'], jwksUrl: 'ftp://idp.test/jwks' }, 'auth.jwt.jwksUrl')
    refused({ ...BASE, secret: undefined, algorithms: ['RS256'], publicKeyPem: 'not a pem' }, 'auth.jwt.publicKeyPem')
    expect(refused({ ...BASE, secret: undefined, algorithms: ['ES256'], publicKeyPem: pem('rsa') }, 'auth.jwt.publicKeyPem')).toContain('cannot verify ES256')
    refused({ ...BASE, secret: undefined, algorithms: ['ES384'], publicKeyPem: pem('ec', { namedCurve: 'P-256' }) }, 'auth.jwt.publicKeyPem')
    refused({ ...BASE, secret: undefined, algorithms: ['RS256'], publicKeyPem: pem('rsa', { modulusLength: 1024 }) }, 'auth.jwt.publicKeyPem')
    refused({ ...BASE, clockToleranceSec: -1 }, 'auth.jwt.clockToleranceSec')
    refused({ ...BASE, maxTokenBytes: 10 }, 'auth.jwt.maxTokenBytes')
    refused({ ...BASE, unknownKey: 1 }, 'auth.jwt')
  })
})

describe('JwtLogin', () => {
  const logger = createLogger('silent')
  const now = Date.UTC(2030, 0, 1)
  const key = new TextEncoder().encode(SECRET)
  let login: JwtLogin

  beforeAll(async () => {
    const sessions = new Sessions({ outboundBufferBytes: 1 << 22, drainTimeoutMs: 1000, replyBytes: 1 << 20 }, logger)
    login = await JwtLogin.create(jwtConfig({ ...BASE, clockToleranceSec: 5, maxTokenBytes: 512 }), { meta: new MemoryMetadataStore(), sessions, logger, now: () => now })
  })

  async function token (claims: Record<string, unknown>, exp = now / 1000 + 60): Promise<string> {
    return await new SignJWT({ sub: 'alice', ...claims }).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://idp.test').setAudience('mqim').setExpirationTime(Math.floor(exp)).sign(key)
  }

  async function refusal (t: string, username = 'alice'): Promise<string> {
    const err = await login.verify(t, username).then(() => null, (e: unknown) => e)
    expect(err).toBeInstanceOf(JwtLoginError)
    expect((err as JwtLoginError).refusal).toBe('invalid')
    return (err as Error).message
  }

  test('which passwords are tokens: three base64url parts, the first a JSON object', async () => {
    expect(login.isToken(await token({}))).toBe(true)
    expect(login.isToken('eyJhbGciOiJub25lIn0.eyJzdWIiOiJhbGljZSJ9.')).toBe(true)
    for (const password of ['password-alice', 'my.pass.word', 'mqk_abc.def.ghi', 'e30.e30', 'WzFd.e30.e30', 'e30.e30.e30.e30', 'e30..x', ' e30.e30.x']) {
      expect([password, login.isToken(password)]).toEqual([password, false])
    }
  })

  test('a good token: the user id, and the end of the session at exp plus the tolerance', async () => {
    const exp = Math.floor(now / 1000) + 60
    expect(await login.verify(await token({}, exp), 'alice')).toEqual({ userId: 'alice', endsAt: exp * 1000 + 5000 })
  })

  test('exp is required and checked with the tolerance; so is nbf', async () => {
    const exp = Math.floor(now / 1000) - 3
    // 3 s past exp is within the 5 s tolerance, and the session ends 2 s from now
    expect((await login.verify(await token({}, exp), 'alice')).endsAt - now).toBe(2000)
    expect(await refusal(await token({}, now / 1000 - 6))).toContain('ERR_JWT_EXPIRED')
    const noExp = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://idp.test').setAudience('mqim').sign(key)
    expect(await refusal(noExp)).toContain('"exp"')
    expect(await refusal(await token({ nbf: Math.floor(now / 1000) + 10 }))).toContain('nbf')
    expect((await login.verify(await token({ nbf: Math.floor(now / 1000) + 4 }), 'alice')).userId).toBe('alice')
  })

  test('the user id: present, a valid id, equal to the username', async () => {
    expect(await refusal(await token({ sub: undefined }))).toContain('"sub"')
    expect(await refusal(await token({ sub: 'Alice!' }))).toContain('not a user id')
    expect(await refusal(await token({ sub: 'bob' }))).toContain('not the username')
  })

  test('size, issuer, audience, algorithm', async () => {
    expect(await refusal(await token({ pad: 'x'.repeat(600) }))).toContain('larger than 512 bytes')
    expect(await refusal(await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'HS256' }).setIssuer('https://other.test').setAudience('mqim').setExpirationTime('1h').sign(key))).toContain('iss')
    const { privateKey } = await generateKeyPair('RS256') as { privateKey: CryptoKey }
    expect(await refusal(await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg: 'RS256' }).setIssuer('https://idp.test').setAudience('mqim').setExpirationTime('1h').sign(privateKey))).toContain('ERR_JOSE_ALG_NOT_ALLOWED')
  })

  test('a static key that fits its algorithms is imported once per algorithm', async () => {
    // a node:crypto key signs with any RSA algorithm
    const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 })
    const sessions = new Sessions({ outboundBufferBytes: 1 << 22, drainTimeoutMs: 1000, replyBytes: 1 << 20 }, logger)
    const rsa = await JwtLogin.create(jwtConfig({ ...BASE, secret: undefined, algorithms: ['RS256', 'PS256'], publicKeyPem: publicKey.export({ type: 'spki', format: 'pem' }).toString() }), { meta: new MemoryMetadataStore(), sessions, logger })
    for (const alg of ['RS256', 'PS256']) {
      const t = await new SignJWT({ sub: 'alice' }).setProtectedHeader({ alg }).setIssuer('https://idp.test').setAudience('mqim').setExpirationTime('1h').sign(privateKey)
      expect((await rsa.verify(t, 'alice')).userId).toBe('alice')
    }
  })
})
