/**
 * Signed URLs of the local object store: the query `p` is base64url JSON of what the URL allows
 * (key, method, expiry and for a PUT the size, type and metadata), `s` its HMAC-SHA256 under the
 * store's secret. Anything changed in `p` (or a URL signed with another secret) fails the check;
 * so does a URL past its expiry.
 */
import { createHmac, timingSafeEqual } from 'node:crypto'

export interface SignedGrant {
  /** The object key. */
  k: string
  m: 'PUT' | 'GET'
  /** Expiry, epoch ms. */
  e: number
  /** PUT: exact size; GET: unused. */
  z?: number
  /** Content type (PUT: required; GET: the one answered). */
  t: string
  /** PUT: metadata stored with the object. */
  meta?: Record<string, string>
  /** PUT: hex SHA-256 the bytes must have. */
  h?: string
  /** GET: the file name and disposition answered. */
  n?: string
  d?: 'inline' | 'attachment'
}

export type GrantCheck = { ok: true, grant: SignedGrant } | { ok: false, reason: 'malformed' | 'bad signature' | 'expired' }

/** Longest `p` accepted (a grant with metadata fits in far less). */
const MAX_GRANT_CHARS = 4096

export class UrlSigner {
  constructor (private readonly secret: Buffer) {
    if (secret.length < 32) throw new Error('the URL signing secret must have at least 32 bytes')
  }

  /** The query string (without "?") for a grant. */
  sign (grant: SignedGrant): string {
    const p = Buffer.from(JSON.stringify(grant)).toString('base64url')
    return `p=${p}&s=${this.mac(p)}`
  }

  check (p: unknown, s: unknown, now: number): GrantCheck {
    if (typeof p !== 'string' || typeof s !== 'string' || p.length > MAX_GRANT_CHARS || !/^[0-9a-f]{64}$/.test(s)) return { ok: false, reason: 'malformed' }
    const want = Buffer.from(this.mac(p), 'hex')
    if (!timingSafeEqual(want, Buffer.from(s, 'hex'))) return { ok: false, reason: 'bad signature' }
    let grant: SignedGrant
    try {
      grant = JSON.parse(Buffer.from(p, 'base64url').toString('utf8')) as SignedGrant
    } catch {
      return { ok: false, reason: 'malformed' }
    }
    if (typeof grant !== 'object' || grant === null || typeof grant.k !== 'string' || typeof grant.e !== 'number' || typeof grant.t !== 'string') return { ok: false, reason: 'malformed' }
    if (grant.e < now) return { ok: false, reason: 'expired' }
    return { ok: true, grant }
  }

  private mac (p: string): string {
    return createHmac('sha256', this.secret).update(p).digest('hex')
  }
}
