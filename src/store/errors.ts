/**
 * Recognizes "the database is not reachable right now" across the MongoDB driver, mysql2 and
 * ioredis, so that clients get UNAVAILABLE (retry later) instead of INTERNAL (a bug).
 */
const MONGO_UNAVAILABLE = new Set([
  'MongoNetworkError', 'MongoNetworkTimeoutError', 'MongoServerSelectionError', 'MongoTopologyClosedError',
  'MongoNotConnectedError', 'MongoPoolClearedError', 'MongoClientClosedError', 'MongoWriteConcernError'
])
/** ioredis: retries used up, a command lost with its connection (src/broker/upstream.ts 24), one made while it was down (broker/backends.ts). */
const REDIS_UNAVAILABLE = new Set(['MaxRetriesPerRequestError', 'RedisUnansweredError', 'RedisDownError'])
/** ioredis' message for a command on a connection closed for good (its CONNECTION_CLOSED_ERROR_MSG). */
const REDIS_CLOSED = 'Connection is closed.'
/**
 * Redis answering that it will not take this command for now: a replica, replicas missing, a failed
 * save, loading, full (noeviction), busy with a long script.
 */
const REDIS_REFUSING = /^(READONLY|NOREPLICAS|MISCONF|LOADING|MASTERDOWN|OOM|BUSY)\b/
/** ioredis: the unanswered rest of a pipeline whose connection closed mid-answer (redis-errors' AbortError). */
const REDIS_ABORTED = 'Command aborted due to connection close'
const SOCKET_CODES = new Set([
  'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'ENOTFOUND', 'EHOSTUNREACH', 'ENETUNREACH', 'EAI_AGAIN',
  'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'ER_CON_COUNT_ERROR', 'POOL_CLOSED', 'ER_SERVER_SHUTDOWN',
  'ER_LOCK_WAIT_TIMEOUT', 'ER_LOCK_DEADLOCK'
])

export function isStoreUnavailable (err: unknown): boolean {
  if (typeof err !== 'object' || err === null) return false
  const e = err as { name?: unknown, code?: unknown, fatal?: unknown, cause?: unknown, errorLabels?: unknown }
  if (typeof e.name === 'string' && (MONGO_UNAVAILABLE.has(e.name) || REDIS_UNAVAILABLE.has(e.name))) return true
  if (err instanceof Error && (err.message === REDIS_CLOSED || (e.name === 'AbortError' && err.message === REDIS_ABORTED) || (e.name === 'ReplyError' && REDIS_REFUSING.test(err.message)))) return true
  // a MULTI whose commands Redis refused: EXECABORT, the refusals in previousErrors
  const previous = (err as { previousErrors?: unknown }).previousErrors
  if (e.name === 'ReplyError' && Array.isArray(previous) && previous.some(p => p !== err && isStoreUnavailable(p))) return true
  if (typeof e.code === 'string' && SOCKET_CODES.has(e.code)) return true
  if (e.fatal === true) return true
  if (Array.isArray(e.errorLabels) && e.errorLabels.includes('RetryableWriteError')) return true
  if (e.cause !== undefined && e.cause !== err) return isStoreUnavailable(e.cause)
  // a bulk write (insertMany) that failed on the connection carries that failure here
  const response = (err as { errorResponse?: unknown }).errorResponse
  if (response instanceof Error && response !== err) return isStoreUnavailable(response)
  return false
}
