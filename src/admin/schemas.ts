/**
 * Request and response schemas of the admin HTTP API: fastify validates requests and serializes
 * responses with them, and the OpenAPI document (openapi.ts) is generated from them. Requests are
 * strict (unknown fields and query parameters: BAD_REQUEST).
 */
import { z } from 'zod'
import { ERROR_CODES, type ErrorCode } from '../errors.js'
import { ClientMsgId, ConvId, GroupName, Mentions, RoleSchema, Seq, UserId } from '../protocol/schemas.js'

/** Any JSON value (a custom message's body); a named schema of its own in the document (it is recursive). */
export const JsonValue = z.json()

export const ErrorBody = z.object({
  code: z.enum(Object.keys(ERROR_CODES) as [ErrorCode, ...ErrorCode[]]),
  message: z.string()
})

export const User = z.object({
  id: UserId,
  kind: z.enum(['user', 'bot']),
  displayName: z.string(),
  disabled: z.boolean(),
  /** epoch milliseconds */
  createdAt: z.number().int()
})

const Limit = z.coerce.number().int().min(1).meta({ description: 'page size; larger values are clamped to admin.pageMax (default 100)' })

// --- users ---------------------------------------------------------------------------------

export const UserParams = z.object({ id: UserId }).strict()

export const ListUsersQuery = z.object({
  cursor: UserId.optional().meta({ description: 'the `next` of the previous page (absent: the first page)' }),
  limit: Limit.optional(),
  kind: z.enum(['user', 'bot']).optional().meta({ description: 'only users, or only bots' })
}).strict()

export const UserPage = z.object({
  /** By id (byte order). */
  users: z.array(User),
  /** Pass as `cursor` for the next page; null: this was the last one. */
  next: UserId.nullable()
})

export const CreatedUser = z.object({ user: User, password: z.string() })
export const CreatedBot = z.object({ user: User, apiKey: z.string() })
export const DisabledState = z.object({ id: UserId, disabled: z.boolean() })
export const NewSecret = z.object({
  id: UserId,
  /** A user's new password. */
  password: z.string().optional(),
  /** A bot's new API key. */
  apiKey: z.string().optional()
})

// --- conversations -------------------------------------------------------------------------

export const ConvParams = z.object({ conv: ConvId }).strict()
export const MemberParams = z.object({ conv: ConvId, user: UserId }).strict()

export const CreateGroupInput = z.object({
  name: GroupName,
  owner: UserId.optional().meta({ description: 'who creates and owns the group (default admin.systemUser); the rules of create-group apply as for that user' }),
  members: z.array(UserId).max(10_000).meta({ description: 'the other members' })
}).strict()

export const CreatedGroup = z.object({ conv: ConvId, name: z.string(), members: z.array(UserId) })

export const OpenDirectInput = z.object({
  user: UserId.meta({ description: 'who opens it (e.g. a bot); the rules of direct apply as for that user' }),
  peer: UserId
}).strict()

export const OpenedDirect = z.object({ conv: ConvId, peer: UserId, created: z.boolean() })

export const Conversation = z.object({
  id: ConvId,
  kind: z.enum(['direct', 'group', 'channel']),
  name: z.string().nullable(),
  createdBy: UserId,
  createdAt: z.number().int(),
  /** How many members it has. */
  memberCount: z.number().int(),
  /** The seq of its latest entry (0: none). */
  lastSeq: z.number().int()
})

export const MembersQuery = z.object({
  cursor: UserId.optional().meta({ description: 'the `next` of the previous page (absent: the first page)' }),
  limit: Limit.optional()
}).strict()

export const Member = z.object({ user: UserId, role: RoleSchema, joinedAt: z.number().int() })

export const MemberPage = z.object({
  conv: ConvId,
  /** By user id (byte order). */
  members: z.array(Member),
  next: UserId.nullable()
})

export const AddMembersInput = z.object({
  users: z.array(UserId).min(1).max(10_000),
  by: UserId.optional().meta({ description: 'who adds them (an admin or the owner of the group; default the owner); the rules of add-members apply as for that user' })
}).strict()

export const AddedMembers = z.object({ conv: ConvId, added: z.array(UserId) })

export const RemoveMemberQuery = z.object({
  by: UserId.optional().meta({ description: 'who removes the member (of a higher role; default the owner)' })
}).strict()

export const RemovedMember = z.object({ conv: ConvId, removed: UserId })

// --- messages ------------------------------------------------------------------------------

export const SendInput = z.object({
  from: UserId.optional().meta({ description: 'the sender, a member of the conversation (default admin.systemUser)' }),
  msgId: ClientMsgId.meta({ description: "unique per sender and conversation: a resend with the same msgId stores nothing new and answers the first message's seq (duplicate: true)" }),
  kind: z.enum(['text', 'custom']),
  body: JsonValue.meta({ description: 'text: a non-empty string; custom: any JSON value' }),
  replyTo: Seq.min(1).optional(),
  mentions: Mentions.optional()
}).strict().superRefine((v, ctx) => {
  if (v.kind === 'text' && (typeof v.body !== 'string' || v.body.length === 0)) {
    ctx.addIssue({ code: 'custom', path: ['body'], message: 'a text message needs a non-empty string body' })
  }
})

export const Sent = z.object({
  conv: ConvId,
  seq: z.number().int(),
  msgId: ClientMsgId,
  /** Server time of the message, epoch milliseconds. */
  ts: z.number().int(),
  /** true: this msgId was stored before; seq is the first one, and nothing was delivered again. */
  duplicate: z.boolean()
})

/** Output schemas that get their own name in the document. */
export const NAMED_OUTPUTS: Record<string, z.ZodType> = { Error: ErrorBody, User, Member, Conversation, JsonValue }
