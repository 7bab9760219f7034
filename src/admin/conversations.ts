/**
 * Conversations and messages through the admin API. Every change is made by the IM operation a
 * client would call (src/im/ops/*), acting as a named account: the same rules, the same events,
 * the same send path (sequencer: stored, delivered, idempotent by msgId). Who acts:
 *  - `owner` (create a group), `from` (send): given, or config `admin.systemUser`;
 *  - `by` (add or remove members): given, or the group's owner;
 *  - `user` (open a direct conversation): given.
 * An account named so must exist and not be disabled (the owner taken by default is not checked).
 */
import { z } from 'zod'
import { ImError } from '../errors.js'
import type { Caller, Services } from '../im/context.js'
import { addMembers as addMembersOp, createGroup as createGroupOp, direct as directOp, removeMember as removeMemberOp } from '../im/ops/conversations.js'
import { send as sendOp } from '../im/ops/send.js'
import type { ConversationEntry } from '../im/directory.js'
import type { RequestOf } from '../protocol/schemas.js'
import type { AddMembersInput, Conversation, CreateGroupInput, Member, OpenDirectInput, SendInput } from './schemas.js'

/** The device id of requests made through the admin API (nothing is sent back to it). */
const ADMIN_DEVICE = 'admin-api'
/** The request id of operations run for the admin API (they answer over HTTP, not MQTT). */
const ADMIN_REQUEST = 'admin-api'

/** The account acting: it exists and is not disabled. */
async function actor (services: Services, userId: string): Promise<Caller> {
  const user = await services.meta.userGet(userId)
  if (user === null) throw new ImError('NOT_FOUND', `no such user: ${userId}`)
  if (user.disabled) throw new ImError('FORBIDDEN', `${userId} is disabled`)
  return { userId, deviceId: ADMIN_DEVICE }
}

/** The account named, else admin.systemUser. */
function namedOrSystem (services: Services, userId: string | undefined, field: string): string {
  const id = userId ?? services.config.admin.systemUser
  if (id === null) throw new ImError('BAD_REQUEST', `${field}: required (no admin.systemUser is configured)`)
  return id
}

async function requireConversation (services: Services, conv: string): Promise<ConversationEntry> {
  const entry = await services.directory.get(conv)
  if (entry === null) throw new ImError('NOT_FOUND', `no such conversation: ${conv}`)
  return entry
}

/** `by`, else the owner of the group. */
async function manager (services: Services, entry: ConversationEntry, by: string | undefined): Promise<Caller> {
  if (by !== undefined) return await actor(services, by)
  const owner = [...entry.members.values()].find(m => m.role === 'owner')
  if (owner === undefined) throw new ImError('FORBIDDEN', 'direct conversations have exactly two members and cannot be changed')
  return { userId: owner.userId, deviceId: ADMIN_DEVICE }
}

export async function createGroup (services: Services, input: z.output<typeof CreateGroupInput>): Promise<{ conv: string, name: string, members: string[] }> {
  const caller = await actor(services, namedOrSystem(services, input.owner, 'owner'))
  return await createGroupOp(caller, { id: ADMIN_REQUEST, name: input.name, members: input.members }, services)
}

export async function openDirect (services: Services, input: z.output<typeof OpenDirectInput>): Promise<{ conv: string, peer: string, created: boolean }> {
  const caller = await actor(services, input.user)
  return await directOp(caller, { id: ADMIN_REQUEST, user: input.peer }, services)
}

export async function getConversation (services: Services, conv: string): Promise<z.input<typeof Conversation>> {
  const { conversation, members } = await requireConversation(services, conv)
  const lastSeq = await services.sequencer.lastSeqFor(conv)
  // a channel's entry holds no members: count them in the store
  const memberCount = conversation.kind === 'channel' ? (await services.meta.memberCountMany([conv])).get(conv) ?? 0 : members.size
  return { id: conversation.id, kind: conversation.kind, name: conversation.name, createdBy: conversation.createdBy, createdAt: conversation.createdAt, memberCount, lastSeq }
}

/** One page of members by user id (byte order), after `cursor`. */
export async function memberPage (services: Services, conv: string, cursor: string | undefined, limit: number): Promise<{ conv: string, members: Array<z.input<typeof Member>>, next: string | null }> {
  const { conversation, members } = await requireConversation(services, conv)
  if (conversation.kind === 'channel') {
    // a channel's entry holds no members: one page of the store
    const read = await services.meta.memberPage(conv, { after: cursor ?? null, limit: limit + 1 })
    const shown = read.slice(0, limit)
    return { conv, members: shown.map(m => ({ user: m.userId, role: m.role, joinedAt: m.joinedAt })), next: read.length > limit ? shown[shown.length - 1]?.userId ?? null : null }
  }
  const after = [...members.values()].filter(m => cursor === undefined || m.userId > cursor).sort((a, b) => a.userId < b.userId ? -1 : 1)
  const page = after.slice(0, limit)
  const next = after.length > limit ? page[page.length - 1]?.userId ?? null : null
  return { conv, members: page.map(m => ({ user: m.userId, role: m.role, joinedAt: m.joinedAt })), next }
}

export async function addMembers (services: Services, conv: string, input: z.output<typeof AddMembersInput>): Promise<{ conv: string, added: string[] }> {
  const caller = await manager(services, await requireConversation(services, conv), input.by)
  return await addMembersOp(caller, { id: ADMIN_REQUEST, conv, members: input.users }, services)
}

export async function removeMember (services: Services, conv: string, user: string, by: string | undefined): Promise<{ conv: string, removed: string }> {
  const caller = await manager(services, await requireConversation(services, conv), by)
  return await removeMemberOp(caller, { id: ADMIN_REQUEST, conv, user }, services)
}

/**
 * The message goes the way of an MQTT `send`: the same op (member? blocked? mentions, replyTo,
 * the before-send hook), then the sequencer. It is held to limits.maxPayloadBytes as the MQTT
 * request it stands for would be.
 */
export async function sendMessage (services: Services, conv: string, input: z.output<typeof SendInput>): Promise<{ conv: string, seq: number, msgId: string, ts: number, duplicate: boolean }> {
  await requireConversation(services, conv)
  const caller = await actor(services, namedOrSystem(services, input.from, 'from'))
  const request: RequestOf<'send'> = {
    id: ADMIN_REQUEST,
    conv,
    msgId: input.msgId,
    kind: input.kind,
    body: input.body,
    ...(input.replyTo === undefined ? {} : { replyTo: input.replyTo }),
    ...(input.mentions === undefined ? {} : { mentions: input.mentions })
  }
  const bytes = Buffer.byteLength(JSON.stringify(request))
  const max = services.config.limits.maxPayloadBytes
  if (bytes > max) throw new ImError('TOO_LARGE', `the message is ${bytes} bytes as a send request; the limit is ${max} (limits.maxPayloadBytes)`)
  return await sendOp(caller, request, services)
}
