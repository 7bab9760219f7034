/**
 * Stream 3: fuzzed HTTP requests on raw TCP connections to the server's HTTP listener (the page,
 * `/healthz`, `/metrics`, the admin API, the file routes, the WebSocket upgrade at `/mqtt`):
 * methods, request targets (traversal, bad and encoded escapes, long segments, queries, absolute
 * form), headers (credentials right and wrong, content types, chunked bodies, upgrades,
 * expectations, oversize and broken header lines) and bodies (admin-shaped JSON with fuzzed values,
 * bad JSON, oversize). Cases are plain data; the admin token is only known once the server runs.
 *
 * Judged against README ("Admin API", "Production hardening") and src/http/app.ts' promises:
 * - every request gets an HTTP/1.1 answer (no silence, no reset) within the reply timeout;
 * - never a 5xx: nothing the client sends is the server's fault (the stores are up);
 * - every error answer (4xx, not to HEAD) is JSON `{code, message}` with a documented code;
 * - every answer carries `x-content-type-options: nosniff`;
 * - no answer holds the admin token or the server's paths on disk (no traversal, no leak).
 *
 * The admin requests that change accounts only name users of their own (`hz…`): disabling the fuzz
 * or bystander users would be the run attacking itself, not the server.
 */
import net from 'node:net'
import fc from 'fast-check'
import { ERROR_CODES } from '../../src/errors.js'
import { KNOWN_USERS } from './requests.js'
import { RAW_USER } from './packets.js'

/** The users the admin requests may create, change and name. */
const HTTP_USERS = ['hz1', 'hz2', 'hz3']
/** Users the HTTP stream must never name in a path or body: the run's own. */
const PROTECTED = new Set([...KNOWN_USERS, RAW_USER])

export type Auth = 'none' | 'admin' | 'wrong' | 'basic' | 'long' | 'empty-bearer'
export type Body =
  | { kind: 'none' }
  | { kind: 'json', value: unknown }
  | { kind: 'text', text: string }
  /** bytes over the listener's bodyLimitBytes */
  | { kind: 'big', bytes: number }

export interface HttpCase {
  method: string
  /** Path and query; `{conv}` is replaced by one of the fuzz user's conversations. */
  target: string
  auth: Auth
  contentType: string | null
  /** Extra header lines, written as given (name: value), some of them malformed on purpose. */
  headers: string[]
  body: Body
  /** Send the body chunked (transfer-encoding), else with its content-length. */
  chunked: boolean
  /** Written in this many pieces. */
  pieces: number
  /** Send `host: 127.0.0.1` (HTTP/1.1 requires a Host header; false: none). */
  host: boolean
}

export interface HttpResult {
  /** 'answered', or 'failed' with `problem`. */
  outcome: 'answered' | 'failed'
  problem: string | null
  status: number | null
  /** The error code of a JSON error answer. */
  code: string | null
  request: string
}

export interface HttpContext {
  httpPort: number
  adminToken: string
  /** The fuzz user's conversations (shared with the request stream; grows). */
  convs: string[]
  /** Strings no answer may hold (the admin token, the server's directories). */
  secrets: string[]
  timeoutMs: number
}

const ADMIN_PATHS = [
  '/admin/users', '/admin/users/{user}', '/admin/users/{user}/disable', '/admin/users/{user}/enable', '/admin/users/{user}/reset',
  '/admin/bots', '/admin/conversations', '/admin/conversations/direct', '/admin/conversations/{conv}', '/admin/conversations/{conv}/members',
  '/admin/conversations/{conv}/members/{user}', '/admin/conversations/{conv}/messages', '/admin/openapi.json', '/admin', '/admin/'
]
const OTHER_PATHS = ['/', '/index.html', '/healthz', '/metrics', '/mqtt', '/favicon.ico', '/app.js', '/files/ab/0123456789abcdef', '/files/{conv}/x', '/files/', '/nope']

const segment = fc.oneof(
  { arbitrary: fc.constantFrom('..', '.', '%2e%2e', '%2E%2E%2F', '..%2f', '%', '%zz', '%0', '%00', '%ff', '%c0%af', '%e2%80%ae', '~', '*', '.git', '.env', 'package.json', 'admin-token', 'etc', 'passwd', 'index.html', 'a'.repeat(250), ';', '%2F'), weight: 4 },
  { arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 12 }).map(s => encodeURIComponent(s)), weight: 3 },
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 6 }), weight: 1 }
)
const query = fc.oneof(
  fc.constant(''),
  fc.constantFrom('?limit=-1', '?limit=1e9', '?limit=2&cursor=%zz', '?cursor=' + 'z'.repeat(300), '?kind=bot', '?kind=x&kind=y', '?__proto__[x]=1', '?limit=', '?&&&', '?expires=1&sig=x', '?a=%00'),
  fc.string({ unit: 'grapheme-ascii', maxLength: 30 }).map(s => '?' + s)
)
const user = fc.oneof({ arbitrary: fc.constantFrom(...HTTP_USERS), weight: 4 }, { arbitrary: fc.constantFrom('', 'x'.repeat(40), 'Upper', 'a b', '%2e%2e', '__proto__', 'constructor'), weight: 1 })

const target: fc.Arbitrary<string> = fc.oneof(
  { arbitrary: fc.tuple(fc.constantFrom(...ADMIN_PATHS, ...OTHER_PATHS), user, query).map(([p, u, q]) => p.replaceAll('{user}', u) + q), weight: 6 },
  // a known path with segments added, replaced or doubled
  { arbitrary: fc.tuple(fc.constantFrom(...ADMIN_PATHS, ...OTHER_PATHS), fc.array(segment, { minLength: 1, maxLength: 6 }), fc.boolean(), query).map(([p, segs, replace, q]) => (replace ? '/' : p.replaceAll('{user}', 'hz1') + '/') + segs.join('/') + q), weight: 4 },
  { arbitrary: fc.constantFrom('//admin//users', '/admin/users/', '/ADMIN/users', '/admin/users?', '/admin/../admin/users', '/%2e%2e/%2e%2e/package.json', '/..%2f..%2fpackage.json', '/../../../../etc/passwd', '/web/../package.json', '*', 'http://127.0.0.1/healthz', 'http://[::1/x', 'http://a b/', '/' + 'a/'.repeat(3000), '/healthz#frag', '/healthz?' + 'q'.repeat(9000)), weight: 2 },
  { arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 40 }), weight: 1 }
)

const method = fc.oneof(
  { arbitrary: fc.constantFrom('GET', 'POST', 'PUT', 'DELETE', 'HEAD', 'OPTIONS', 'PATCH'), weight: 10 },
  { arbitrary: fc.constantFrom('get', 'TRACE', 'CONNECT', 'PROPFIND', 'FOO', 'G ET', '', 'GET\u0000'), weight: 1 }
)

/** JSON values an admin route might take, right and wrong. */
const jsonValue: fc.Arbitrary<unknown> = fc.oneof(
  { arbitrary: fc.record({ id: user, password: fc.oneof(fc.string({ minLength: 8, maxLength: 40 }), fc.constantFrom('', 'short', 'x'.repeat(300))) }, { requiredKeys: [] }), weight: 3 },
  { arbitrary: fc.record({ id: user, name: fc.string({ maxLength: 40 }) }, { requiredKeys: [] }), weight: 2 },
  { arbitrary: fc.record({ name: fc.string({ maxLength: 120 }), owner: user, members: fc.array(user, { maxLength: 5 }) }, { requiredKeys: [] }), weight: 2 },
  { arbitrary: fc.record({ users: fc.array(user, { maxLength: 4 }), user, bot: user }, { requiredKeys: [] }), weight: 2 },
  { arbitrary: fc.record({ msgId: fc.string({ minLength: 1, maxLength: 70 }), kind: fc.constantFrom('text', 'custom', 'file', 'edit', 'x'), body: fc.oneof(fc.string({ maxLength: 50 }), fc.jsonValue({ maxDepth: 3 })), from: user }, { requiredKeys: [] }), weight: 3 },
  { arbitrary: fc.jsonValue({ maxDepth: 4 }), weight: 2 },
  { arbitrary: fc.constantFrom<unknown>(JSON.parse('{"__proto__":{"polluted":1}}'), JSON.parse('{"id":"hz1","__proto__":{"admin":true}}'), { constructor: { prototype: { x: 1 } } }, [], null, 0, 'x'), weight: 1 }
).map(v => (typeof v === 'object' && v !== null && namesProtected(v) ? {} : v))

function namesProtected (v: object): boolean {
  return JSON.stringify(v).match(/"([a-z0-9_.-]+)"/g)?.some(s => PROTECTED.has(s.slice(1, -1))) ?? false
}

const body: fc.Arbitrary<Body> = fc.oneof(
  { arbitrary: fc.constant<Body>({ kind: 'none' }), weight: 3 },
  { arbitrary: jsonValue.map<Body>(value => ({ kind: 'json', value })), weight: 6 },
  { arbitrary: fc.oneof(fc.constantFrom('{', '{"id":', '[1,', '{"a":1}{', 'null', '"', '\u0000', '{"id":"hz1",}', '\ufeff{}', '{"a":' + '['.repeat(5000)), fc.string({ unit: 'binary', maxLength: 200 })).map<Body>(text => ({ kind: 'text', text })), weight: 2 },
  { arbitrary: fc.constantFrom<Body>({ kind: 'big', bytes: 70_000 }, { kind: 'big', bytes: 300_000 }), weight: 1 }
)

const contentType = fc.oneof(
  { arbitrary: fc.constant('application/json'), weight: 6 },
  { arbitrary: fc.constantFrom<string | null>(null, 'application/json; charset=utf-8', 'application/json; charset=utf-16', 'APPLICATION/JSON', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', 'application/octet-stream', 'image/png', '', ';;;', 'application/json\u0001'), weight: 3 }
)

const headerLine = fc.oneof(
  { arbitrary: fc.constantFrom('upgrade: websocket', 'expect: 100-continue', 'expect: something-else', 'x-forwarded-for: 10.0.0.1', 'origin: http://evil.example', 'accept-encoding: gzip, br', 'range: bytes=0-1', 'range: bytes=5-1', 'if-none-match: *', 'cookie: a=b', 'host: evil.example', 'sec-websocket-version: 13', 'sec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==', 'sec-websocket-protocol: mqtt'), weight: 6 },
  { arbitrary: fc.constantFrom('x-long: ' + 'a'.repeat(20_000), 'bad header line', ': empty name', 'x-ctl: a\u0001b', 'transfer-encoding: gzip', 'content-length: -1', 'content-length: abc', 'x-\u00e9: 1'), weight: 1 },
  { arbitrary: fc.tuple(fc.stringMatching(/^[a-z][a-z0-9-]{0,20}$/), fc.string({ unit: 'grapheme-ascii', maxLength: 40 })).map(([n, v]) => `x-${n}: ${v.replace(/[\r\n]/g, '')}`), weight: 2 }
)

const auth = fc.constantFrom<Auth>('none', 'admin', 'admin', 'admin', 'wrong', 'basic', 'long', 'empty-bearer')

/**
 * Requests as the admin API documents them (its token, JSON), so that accounts, groups and pages
 * are really made and read while the rest of the stream throws garbage: `n` makes new ids.
 */
const WELL_FORMED: Array<(n: number) => Pick<HttpCase, 'method' | 'target' | 'body'>> = [
  (n) => ({ method: 'POST', target: '/admin/users', body: { kind: 'json', value: { id: `hz${n % 3 + 1}`, password: 'fuzz-password-1' } } }),
  (n) => ({ method: 'POST', target: '/admin/users', body: { kind: 'json', value: { id: `hzu${n}`, displayName: `fuzz ${n}` } } }),
  (n) => ({ method: 'POST', target: '/admin/bots', body: { kind: 'json', value: { id: `hzb${n}` } } }),
  (n) => ({ method: 'POST', target: '/admin/conversations', body: { kind: 'json', value: { name: `hz group ${n}`, owner: 'hz1', members: ['hz2', 'hz3'] } } }),
  () => ({ method: 'POST', target: '/admin/conversations/direct', body: { kind: 'json', value: { user: 'hz1', peer: 'hz2' } } }),
  (n) => ({ method: 'GET', target: `/admin/users?limit=${n % 20 + 1}`, body: { kind: 'none' } }),
  () => ({ method: 'GET', target: '/admin/users/hz1', body: { kind: 'none' } }),
  (n) => ({ method: 'POST', target: `/admin/users/hz2/${['disable', 'enable', 'reset'][n % 3] as string}`, body: { kind: 'json', value: {} } }),
  () => ({ method: 'GET', target: '/admin/conversations/{conv}', body: { kind: 'none' } }),
  () => ({ method: 'GET', target: '/admin/conversations/{conv}/members?limit=2', body: { kind: 'none' } }),
  (n) => ({ method: 'POST', target: '/admin/conversations/{conv}/messages', body: { kind: 'json', value: { from: 'hz1', msgId: `hzm${n}`, kind: 'text', body: 'from the admin API' } } }),
  () => ({ method: 'GET', target: '/admin/openapi.json', body: { kind: 'none' } }),
  () => ({ method: 'GET', target: '/healthz', body: { kind: 'none' } }),
  () => ({ method: 'GET', target: '/', body: { kind: 'none' } }),
  () => ({ method: 'HEAD', target: '/', body: { kind: 'none' } }),
  () => ({ method: 'GET', target: '/metrics', body: { kind: 'none' } })
]

const wellFormed: fc.Arbitrary<HttpCase> = fc.record({
  template: fc.constantFrom(...WELL_FORMED),
  n: fc.nat({ max: 999 }),
  chunked: fc.boolean(),
  pieces: fc.integer({ min: 1, max: 3 })
}).map(({ template, n, chunked, pieces }) => ({ ...template(n), auth: 'admin', contentType: 'application/json', headers: [], chunked, pieces, host: true }))

const fuzzed: fc.Arbitrary<HttpCase> = fc.record({
  method,
  target,
  auth,
  contentType,
  headers: fc.array(headerLine, { maxLength: 4 }),
  host: fc.oneof({ arbitrary: fc.constant(true), weight: 19 }, { arbitrary: fc.constant(false), weight: 1 }),
  body,
  chunked: fc.boolean(),
  pieces: fc.integer({ min: 1, max: 3 })
}).map(c => ({ ...c, target: userSafe(c.target) }))

export const httpCase: fc.Arbitrary<HttpCase> = fc.oneof({ arbitrary: wellFormed, weight: 3 }, { arbitrary: fuzzed, weight: 7 })

/** A target with a path segment or query value naming one of the run's own users names an `hz` user instead. */
function userSafe (t: string): string {
  return t.replace(/[^/?&=#]+/g, (part) => (PROTECTED.has(decodeURIComponentSafe(part)) ? 'hz1' : part))
}

function decodeURIComponentSafe (s: string): string {
  try { return decodeURIComponent(s) } catch { return s }
}

function authHeader (a: Auth, token: string): string | null {
  switch (a) {
    case 'none': return null
    case 'admin': return `authorization: Bearer ${token}`
    case 'wrong': return `authorization: Bearer ${'0'.repeat(token.length)}`
    case 'basic': return 'authorization: Basic YWRtaW46YWRtaW4='
    case 'long': return `authorization: Bearer ${'t'.repeat(8000)}`
    case 'empty-bearer': return 'authorization: Bearer '
  }
}

function bodyBytes (b: Body): Buffer | null {
  switch (b.kind) {
    case 'none': return null
    case 'json': return Buffer.from(JSON.stringify(b.value) ?? 'null')
    case 'text': return Buffer.from(b.text)
    case 'big': return Buffer.from(`{"name":"${'b'.repeat(b.bytes)}"}`)
  }
}

/** The bytes of a case (connection: close, so that the server's answer ends with the connection). */
export function requestBytes (c: HttpCase, ctx: Pick<HttpContext, 'adminToken' | 'convs'>): Buffer {
  const conv = ctx.convs[c.target.length % Math.max(1, ctx.convs.length)] ?? 'noconv'
  const target = c.target.replaceAll('{conv}', conv)
  const lines = [`${c.method} ${target} HTTP/1.1`, ...(c.host ? ['host: 127.0.0.1'] : [])]
  const a = authHeader(c.auth, ctx.adminToken)
  if (a !== null) lines.push(a)
  if (c.contentType !== null) lines.push(`content-type: ${c.contentType}`)
  lines.push(...c.headers)
  if (!c.headers.some(h => h.startsWith('upgrade:'))) lines.push('connection: close')
  else lines.push('connection: upgrade')
  const payload = bodyBytes(c.body)
  let tail: Buffer = Buffer.alloc(0)
  if (payload !== null) {
    if (c.chunked) {
      lines.push('transfer-encoding: chunked')
      tail = Buffer.concat([Buffer.from(`${payload.length.toString(16)}\r\n`), payload, Buffer.from('\r\n0\r\n\r\n')])
    } else {
      lines.push(`content-length: ${payload.length}`)
      tail = payload
    }
  }
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'latin1'), tail])
}

interface Parsed { status: number, headers: Map<string, string>, body: Buffer, complete: boolean }

/** The first final answer in `data` (interim 1xx answers but 101 skipped); null if its head has not all come. */
export function parseResponse (data: Buffer, head: boolean): Parsed | null {
  let at = 0
  for (;;) {
    const end = data.indexOf('\r\n\r\n', at)
    if (end < 0) return null
    const lines = data.subarray(at, end).toString('latin1').split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0] ?? '')
    if (m === null) throw new Error(`not an HTTP response: ${JSON.stringify(data.subarray(at, at + 100).toString('latin1'))}`)
    const status = Number(m[1])
    const headers = new Map<string, string>()
    for (const line of lines.slice(1)) {
      const i = line.indexOf(':')
      if (i <= 0) throw new Error(`a malformed header line in the answer: ${JSON.stringify(line.slice(0, 100))}`)
      const name = line.slice(0, i).trim().toLowerCase()
      const value = line.slice(i + 1).trim()
      headers.set(name, headers.has(name) ? `${headers.get(name) as string}, ${value}` : value)
    }
    at = end + 4
    if (status >= 100 && status < 200 && status !== 101) continue
    if (head || status === 101 || status === 204 || status === 304) return { status, headers, body: Buffer.alloc(0), complete: true }
    const rest = data.subarray(at)
    const length = headers.get('content-length')
    if (length !== undefined) {
      const n = Number(length)
      return { status, headers, body: rest.subarray(0, n), complete: rest.length >= n }
    }
    if (/chunked/i.test(headers.get('transfer-encoding') ?? '')) return dechunk(status, headers, rest)
    // until the connection closes
    return { status, headers, body: rest, complete: false }
  }
}

function dechunk (status: number, headers: Map<string, string>, data: Buffer): Parsed {
  const parts: Buffer[] = []
  let at = 0
  for (;;) {
    const eol = data.indexOf('\r\n', at)
    if (eol < 0) return { status, headers, body: Buffer.concat(parts), complete: false }
    const size = parseInt(data.subarray(at, eol).toString('latin1'), 16)
    if (!Number.isFinite(size)) throw new Error('a malformed chunk size in the answer')
    if (size === 0) return { status, headers, body: Buffer.concat(parts), complete: true }
    if (data.length < eol + 2 + size + 2) return { status, headers, body: Buffer.concat(parts), complete: false }
    parts.push(data.subarray(eol + 2, eol + 2 + size))
    at = eol + 2 + size + 2
  }
}

/** Judges one answer (see the module's comment); null when it keeps every promise. */
export function judgeHttp (method: string, parsed: Parsed, secrets: readonly string[]): { problem: string | null, code: string | null } {
  const { status, headers, body } = parsed
  let code: string | null = null
  if (status >= 500) return { problem: `answered ${status}: a request is never the server's fault (${body.subarray(0, 300).toString('utf8')})`, code }
  if (status !== 101 && headers.get('x-content-type-options') !== 'nosniff') return { problem: `answered ${status} without x-content-type-options: nosniff`, code }
  if (status >= 400 && method !== 'HEAD') {
    let json: unknown
    try { json = JSON.parse(body.toString('utf8')) } catch { return { problem: `answered ${status} with a body that is not JSON: ${JSON.stringify(body.subarray(0, 200).toString('utf8'))}`, code } }
    const o = json as { code?: unknown, message?: unknown }
    if (typeof o !== 'object' || o === null || typeof o.code !== 'string' || typeof o.message !== 'string') return { problem: `answered ${status} with ${JSON.stringify(json).slice(0, 200)}, not {code, message}`, code }
    code = o.code
    if (!Object.hasOwn(ERROR_CODES, o.code)) return { problem: `answered ${status} with an undocumented code ${o.code}`, code }
  }
  const text = body.toString('latin1')
  // (named by its place in `secrets`, never printed: a report must not carry the token)
  for (const [i, s] of secrets.entries()) if (s.length > 0 && text.includes(s)) return { problem: `answered ${status} with a body that holds a secret or a path on disk (secrets[${i}])`, code }
  return { problem: null, code }
}

/** One case: a connection, its bytes, the answer, judged. */
export async function runHttpCase (c: HttpCase, ctx: HttpContext): Promise<HttpResult> {
  const bytes = requestBytes(c, ctx)
  // (for the report: the token is the fuzzed server's, but a report is no place for a token)
  const request = redact(bytes.toString('latin1'), ctx).slice(0, 600)
  const result: HttpResult = { outcome: 'failed', problem: null, status: null, code: null, request }
  try {
    await answerAndJudge(c, ctx, bytes, result)
  } finally {
    if (result.problem !== null) result.problem = redact(result.problem, ctx)
  }
  return result
}

/** `text` with the admin token and the run's other secrets (paths on disk) replaced by names. */
export function redact (text: string, ctx: Pick<HttpContext, 'adminToken' | 'secrets'>): string {
  let out = text
  for (const [i, s] of [ctx.adminToken, ...ctx.secrets].entries()) if (s.length > 0) out = out.replaceAll(s, i === 0 ? '<admin token>' : `<secrets[${i - 1}]>`)
  return out
}

async function answerAndJudge (c: HttpCase, ctx: HttpContext, bytes: Buffer, result: HttpResult): Promise<void> {
  const head = c.method === 'HEAD'
  const data: Buffer[] = []
  let size = 0
  const got = await new Promise<{ data: Buffer, ended: boolean, error: string | null }>((resolve) => {
    const socket = net.connect(ctx.httpPort, '127.0.0.1')
    let settled = false
    const finish = (ended: boolean, error: string | null): void => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ data: Buffer.concat(data, size), ended, error })
    }
    const timer = setTimeout(() => finish(false, null), ctx.timeoutMs)
    socket.on('connect', () => {
      const step = Math.ceil(bytes.length / c.pieces)
      for (let i = 0; i < bytes.length; i += step) socket.write(bytes.subarray(i, i + step))
    })
    socket.on('data', (d: Buffer) => {
      data.push(d)
      size += d.length
      try {
        const p = parseResponse(Buffer.concat(data, size), head)
        if (p?.complete === true) finish(false, null)
      } catch {
        finish(false, null) // judged below, on the same bytes
      }
    })
    socket.on('end', () => finish(true, null))
    // a failed write (the server answered early and closed) may come before the answer is read:
    // what has arrived is read first
    socket.on('error', (err) => { setTimeout(() => finish(true, err.message), 50) })
  })
  let parsed: Parsed | null
  try {
    parsed = parseResponse(got.data, head)
  } catch (err) {
    result.problem = (err as Error).message
    return
  }
  if (parsed === null) {
    result.problem = got.data.length === 0
      ? (got.ended ? `the connection closed without an answer${got.error !== null ? ` (${got.error})` : ''}` : `no answer within ${ctx.timeoutMs} ms`)
      : `an incomplete answer: ${JSON.stringify(got.data.subarray(0, 200).toString('latin1'))}`
    return
  }
  result.status = parsed.status
  const verdict = judgeHttp(c.method, parsed, ctx.secrets)
  result.code = verdict.code
  result.problem = verdict.problem
  if (result.problem === null) result.outcome = 'answered'
}
