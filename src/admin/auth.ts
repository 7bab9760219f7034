/**
 * Who may call the admin HTTP API, and with which scopes:
 *  - the token the server writes to <dataDir>/admin-token at start-up: every scope, from loopback
 *    clients only (the `npm run admin` tool on the same host);
 *  - the tokens of config `admin.tokens`: their scopes, from any address. The config holds only
 *    their SHA-256 hashes; a presented token is hashed and compared with each (timingSafeEqual).
 *
 * A request without a bearer token is answered 401; an unknown token, or the loopback token from
 * elsewhere, 403; a known token without the route's scope, 403 naming the scope.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto'
import { ADMIN_SCOPES, type AdminScope, type Config } from '../config.js'
import { ImError } from '../errors.js'

/** Addresses of loopback clients (the admin API's own token and /metrics trust them). */
export const LOOPBACK: ReadonlySet<string> = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1'])

/** Who is calling: the token's name (`loopback` for the token file) and what it may do. */
export interface Principal {
  name: string
  scopes: ReadonlySet<AdminScope>
}

/** Why a request is refused: no credentials (401), or credentials that are not enough (403). */
export class AdminAuthError extends ImError {
  constructor (readonly status: 401 | 403, message: string, readonly challenge: string) {
    super('FORBIDDEN', message)
  }
}

/** Tokens from config start with this (easy to spot in a leak scan); any string is accepted though. */
export const ADMIN_TOKEN_PREFIX = 'mqa_'

/** A new token for `admin.tokens`: the secret to give the service, and the hash for the config. */
export function newAdminToken (): { token: string, tokenSha256: string } {
  const token = ADMIN_TOKEN_PREFIX + randomBytes(32).toString('base64url')
  return { token, tokenSha256: sha256(token).toString('hex') }
}

function sha256 (s: string): Buffer {
  return createHash('sha256').update(s, 'utf8').digest()
}

const BEARER = /^Bearer ([\x21-\x7e]{1,1024})$/

export class AdminAuth {
  private readonly loopbackHash: Buffer
  private readonly tokens: ReadonlyArray<{ hash: Buffer, principal: Principal }>

  constructor (loopbackToken: string, tokens: Config['admin']['tokens']) {
    this.loopbackHash = sha256(loopbackToken)
    this.tokens = tokens.map(t => ({ hash: Buffer.from(t.tokenSha256, 'hex'), principal: { name: t.name, scopes: new Set(t.scopes) } }))
  }

  /** Every caller authorize() may answer: one per token of admin.tokens, and the loopback token's. */
  get principals (): Principal[] {
    return [...this.tokens.map(t => t.principal), LOOPBACK_PRINCIPAL]
  }

  /** The caller, or AdminAuthError. `scopes` empty: any valid token will do. */
  authorize (authorization: string | undefined, remoteAddress: string | undefined, scopes: readonly AdminScope[]): Principal {
    const principal = this.authenticate(authorization, remoteAddress)
    const missing = scopes.find(s => !principal.scopes.has(s))
    if (missing !== undefined) {
      throw new AdminAuthError(403, `admin token "${principal.name}" lacks the scope ${missing}`, `Bearer realm="mqim-admin", error="insufficient_scope", scope="${scopes.join(' ')}"`)
    }
    return principal
  }

  private authenticate (authorization: string | undefined, remoteAddress: string | undefined): Principal {
    if (authorization === undefined || authorization === '') {
      throw new AdminAuthError(401, 'admin API: send Authorization: Bearer <token> (the token in <dataDir>/admin-token from loopback, or one of admin.tokens)', 'Bearer realm="mqim-admin"')
    }
    const token = BEARER.exec(authorization)?.[1]
    const got = sha256(token ?? '')
    // every hash is compared, so the time taken does not tell which one matched
    let found: Principal | null = null
    for (const t of this.tokens) if (timingSafeEqual(t.hash, got) && token !== undefined) found = t.principal
    if (found !== null) return found
    if (token !== undefined && timingSafeEqual(this.loopbackHash, got)) {
      if (LOOPBACK.has(remoteAddress ?? '')) return LOOPBACK_PRINCIPAL
      throw new AdminAuthError(403, 'admin API: the token from <dataDir>/admin-token works from loopback only; other hosts use a token of admin.tokens', 'Bearer realm="mqim-admin", error="invalid_token"')
    }
    throw new AdminAuthError(403, 'admin API: unknown token (the token from <dataDir>/admin-token from loopback, or one of admin.tokens)', 'Bearer realm="mqim-admin", error="invalid_token"')
  }
}

const LOOPBACK_PRINCIPAL: Principal = { name: 'loopback', scopes: new Set(ADMIN_SCOPES) }
