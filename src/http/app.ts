/**
 * The HTTP listener, on fastify: one router for the chat page (web/dist), `GET /healthz`, the
 * admin API under `/admin/`, and the MQTT-over-WebSocket upgrade at `/mqtt` (src/gateway/listeners.ts).
 * One error handler maps every failure to `{code, message}` with an HTTP status; fastify's own
 * limits cover the URL (malformed percent-encoding -> 400), headers, body size and the time a
 * request may take, and security headers go on every response.
 */
import http from 'node:http'
import type net from 'node:net'
import type { Duplex } from 'node:stream'
import { existsSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { fastify, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify'
import fastifyStatic from '@fastify/static'
import { serializerCompiler, validatorCompiler, hasZodFastifySchemaValidationErrors } from 'fastify-type-provider-zod'
import { ImError, toWireError, type ErrorCode } from '../errors.js'
import type { Logger } from '../log.js'
import { adminRoutes, LOOPBACK, type AdminDeps } from '../admin/http.js'
import type { Metrics } from '../metrics.js'
import { timingSafeEqual } from 'node:crypto'

export interface HttpOptions {
  requestTimeoutMs: number
  keepAliveTimeoutMs: number
  bodyLimitBytes: number
  maxHeaderBytes: number
  /** How long a request body may take (uploads to the local file store); default requestTimeoutMs. */
  bodyTimeoutMs?: number
}

export interface HttpDeps {
  logger: Logger
  admin: AdminDeps
  /** GET /healthz: the body and whether everything is up (200) or not (503). */
  health: () => Promise<{ ok: boolean, body: Record<string, unknown> }>
  /** Where the built page lives (default: web/dist of the package). */
  webRoot?: string
  /** GET /metrics (Prometheus): loopback clients, or anyone with the bearer token when one is set. */
  metrics?: { registry: Metrics, enabled: boolean, token: string | null }
  /** More routes (the local file store's /files/, src/files/routes.ts), registered in their own scope. */
  routes?: Array<(app: FastifyInstance) => Promise<void>>
  /** Origins the page may load files from and upload to (an S3 store's), added to its CSP. */
  fileOrigins?: string[]
}

function findWebDist (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    if (existsSync(path.join(dir, 'package.json'))) return path.join(dir, 'web', 'dist')
    dir = path.dirname(dir)
  }
  return path.resolve('web', 'dist')
}

export const WEB_DIST = findWebDist()

/**
 * The page loads only its own script, styles and images and talks to its own origin, plus the
 * origins of `fileOrigins` for images, media and uploads (an S3 store's endpoint).
 */
export function contentSecurityPolicy (fileOrigins: readonly string[] = []): string {
  const files = fileOrigins.map(o => ' ' + o).join('')
  return [
    "default-src 'self'", "script-src 'self'", "style-src 'self'", `img-src 'self' data:${files}`, `media-src 'self'${files}`, `connect-src 'self'${files}`,
    "frame-ancestors 'none'", "base-uri 'none'", "form-action 'none'", "object-src 'none'"
  ].join('; ')
}
export const CONTENT_SECURITY_POLICY = contentSecurityPolicy()

const SECURITY_HEADERS: Record<string, string> = {
  'content-security-policy': CONTENT_SECURITY_POLICY,
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-resource-policy': 'same-origin'
}

const STATUS: Partial<Record<ErrorCode, number>> = { NOT_FOUND: 404, CONFLICT: 409, FORBIDDEN: 403, NOT_MEMBER: 403, BLOCKED: 403, REFUSED: 403, NOT_EDITABLE: 409, LIMIT_REACHED: 409, TOO_LARGE: 413, UNSUPPORTED_TYPE: 415, RATE_LIMITED: 429, UNAVAILABLE: 503, INTERNAL: 500 }

export function statusOf (code: ErrorCode): number {
  return STATUS[code] ?? 400
}

/** fastify's own errors (bad URL, body too large, unsupported type, validation) as our codes. */
export function fromFastify (err: FastifyError): ImError {
  if (hasZodFastifySchemaValidationErrors(err)) {
    const issues = err.validation.map(v => `${v.instancePath === '' ? 'body' : v.instancePath.slice(1).replaceAll('/', '.')}: ${v.message ?? 'invalid'}`)
    return new ImError('BAD_REQUEST', issues.slice(0, 5).join('; '))
  }
  switch (err.code) {
    case 'FST_ERR_BAD_URL': return new ImError('BAD_REQUEST', 'malformed URL')
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new ImError('TOO_LARGE', 'request body too large')
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new ImError('BAD_REQUEST', 'send JSON (content-type: application/json)')
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY': return new ImError('BAD_JSON')
  }
  // @fastify/static answers a path outside the root (or a dot file) 403 and a missing file 404
  if (err.statusCode === 403) return new ImError('FORBIDDEN', 'not allowed')
  if (err.statusCode === 404) return new ImError('NOT_FOUND', 'no such page')
  if (err.statusCode !== undefined && err.statusCode >= 400 && err.statusCode < 500) return new ImError('BAD_REQUEST', err.message)
  return new ImError('INTERNAL', undefined, { cause: err })
}

/** After an answer, how long and how much of what the client still sends is read and dropped before the connection closes. */
export const LINGER_MS = 2000
export const LINGER_BYTES = 1024 * 1024

/**
 * Closes a connection after its answer without resetting it: the answer goes out with a FIN, and
 * the socket stays until the client closes its side, for at most LINGER_MS; what the client still
 * sends (the rest of a body answered early) is dropped, never parsed: read and counted where Node
 * has handed the socket over (a raw answer), and cut off past LINGER_BYTES; left in the kernel's
 * receive buffer where Node's HTTP parser still holds the stream (an answer through a route, whose
 * parser reads no more once it is answered). A socket closed with unread bytes waiting makes the
 * kernel send a reset, and a reset that reaches the client before it has read the answer destroys
 * the answer with it: a client that sent 300 KB to a refused URL got a reset instead of its 400 or
 * 413 about one time in three (`npm run fuzz`, stream 3).
 */
export function lingeringClose (socket: Duplex): void {
  if (socket.listenerCount('error') === 0) socket.on('error', () => socket.destroy())
  // the socket is ours now: what else it carries is dropped, never parsed. (A guard: a parser
  // listener still attached could run requests pipelined behind the answered one, and Node 20's
  // asserts on data reaching it while it has paused the socket, which resume() below allows; read
  // in Node's source, not seen here, where the parser reads no more once it has answered.)
  socket.removeAllListeners('data')
  const counted = socket as Duplex & { bytesRead?: number }
  const start = counted.bytesRead ?? 0
  const timer = setTimeout(() => socket.destroy(), LINGER_MS)
  socket.once('close', () => clearTimeout(timer))
  socket.on('end', () => socket.destroy())
  socket.on('data', () => { if ((counted.bytesRead ?? 0) - start > LINGER_BYTES) socket.destroy() })
  socket.end()
  socket.resume()
}

/**
 * An answer written straight to a socket (no request object exists yet, or an upgrade that is
 * refused), then the socket closes, whatever the client keeps sending: after what it sent is
 * drained (lingeringClose), or at once with `linger` false (a client that was too slow).
 */
export function rawAnswer (socket: Duplex, status: number, reason: string, wire: { code: ErrorCode, message: string }, linger = true): void {
  // Node takes its own error listener off a socket it hands to 'upgrade' and 'connect': a reset
  // from the client must not become an uncaught exception
  if (socket.listenerCount('error') === 0) socket.on('error', () => socket.destroy())
  if (!socket.writable) { socket.destroy(); return }
  const body = JSON.stringify(wire)
  const answer = `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${Buffer.byteLength(body)}\r\n` +
    `x-content-type-options: nosniff\r\nconnection: close\r\n\r\n${body}`
  if (!linger) {
    socket.end(answer, () => socket.destroy())
    return
  }
  socket.write(answer)
  // (what follows is dropped, not parsed: a parser that failed would fail again on it, and call this again)
  lingeringClose(socket)
}

/** Node's HTTP parser errors (before any request object exists) as {code, message}. */
export function rawError (socket: Duplex, err: Error & { code?: string }): void {
  if (err.code === 'HPE_HEADER_OVERFLOW') rawAnswer(socket, 431, 'Request Header Fields Too Large', { code: 'TOO_LARGE', message: 'request headers too large' })
  else if (err.code === 'ERR_HTTP_REQUEST_TIMEOUT') rawAnswer(socket, 408, 'Request Timeout', { code: 'BAD_REQUEST', message: 'the request did not arrive in time' }, false)
  else rawAnswer(socket, 400, 'Bad Request', { code: 'BAD_REQUEST', message: 'malformed HTTP request' })
}

/**
 * A request with a body may be answered before its body is read (413, a malformed URL, a refused
 * upload): Node then closes the connection with destroySoon, resetting it if the rest of the body
 * is still arriving. This connection closes by lingeringClose instead.
 */
function lingerOnClose (socket: net.Socket): void {
  if (Object.hasOwn(socket, 'destroySoon')) return
  socket.destroySoon = () => { lingeringClose(socket) }
}

/** Every error answer: the status for the code, and {code, message}. */
function sendError (reply: FastifyReply, err: ImError): void {
  void reply.code(statusOf(err.code)).send(toWireError(err))
}

export async function createHttpApp (options: HttpOptions, deps: HttpDeps): Promise<FastifyInstance> {
  // headers must arrive within requestTimeoutMs; a body (an upload) may take up to bodyTimeoutMs
  const bodyTimeoutMs = Math.max(options.requestTimeoutMs, options.bodyTimeoutMs ?? 0)
  const headers = deps.fileOrigins === undefined || deps.fileOrigins.length === 0
    ? SECURITY_HEADERS
    : { ...SECURITY_HEADERS, 'content-security-policy': contentSecurityPolicy(deps.fileOrigins) }
  const app = fastify({
    logger: false,
    bodyLimit: options.bodyLimitBytes,
    routerOptions: { maxParamLength: 200 },
    requestTimeout: bodyTimeoutMs,
    keepAliveTimeout: options.keepAliveTimeoutMs,
    // a socket that sends nothing at all is closed after this long too
    connectionTimeout: options.requestTimeoutMs,
    return503OnClosing: true,
    // errors fastify raises before routing (a malformed URL, a bad content type) get our answer too
    // (they are answered outside the route's hooks, so without onSend's security headers: set here)
    frameworkErrors: (err: FastifyError, _req: FastifyRequest, reply: FastifyReply) => { sendError(reply.headers(headers), fromFastify(err)) },
    // errors Node's HTTP parser raises before any route (headers too large, a broken request line)
    clientErrorHandler: (err, socket) => { rawError(socket, err) },
    serverFactory: (handler) => {
      const server = http.createServer({
        maxHeaderSize: options.maxHeaderBytes,
        headersTimeout: options.requestTimeoutMs,
        requestTimeout: bodyTimeoutMs,
        // how often Node checks the two timeouts above (default 30 s)
        connectionsCheckingInterval: Math.min(1000, options.requestTimeoutMs),
        // Node's own answer to a request without Host is a bare 400: ours is {code, message} (onRequest below)
        requireHostHeader: false
      }, (req, res) => {
        if (req.headers['content-length'] !== undefined || req.headers['transfer-encoding'] !== undefined) lingerOnClose(req.socket)
        handler(req, res)
      })
      // Node answers what never reaches a route itself, without a body (an Expect other than
      // 100-continue: a bare 417) or not at all (CONNECT: the socket closed): our answer instead
      server.on('checkExpectation', (req: http.IncomingMessage, res: http.ServerResponse) => {
        lingerOnClose(req.socket)
        const body = JSON.stringify({ code: 'BAD_REQUEST', message: 'only "Expect: 100-continue" is supported' })
        res.writeHead(417, { ...SECURITY_HEADERS, 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(body), connection: 'close' })
        res.end(body)
        req.resume()
      })
      server.on('connect', (_req: http.IncomingMessage, socket: Duplex) => {
        rawAnswer(socket, 405, 'Method Not Allowed', { code: 'BAD_REQUEST', message: 'CONNECT is not served here (no proxy)' })
      })
      return server
    }
  })
  const log = deps.logger.child({ component: 'http' })
  app.setValidatorCompiler(validatorCompiler)
  app.setSerializerCompiler(serializerCompiler)

  app.addHook('onSend', async (_req, reply, payload) => {
    reply.headers(headers)
    return payload
  })
  app.addHook('onRequest', async (req) => {
    // HTTP/1.1 requires Host (RFC 9112, 3.2); HTTP/1.0 may leave it out
    if (req.raw.httpVersionMinor >= 1 && req.headers.host === undefined) throw new ImError('BAD_REQUEST', 'an HTTP/1.1 request needs a Host header')
  })
  app.setErrorHandler((err: FastifyError, req, reply) => {
    const imErr = err instanceof ImError ? err : fromFastify(err)
    if (imErr.code === 'INTERNAL') log.error({ err, url: req.url }, 'http request failed')
    sendError(reply, imErr)
  })
  app.setNotFoundHandler((req, reply) => {
    void reply.status(404).send({ code: 'NOT_FOUND', message: `no such page: ${req.method} ${req.url.slice(0, 200)}; MQTT over WebSocket is at /mqtt` })
  })

  const metrics = deps.metrics
  if (metrics?.enabled === true) {
    const want = metrics.token === null ? null : Buffer.from(`Bearer ${metrics.token}`)
    app.get('/metrics', async (req, reply) => {
      const got = Buffer.from(req.headers.authorization ?? '')
      const tokenOk = want !== null && want.length === got.length && timingSafeEqual(want, got)
      if (!tokenOk && !LOOPBACK.has(req.socket.remoteAddress ?? '')) {
        throw new ImError('FORBIDDEN', metrics.token === null ? 'metrics: loopback only (set metrics.token to scrape from elsewhere)' : 'metrics: loopback, or Authorization: Bearer <metrics.token>')
      }
      const text = await metrics.registry.text()
      return await reply.type(metrics.registry.contentType).send(text)
    })
  }

  app.get('/healthz', async (_req, reply) => {
    const { ok, body } = await deps.health()
    return await reply.status(ok ? 200 : 503).send(body)
  })

  await app.register(adminRoutes, { prefix: '/admin', ...deps.admin })
  for (const routes of deps.routes ?? []) await app.register(routes)

  const root = deps.webRoot ?? WEB_DIST
  if (existsSync(path.join(root, 'index.html'))) {
    await app.register(fastifyStatic, {
      root,
      index: ['index.html'],
      wildcard: true,
      dotfiles: 'deny',
      setHeaders: (res, file) => { res.setHeader('cache-control', file.endsWith('index.html') ? 'no-cache' : 'public, max-age=300') }
    })
  } else {
    app.get('/', async () => { throw new ImError('NOT_FOUND', 'the chat page is not built: run npm run build:web') })
  }
  await app.ready()
  return app
}
