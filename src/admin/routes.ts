/**
 * The routes of the admin HTTP API, one table: method, path (under /admin), the scope a token
 * needs, the zod schemas of the request and the answer, and the handler. http.ts registers them
 * on fastify; openapi.ts makes the OpenAPI document of the same table.
 */
import type { z } from 'zod'
import type { AdminScope } from '../config.js'
import type { Services } from '../im/context.js'
import type { Principal } from './auth.js'
import { CreateBotInput, CreateUserInput, ResetInput, createBot, createUser, getUser, resetSecret, setDisabled, userPage } from './accounts.js'
import { addMembers, createGroup, getConversation, memberPage, openDirect, removeMember, sendMessage } from './conversations.js'
import { buildOpenApi, OpenApiDocument } from './openapi.js'
import {
  AddedMembers, AddMembersInput, Conversation, ConvParams, CreatedBot, CreatedGroup, CreateGroupInput, CreatedUser, DisabledState, ListUsersQuery,
  MemberPage, MemberParams, MembersQuery, NewSecret, OpenDirectInput, OpenedDirect, RemovedMember, RemoveMemberQuery, SendInput, Sent, User,
  UserPage, UserParams
} from './schemas.js'

export interface AdminDeps {
  /** The IM services the API works with (the same the MQTT operations use). */
  services: Services
  /** The token written to <dataDir>/admin-token: every scope, loopback clients only. */
  token: string
  /** Ends every session of the account (on every node). */
  revoke: (userId: string, reason: string) => void
}

export type Method = 'GET' | 'POST' | 'DELETE'

interface RouteSpec<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType, R extends z.ZodType> {
  operationId: string
  method: Method
  /** fastify's form (`:param`), under /admin. */
  url: string
  /** The scope a token needs; null: any valid token. */
  scope: AdminScope | null
  tag: 'users' | 'conversations' | 'messages' | 'meta'
  summary: string
  description?: string
  params?: P
  query?: Q
  body?: B
  response: R
  /** Statuses of success; the first unless `statusOf` tells otherwise. */
  success: readonly [number, ...number[]]
  statusOf?: (result: z.input<R>) => number
  /** Error statuses beyond 400, 401 and 403 (all answer {code, message}). */
  errors?: readonly number[]
  handler: (input: { params: z.output<P>, query: z.output<Q>, body: z.output<B> }, deps: AdminDeps, principal: Principal) => Promise<z.input<R>>
}

export type AdminRoute = RouteSpec<z.ZodType, z.ZodType, z.ZodType, z.ZodType>

/** Type-checks a route's handler against its schemas; the table holds them untyped. */
function route<P extends z.ZodType = z.ZodType, Q extends z.ZodType = z.ZodType, B extends z.ZodType = z.ZodType, R extends z.ZodType = z.ZodType> (spec: RouteSpec<P, Q, B, R>): AdminRoute {
  return spec
}

/** A page size: the one asked for, at most admin.pageMax. */
function pageSize (deps: AdminDeps, limit: number | undefined): number {
  const max = deps.services.config.admin.pageMax
  return Math.min(limit ?? max, max)
}

const USERS: AdminRoute[] = [
  route({
    operationId: 'listUsers',
    method: 'GET',
    url: '/users',
    scope: 'users:read',
    tag: 'users',
    summary: 'List users and bots, a page at a time',
    description: 'By id. Walk the pages by passing each `next` as `cursor` until it is null: every account that exists for the whole walk is listed exactly once.',
    query: ListUsersQuery,
    response: UserPage,
    success: [200],
    handler: async ({ query }, deps) => await userPage(deps.services.meta, { cursor: query.cursor, kind: query.kind, limit: pageSize(deps, query.limit) })
  }),
  route({
    operationId: 'createUser',
    method: 'POST',
    url: '/users',
    scope: 'users:write',
    tag: 'users',
    summary: 'Create a user',
    description: 'The answer carries the password: the given one, or a generated one.',
    body: CreateUserInput,
    response: CreatedUser,
    success: [201],
    errors: [409],
    handler: async ({ body }, deps) => await createUser(deps.services.meta, body)
  }),
  route({
    operationId: 'getUser',
    method: 'GET',
    url: '/users/:id',
    scope: 'users:read',
    tag: 'users',
    summary: 'One user or bot',
    params: UserParams,
    response: User,
    success: [200],
    errors: [404],
    handler: async ({ params }, deps) => await getUser(deps.services.meta, params.id)
  }),
  route({
    operationId: 'disableUser',
    method: 'POST',
    url: '/users/:id/disable',
    scope: 'users:write',
    tag: 'users',
    summary: 'Disable an account',
    description: 'New connections are refused (CONNACK 5) and the open ones end, on every node.',
    params: UserParams,
    response: DisabledState,
    success: [200],
    errors: [404],
    handler: async ({ params }, deps) => {
      await setDisabled(deps.services.meta, params.id, true)
      deps.revoke(params.id, 'account disabled')
      return { id: params.id, disabled: true }
    }
  }),
  route({
    operationId: 'enableUser',
    method: 'POST',
    url: '/users/:id/enable',
    scope: 'users:write',
    tag: 'users',
    summary: 'Enable a disabled account',
    params: UserParams,
    response: DisabledState,
    success: [200],
    errors: [404],
    handler: async ({ params }, deps) => {
      await setDisabled(deps.services.meta, params.id, false)
      return { id: params.id, disabled: false }
    }
  }),
  route({
    operationId: 'resetUser',
    method: 'POST',
    url: '/users/:id/reset',
    scope: 'users:write',
    tag: 'users',
    summary: "Replace an account's secret",
    description: 'A user gets a new password: the given one (8-256 characters, as when creating a user), or a generated one. A bot gets a new API key, always generated: a `password` for a bot is refused (400 BAD_REQUEST naming the field) and nothing changes. The old secret stops working at once, and the connections made with it end.',
    params: UserParams,
    body: ResetInput,
    response: NewSecret,
    success: [200],
    errors: [404],
    handler: async ({ params, body }, deps) => {
      const secret = await resetSecret(deps.services.meta, params.id, body.password)
      deps.revoke(params.id, 'secret reset')
      return { id: params.id, ...secret }
    }
  }),
  route({
    operationId: 'createBot',
    method: 'POST',
    url: '/bots',
    scope: 'users:write',
    tag: 'users',
    summary: 'Create a bot',
    description: 'The answer carries its API key (`mqk_…`), shown only this once; the bot logs in with it as its MQTT password.',
    body: CreateBotInput,
    response: CreatedBot,
    success: [201],
    errors: [409],
    handler: async ({ body }, deps) => await createBot(deps.services.meta, body)
  })
]

const CONVERSATIONS: AdminRoute[] = [
  route({
    operationId: 'createGroup',
    method: 'POST',
    url: '/conversations',
    scope: 'conversations:write',
    tag: 'conversations',
    summary: 'Create a group with members',
    description: "Made by the `create-group` operation acting as `owner` (default admin.systemUser): the owner's groupsCreatedPerHour, the members' group-invite settings and blocks apply. Every member gets a `member` event.",
    body: CreateGroupInput,
    response: CreatedGroup,
    success: [201],
    errors: [404, 429],
    handler: async ({ body }, deps) => await createGroup(deps.services, body)
  }),
  route({
    operationId: 'openDirect',
    method: 'POST',
    url: '/conversations/direct',
    scope: 'conversations:write',
    tag: 'conversations',
    summary: 'Open the direct conversation of two accounts',
    description: 'Made by the `direct` operation acting as `user` (e.g. a bot writing to one person). 201 when it was created, 200 when it existed.',
    body: OpenDirectInput,
    response: OpenedDirect,
    success: [201, 200],
    statusOf: r => r.created ? 201 : 200,
    errors: [404],
    handler: async ({ body }, deps) => await openDirect(deps.services, body)
  }),
  route({
    operationId: 'getConversation',
    method: 'GET',
    url: '/conversations/:conv',
    scope: 'conversations:read',
    tag: 'conversations',
    summary: 'One conversation: kind, name, member count, latest seq',
    params: ConvParams,
    response: Conversation,
    success: [200],
    errors: [404],
    handler: async ({ params }, deps) => await getConversation(deps.services, params.conv)
  }),
  route({
    operationId: 'listMembers',
    method: 'GET',
    url: '/conversations/:conv/members',
    scope: 'conversations:read',
    tag: 'conversations',
    summary: 'List the members of a conversation, a page at a time',
    description: 'By user id. Walk the pages by passing each `next` as `cursor` until it is null.',
    params: ConvParams,
    query: MembersQuery,
    response: MemberPage,
    success: [200],
    errors: [404],
    handler: async ({ params, query }, deps) => await memberPage(deps.services, params.conv, query.cursor, pageSize(deps, query.limit))
  }),
  route({
    operationId: 'addMembers',
    method: 'POST',
    url: '/conversations/:conv/members',
    scope: 'conversations:write',
    tag: 'conversations',
    summary: 'Add members to a group',
    description: 'Made by the `add-members` operation acting as `by` (default the owner). `added` leaves out who was a member already.',
    params: ConvParams,
    body: AddMembersInput,
    response: AddedMembers,
    success: [200],
    errors: [404],
    handler: async ({ params, body }, deps) => await addMembers(deps.services, params.conv, body)
  }),
  route({
    operationId: 'removeMember',
    method: 'DELETE',
    url: '/conversations/:conv/members/:user',
    scope: 'conversations:write',
    tag: 'conversations',
    summary: 'Remove a member from a group',
    description: 'Made by the `remove-member` operation acting as `by` (default the owner), who must outrank the member: the owner is not removed this way.',
    params: MemberParams,
    query: RemoveMemberQuery,
    response: RemovedMember,
    success: [200],
    errors: [404],
    handler: async ({ params, query }, deps) => await removeMember(deps.services, params.conv, params.user, query.by)
  })
]

const MESSAGES: AdminRoute[] = [
  route({
    operationId: 'sendMessage',
    method: 'POST',
    url: '/conversations/:conv/messages',
    scope: 'messages:send',
    tag: 'messages',
    summary: 'Send a message as a user, a bot or the system user',
    description: 'The `send` operation acting as `from` (default admin.systemUser), who must be a member: stored with the next seq, then delivered to every member, like a message sent over MQTT. 201 when stored; 200 with `duplicate: true` for a msgId this sender used before in this conversation (nothing is stored or delivered again). The request, as an MQTT send, must fit limits.maxPayloadBytes (413).',
    params: ConvParams,
    body: SendInput,
    response: Sent,
    success: [201, 200],
    statusOf: r => r.duplicate ? 200 : 201,
    errors: [404, 413, 503],
    handler: async ({ params, body }, deps) => await sendMessage(deps.services, params.conv, body)
  })
]

/** Built on first request (the table is fixed). */
let openApi: z.input<typeof OpenApiDocument> | null = null

const META: AdminRoute[] = [
  route({
    operationId: 'getOpenApi',
    method: 'GET',
    url: '/openapi.json',
    scope: null,
    tag: 'meta',
    summary: 'This document (OpenAPI 3.1)',
    description: 'Any valid admin token may read it, whatever its scopes.',
    response: OpenApiDocument,
    success: [200],
    handler: async () => {
      openApi ??= buildOpenApi(ADMIN_ROUTES)
      return openApi
    }
  })
]

export const ADMIN_ROUTES: readonly AdminRoute[] = [...USERS, ...CONVERSATIONS, ...MESSAGES, ...META]
