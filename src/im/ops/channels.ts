/**
 * Channels: broadcast conversations of up to channels.membersMax members, by read diffusion.
 * Each message is stored with its seq like any other and published once, to the channel topic
 * im/c/<conv>/m, which the broker fans out to the members' subscribed connections (see
 * gateway/channels.ts); offline members pull with `history {after}`. Rules:
 *   - create-channel: anyone (within limits.groupsCreatedPerHour, shared with groups) creates a
 *     channel and is its owner;
 *   - join: anyone joins a public channel by id, and any channel with an invite code (see
 *     ops/invites.ts); private ones otherwise only through add-members; never a user an admin
 *     removed (until an admin adds them again), never a channel whose last member left;
 *   - add-members, remove-member, set-role, rename: as in groups (admins add and remove members of
 *     lower rank; the owner sets roles), with the member's record read one at a time, never the
 *     whole member list;
 *   - leave: any member; the owner only as the last member (else hand over ownership first: the
 *     successor is not searched among 100,000 members);
 *   - posting (send, edit, delete, react): the admins and the owner, or every member when the
 *     channel's postPolicy is 'members';
 *   - member events go to the users concerned and the actor only, never to every member;
 *   - invites die with their creator's rank: when an admin or the owner is removed, leaves or
 *     becomes a plain member, the invites they made are removed (and `join` checks the creator's
 *     role too, for a change that raced with the creation).
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import { channelTopic } from '../../protocol/topics.js'
import { inviteLive, type ConversationRecord, type InviteRecord, type MemberRecord, type PostPolicy, type Role } from '../../store/types.js'
import type { Caller, Services } from '../context.js'
import type { ConversationEntry } from '../directory.js'
import { lastSeqOf, outranks, requireRole } from '../access.js'
import { inviteHash } from '../invites.js'
import { newConversationId, newMember, requireGroupQuota, requireInvitable, requireRoomFor } from './conversations.js'

export interface ChannelInfo {
  conv: string
  name: string | null
  public: boolean
  postPolicy: PostPolicy
  /** Members now (one count in the store, no list). */
  members: number
  lastSeq: number
  /** The caller's role, or null when not a member. */
  role: Role | null
  /** Whether the caller may post. */
  canPost: boolean
  /** The topic to subscribe (members only). */
  topic: string
}

function settingsOf (entry: ConversationEntry): { public: boolean, postPolicy: PostPolicy } {
  return entry.conversation.channel ?? { public: false, postPolicy: 'admins' }
}

function mayPost (entry: ConversationEntry, member: MemberRecord): boolean {
  return settingsOf(entry).postPolicy === 'members' || member.role !== 'member'
}

/** In a channel, only those the post policy allows may post (and edit, delete, react). */
export function requirePoster (entry: ConversationEntry, member: MemberRecord): void {
  if (entry.conversation.kind === 'channel' && !mayPost(entry, member)) throw new ImError('FORBIDDEN', 'only the admins and the owner may post in this channel')
}

/**
 * The caller's membership read from the store, for the admin operations: a role changed through
 * another node a moment ago counts at once (the cached copy follows over the cluster bus).
 */
export async function current (services: Services, conv: string, userId: string): Promise<MemberRecord> {
  const member = await services.meta.memberGet(conv, userId)
  if (member === null) throw new ImError('NOT_MEMBER')
  return member
}

async function memberCount (services: Services, conv: string): Promise<number> {
  return (await services.meta.memberCountMany([conv])).get(conv) ?? 0
}

/** The channel, or NOT_FOUND (also for conversations that are not channels: nobody learns which ids exist). */
async function channelEntry (services: Services, conv: string): Promise<ConversationEntry> {
  const entry = await services.directory.get(conv)
  if (entry === null || entry.conversation.kind !== 'channel') throw new ImError('NOT_FOUND', 'no such channel')
  return entry
}

export async function createChannel (caller: Caller, req: RequestOf<'create-channel'>, services: Services): Promise<{ conv: string, name: string, public: boolean, postPolicy: PostPolicy, topic: string }> {
  await requireGroupQuota(services, caller)
  await requireRoomFor(services, [caller.userId])
  const now = services.now()
  const settings = { public: req.public ?? false, postPolicy: req.postPolicy ?? 'admins' }
  const conversation: ConversationRecord = { id: newConversationId(), kind: 'channel', name: req.name, directKey: null, createdBy: caller.userId, createdAt: now, channel: settings }
  await services.meta.conversationCreate(conversation, [newMember(conversation.id, caller.userId, 'owner', now)])
  services.sequencer.created(conversation.id)
  services.channels.joined(conversation.id, [caller.userId])
  services.publisher.event([caller.userId], { type: 'member', conv: conversation.id, kind: 'channel', action: 'added', by: caller.userId, users: [caller.userId], name: req.name, lastSeq: 0 })
  return { conv: conversation.id, name: req.name, ...settings, topic: channelTopic(conversation.id) }
}

/** The one answer to every code that does not admit: nobody learns which codes exist, nor why one fails. */
const NO_INVITE = 'no such invite (or it expired, was revoked or was used up)'

/** The channel a join asks for, and the invite that admits it (null: by id, public channels only). */
async function joinTarget (services: Services, req: RequestOf<'join'>): Promise<{ entry: ConversationEntry, invite: InviteRecord | null }> {
  if (req.conv !== undefined) return { entry: await channelEntry(services, req.conv), invite: null }
  if (req.invite === undefined) throw new ImError('BAD_REQUEST', 'exactly one of conv and invite') // as the schema says
  const invite = await services.meta.inviteGet(inviteHash(req.invite))
  if (invite === null || !inviteLive(invite, services.now())) throw new ImError('NOT_FOUND', NO_INVITE)
  // its creator must still be an admin or the owner: read from the store, so a change made a
  // moment ago through another node counts (invites are never cached either: a revoke counts at once)
  // and an account that is enabled: disabling a (compromised) admin stops the codes they made
  const [entry, creator, account] = await Promise.all([
    services.directory.get(invite.conversationId),
    services.meta.memberGet(invite.conversationId, invite.createdBy),
    services.meta.userGet(invite.createdBy)
  ])
  if (entry === null || entry.conversation.kind !== 'channel' || creator === null || creator.role === 'member' || account === null || account.disabled) throw new ImError('NOT_FOUND', NO_INVITE)
  return { entry, invite }
}

/**
 * Joins a channel: a public one by id, any one with an invite code. Steps: find the channel (and
 * the invite) → already a member: joined false, no use taken → by id, private: NOT_FOUND → removed
 * by an admin: FORBIDDEN → no member left: NOT_FOUND → room for one more (the user's
 * conversations, the channel's members) → take one use of the invite →
 * add the member (a use that added nobody is given back) → subscribe the connected devices → the
 * member event with lastSeq.
 */
export async function join (caller: Caller, req: RequestOf<'join'>, services: Services): Promise<{ conv: string, name: string | null, joined: boolean, topic: string, lastSeq: number }> {
  const { entry, invite } = await joinTarget(services, req)
  const conv = entry.conversation.id
  const topic = channelTopic(conv)
  if (await services.directory.channelMember(conv, caller.userId) !== null) {
    return { conv, name: entry.conversation.name, joined: false, topic, lastSeq: await lastSeqOf(services, conv) }
  }
  if (invite === null && !settingsOf(entry).public) throw new ImError('NOT_FOUND', 'no such channel')
  // removed by an admin: kept out (by id and by code) until an admin adds them again
  if (await services.meta.removalGet(conv, caller.userId) !== null) throw new ImError('FORBIDDEN', 'an admin removed you from this channel: only an admin can add you again')
  await requireRoomFor(services, [caller.userId])
  const max = services.config.channels.membersMax
  const count = await memberCount(services, conv)
  // its last member left: it has no owner, and nobody could ever post in it or run it again
  if (count === 0) throw new ImError('NOT_FOUND', 'no such channel')
  if (count >= max) throw new ImError('LIMIT_REACHED', `the channel has ${max} members, the most a channel may have`)
  if (invite !== null && !(await services.meta.inviteUse(invite.codeHash, services.now()))) throw new ImError('NOT_FOUND', NO_INVITE)
  let added: string[]
  try {
    added = await services.meta.memberAdd([newMember(conv, caller.userId, 'member', services.now())])
  } catch (err) {
    // the use goes back if the store lets it; the failure of the join is what the caller hears of
    if (invite !== null) await services.meta.inviteRelease(invite.codeHash).catch(() => {})
    throw err
  }
  // a member already (another device joined at the same moment): the use admitted nobody
  if (invite !== null && added.length === 0) await services.meta.inviteRelease(invite.codeHash)
  services.channels.joined(conv, added)
  // the last seq is read once the membership is stored: everything after it is the member's to receive
  const lastSeq = await lastSeqOf(services, conv)
  if (added.length > 0) services.publisher.event([caller.userId], { type: 'member', conv, kind: 'channel', action: 'added', by: caller.userId, users: added, name: entry.conversation.name ?? undefined, lastSeq })
  return { conv, name: entry.conversation.name, joined: added.length > 0, topic, lastSeq }
}

export async function channelInfo (caller: Caller, req: RequestOf<'channel-info'>, services: Services): Promise<ChannelInfo> {
  const entry = await channelEntry(services, req.conv)
  const member = await services.directory.channelMember(req.conv, caller.userId)
  const settings = settingsOf(entry)
  // a private channel is shown to its members only
  if (member === null && !settings.public) throw new ImError('NOT_FOUND', 'no such channel')
  const [members, lastSeq] = await Promise.all([memberCount(services, req.conv), lastSeqOf(services, req.conv)])
  // a public channel whose last member left is gone for good (see join)
  if (members === 0) throw new ImError('NOT_FOUND', 'no such channel')
  return {
    conv: req.conv,
    name: entry.conversation.name,
    ...settings,
    members,
    lastSeq,
    role: member?.role ?? null,
    canPost: member !== null && mayPost(entry, member),
    topic: channelTopic(req.conv)
  }
}

// ---- the conversation admin operations, for channels (called by ops/conversations.ts) ----------

export async function channelAddMembers (caller: Caller, req: RequestOf<'add-members'>, member: MemberRecord, entry: ConversationEntry, services: Services): Promise<{ conv: string, added: string[] }> {
  member = await current(services, req.conv, caller.userId)
  requireRole(member, 'admin')
  const candidates = [...new Set(req.members)].filter(u => u !== caller.userId)
  const max = services.config.channels.membersMax
  if (await memberCount(services, req.conv) + candidates.length > max) throw new ImError('LIMIT_REACHED', `a channel has at most ${max} members`)
  await requireInvitable(services, caller, candidates)
  const now = services.now()
  // added by an admin: a removal no longer keeps them out of join
  await services.meta.removalClear(req.conv, candidates)
  const added = await services.meta.memberAdd(candidates.map(u => newMember(req.conv, u, 'member', now)))
  services.channels.joined(req.conv, added)
  if (added.length > 0) {
    // with the last seq once they are members: a client pulls history {after: lastSeq} after subscribing
    const lastSeq = await lastSeqOf(services, req.conv)
    services.publisher.event([caller.userId, ...added], { type: 'member', conv: req.conv, kind: 'channel', action: 'added', by: caller.userId, users: added, name: entry.conversation.name ?? undefined, lastSeq })
  }
  return { conv: req.conv, added }
}

export async function channelRemoveMember (caller: Caller, req: RequestOf<'remove-member'>, member: MemberRecord, services: Services): Promise<{ conv: string, removed: string }> {
  member = await current(services, req.conv, caller.userId)
  requireRole(member, 'admin')
  if (req.user === caller.userId) throw new ImError('BAD_REQUEST', 'use leave to remove yourself')
  const target = await services.meta.memberGet(req.conv, req.user)
  if (target === null) throw new ImError('NOT_FOUND', `${req.user} is not a member`)
  if (!outranks(member.role, target.role)) throw new ImError('FORBIDDEN', `your role (${member.role}) cannot remove a member with role ${target.role}`)
  // marked before the membership goes, so that no join can slip in between
  await services.meta.removalMark(req.conv, req.user, services.now())
  const removed = await services.meta.memberRemove(req.conv, req.user)
  // also when someone else removed them meanwhile: their connections stop receiving either way
  services.channels.left(req.conv, [req.user])
  if (target.role !== 'member') await services.meta.inviteRemoveByCreator(req.conv, req.user)
  if (!removed) throw new ImError('NOT_FOUND', `${req.user} is not a member`)
  services.publisher.event([caller.userId, req.user], { type: 'member', conv: req.conv, kind: 'channel', action: 'removed', by: caller.userId, users: [req.user] })
  return { conv: req.conv, removed: req.user }
}

export async function channelLeave (caller: Caller, req: RequestOf<'leave'>, member: MemberRecord, services: Services): Promise<{ conv: string }> {
  member = await current(services, req.conv, caller.userId)
  if (member.role === 'owner' && await memberCount(services, req.conv) > 1) {
    throw new ImError('FORBIDDEN', 'the owner of a channel hands over ownership (set-role owner) before leaving')
  }
  const removed = await services.meta.memberRemove(req.conv, caller.userId)
  services.channels.left(req.conv, [caller.userId])
  if (member.role !== 'member') await services.meta.inviteRemoveByCreator(req.conv, caller.userId)
  if (!removed) throw new ImError('NOT_MEMBER')
  services.publisher.event([caller.userId], { type: 'member', conv: req.conv, kind: 'channel', action: 'left', by: caller.userId, users: [caller.userId] })
  return { conv: req.conv }
}

export async function channelSetRole (caller: Caller, req: RequestOf<'set-role'>, member: MemberRecord, services: Services): Promise<{ conv: string, user: string, role: Role }> {
  member = await current(services, req.conv, caller.userId)
  requireRole(member, 'owner')
  if (req.user === caller.userId) throw new ImError('BAD_REQUEST', 'the owner hands over ownership by giving the owner role to another member')
  if (await services.meta.memberGet(req.conv, req.user) === null) throw new ImError('NOT_FOUND', `${req.user} is not a member`)
  const changed = req.role === 'owner'
    ? await services.meta.memberTransferOwnership(req.conv, caller.userId, req.user)
    : await services.meta.memberSetRole(req.conv, req.user, req.role)
  services.directory.invalidateMembers(req.conv, req.role === 'owner' ? [req.user, caller.userId] : [req.user])
  if (!changed) throw new ImError('CONFLICT', 'the membership changed meanwhile; retry')
  // a plain member makes no invites: those they made as an admin stop working
  if (req.role === 'member') await services.meta.inviteRemoveByCreator(req.conv, req.user)
  services.publisher.event([caller.userId, req.user], { type: 'member', conv: req.conv, kind: 'channel', action: 'role', by: caller.userId, users: [req.user], role: req.role })
  return { conv: req.conv, user: req.user, role: req.role }
}

export async function channelRename (caller: Caller, req: RequestOf<'rename'>, member: MemberRecord, services: Services): Promise<{ conv: string, name: string }> {
  member = await current(services, req.conv, caller.userId)
  requireRole(member, 'admin')
  await services.meta.conversationRename(req.conv, req.name)
  services.directory.invalidate(req.conv)
  services.publisher.event([caller.userId], { type: 'member', conv: req.conv, kind: 'channel', action: 'renamed', by: caller.userId, users: [], name: req.name })
  return { conv: req.conv, name: req.name }
}

/** One page of a channel's members by user id (byte order), with the count. */
export async function channelMembers (req: RequestOf<'members'>, entry: ConversationEntry, services: Services): Promise<{ conv: string, kind: string, name: string | null, members: Array<{ user: string, role: Role }>, count: number, next: string | null }> {
  const max = services.config.channels.membersPageMax
  const limit = Math.min(req.limit ?? max, max)
  const [read, count] = await Promise.all([
    services.meta.memberPage(req.conv, { after: req.after ?? null, limit: limit + 1 }),
    memberCount(services, req.conv)
  ])
  const page = read.slice(0, limit)
  const next = read.length > limit ? page[page.length - 1]?.userId ?? null : null
  return { conv: req.conv, kind: 'channel', name: entry.conversation.name, members: page.map(m => ({ user: m.userId, role: m.role })), count, next }
}
