/**
 * The admin HTTP API under /admin: the routes of routes.ts, for other services and for
 * `npm run admin` (src/admin/cli.ts). Each request, in order:
 *   1. authorize (onRequest, before the body is read): a bearer token and the route's scope
 *      (auth.ts): 401 without a token, 403 for a wrong one or a missing scope; then the token's
 *      rate limit (rate-limit.ts): 429 RATE_LIMITED with Retry-After beyond it;
 *   2. read the body: JSON only, nesting at most limits.maxJsonDepth (checked on the text), then
 *      JSON.parse, as the MQTT dispatcher does: it makes `__proto__` an own data property like any
 *      other key and never sets a prototype, so the key is refused in step 3 like any unknown
 *      field (`constructor` and `prototype` too), and kept or dropped in a custom message body as
 *      over MQTT (see schemas.ts);
 *   3. validate params, query and body with the route's zod schemas (unknown fields refused);
 *   4. run the handler; the answer is serialized through the route's response schema.
 * Failures answer {code, message} through the one error handler of src/http/app.ts. The
 * document of all this is GET /admin/openapi.json (openapi.ts).
 */
import type { FastifyPluginAsync, FastifyRequest } from 'fastify'
import type { ZodTypeProvider } from 'fastify-type-provider-zod'
import { ADMIN_SCOPES, type AdminScope } from '../config.js'
import { ImError, toWireError } from '../errors.js'
import { nestsDeeperThan } from '../im/dispatcher.js'
import { AdminAuth, AdminAuthError, type Principal } from './auth.js'
import { AdminRateLimiter } from './rate-limit.js'
import { ADMIN_ROUTES, type AdminDeps } from './routes.js'

export { LOOPBACK } from './auth.js'
export type { AdminDeps } from './routes.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Admin API: the scope a token needs for the route (null: any valid token; absent: every scope). */
    adminScope?: AdminScope | null
  }
}

export const adminRoutes: FastifyPluginAsync<AdminDeps> = async (instance, deps) => {
  const app = instance.withTypeProvider<ZodTypeProvider>()
  const { config, logger } = deps.services
  const log = logger.child({ component: 'admin-api' })
  const auth = new AdminAuth(deps.token, config.admin.tokens)
  const limiter = new AdminRateLimiter(auth.principals, config.admin.requestsPerSecond, config.admin.requestBurst)
  const principals = new WeakMap<FastifyRequest, Principal>()

  // 1. authorize, then the token's rate limit
  app.addHook('onRequest', async (req, reply) => {
    // a route registered here without a scope fails closed: it needs every scope
    const scope = req.routeOptions.config.adminScope
    const needed = scope === undefined ? ADMIN_SCOPES : scope === null ? [] : [scope]
    let principal: Principal
    try {
      principal = auth.authorize(req.headers.authorization, req.socket.remoteAddress, needed)
    } catch (err) {
      if (!(err instanceof AdminAuthError)) throw err
      return await reply.code(err.status).header('www-authenticate', err.challenge).send(toWireError(err))
    }
    const waitMs = limiter.take(principal)
    if (waitMs > 0) {
      const seconds = Math.ceil(waitMs / 1000)
      const err = new ImError('RATE_LIMITED', `admin token "${principal.name}" is over admin.requestsPerSecond (${limiter.rate}/s, burst ${limiter.burst}); retry after ${seconds} s`)
      return await reply.code(429).header('retry-after', String(seconds)).send(toWireError(err))
    }
    principals.set(req, principal)
  })

  // 2. JSON bodies only, bounded in depth before they are parsed. Not fastify's parser: it answers
  // valid JSON with a `__proto__` or `constructor.prototype` key BAD_JSON, which misleads; the
  // strict schemas name such a key as the unknown field it is.
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
    const text = body as string
    if (nestsDeeperThan(text, config.limits.maxJsonDepth)) {
      done(new ImError('BAD_REQUEST', `arrays and objects nest deeper than ${config.limits.maxJsonDepth} levels`), undefined)
      return
    }
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      done(new ImError('BAD_JSON'), undefined)
      return
    }
    done(null, json)
  })

  // who changed what (GETs are not logged, nor refusals for the rate: a flood must not flood the log)
  app.addHook('onResponse', async (req, reply) => {
    if (req.method === 'GET' || reply.statusCode === 429) return
    log.info({ token: principals.get(req)?.name, method: req.method, route: req.routeOptions.url, url: req.url.slice(0, 200), status: reply.statusCode }, 'admin request')
  })

  // 3, 4. the routes
  for (const r of ADMIN_ROUTES) {
    app.route({
      method: r.method,
      url: r.url,
      exposeHeadRoute: false,
      config: { adminScope: r.scope },
      schema: {
        ...(r.params === undefined ? {} : { params: r.params }),
        ...(r.query === undefined ? {} : { querystring: r.query }),
        ...(r.body === undefined ? {} : { body: r.body }),
        response: Object.fromEntries(r.success.map(status => [status, r.response]))
      },
      // a body that may be left out (every field optional) is read as {}
      ...(r.body === undefined ? {} : { preValidation: async (req: FastifyRequest) => { req.body ??= {} } }),
      handler: async (req, reply) => {
        const principal = principals.get(req)
        if (principal === undefined) throw new ImError('INTERNAL', 'admin request without a principal')
        const result = await r.handler({ params: req.params, query: req.query, body: req.body }, deps, principal)
        return await reply.status(r.statusOf?.(result) ?? r.success[0]).send(result)
      }
    })
  }
}
