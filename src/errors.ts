/**
 * The closed set of error codes a client can see, mapped to wire replies in one place.
 * Documented in topics.md ("Error codes"). Logs carry the cause; clients get {code, message}.
 */
export const ERROR_CODES = {
  BAD_JSON: 'payload is not valid UTF-8 JSON',
  BAD_REQUEST: 'payload does not match the schema of this operation',
  TOO_LARGE: 'payload exceeds the configured size limit',
  UNKNOWN_OP: 'no such operation topic',
  NOT_MEMBER: 'you are not a member of this conversation (or it does not exist)',
  FORBIDDEN: 'your role does not allow this operation',
  NOT_FOUND: 'no such user, conversation or file',
  CONFLICT: 'the operation conflicts with the current state',
  RATE_LIMITED: 'too many requests; slow down and retry',
  REFUSED: "a user's settings do not allow this",
  BLOCKED: 'this user has blocked you (or you have blocked them)',
  NOT_EDITABLE: 'this message cannot be changed that way (not yours, too old, deleted, or not a message)',
  LIMIT_REACHED: 'a limit of this account was reached',
  UNSUPPORTED_TYPE: 'this type of file is not allowed here',
  UNAVAILABLE: 'a storage backend is unavailable; retry later with the same ids',
  INTERNAL: 'unexpected server error'
} as const

export type ErrorCode = keyof typeof ERROR_CODES

export class ImError extends Error {
  readonly code: ErrorCode
  constructor (code: ErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? ERROR_CODES[code], options)
    this.name = 'ImError'
    this.code = code
  }
}

/** Maps any thrown value to the wire error. Unknown errors become INTERNAL without leaking details. */
export function toWireError (err: unknown): { code: ErrorCode, message: string } {
  if (err instanceof ImError) return { code: err.code, message: err.message }
  return { code: 'INTERNAL', message: ERROR_CODES.INTERNAL }
}
