/**
 * Admin API on the HTTP listener, for `npm run admin` against a running server (the only way to
 * reach the embedded in-memory store). Loopback clients only, and a bearer token that the server
 * writes to <dataDir>/admin-token (mode 0600) at start-up.
 *
 *   GET  /admin/users                 -> list users and bots
 *   POST /admin/users   {id, password?, displayName?} -> {user, password}
 *   POST /admin/bots    {id, displayName?}            -> {user, apiKey}
 *   POST /admin/users/<id>/disable | /enable | /reset {password?}
 */
import type { IncomingMessage, ServerResponse } from 'node:http'
import { timingSafeEqual } from 'node:crypto'
import { ImError, toWireError } from '../errors.js'
import type { MetadataStore } from '../store/types.js'
import type { Logger } from '../log.js'
import { CreateBotInput, CreateUserInput, ResetInput, createBot, createUser, listUsers, resetSecret, setDisabled } from './accounts.js'

const LOOPBACK = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1'])
const MAX_BODY = 64 * 1024

function send (res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body)
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}

async function readJson (req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req) {
    size += (chunk as Buffer).length
    if (size > MAX_BODY) throw new ImError('TOO_LARGE')
    chunks.push(chunk as Buffer)
  }
  if (size === 0) return {}
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'))
  } catch {
    throw new ImError('BAD_JSON')
  }
}

function statusOf (code: string): number {
  switch (code) {
    case 'NOT_FOUND': return 404
    case 'CONFLICT': return 409
    case 'FORBIDDEN': return 403
    case 'TOO_LARGE': return 413
    case 'UNAVAILABLE': return 503
    case 'INTERNAL': return 500
    default: return 400
  }
}

export class AdminApi {
  constructor (
    private readonly meta: MetadataStore,
    private readonly token: string,
    private readonly logger: Logger,
    /** Called after an account is disabled or its secret reset: its live sessions must end. */
    private readonly onRevoked: (userId: string) => void = () => {}
  ) {}

  private authorized (req: IncomingMessage): boolean {
    if (!LOOPBACK.has(req.socket.remoteAddress ?? '')) return false
    const header = req.headers.authorization ?? ''
    const want = Buffer.from(`Bearer ${this.token}`)
    const got = Buffer.from(header)
    return want.length === got.length && timingSafeEqual(want, got)
  }

  async handle (req: IncomingMessage, res: ServerResponse): Promise<void> {
    if (!this.authorized(req)) {
      send(res, 403, { code: 'FORBIDDEN', message: 'admin API: loopback only, with the token from <dataDir>/admin-token' })
      return
    }
    try {
      const url = new URL(req.url ?? '/', 'http://localhost')
      const parts = url.pathname.split('/').filter(Boolean) // ['admin', ...]
      if (req.method === 'GET' && parts.length === 2 && parts[1] === 'users') {
        send(res, 200, { users: await listUsers(this.meta) })
        return
      }
      if (req.method === 'POST' && parts.length === 2 && parts[1] === 'users') {
        const input = CreateUserInput.safeParse(await readJson(req))
        if (!input.success) throw new ImError('BAD_REQUEST', input.error.issues.map(i => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '))
        send(res, 201, await createUser(this.meta, input.data))
        return
      }
      if (req.method === 'POST' && parts.length === 2 && parts[1] === 'bots') {
        const input = CreateBotInput.safeParse(await readJson(req))
        if (!input.success) throw new ImError('BAD_REQUEST', input.error.issues.map(i => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '))
        send(res, 201, await createBot(this.meta, input.data))
        return
      }
      if (req.method === 'POST' && parts.length === 4 && parts[1] === 'users') {
        const id = decodeURIComponent(parts[2])
        if (parts[3] === 'disable' || parts[3] === 'enable') {
          await setDisabled(this.meta, id, parts[3] === 'disable')
          if (parts[3] === 'disable') this.onRevoked(id)
          send(res, 200, { id, disabled: parts[3] === 'disable' })
          return
        }
        if (parts[3] === 'reset') {
          const input = ResetInput.safeParse(await readJson(req))
          if (!input.success) throw new ImError('BAD_REQUEST', input.error.issues.map(i => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '))
          const result = await resetSecret(this.meta, id, input.data.password)
          this.onRevoked(id)
          send(res, 200, { id, ...result })
          return
        }
      }
      send(res, 404, { code: 'NOT_FOUND', message: `no admin route ${req.method ?? ''} ${url.pathname}` })
    } catch (err) {
      if (!(err instanceof ImError)) this.logger.error('admin request failed', { err: String(err) })
      const wire = toWireError(err)
      send(res, statusOf(wire.code), wire)
    }
  }
}
