/**
 * Payload schemas: the single source of truth for the wire format (server, client SDK and
 * topics.md). Requests are strict: unknown fields are refused with BAD_REQUEST.
 */
import { lruCache } from '../lru.js'
import { z } from 'zod'

export const UserId = z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, 'a user id: 1-32 of a-z 0-9 _ . - starting with a letter or digit')
export const ConvId = z.string().regex(/^[A-Za-z0-9_-]{1,40}$/, 'a conversation id')
export const ClientMsgId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, '1-64 of A-Z a-z 0-9 _ -')
export const RequestId = z.string().min(1).max(64)
export const Seq = z.number().int().min(0).max(Number.MAX_SAFE_INTEGER)
export const RoleSchema = z.enum(['owner', 'admin', 'member'])
/**
 * Text shown to other people as a name (group names, display names): no control characters
 * (C0, DEL, C1), no line or paragraph separators, and no bidirectional overrides or isolates,
 * which can make a name read as another.
 */
export const DisplayText = z.string().trim().min(1).max(100)
  .refine(s => !/[\p{Cc}\p{Zl}\p{Zp}\u202a-\u202e\u2066-\u2069]/u.test(s), 'no control characters, line breaks or bidirectional overrides')
export const GroupName = DisplayText

const base = { id: RequestId }

/** Who a message mentions: members' user ids, or `@all` (every member; groups, admins and the owner). */
export const MENTION_ALL = '@all'
export const MENTIONS_MAX = 50
export const Mentions = z.array(z.union([UserId, z.literal(MENTION_ALL)])).min(1).max(MENTIONS_MAX)
  .refine(list => new Set(list).size === list.length, 'each user at most once')

/** An upload's id (the `id` of the `upload` result). */
export const FileId = z.string().regex(/^[A-Za-z0-9_-]{22}$/, 'a file id (the id `upload` answered)')
/** The body of a `send` of kind file: the upload it refers to (the stored message carries the file's description). */
export const FileRef = z.object({ id: FileId }).strict()
/** A file's name as shown: 1-255 characters, no control characters, slashes or bidirectional overrides. */
export const FileName = z.string().min(1).max(255)
  .refine(s => !/[\p{Cc}\p{Zl}\p{Zp}\u202a-\u202e\u2066-\u2069/\\]/u.test(s) && s.trim() === s && s !== '.' && s !== '..', 'a file name without control characters, slashes or surrounding spaces')
/** A media type: type/subtype, lower case, no parameters. */
export const MimeType = z.string().regex(/^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/, 'a media type in lower case, e.g. image/png')

export const SendRequest = z.object({
  ...base,
  conv: ConvId,
  msgId: ClientMsgId,
  kind: z.enum(['text', 'custom', 'file']),
  body: z.json(),
  replyTo: Seq.min(1).optional(),
  mentions: Mentions.optional()
}).strict().superRefine((v, ctx) => {
  if (v.kind === 'text' && (typeof v.body !== 'string' || v.body.length === 0)) {
    ctx.addIssue({ code: 'custom', path: ['body'], message: 'a text message needs a non-empty string body' })
  }
  if (v.kind === 'file' && !FileRef.safeParse(v.body).success) {
    ctx.addIssue({ code: 'custom', path: ['body'], message: 'a file message needs a body {"id": <the id upload answered>}' })
  }
})

/** Asks for a URL to upload one file to, for a message in `conv`. */
export const UploadRequest = z.object({
  ...base,
  conv: ConvId,
  name: FileName,
  size: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER),
  mime: MimeType,
  sha256: z.string().regex(/^[0-9a-fA-F]{64}$/, '64 hex digits').optional()
}).strict()
/** Asks for a URL to download a file of a message in `conv` (or its thumbnail). */
export const FileUrlRequest = z.object({ ...base, conv: ConvId, file: FileId, variant: z.enum(['original', 'thumb']).optional() }).strict()

export const HistoryRequest = z.object({
  ...base,
  conv: ConvId,
  /** Forward paging: messages with seq > after (oldest first). */
  after: Seq.optional(),
  /** Backward paging: messages with seq < before (the newest of them). */
  before: Seq.min(1).optional(),
  limit: z.number().int().min(1).optional()
}).strict()

export const ReadRequest = z.object({ ...base, conv: ConvId, seq: Seq }).strict()
export const MuteRequest = z.object({ ...base, conv: ConvId, muted: z.boolean() }).strict()
export const ListRequest = z.object({
  ...base,
  /** Where the page starts: the `next` of the previous page (absent: the first page). */
  cursor: ConvId.optional(),
  /** Page size; default and maximum limits.listPageMax. */
  limit: z.number().int().min(1).optional()
}).strict()
export const DirectRequest = z.object({ ...base, user: UserId }).strict()
export const CreateGroupRequest = z.object({ ...base, name: GroupName, members: z.array(UserId).max(10000) }).strict()
export const AddMembersRequest = z.object({ ...base, conv: ConvId, members: z.array(UserId).min(1).max(10000) }).strict()
export const RemoveMemberRequest = z.object({ ...base, conv: ConvId, user: UserId }).strict()
export const LeaveRequest = z.object({ ...base, conv: ConvId }).strict()
export const RenameRequest = z.object({ ...base, conv: ConvId, name: GroupName }).strict()
export const SetRoleRequest = z.object({ ...base, conv: ConvId, user: UserId, role: RoleSchema }).strict()
export const ReceiptsRequest = z.object({ ...base, conv: ConvId, seq: Seq.min(1) }).strict()
export const MembersRequest = z.object({
  ...base,
  conv: ConvId,
  /** Channels: the page starts after this user id (the `next` of the previous page). */
  after: UserId.optional(),
  /** Channels: page size; default and maximum channels.membersPageMax. */
  limit: z.number().int().min(1).optional()
}).strict()
export const PostPolicySchema = z.enum(['admins', 'members'])
/** A channel: read diffusion, one publish per message to im/c/<conv>/m (see topics.md "Channels"). */
export const CreateChannelRequest = z.object({
  ...base,
  name: GroupName,
  /** Anyone may join by id (default false: members are added by admins). */
  public: z.boolean().optional(),
  /** Who may post (default 'admins': the admins and the owner). */
  postPolicy: PostPolicySchema.optional()
}).strict()
/** An invite code, as create-invite answered it: 24 characters of base64url (144 random bits). */
export const InviteCode = z.string().regex(/^[A-Za-z0-9_-]{24}$/, 'an invite code: 24 of A-Z a-z 0-9 _ -')
/** An invite's short name in `invites` and `revoke-invite` (not the code): 8 hex digits. */
export const InviteCodeId = z.string().regex(/^[0-9a-f]{8}$/, 'a codeId: 8 lower-case hex digits, as `invites` lists it')
/** The most joins one invite may admit (maxUses); without maxUses, any number until it expires. */
export const INVITE_USES_MAX = 100_000
/** Joins a channel: a public one by its id (`conv`), or any channel with an invite code (`invite`). */
export const JoinRequest = z.object({ ...base, conv: ConvId.optional(), invite: InviteCode.optional() }).strict()
  .refine(r => (r.conv === undefined) !== (r.invite === undefined), 'exactly one of conv and invite')
export const ChannelInfoRequest = z.object({ ...base, conv: ConvId }).strict()
/** A new invite code of a channel (admins and the owner). */
export const CreateInviteRequest = z.object({
  ...base,
  conv: ConvId,
  /** How many joins it admits (default: any number until it expires). */
  maxUses: z.number().int().min(1).max(INVITE_USES_MAX).optional(),
  /** How long it works, in ms (default channels.inviteTtlMs; at most channels.inviteTtlMaxMs). */
  expiresInMs: z.number().int().min(1).max(Number.MAX_SAFE_INTEGER).optional()
}).strict()
export const InvitesRequest = z.object({ ...base, conv: ConvId }).strict()
export const RevokeInviteRequest = z.object({ ...base, conv: ConvId, codeId: InviteCodeId }).strict()
export const PresenceRequest = z.object({ ...base, users: z.array(UserId).min(1).max(500) }).strict()
export const GroupInvitesSchema = z.enum(['anyone', 'contacts'])
/** Reads my settings, changing those given. */
export const SettingsRequest = z.object({ ...base, groupInvites: GroupInvitesSchema.optional() }).strict()

/**
 * A reaction: one emoji (a pictographic character with its modifiers, joiners and variation
 * selectors, or a pair of regional indicators), 1-32 UTF-16 units. Nothing else: reactions are
 * keys of stored documents and are shown to every member.
 */
const GRAPHEMES = new Intl.Segmenter('en', { granularity: 'grapheme' })
const EMOJI_CHARS = /^(?:\p{Extended_Pictographic}|\p{Emoji_Modifier}|\p{Regional_Indicator}|\u200d|\ufe0f|\u20e3)+$/u
const PICTOGRAPH = /\p{Extended_Pictographic}|\p{Regional_Indicator}/u
const REGIONAL = /\p{Regional_Indicator}/gu
/** A flag is exactly two regional indicators; a variation selector never repeats. */
function wellFormedEmoji (s: string): boolean {
  const regional = s.match(REGIONAL)?.length ?? 0
  return (regional === 0 || (regional === 2 && [...s].length === 2)) && !s.includes('\ufe0f\ufe0f')
}
function isEmoji (s: string): boolean {
  return s.length >= 1 && s.length <= 32 && EMOJI_CHARS.test(s) && PICTOGRAPH.test(s) && [...GRAPHEMES.segment(s)].length === 1 && wellFormedEmoji(s)
}
/**
 * Emojis found good, the most recently used: checking one costs ~6 µs (the grapheme segmenter),
 * ten times the rest of a reaction's validation, and a server sees the same few hundred again and
 * again. Only good ones are kept; least recently used first out, so a client that sends thousands
 * of distinct emojis costs itself the full check and does not keep the common ones out.
 */
const GOOD_EMOJIS = lruCache<string, true>(4096)
export function validEmoji (s: string): boolean {
  if (GOOD_EMOJIS.get(s) === true) return true
  if (!isEmoji(s)) return false
  GOOD_EMOJIS.set(s, true)
  return true
}
export const Emoji = z.string().refine(validEmoji,
  'one emoji (one pictographic character, with its modifiers and joiners, or a flag), at most 32 UTF-16 units')
/** The seq of the message a change applies to. */
export const Target = Seq.min(1)

export const EditRequest = z.object({ ...base, conv: ConvId, msgId: ClientMsgId, target: Target, body: z.json() }).strict()
export const DeleteRequest = z.object({ ...base, conv: ConvId, msgId: ClientMsgId, target: Target }).strict()
export const ReactRequest = z.object({ ...base, conv: ConvId, msgId: ClientMsgId, target: Target, emoji: Emoji, remove: z.boolean().optional() }).strict()
export const TypingRequest = z.object({ ...base, conv: ConvId, typing: z.boolean().optional() }).strict()
export const BlockRequest = z.object({ ...base, user: UserId }).strict()
export const BlocksRequest = z.object({ ...base }).strict()

/** A device of the caller (the last level of its client id, `<user>/<device>`). */
export const DeviceId = z.string().regex(/^[A-Za-z0-9_-]{1,64}$/, 'a device id: 1-64 of A-Z a-z 0-9 _ -')
const Base64Url = z.string().regex(/^[A-Za-z0-9_-]+={0,2}$/, 'base64url')
/** A browser's PushSubscription (its toJSON(): endpoint, expirationTime, keys). */
export const WebPushSubscription = z.object({
  endpoint: z.string().min(1).max(2048),
  expirationTime: z.number().nullable().optional(),
  keys: z.object({ p256dh: Base64Url.max(100), auth: Base64Url.max(100) }).strict()
}).strict()
export const PushGatewayTarget = z.object({
  /** One of the server's push.gateways. */
  name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, 'a gateway name'),
  /** The app's device token at its push service (FCM registration token, APNs device token). */
  token: z.string().regex(/^[\x21-\x7e]{1,1024}$/, '1-1024 printable ASCII characters'),
  platform: z.enum(['ios', 'android', 'other'])
}).strict()
export const PushRegisterRequest = z.object({
  ...base,
  /** Default: the device of the connection. */
  device: DeviceId.optional(),
  webPush: WebPushSubscription.optional(),
  gateway: PushGatewayTarget.optional()
}).strict().refine(r => (r.webPush === undefined) !== (r.gateway === undefined), 'exactly one of webPush and gateway')
export const PushUnregisterRequest = z.object({ ...base, device: DeviceId.optional() }).strict()
export const PushTargetsRequest = z.object({ ...base }).strict()

/** Operation name (the last level of im/req/<op>) -> request schema. */
export const REQUESTS = {
  send: SendRequest,
  history: HistoryRequest,
  read: ReadRequest,
  mute: MuteRequest,
  list: ListRequest,
  direct: DirectRequest,
  'create-group': CreateGroupRequest,
  'add-members': AddMembersRequest,
  'remove-member': RemoveMemberRequest,
  leave: LeaveRequest,
  rename: RenameRequest,
  'set-role': SetRoleRequest,
  receipts: ReceiptsRequest,
  members: MembersRequest,
  presence: PresenceRequest,
  settings: SettingsRequest,
  edit: EditRequest,
  delete: DeleteRequest,
  react: ReactRequest,
  typing: TypingRequest,
  block: BlockRequest,
  unblock: BlockRequest,
  blocks: BlocksRequest,
  'push-register': PushRegisterRequest,
  'push-unregister': PushUnregisterRequest,
  'push-targets': PushTargetsRequest,
  upload: UploadRequest,
  'file-url': FileUrlRequest,
  'create-channel': CreateChannelRequest,
  join: JoinRequest,
  'channel-info': ChannelInfoRequest,
  'create-invite': CreateInviteRequest,
  invites: InvitesRequest,
  'revoke-invite': RevokeInviteRequest
} as const

export type OpName = keyof typeof REQUESTS
export type RequestOf<K extends OpName> = z.infer<(typeof REQUESTS)[K]>

export function isOpName (name: string): name is OpName {
  return Object.prototype.hasOwnProperty.call(REQUESTS, name)
}

/** Delivered on im/u/<user>/m, and the items of history results. */
export interface MessageEnvelope {
  conv: string
  seq: number
  msgId: string
  from: string
  ts: number
  /** text and custom: messages; edit, delete, react: changes to the message at `target`. */
  kind: 'text' | 'custom' | 'file' | 'edit' | 'delete' | 'react'
  /** Messages: the current body (the latest edit's; null once deleted). Changes: see topics.md. */
  body: unknown
  replyTo?: number
  /** Messages: who the sender mentioned (user ids, or '@all'). */
  mentions?: string[]
  /** Changes: the seq of the message changed. */
  target?: number
  /** Messages: the latest edit (seq and time of the change). */
  edited?: { seq: number, ts: number }
  /** Messages: the deletion (seq and time of the change, and who deleted it). */
  deleted?: { seq: number, ts: number, by: string }
  /** Messages: emoji -> the users reacting with it, in the order they reacted. */
  reactions?: Record<string, string[]>
}

export interface ConversationSummary {
  conv: string
  kind: 'direct' | 'group' | 'channel'
  /** Group name; for direct conversations null (see `peer`). */
  name: string | null
  /** Direct conversations: the other member. */
  peer?: string
  role: 'owner' | 'admin' | 'member'
  lastSeq: number
  last: MessageEnvelope | null
  readSeq: number
  unread: number
  /** Messages after readSeq that mention me (by name or @all). */
  mentions: number
  muted: boolean
}

/** Events on im/u/<user>/e. */
export type ImEvent =
  | { type: 'member', conv: string, action: 'added' | 'removed' | 'left' | 'role' | 'renamed', by: string, users: string[], role?: string, name?: string, kind: 'direct' | 'group' | 'channel', lastSeq?: number }
  | { type: 'read', conv: string, readSeq: number, unread: number }
  | { type: 'receipt', conv: string, kind: 'direct', user: string, readSeq: number }
  | { type: 'receipt', conv: string, kind: 'group', lastSeq: number, members: number, readAll: number, minReadSeq: number }
  | { type: 'presence', user: string, online: boolean, lastSeen: number | null }
  | { type: 'typing', conv: string, user: string, typing: boolean, ttlMs: number }
  | { type: 'mention', conv: string, seq: number, from: string, all: boolean }

export type Reply =
  | { id: string | null, op: string, ok: true, result: unknown }
  | { id: string | null, op: string, ok: false, error: { code: string, message: string } }
