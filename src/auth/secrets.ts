/**
 * Secrets at rest. Passwords: scrypt (node:crypto) with a random salt, encoded as
 * `scrypt$N$r$p$salt$hash` (base64url). Bot API keys are 256-bit random tokens; they are stored
 * as `sha256$hex` (a slow hash adds nothing for a random 256-bit secret).
 */
import { randomBytes, scrypt as scryptCb, createHash, timingSafeEqual, type ScryptOptions } from 'node:crypto'

const SCRYPT = { N: 16384, r: 8, p: 1, keyLen: 32 }

function scrypt (password: string, salt: Buffer, keyLen: number, options: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scryptCb(password, salt, keyLen, options, (err, key) => { if (err) reject(err); else resolve(key) })
  })
}

export async function hashPassword (password: string): Promise<string> {
  const salt = randomBytes(16)
  const key = await scrypt(password, salt, SCRYPT.keyLen, { N: SCRYPT.N, r: SCRYPT.r, p: SCRYPT.p, maxmem: 64 * 1024 * 1024 })
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), key.toString('base64url')].join('$')
}

export function generatePassword (): string {
  return randomBytes(12).toString('base64url')
}

/** Every API key starts with this; passwords may not (a login's cost depends only on this shape). */
export const API_KEY_PREFIX = 'mqk_'

export function generateApiKey (): string {
  return API_KEY_PREFIX + randomBytes(32).toString('base64url')
}

export function hashApiKey (key: string): string {
  return 'sha256$' + createHash('sha256').update(key, 'utf8').digest('hex')
}

/** Constant-time check of a password or API key against a stored hash. Unknown formats never verify. */
export async function verifySecret (secret: string, stored: string): Promise<boolean> {
  const parts = stored.split('$')
  if (parts[0] === 'sha256' && parts.length === 2) {
    const [, hex = ''] = parts
    const want = Buffer.from(hex, 'hex')
    const got = createHash('sha256').update(secret, 'utf8').digest()
    return want.length === got.length && timingSafeEqual(want, got)
  }
  if (parts[0] === 'scrypt' && parts.length === 6) {
    const [, n, r, p, salt = '', hash = ''] = parts
    const want = Buffer.from(hash, 'base64url')
    const got = await scrypt(secret, Buffer.from(salt, 'base64url'), want.length, { N: Number(n), r: Number(r), p: Number(p), maxmem: 64 * 1024 * 1024 })
    return want.length === got.length && timingSafeEqual(want, got)
  }
  return false
}
