/**
 * Admin API on the HTTP listener, for `npm run admin` against a running server (the only way to
 * reach the embedded in-memory store). Loopback clients only, and a bearer token that the server
 * writes to <dataDir>/admin-token (mode 0600) at start-up.
 *
 *   GET  /admin/users                 -> list users and bots
 *   POST /admin/users   {id, password?, displayName?} -> {user, password}
 *   POST /admin/bots    {id, displayName?}            -> {user, apiKey}
 *   POST /admin/users/<id>/disable | /enable | /reset {password?}
 *
 * Disabling an account or resetting its secret ends its sessions on every node.
 */
import { timingSafeEqual } from 'node:crypto'
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { z } from 'zod'
import { ImError } from '../errors.js'
import type { MetadataStore } from '../store/types.js'
import { UserId } from '../protocol/schemas.js'
import { CreateBotInput, CreateUserInput, ResetInput, createBot, createUser, listUsers, resetSecret, setDisabled } from './accounts.js'

/** Addresses of loopback clients (the admin API and /metrics trust them). */
export const LOOPBACK: ReadonlySet<string> = new Set(['127.0.0.1', '::1', '::ffff:127.0.0.1'])

export interface AdminDeps {
  meta: MetadataStore
  token: string
  /** Ends every session of the account (on every node). */
  revoke: (userId: string, reason: string) => void
}

const UserParams = z.object({ id: UserId }).strict()
/** A body that may be left out (no content): read as {}. */
const orEmpty = (v: unknown): unknown => v ?? {}

export const adminRoutes: FastifyPluginAsync<AdminDeps> = async (instance, deps) => {
  const app = instance.withTypeProvider<ZodTypeProvider>()
  const want = Buffer.from(`Bearer ${deps.token}`)
  const authorized = (req: FastifyRequest): boolean => {
    if (!LOOPBACK.has(req.socket.remoteAddress ?? '')) return false
    const got = Buffer.from(req.headers.authorization ?? '')
    return want.length === got.length && timingSafeEqual(want, got)
  }
  app.addHook('onRequest', async (req) => {
    if (!authorized(req)) throw new ImError('FORBIDDEN', 'admin API: loopback only, with the token from <dataDir>/admin-token')
  })

  app.get('/users', async () => ({ users: await listUsers(deps.meta) }))

  app.post('/users', { schema: { body: z.preprocess(orEmpty, CreateUserInput) } }, async (req, reply) => {
    return await reply.status(201).send(await createUser(deps.meta, req.body))
  })

  app.post('/bots', { schema: { body: z.preprocess(orEmpty, CreateBotInput) } }, async (req, reply) => {
    return await reply.status(201).send(await createBot(deps.meta, req.body))
  })

  app.post('/users/:id/disable', { schema: { params: UserParams } }, async (req) => {
    await setDisabled(deps.meta, req.params.id, true)
    deps.revoke(req.params.id, 'account disabled')
    return { id: req.params.id, disabled: true }
  })

  app.post('/users/:id/enable', { schema: { params: UserParams } }, async (req) => {
    await setDisabled(deps.meta, req.params.id, false)
    return { id: req.params.id, disabled: false }
  })

  app.post('/users/:id/reset', { schema: { params: UserParams, body: z.preprocess(orEmpty, ResetInput) } }, async (req) => {
    const result = await resetSecret(deps.meta, req.params.id, req.body.password)
    deps.revoke(req.params.id, 'secret reset')
    return { id: req.params.id, ...result }
  })
}
