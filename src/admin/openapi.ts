/**
 * The OpenAPI 3.1 document of the admin API, generated from the route table (routes.ts) and its
 * zod schemas with z.toJSONSchema (JSON Schema 2020-12, the dialect of OpenAPI 3.1): request
 * bodies as their input, answers as their output; schemas named in the table's registries become
 * components (the recursive JSON value among them), the rest is inlined.
 */
import { z } from 'zod'
import type { AdminRoute } from './routes.js'
import { JsonValue, NAMED_OUTPUTS } from './schemas.js'

/** What GET /admin/openapi.json answers (checked loosely: the document is generated). */
export const OpenApiDocument = z.looseObject({
  openapi: z.string(),
  info: z.looseObject({ title: z.string(), version: z.string() }),
  paths: z.record(z.string(), z.unknown())
})

type Json = Record<string, unknown>

/** The version of the API this document describes (not of the server). */
export const ADMIN_API_VERSION = '1.0.0'

const ERROR_STATUS: Record<number, string> = {
  400: 'bad request: BAD_REQUEST (schema, unknown fields, ids), BAD_JSON, or a rule of the operation (e.g. NOT_MEMBER, BLOCKED, REFUSED, LIMIT_REACHED)',
  401: 'no bearer token',
  403: 'FORBIDDEN: an unknown token, the loopback token from elsewhere, a token without the scope, or a role the acting user lacks',
  404: 'NOT_FOUND: no such user or conversation',
  409: 'CONFLICT: it exists already',
  413: 'TOO_LARGE: the body is over http.bodyLimitBytes (or the message over limits.maxPayloadBytes)',
  429: 'RATE_LIMITED: the token is over admin.requestsPerSecond (burst admin.requestBurst; Retry-After says in how many seconds to try again), or a limit of the operation (e.g. limits.groupsCreatedPerHour)',
  503: 'UNAVAILABLE: a store or the message routing is down; retry with the same ids'
}

const ref = (id: string): Json => ({ $ref: `#/components/schemas/${id}` })

/** The header of a 429 for the token's rate (absent on a 429 for a limit of the operation). */
const RETRY_AFTER: Json = { description: 'seconds until the token may make a request again', schema: { type: 'integer', minimum: 1 } }

function pascal (s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1)
}

/** The id the schema has in the registry, after registering it under `fallback` if it had none. */
function nameOf (registry: z.core.$ZodRegistry<{ id: string }>, schema: z.ZodType, fallback: string): string {
  const known = registry.get(schema)
  if (known !== undefined) return known.id
  registry.add(schema, { id: fallback })
  return fallback
}

/** Components: the JSON Schemas of a registry, without the per-document keywords. */
function components (registry: z.core.$ZodRegistry<{ id: string }>, io: 'input' | 'output'): Record<string, Json> {
  const { schemas } = z.toJSONSchema(registry, { io, unrepresentable: 'any', uri: id => `#/components/schemas/${id}` })
  return Object.fromEntries(Object.entries(schemas).map(([id, { $schema: _s, $id: _i, ...rest }]) => [id, rest]))
}

/** Path or query parameters from an object schema. */
function parameters (schema: z.ZodType | undefined, where: 'path' | 'query'): Json[] {
  if (schema === undefined) return []
  const json = z.toJSONSchema(schema, { io: 'input', unrepresentable: 'any' }) as { properties?: Record<string, Json>, required?: string[] }
  return Object.entries(json.properties ?? {}).map(([name, { description, ...property }]) => ({
    name,
    in: where,
    required: where === 'path' || (json.required ?? []).includes(name),
    ...(description === undefined ? {} : { description }),
    schema: property
  }))
}

export function buildOpenApi (routes: readonly AdminRoute[]): z.input<typeof OpenApiDocument> {
  const inputs = z.registry<{ id: string }>()
  const outputs = z.registry<{ id: string }>()
  inputs.add(JsonValue, { id: 'JsonValue' })
  for (const [id, schema] of Object.entries(NAMED_OUTPUTS)) outputs.add(schema, { id })
  const named = routes.map(r => ({
    route: r,
    body: r.body === undefined ? null : nameOf(inputs, r.body, `${pascal(r.operationId)}Input`),
    response: nameOf(outputs, r.response, `${pascal(r.operationId)}Result`)
  }))
  const schemas = { ...components(outputs, 'output') }
  for (const [id, schema] of Object.entries(components(inputs, 'input'))) {
    if (id in schemas && JSON.stringify(schemas[id]) !== JSON.stringify(schema)) throw new Error(`admin OpenAPI: two schemas named ${id}`)
    schemas[id] = schema
  }

  const paths: Record<string, Record<string, Json>> = {}
  for (const { route: r, body, response } of named) {
    const path = '/admin' + r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')
    const errors = [...new Set([400, 401, 403, 429, ...(r.errors ?? [])])].sort((a, b) => a - b)
    const operation: Json = {
      operationId: r.operationId,
      tags: [r.tag],
      summary: r.summary,
      description: [r.description, `Scope: ${r.scope ?? 'none (any valid token)'}.`].filter(s => s !== undefined).join('\n\n'),
      security: [{ bearer: r.scope === null ? [] : [r.scope] }],
      parameters: [...parameters(r.params, 'path'), ...parameters(r.query, 'query')],
      ...(body === null || r.body === undefined
        ? {}
        : { requestBody: { required: !r.body.safeParse({}).success, content: { 'application/json': { schema: ref(body) } } } }),
      responses: {
        ...Object.fromEntries(r.success.map(status => [String(status), { description: status === 201 ? 'created' : 'done', content: { 'application/json': { schema: ref(response) } } }])),
        ...Object.fromEntries(errors.map(status => [String(status), {
          description: ERROR_STATUS[status] ?? 'error',
          ...(status === 429 ? { headers: { 'Retry-After': RETRY_AFTER } } : {}),
          content: { 'application/json': { schema: ref('Error') } }
        }])),
        default: { description: 'any other failure ({code, message})', content: { 'application/json': { schema: ref('Error') } } }
      }
    }
    if ((operation.parameters as Json[]).length === 0) delete operation.parameters
    paths[path] ??= {}
    paths[path][r.method.toLowerCase()] = operation
  }

  return {
    openapi: '3.1.0',
    info: {
      title: 'mqim admin API',
      version: ADMIN_API_VERSION,
      description: 'Accounts, conversations and messages of an mqim server, for other services. ' +
        'Authorization: Bearer <token>: a token of config admin.tokens (from any address, with its scopes), or the token in <dataDir>/admin-token (loopback clients, every scope). ' +
        'Each token may make admin.requestsPerSecond requests per second (default 200), admin.requestBurst at once (default 400); beyond, 429 RATE_LIMITED with Retry-After. ' +
        'Every error answers {code, message}.'
    },
    servers: [{ url: '/' }],
    tags: [
      { name: 'users', description: 'users and bots' },
      { name: 'conversations', description: 'groups, direct conversations, members' },
      { name: 'messages', description: 'sending into conversations' },
      { name: 'meta', description: 'this document' }
    ],
    security: [{ bearer: [] }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', description: 'A token of admin.tokens (its scopes are listed per operation), or the loopback token of <dataDir>/admin-token.' }
      },
      schemas
    }
  }
}
