/**
 * Conversation admin: open a direct conversation, create a group, add/remove members, leave,
 * rename, set roles, list members. Rules:
 *   - direct conversations have exactly two members and cannot be changed;
 *   - owner and admins add members and remove members of lower rank;
 *   - only the owner changes roles; giving `owner` to someone transfers ownership (the old
 *     owner becomes admin); an owner who leaves hands ownership to the longest-serving admin,
 *     else the longest-serving member; both hand-overs are one atomic store change;
 *   - whoever adds people to a group must be allowed by each one's `groupInvites` setting
 *     ('contacts': only people who share a group with them, or a direct conversation they opened;
 *     else REFUSED);
 *   - nobody opens a direct conversation with someone who blocks them or whom they block, and
 *     nobody adds to a group someone who blocks them (BLOCKED; see ../blocks.ts);
 *   - nobody joins more than limits.conversationsPerUser conversations (LIMIT_REACHED), and
 *     nobody creates more than limits.groupsCreatedPerHour groups an hour (RATE_LIMITED).
 * Every change is announced as a `member` event to everyone affected.
 */
import { randomBytes } from 'node:crypto'
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import { StoreConflictError, type ConversationRecord, type MemberRecord, type Role, type UserRecord } from '../../store/types.js'
import type { Caller, Services } from '../context.js'
import { outranks, requireGroup, requireMember, requireRole } from '../access.js'
import { requireUnblocked } from '../blocks.js'
import { channelAddMembers, channelLeave, channelMembers, channelRemoveMember, channelRename, channelSetRole } from './channels.js'

/** 16 characters of [A-Za-z0-9_-], starting with a letter (never '-', which shells read as a flag). */
export function newConversationId (): string {
  return 'c' + randomBytes(12).toString('base64url').slice(0, 15)
}

export function newMember (conversationId: string, userId: string, role: Role, now: number): MemberRecord {
  return { conversationId, userId, role, readSeq: 0, muted: false, joinedAt: now }
}

/** The users, in one store round trip; NOT_FOUND names the unknown ones. */
async function requireUsersExist (services: Services, userIds: string[]): Promise<UserRecord[]> {
  const found = await services.meta.userGetMany(userIds)
  const known = new Set(found.map(u => u.id))
  const missing = userIds.filter(u => !known.has(u))
  if (missing.length > 0) throw new ImError('NOT_FOUND', `no such user: ${missing.sort().join(', ')}`)
  return found
}

/** Each of these users may join one more conversation (limits.conversationsPerUser). */
export async function requireRoomFor (services: Services, userIds: string[]): Promise<void> {
  const max = services.config.limits.conversationsPerUser
  const counts = await services.meta.memberCountByUsers(userIds)
  const full = userIds.filter(u => (counts.get(u) ?? 0) >= max)
  if (full.length > 0) throw new ImError('LIMIT_REACHED', `already in ${max} conversations (the most one user may join): ${full.sort().join(', ')}`)
}

/**
 * The caller may add these users to a group: they exist, none blocks the caller, their invitation
 * setting lets the caller do it ('contacts': only people who already share a conversation with
 * them), and they have room.
 */
export async function requireInvitable (services: Services, caller: Caller, userIds: string[]): Promise<void> {
  const users = await requireUsersExist(services, userIds)
  const blockers = await services.blocks.blockersAmong(caller.userId, userIds)
  if (blockers.size > 0) throw new ImError('BLOCKED', `they have blocked you: ${[...blockers].sort().join(', ')}`)
  const guarded = users.filter(u => u.groupInvites === 'contacts').map(u => u.id)
  if (guarded.length > 0) {
    // the caller must be their contact: in a group with them, or in a direct conversation they opened
    const accepting = await services.meta.memberContactOf(caller.userId, guarded)
    const refused = guarded.filter(u => !accepting.has(u)).sort()
    if (refused.length > 0) throw new ImError('REFUSED', `only their contacts may add them to groups: ${refused.join(', ')}`)
  }
  await requireRoomFor(services, userIds)
}

/** limits.groupsCreatedPerHour, over a rolling hour, counted in the store (so across nodes and restarts). */
export async function requireGroupQuota (services: Services, caller: Caller): Promise<void> {
  const max = services.config.limits.groupsCreatedPerHour
  const created = await services.meta.conversationCountCreatedSince(caller.userId, services.now() - 3_600_000)
  if (created >= max) throw new ImError('RATE_LIMITED', `at most ${max} groups per hour; retry later`)
}

export async function direct (caller: Caller, req: RequestOf<'direct'>, services: Services): Promise<{ conv: string, peer: string, created: boolean }> {
  if (req.user === caller.userId) throw new ImError('BAD_REQUEST', 'a direct conversation needs another user')
  const directKey = [caller.userId, req.user].sort().join('|')
  const existing = await services.meta.conversationGetDirect(directKey)
  // the users exist before their block lists are read (no cache entries for made-up names);
  // an existing conversation is refused too: it stays listed and readable, but is not reopened
  if (existing === null) await requireUsersExist(services, [req.user])
  await requireUnblocked(services, caller.userId, req.user)
  if (existing !== null) return { conv: existing.id, peer: req.user, created: false }
  await requireRoomFor(services, [caller.userId, req.user])
  const now = services.now()
  const conversation: ConversationRecord = { id: newConversationId(), kind: 'direct', name: null, directKey, createdBy: caller.userId, createdAt: now }
  try {
    await services.meta.conversationCreate(conversation, [newMember(conversation.id, caller.userId, 'member', now), newMember(conversation.id, req.user, 'member', now)])
  } catch (err) {
    if (!(err instanceof StoreConflictError)) throw err
    const raced = await services.meta.conversationGetDirect(directKey)
    if (raced === null) throw err
    return { conv: raced.id, peer: req.user, created: false }
  }
  services.sequencer.created(conversation.id)
  services.publisher.event([caller.userId, req.user], { type: 'member', conv: conversation.id, kind: 'direct', action: 'added', by: caller.userId, users: [caller.userId, req.user] })
  return { conv: conversation.id, peer: req.user, created: true }
}

export async function createGroup (caller: Caller, req: RequestOf<'create-group'>, services: Services): Promise<{ conv: string, name: string, members: string[] }> {
  const others = [...new Set(req.members)].filter(u => u !== caller.userId)
  if (others.length + 1 > services.config.limits.groupMembersMax) {
    throw new ImError('BAD_REQUEST', `a group has at most ${services.config.limits.groupMembersMax} members`)
  }
  await requireGroupQuota(services, caller)
  await requireInvitable(services, caller, others)
  await requireRoomFor(services, [caller.userId])
  const now = services.now()
  const conversation: ConversationRecord = { id: newConversationId(), kind: 'group', name: req.name, directKey: null, createdBy: caller.userId, createdAt: now }
  const members = [newMember(conversation.id, caller.userId, 'owner', now), ...others.map(u => newMember(conversation.id, u, 'member', now))]
  await services.meta.conversationCreate(conversation, members)
  services.sequencer.created(conversation.id)
  const all = members.map(m => m.userId)
  services.publisher.event(all, { type: 'member', conv: conversation.id, kind: 'group', action: 'added', by: caller.userId, users: all, name: req.name })
  return { conv: conversation.id, name: req.name, members: all }
}

export async function addMembers (caller: Caller, req: RequestOf<'add-members'>, services: Services): Promise<{ conv: string, added: string[] }> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelAddMembers(caller, req, member, entry, services)
  requireGroup(entry)
  requireRole(member, 'admin')
  const candidates = [...new Set(req.members)].filter(u => !entry.members.has(u))
  if (entry.members.size + candidates.length > services.config.limits.groupMembersMax) {
    throw new ImError('BAD_REQUEST', `a group has at most ${services.config.limits.groupMembersMax} members`)
  }
  await requireInvitable(services, caller, candidates)
  const now = services.now()
  const added = await services.meta.memberAdd(candidates.map(u => newMember(req.conv, u, 'member', now)))
  services.directory.invalidate(req.conv)
  if (added.length > 0) {
    const everyone = new Set([...entry.members.keys(), ...added])
    services.publisher.event(everyone, { type: 'member', conv: req.conv, kind: 'group', action: 'added', by: caller.userId, users: added, name: entry.conversation.name ?? undefined })
  }
  return { conv: req.conv, added }
}

export async function removeMember (caller: Caller, req: RequestOf<'remove-member'>, services: Services): Promise<{ conv: string, removed: string }> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelRemoveMember(caller, req, member, services)
  requireGroup(entry)
  requireRole(member, 'admin')
  if (req.user === caller.userId) throw new ImError('BAD_REQUEST', 'use leave to remove yourself')
  const target = entry.members.get(req.user)
  if (target === undefined) throw new ImError('NOT_FOUND', `${req.user} is not a member`)
  if (!outranks(member.role, target.role)) throw new ImError('FORBIDDEN', `your role (${member.role}) cannot remove a member with role ${target.role}`)
  await services.meta.memberRemove(req.conv, req.user)
  services.directory.invalidate(req.conv)
  services.publisher.event(entry.members.keys(), { type: 'member', conv: req.conv, kind: 'group', action: 'removed', by: caller.userId, users: [req.user] })
  return { conv: req.conv, removed: req.user }
}

export async function leave (caller: Caller, req: RequestOf<'leave'>, services: Services): Promise<{ conv: string, newOwner?: string }> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelLeave(caller, req, member, services)
  requireGroup(entry)
  let newOwner: string | undefined
  if (member.role === 'owner') {
    const rest = [...entry.members.values()].filter(m => m.userId !== caller.userId)
    const successor = rest.filter(m => m.role === 'admin').sort((a, b) => a.joinedAt - b.joinedAt)[0] ??
      rest.sort((a, b) => a.joinedAt - b.joinedAt)[0]
    newOwner = successor?.userId
  }
  // leaving and handing over ownership are one change: never two owners, never none
  if (!(await services.meta.memberRemove(req.conv, caller.userId, newOwner))) throw new ImError('CONFLICT', 'the membership changed meanwhile; retry')
  services.directory.invalidate(req.conv)
  services.publisher.event(entry.members.keys(), { type: 'member', conv: req.conv, kind: 'group', action: 'left', by: caller.userId, users: [caller.userId] })
  if (newOwner !== undefined) {
    services.publisher.event([...entry.members.keys()].filter(u => u !== caller.userId), { type: 'member', conv: req.conv, kind: 'group', action: 'role', by: caller.userId, users: [newOwner], role: 'owner' })
  }
  return newOwner === undefined ? { conv: req.conv } : { conv: req.conv, newOwner }
}

export async function rename (caller: Caller, req: RequestOf<'rename'>, services: Services): Promise<{ conv: string, name: string }> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelRename(caller, req, member, services)
  requireGroup(entry)
  requireRole(member, 'admin')
  await services.meta.conversationRename(req.conv, req.name)
  services.directory.invalidate(req.conv)
  services.publisher.event(entry.members.keys(), { type: 'member', conv: req.conv, kind: 'group', action: 'renamed', by: caller.userId, users: [], name: req.name })
  return { conv: req.conv, name: req.name }
}

export async function setRole (caller: Caller, req: RequestOf<'set-role'>, services: Services): Promise<{ conv: string, user: string, role: Role }> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelSetRole(caller, req, member, services)
  requireGroup(entry)
  requireRole(member, 'owner')
  if (req.user === caller.userId) throw new ImError('BAD_REQUEST', 'the owner hands over ownership by giving the owner role to another member')
  if (!entry.members.has(req.user)) throw new ImError('NOT_FOUND', `${req.user} is not a member`)
  const changed = req.role === 'owner'
    ? await services.meta.memberTransferOwnership(req.conv, caller.userId, req.user) // one change: never two owners
    : await services.meta.memberSetRole(req.conv, req.user, req.role)
  if (!changed) throw new ImError('CONFLICT', 'the membership changed meanwhile; retry')
  services.directory.invalidate(req.conv)
  services.publisher.event(entry.members.keys(), { type: 'member', conv: req.conv, kind: 'group', action: 'role', by: caller.userId, users: [req.user], role: req.role })
  if (req.role === 'owner') {
    services.publisher.event(entry.members.keys(), { type: 'member', conv: req.conv, kind: 'group', action: 'role', by: caller.userId, users: [caller.userId], role: 'admin' })
  }
  return { conv: req.conv, user: req.user, role: req.role }
}

export async function members (caller: Caller, req: RequestOf<'members'>, services: Services): Promise<{ conv: string, kind: string, name: string | null, members: Array<{ user: string, role: Role }>, count?: number, next?: string | null }> {
  const { entry } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') return await channelMembers(req, entry, services)
  if (req.after !== undefined || req.limit !== undefined) throw new ImError('BAD_REQUEST', 'after and limit page the members of channels; a group answers all of its members')
  const list = [...entry.members.values()].sort((a, b) => a.joinedAt - b.joinedAt || a.userId.localeCompare(b.userId))
  return { conv: req.conv, kind: entry.conversation.kind, name: entry.conversation.name, members: list.map(m => ({ user: m.userId, role: m.role })) }
}
