/**
 * What the server must answer to one publish, from topics.md alone ("Topics", "Requests and
 * replies", "Error codes", "Limits"), computed on the bytes actually sent:
 *
 * - a publish MQTT itself forbids (empty topic, wildcards, more than Aedes' 100 topic levels) or
 *   a packet over limits.maxPacketBytes closes the connection: no reply;
 * - a topic outside im/req/: FORBIDDEN (im/… and $…) or UNKNOWN_OP, with id null and op = topic;
 * - im/req/<op>: the faults of the payload, in the documented order "size limit → JSON (UTF-8)
 *   → id → operation name → schema" (the nesting limit counts as part of JSON). A payload with
 *   faults must be refused with the code of one of them; the documented first is expected, any
 *   other is a precedence deviation (reported, not a failure). A payload without faults reaches
 *   the operation, which may answer anything documented but never INTERNAL.
 *
 * The schema check uses the zod schemas of src/protocol/schemas.ts, the documented single source
 * of truth for request shapes.
 */
import { ERROR_CODES, type ErrorCode } from '../../src/errors.js'
import { REQUESTS, isOpName, type Reply } from '../../src/protocol/schemas.js'

export const REQUEST_PREFIX = 'im/req/'
/** Aedes' maxTopicLevels (its default; mqim does not change it). */
export const MAX_TOPIC_LEVELS = 100
/**
 * Requests that run again when redelivered, never answered from the reply cache (topics.md, "A
 * request comes again"): `send` and the changes (idempotent by msgId), `read` (it only moves the
 * cursor forward; its reply is the cursor as it is now), and the requests that only read or have no
 * lasting effect.
 */
export const UNCACHED_OPS: ReadonlySet<string> = new Set(['history', 'list', 'members', 'receipts', 'presence', 'send', 'edit', 'delete', 'react', 'read', 'typing', 'blocks', 'push-targets', 'channel-info', 'invites', 'file-url'])

/**
 * How many requests that change something the server keeps replies for, for redeliveries
 * (topics.md, "Limits": "the last 40,000 such requests per node"; one memory for all clients).
 */
export const REDELIVERY_MEMORY = 40_000

/**
 * What the oracle can know of the server's memory of replies: the server keeps the last
 * REDELIVERY_MEMORY replies of every client together, the least recently used going first, so a
 * reply is surely still there while fewer publishes than that, of any client, have been made
 * since it was stored or last answered a redelivery (each publish stores at most one reply).
 * Past that, the server may answer a redelivery from memory or run it again: both are right.
 * The fuzz run counts every publish its streams make here, before making it.
 */
export class ReplyMemory {
  private published = 0

  /**
   * `slack`: publishes the count may miss or see late (those of other lanes counted before a reply's
   * stamp but reaching the server after it; a mutated packet that becomes two publishes; a
   * client's resend after a reconnect): a reply is sure only while `capacity - slack` are made.
   */
  constructor (readonly capacity = REDELIVERY_MEMORY, readonly slack = Math.min(2000, Math.floor(capacity / 10))) {}

  /** `n` publishes are about to be made (any topic, any client of the run). */
  notePublishes (n: number): void { this.published += n }

  /** The point from which a reply stored (or read back) now counts. */
  now (): number { return this.published }

  /** Whether a reply stored at `stamp` is surely still in the server's memory. */
  sure (stamp: number): boolean { return this.published - stamp < this.capacity - this.slack }
}

export interface OracleLimits {
  maxPayloadBytes: number
  maxPacketBytes: number
  maxJsonDepth: number
}

export type Expectation =
  | { kind: 'close', why: string }
  | {
    kind: 'reply'
    /** A publish to im/req/ (a request), rather than to a topic outside it. */
    request: boolean
    op: string
    id: string | null
    /** Faults of the payload, grouped by documented stage (first stage first); empty: none. */
    stages: ErrorCode[][]
  }

const UTF8 = new TextDecoder('utf-8', { fatal: true })

/** Deepest nesting of [ and { outside strings, counted on the text (so unparsable text counts too). */
export function depthOf (text: string): number {
  let depth = 0
  let max = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]
    if (inString) {
      if (c === '\\') i++
      else if (c === '"') inString = false
    } else if (c === '"') inString = true
    else if (c === '[' || c === '{') max = Math.max(max, ++depth)
    else if (c === ']' || c === '}') depth--
  }
  return max
}

/** The reply's `id`: the payload's own `id` when it is a string of 1-64 characters. */
function idOf (value: unknown): string | null {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return null
  const id = (value as Record<string, unknown>).id
  return typeof id === 'string' && id.length >= 1 && id.length <= 64 ? id : null
}

/**
 * The id under which a redelivered (DUP) request finds an earlier reply: the server reads it
 * leniently (replacement characters for bad UTF-8, any depth), as src/gateway/hooks.ts does.
 */
export function redeliveryId (payload: Buffer): string | null {
  if (payload.length > 1024 * 1024) return null
  try {
    const value: unknown = JSON.parse(payload.toString('utf8'))
    const id = typeof value === 'object' && value !== null ? (value as Record<string, unknown>).id : undefined
    return typeof id === 'string' && id.length > 0 && id.length <= 64 ? id : null
  } catch {
    return null
  }
}

function topicViolation (topic: string): string | null {
  if (topic.length === 0) return 'empty topic'
  if (topic.includes('+') || topic.includes('#')) return 'wildcard in a PUBLISH topic'
  if (topic.split('/').length > MAX_TOPIC_LEVELS) return `more than ${MAX_TOPIC_LEVELS} topic levels`
  return null
}

/**
 * The topic as the server reads it: a client writes topics as UTF-8, so a lone surrogate in the
 * string the fuzzer chose arrives as U+FFFD.
 */
export function wireTopic (topic: string): string {
  return Buffer.from(topic, 'utf8').toString('utf8')
}

export function expectationOf (sentTopic: string, payload: Buffer, qos: number, limits: OracleLimits): Expectation {
  const topic = wireTopic(sentTopic)
  const violation = topicViolation(topic)
  if (violation !== null) return { kind: 'close', why: violation }
  const remainingLength = 2 + Buffer.byteLength(topic) + (qos > 0 ? 2 : 0) + payload.length
  if (remainingLength > limits.maxPacketBytes) return { kind: 'close', why: `packet of ${remainingLength} bytes over maxPacketBytes ${limits.maxPacketBytes}` }
  if (!topic.startsWith(REQUEST_PREFIX)) {
    return { kind: 'reply', request: false, op: topic, id: null, stages: [[topic.startsWith('im/') || topic.startsWith('$') ? 'FORBIDDEN' : 'UNKNOWN_OP']] }
  }
  const op = topic.slice(REQUEST_PREFIX.length)
  const stages: ErrorCode[][] = []
  if (payload.length > limits.maxPayloadBytes) stages.push(['TOO_LARGE'])
  let text: string | null = null
  try { text = UTF8.decode(payload) } catch { text = null }
  let parsed: { value: unknown } | null = null
  let id: string | null = null
  if (text === null) {
    stages.push(['BAD_JSON'])
  } else {
    const tooDeep = depthOf(text) > limits.maxJsonDepth
    try { parsed = { value: JSON.parse(text) } } catch { parsed = null }
    const json: ErrorCode[] = []
    if (tooDeep) json.push('BAD_REQUEST')
    if (parsed === null) json.push('BAD_JSON')
    if (json.length > 0) stages.push(json)
    if (!tooDeep && parsed !== null) id = idOf(parsed.value)
    if (tooDeep) parsed = null
  }
  if (!isOpName(op)) stages.push(['UNKNOWN_OP'])
  else if (parsed !== null && !REQUESTS[op].safeParse(parsed.value).success) stages.push(['BAD_REQUEST'])
  return { kind: 'reply', request: true, op, id, stages }
}

/** Codes only the stages before an operation give: an operation's own answer is never one of them. */
const PRE_OPERATION: ReadonlySet<string> = new Set(['BAD_JSON', 'TOO_LARGE', 'UNKNOWN_OP'])
/** Except these, per operation: upload answers TOO_LARGE for a file over files.maxFileBytes (topics.md, "upload"). */
const OWN_ANSWERS: Partial<Record<string, ReadonlySet<string>>> = { upload: new Set(['TOO_LARGE']) }

export type Verdict =
  | { ok: true, deviation: string | null }
  | { ok: false, problem: string }

/** Checks the form of a reply: {id, op, ok, result} or {id, op, ok, error: {code, message}}. */
export function replyShapeProblem (reply: unknown): string | null {
  if (typeof reply !== 'object' || reply === null || Array.isArray(reply)) return 'the reply is not a JSON object'
  const r = reply as Record<string, unknown>
  const keys = Object.keys(r).sort().join(',')
  if (!(typeof r.id === 'string' || r.id === null)) return 'reply.id is neither a string nor null'
  if (typeof r.op !== 'string') return 'reply.op is not a string'
  if (r.ok === true) {
    if (keys !== 'id,ok,op,result') return `a reply with ok:true has the keys ${keys}`
    if (typeof r.result !== 'object' || r.result === null) return 'reply.result is not an object'
    return null
  }
  if (r.ok !== false) return 'reply.ok is not a boolean'
  if (keys !== 'error,id,ok,op') return `a reply with ok:false has the keys ${keys}`
  const e = r.error as Record<string, unknown> | null
  if (typeof e !== 'object' || e === null || Object.keys(e).sort().join(',') !== 'code,message') return 'reply.error is not {code, message}'
  if (typeof e.code !== 'string' || !Object.prototype.hasOwnProperty.call(ERROR_CODES, e.code)) return `undocumented error code ${JSON.stringify(e.code)}`
  if (typeof e.message !== 'string') return 'reply.error.message is not a string'
  return null
}

/** Judges a reply against the expectation (which must be of kind 'reply'). */
export function judge (exp: Extract<Expectation, { kind: 'reply' }>, reply: Reply): Verdict {
  const shape = replyShapeProblem(reply)
  if (shape !== null) return { ok: false, problem: shape }
  if (reply.op !== exp.op) return { ok: false, problem: `reply.op is ${JSON.stringify(reply.op)}, expected ${JSON.stringify(exp.op)}` }
  const code = reply.ok ? null : reply.error.code
  // the rate limit comes first, before the id is read strictly (the fuzz config lifts the limit)
  if (code === 'RATE_LIMITED' && exp.request) return { ok: true, deviation: null }
  if (reply.id !== exp.id) return { ok: false, problem: `reply.id is ${JSON.stringify(reply.id)}, expected ${JSON.stringify(exp.id)}` }
  if (code === 'INTERNAL') return { ok: false, problem: `INTERNAL: ${reply.ok ? '' : reply.error.message}` }
  if (exp.stages.length > 0) {
    const allowed = exp.stages.flat()
    if (code === null) return { ok: false, problem: `ok:true for a payload with faults (${allowed.join(', ')})` }
    if (!allowed.includes(code as ErrorCode)) return { ok: false, problem: `${code} for a payload whose faults are ${allowed.join(', ')}` }
    const first = exp.stages[0] ?? []
    return { ok: true, deviation: first.includes(code as ErrorCode) ? null : `${code} where the documented order gives ${first.join(' or ')} first (faults: ${exp.stages.map(s => s.join('|')).join(' → ')})` }
  }
  if (code !== null && PRE_OPERATION.has(code) && OWN_ANSWERS[exp.op]?.has(code) !== true) return { ok: false, problem: `${code} for a well-formed request` }
  return { ok: true, deviation: null }
}
