/**
 * JWT login: a JSON Web Token presented as the MQTT password (topics.md "Credentials"), verified
 * with jose. Off unless `auth.jwt.enabled`; passwords and API keys keep working beside it.
 *
 * - Shape: a password is taken for a JWT when it is three base64url parts whose first decodes to
 *   a JSON object (a JOSE header). Anything else goes the password / API key way.
 * - Keys: a JSON Web Key Set fetched from `jwksUrl` (jose's createRemoteJWKSet: kept for
 *   `jwksCacheMaxAgeMs`, fetched again for an unknown `kid` at most once per `jwksCooldownMs`,
 *   each fetch given up after `jwksTimeoutMs`, logins arriving meanwhile share one fetch; the
 *   answer is read as a stream and refused beyond `jwksMaxBytes` or `jwksMaxKeys`), or a
 *   static key: `publicKeyPem` (imported once per allowed algorithm at start-up, so a key that does
 *   not fit stops the start) or `secret` (HS*).
 * - Checks: the algorithm against the allow-list (before any key is looked up), the signature,
 *   `iss`, `aud`, `exp` (required) and `nbf` with `clockToleranceSec` of leeway, the size
 *   (`maxTokenBytes`), and the user id in `userClaim`: a valid user id equal to the MQTT username.
 * - Refusals: a bad token is `invalid` (CONNACK 4; a failed login for the backoff); keys that could
 *   not be fetched are `unavailable` (CONNACK 3; not the client's doing, not counted).
 * - Accounts: with `createUsers`, the first login of an unknown user id creates it (kind user, a
 *   secret hash no password matches, so only tokens log it in until an admin sets a password).
 * - The session ends when the token would no longer be accepted (`exp` + `clockToleranceSec`):
 *   one timer per connection, cleared when it closes, which ends the session the way revocation
 *   does (Sessions.disconnectWhere).
 */
import type { Client } from 'aedes'
import { createRemoteJWKSet, customFetch, errors, importSPKI, importX509, jwtVerify, type CryptoKey, type FetchImplementation, type JWTVerifyGetKey } from 'jose'
import { ConfigError, type JwtConfig } from '../config.js'
import type { Logger } from '../log.js'
import { USER_ID_PATTERN } from '../protocol/topics.js'
import { StoreConflictError, type MetadataStore, type UserRecord } from '../store/types.js'
import type { Session, Sessions } from '../broker/sessions.js'

/** The secret hash of an account created by a JWT login: verifySecret never accepts it. */
export const JWT_ONLY_SECRET_HASH = 'jwt$'

/** Why a token was refused: a bad token (CONNACK 4), or keys that could not be had (CONNACK 3). */
export type JwtRefusal = 'invalid' | 'unavailable'

export class JwtLoginError extends Error {
  constructor (readonly refusal: JwtRefusal, message: string, options?: { cause: unknown }) {
    super(message, options)
    this.name = 'JwtLoginError'
  }
}

export interface VerifiedToken {
  userId: string
  /** Epoch ms at which the session must end (exp + clockToleranceSec). */
  endsAt: number
}

export interface JwtLoginDeps {
  meta: MetadataStore
  sessions: Sessions
  logger: Logger
  now?: () => number
}

const JWT_SHAPE = /^([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/
/** setTimeout's longest delay; a later end is reached in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1
/** A JWKS that cannot be fetched is logged at most once per this long. */
const UNAVAILABLE_LOG_MS = 10_000
/** Errors of the key set that mean "this token names no key we have" (the token's fault). */
const KEY_MISS_CODES: ReadonlySet<string> = new Set(['ERR_JWKS_NO_MATCHING_KEY', 'ERR_JWKS_MULTIPLE_MATCHING_KEYS'])

/** The key set could not be fetched (down, slow, not a JWKS). */
class KeysUnavailable extends Error {}

export class JwtLogin {
  private readonly now: () => number
  private lastUnavailableLog = 0

  private constructor (
    private readonly config: Required<Pick<JwtConfig, 'issuer' | 'audience' | 'algorithms'>> & JwtConfig,
    private readonly key: JWTVerifyGetKey,
    private readonly deps: JwtLoginDeps
  ) {
    this.now = deps.now ?? Date.now
  }

  /** Builds the verifier of an enabled `auth.jwt`; a static key that does not fit its algorithms is a ConfigError. */
  static async create (config: JwtConfig, deps: JwtLoginDeps): Promise<JwtLogin> {
    const { issuer, audience, algorithms } = config
    if (!config.enabled || issuer === undefined || audience === undefined || algorithms === undefined) {
      throw new ConfigError('invalid configuration:\n  auth.jwt: issuer, audience and algorithms are required when enabled')
    }
    const full = { ...config, issuer, audience, algorithms }
    let key: JWTVerifyGetKey
    if (config.jwksUrl !== undefined) {
      const url = new URL(config.jwksUrl)
      if (url.protocol === 'http:' && !['localhost', '127.0.0.1', '[::1]'].includes(url.hostname)) {
        deps.logger.warn({ jwksUrl: config.jwksUrl }, 'auth.jwt.jwksUrl is plain http: whoever can change the answer on the way can log in as anyone; use https')
      }
      key = remoteKeys(url, config)
    } else if (config.publicKeyPem !== undefined) {
      key = await staticKeys(config.publicKeyPem, algorithms)
    } else if (config.secret !== undefined) {
      const secret = new TextEncoder().encode(config.secret)
      key = async () => secret
    } else {
      throw new ConfigError('invalid configuration:\n  auth.jwt.jwksUrl: set exactly one of jwksUrl, publicKeyPem, secret')
    }
    return new JwtLogin(full, key, deps)
  }

  /** True if the password is shaped like a JWT (three base64url parts, the first a JSON object). */
  isToken (password: string): boolean {
    const header = JWT_SHAPE.exec(password)?.[1]
    if (header === undefined) return false
    try {
      const json: unknown = JSON.parse(Buffer.from(header, 'base64url').toString('utf8'))
      return typeof json === 'object' && json !== null && !Array.isArray(json)
    } catch {
      return false
    }
  }

  /** Verifies a token presented by `username`; throws JwtLoginError. */
  async verify (token: string, username: string): Promise<VerifiedToken> {
    const { config } = this
    // the shape admits ASCII only: length is bytes
    if (token.length > config.maxTokenBytes) throw new JwtLoginError('invalid', `token larger than ${config.maxTokenBytes} bytes`)
    let payload: Record<string, unknown>
    try {
      ({ payload } = await jwtVerify(token, this.key, {
        issuer: config.issuer,
        audience: config.audience,
        algorithms: config.algorithms,
        clockTolerance: config.clockToleranceSec,
        requiredClaims: ['exp', config.userClaim],
        currentDate: new Date(this.now())
      }))
    } catch (err) {
      if (err instanceof KeysUnavailable) {
        this.logUnavailable(err.cause)
        throw new JwtLoginError('unavailable', 'the key set (JWKS) could not be fetched', { cause: err.cause })
      }
      const code = err instanceof errors.JOSEError ? err.code : 'ERR_UNKNOWN'
      throw new JwtLoginError('invalid', `token refused: ${code}: ${(err as Error).message}`, { cause: err })
    }
    const userId = payload[config.userClaim]
    if (typeof userId !== 'string' || !USER_ID_PATTERN.test(userId)) {
      throw new JwtLoginError('invalid', `the token's "${config.userClaim}" is not a user id`)
    }
    if (userId !== username) throw new JwtLoginError('invalid', `the token's "${config.userClaim}" is not the username`)
    const endsAt = (payload.exp as number) * 1000 + config.clockToleranceSec * 1000
    if (endsAt <= this.now()) throw new JwtLoginError('invalid', 'token expired')
    return { userId, endsAt }
  }

  /** The account of a verified user id; with createUsers, created on its first login. null: unknown. */
  async account (userId: string): Promise<UserRecord | null> {
    const { meta, logger } = this.deps
    const user = await meta.userGet(userId)
    if (user !== null || !this.config.createUsers) return user
    const record: UserRecord = { id: userId, kind: 'user', displayName: userId, secretHash: JWT_ONLY_SECRET_HASH, disabled: false, createdAt: this.now(), groupInvites: 'anyone' }
    try {
      await meta.userCreate(record)
    } catch (err) {
      // two first logins at once: the other one created it
      if (err instanceof StoreConflictError) return await meta.userGet(userId)
      throw err
    }
    logger.info({ user: userId }, 'user created on first JWT login')
    return record
  }

  /** Ends the session at `endsAt`; the timer goes with the connection. */
  endAt (client: Client, session: Session, endsAt: number): void {
    let timer: NodeJS.Timeout | undefined
    const arm = (): void => {
      const ms = endsAt - this.now()
      if (ms <= 0) {
        this.deps.sessions.disconnectWhere(session.userId, s => s.connId === session.connId, 'token expired', { mark: false })
        return
      }
      timer = setTimeout(arm, Math.min(ms, MAX_TIMER_MS))
      timer.unref()
    }
    client.conn.once('close', () => clearTimeout(timer))
    arm()
  }

  private logUnavailable (cause: unknown): void {
    const now = this.now()
    if (now - this.lastUnavailableLog < UNAVAILABLE_LOG_MS) return
    this.lastUnavailableLog = now
    this.deps.logger.warn({ err: cause, reason: causeChain(cause), jwksUrl: this.config.jwksUrl }, 'JWT logins refused: the key set (JWKS) could not be fetched')
  }
}

/** "fetch failed: connect ECONNREFUSED 127.0.0.1:9": an error's message and its causes'. */
function causeChain (err: unknown): string {
  const parts: string[] = []
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const message = (e as { message?: unknown }).message
    if (typeof message === 'string' && message !== '') parts.push(message)
  }
  return parts.join(': ')
}

/**
 * Keys from a JWKS URL. A token naming no key in the set is the token's fault (jose refetches
 * first, unless within the cooldown); anything else (the fetch failed, timed out, or returned no
 * JWKS) is KeysUnavailable.
 */
function remoteKeys (url: URL, config: JwtConfig): JWTVerifyGetKey {
  const jwks = createRemoteJWKSet(url, {
    timeoutDuration: config.jwksTimeoutMs,
    cooldownDuration: config.jwksCooldownMs,
    cacheMaxAge: config.jwksCacheMaxAgeMs,
    [customFetch]: boundedFetch(config.jwksMaxBytes, config.jwksMaxKeys)
  })
  return async (header, token) => {
    try {
      return await jwks(header, token)
    } catch (err) {
      if (err instanceof errors.JOSEError && KEY_MISS_CODES.has(err.code)) throw err
      throw new KeysUnavailable('JWKS unavailable', { cause: err })
    }
  }
}

/**
 * fetch for jose's key set that reads at most `maxBytes` of the answer (a Content-Length above it
 * is refused unread; the body is streamed and the connection cut at the first byte beyond) and
 * accepts at most `maxKeys` keys, so a provider answering a huge or endless body costs a bounded
 * read, not the memory of the server. What it passes on is the same JSON, re-serialized.
 */
function boundedFetch (maxBytes: number, maxKeys: number): FetchImplementation {
  return async (url, options) => {
    const response = await fetch(url, options)
    if (response.status !== 200) return response
    const declared = Number(response.headers.get('content-length') ?? NaN)
    if (declared > maxBytes) {
      await response.body?.cancel()
      throw new Error(`the JWKS answer is ${declared} bytes; at most ${maxBytes} are read (auth.jwt.jwksMaxBytes)`)
    }
    const chunks: Uint8Array[] = []
    let bytes = 0
    const reader = response.body?.getReader()
    for (let chunk = await reader?.read(); chunk !== undefined && !chunk.done; chunk = await reader?.read()) {
      bytes += chunk.value.byteLength
      if (bytes > maxBytes) {
        await reader?.cancel()
        throw new Error(`the JWKS answer is larger than ${maxBytes} bytes (auth.jwt.jwksMaxBytes); not read further`)
      }
      chunks.push(chunk.value)
    }
    let json: unknown
    try {
      json = JSON.parse(Buffer.concat(chunks).toString('utf8'))
    } catch (err) {
      throw new Error('the JWKS answer is not JSON', { cause: err })
    }
    const keys = (json as { keys?: unknown } | null)?.keys
    if (Array.isArray(keys) && keys.length > maxKeys) {
      throw new Error(`the JWKS holds ${keys.length} keys; at most ${maxKeys} are accepted (auth.jwt.jwksMaxKeys)`)
    }
    return new Response(JSON.stringify(json), { status: 200, headers: { 'content-type': 'application/json' } })
  }
}

/** A static public key, imported once per allowed algorithm (WebCrypto keys are bound to one). */
async function staticKeys (pem: string, algorithms: readonly string[]): Promise<JWTVerifyGetKey> {
  const keys = new Map<string, CryptoKey>()
  for (const alg of algorithms) {
    try {
      keys.set(alg, pem.includes('BEGIN CERTIFICATE') ? await importX509(pem, alg) : await importSPKI(pem, alg))
    } catch (err) {
      throw new ConfigError(`invalid configuration:\n  auth.jwt.publicKeyPem: not a key for ${alg}: ${(err as Error).message}`)
    }
  }
  return async (header) => {
    const key = keys.get(header.alg ?? '')
    // jose checks the algorithm against the allow-list before asking for a key
    if (key === undefined) throw new errors.JOSEAlgNotAllowed('algorithm not allowed')
    return key
  }
}
