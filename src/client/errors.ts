/** The SDK's one error type: a server error code from the closed set, or a client-side TIMEOUT / CLOSED. */
import type { ErrorCode } from '../errors.js'

/** TIMEOUT: no reply in time. CLOSED: the client was closed. AUTH: the server refused the credentials (CONNACK 4 or 5). */
export type ImClientErrorCode = ErrorCode | 'TIMEOUT' | 'CLOSED' | 'AUTH'

export class ImClientError extends Error {
  readonly code: ImClientErrorCode
  /** The operation that failed, when known. */
  readonly op?: string
  constructor (code: ImClientErrorCode, message: string, op?: string) {
    super(message)
    this.name = 'ImClientError'
    this.code = code
    this.op = op
  }
}

/** Server errors after which the same request may succeed later (send resends them with the same msgId). */
export function isTransient (code: ImClientErrorCode): boolean {
  return code === 'RATE_LIMITED' || code === 'UNAVAILABLE' || code === 'TIMEOUT'
}
