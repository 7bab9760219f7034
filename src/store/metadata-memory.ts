/**
 * In-process MetadataStore on Maps, for tests and single-process development.
 *
 * Behaves like the MySQL adapter: the same conflicts, the same "false / null when missing"
 * answers, ids compared exactly and sorted in the same (byte) order. Records are copied on the
 * way in and out, so callers never hold references to stored state. No method awaits between
 * its checks and its changes, so each is atomic.
 */
import {
  StoreConflictError,
  inviteCodeId,
  inviteLive,
  pushTargetKey,
  type BlockRecord,
  type ConversationRecord,
  type GroupInvites,
  type InviteRecord,
  type MemberRecord,
  type MentionRecord,
  type MetadataStore,
  type PushTarget,
  type PushTargetPutResult,
  type PushTargetRecord,
  type Role,
  type UserKind,
  type UserRecord,
  userPageWanted
} from './types.js'
import { MENTION_ALL } from '../protocol/schemas.js'

export class MemoryMetadataStore implements MetadataStore {
  private readonly users = new Map<string, UserRecord>()
  /** User ids in byte order, all of them and per kind, the equivalent of the MySQL indexes userPage reads (users are never removed, nor change kind). */
  private readonly userIds: Record<'all' | UserKind, string[]> = { all: [], user: [], bot: [] }
  private readonly conversations = new Map<string, ConversationRecord>()
  /** directKey → conversation id */
  private readonly directKeys = new Map<string, string>()
  /** conversation id → user id → membership */
  private readonly members = new Map<string, Map<string, MemberRecord>>()
  /** user id → conversation ids, the equivalent of the MySQL index on members(user_id) */
  private readonly membershipsByUser = new Map<string, Set<string>>()
  /** Counts user changes; userChanges cursors are values of it. */
  private userVersion = 0
  /** user id → userVersion of its last change (creation included), like users.updated_at */
  private readonly userChangedAt = new Map<string, number>()
  /** user id → blocked user id → when, the equivalent of the MySQL table blocks */
  private readonly blocks = new Map<string, Map<string, number>>()
  /** blocked user id → who blocks them, the equivalent of the index idx_blocks_blocked */
  private readonly blockedBy = new Map<string, Set<string>>()
  /** mentioned user (or '@all') -> conversation -> seq -> sender */
  private readonly mentions = new Map<string, Map<string, Map<number, string>>>()
  /** user id → device → push target, the equivalent of the MySQL table push_targets */
  private readonly pushTargets = new Map<string, Map<string, PushTargetRecord>>()
  /** pushTargetKey → [user id, device], the equivalent of its unique key */
  private readonly pushTargetOwners = new Map<string, [string, string]>()
  /** conversation → user → when an admin removed them (the MySQL table removals) */
  private readonly removals = new Map<string, Map<string, number>>()
  /** code hash → invite, the equivalent of the MySQL table invites */
  private readonly invites = new Map<string, InviteRecord>()
  /** conversation id → codeId → code hash, the equivalent of its unique key (conversation_id, code_id) */
  private readonly invitesByConversation = new Map<string, Map<string, string>>()

  async init (): Promise<void> {}

  async close (): Promise<void> {}

  async userCreate (user: UserRecord): Promise<void> {
    if (this.users.has(user.id)) throw new StoreConflictError(`user "${user.id}" already exists`)
    this.users.set(user.id, { ...user })
    for (const ids of [this.userIds.all, this.userIds[user.kind]]) ids.splice(firstAfter(ids, user.id), 0, user.id)
    this.userChanged(user.id)
  }

  async userGet (id: string): Promise<UserRecord | null> {
    const user = this.users.get(id)
    return user === undefined ? null : { ...user }
  }

  async userGetMany (ids: readonly string[]): Promise<UserRecord[]> {
    const found: UserRecord[] = []
    for (const id of new Set(ids)) {
      const user = this.users.get(id)
      if (user !== undefined) found.push({ ...user })
    }
    return found
  }

  async userList (): Promise<UserRecord[]> {
    return [...this.users.values()].sort((a, b) => compare(a.id, b.id)).map((u) => ({ ...u }))
  }

  async userPage (page: { after: string | null, limit: number, kind?: UserKind }): Promise<UserRecord[]> {
    if (!userPageWanted(page.limit)) return []
    const ids = this.userIds[page.kind ?? 'all']
    const start = page.after === null ? 0 : firstAfter(ids, page.after)
    return ids.slice(start, start + page.limit).flatMap((id) => {
      const user = this.users.get(id)
      return user === undefined ? [] : [{ ...user }]
    })
  }

  async userSetDisabled (id: string, disabled: boolean): Promise<boolean> {
    return this.userSet(id, 'disabled', disabled)
  }

  async userSetSecret (id: string, secretHash: string): Promise<boolean> {
    return this.userSet(id, 'secretHash', secretHash)
  }

  async userSetGroupInvites (id: string, groupInvites: GroupInvites): Promise<boolean> {
    return this.userSet(id, 'groupInvites', groupInvites)
  }

  /** The cursor is the change counter: exact, so nothing is reported twice here. */
  async userChanges (cursor: string | null): Promise<{ users: UserRecord[], cursor: string }> {
    const next = String(this.userVersion)
    if (cursor === null) return { users: [], cursor: next }
    if (!/^\d{1,15}$/.test(cursor)) throw new Error(`memory metadata store: not a userChanges cursor: "${cursor}"`)
    const since = Number(cursor)
    const users: UserRecord[] = []
    for (const [id, version] of this.userChangedAt) {
      const user = this.users.get(id)
      if (version > since && user !== undefined) users.push({ ...user })
    }
    return { users: users.sort((a, b) => compare(a.id, b.id)), cursor: next }
  }

  async conversationCreate (conversation: ConversationRecord, members: MemberRecord[]): Promise<void> {
    // Check everything before changing anything: all rows are written or none.
    const stray = members.find((m) => m.conversationId !== conversation.id)
    if (stray !== undefined) {
      throw new Error(`conversationCreate: member "${stray.userId}" belongs to conversation "${stray.conversationId}", not "${conversation.id}"`)
    }
    const conflict = (): StoreConflictError => new StoreConflictError(
      `conversation "${conversation.id}"${conversation.directKey === null ? '' : ` or direct key "${conversation.directKey}"`} already exists, or a member is listed twice`)
    if (this.conversations.has(conversation.id)) throw conflict()
    if (conversation.directKey !== null && this.directKeys.has(conversation.directKey)) throw conflict()
    const existing = this.members.get(conversation.id)
    const userIds = new Set<string>()
    for (const member of members) {
      if (userIds.has(member.userId) || existing?.has(member.userId) === true) throw conflict()
      userIds.add(member.userId)
    }

    this.conversations.set(conversation.id, copyConversation(conversation))
    if (conversation.directKey !== null) this.directKeys.set(conversation.directKey, conversation.id)
    for (const member of members) this.insertMember(member)
  }

  async conversationGet (id: string): Promise<ConversationRecord | null> {
    const conversation = this.conversations.get(id)
    return conversation === undefined ? null : copyConversation(conversation)
  }

  async conversationGetMany (ids: readonly string[]): Promise<ConversationRecord[]> {
    const result: ConversationRecord[] = []
    for (const id of new Set(ids)) {
      const conversation = this.conversations.get(id)
      if (conversation !== undefined) result.push(copyConversation(conversation))
    }
    return result
  }

  async conversationCountCreatedSince (userId: string, since: number): Promise<number> {
    let count = 0
    for (const c of this.conversations.values()) {
      if (c.kind !== 'direct' && c.createdBy === userId && c.createdAt >= since) count++
    }
    return count
  }

  async conversationGetDirect (directKey: string): Promise<ConversationRecord | null> {
    const id = this.directKeys.get(directKey)
    return id === undefined ? null : await this.conversationGet(id)
  }

  async conversationRename (id: string, name: string): Promise<boolean> {
    const conversation = this.conversations.get(id)
    if (conversation === undefined) return false
    conversation.name = name
    return true
  }

  async memberList (conversationId: string): Promise<MemberRecord[]> {
    return this.listMembers(conversationId)
  }

  async memberGet (conversationId: string, userId: string): Promise<MemberRecord | null> {
    const member = this.findMember(conversationId, userId)
    return member === undefined ? null : { ...member }
  }

  async memberPage (conversationId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]> {
    if (!Number.isSafeInteger(page.limit)) throw new RangeError(`page limit must be an integer, got ${String(page.limit)}`)
    if (page.limit <= 0) return []
    const after = page.after
    const byUser = this.members.get(conversationId)
    if (byUser === undefined) return []
    return [...byUser.keys()]
      .filter((id) => after === null || compare(id, after) > 0)
      .sort(compare)
      .slice(0, page.limit)
      .map((id) => ({ ...(byUser.get(id) as MemberRecord) }))
  }

  async memberAdd (members: MemberRecord[]): Promise<string[]> {
    const added: string[] = []
    for (const member of members) {
      if (this.findMember(member.conversationId, member.userId) !== undefined) continue
      this.insertMember(member)
      added.push(member.userId)
    }
    return added
  }

  async memberListMany (conversationIds: readonly string[]): Promise<Map<string, MemberRecord[]>> {
    const result = new Map<string, MemberRecord[]>()
    for (const conversationId of new Set(conversationIds)) {
      const members = this.listMembers(conversationId)
      if (members.length > 0) result.set(conversationId, members)
    }
    return result
  }

  async memberCountMany (conversationIds: readonly string[]): Promise<Map<string, number>> {
    const result = new Map<string, number>()
    for (const conversationId of new Set(conversationIds)) {
      const count = this.members.get(conversationId)?.size ?? 0
      if (count > 0) result.set(conversationId, count)
    }
    return result
  }

  async memberRemove (conversationId: string, userId: string, successor?: string): Promise<boolean> {
    if (this.findMember(conversationId, userId) === undefined) return false
    if (successor !== undefined) {
      // Check before changing anything: both changes happen, or neither.
      const next = successor === userId ? undefined : this.findMember(conversationId, successor)
      if (next === undefined || this.findMember(conversationId, userId)?.role !== 'owner') return false
      next.role = 'owner'
    }
    this.deleteMember(conversationId, userId)
    return true
  }

  async memberSetRole (conversationId: string, userId: string, role: Role): Promise<boolean> {
    const member = this.findMember(conversationId, userId)
    if (member === undefined) return false
    member.role = role
    return true
  }

  async memberTransferOwnership (conversationId: string, from: string, to: string): Promise<boolean> {
    const previous = this.findMember(conversationId, from)
    const next = this.findMember(conversationId, to)
    if (from === to || previous?.role !== 'owner' || next === undefined) return false
    previous.role = 'admin'
    next.role = 'owner'
    return true
  }

  async memberSetMuted (conversationId: string, userId: string, muted: boolean): Promise<boolean> {
    const member = this.findMember(conversationId, userId)
    if (member === undefined) return false
    member.muted = muted
    return true
  }

  async memberAdvanceRead (conversationId: string, userId: string, seq: number): Promise<number | null> {
    const member = this.findMember(conversationId, userId)
    if (member === undefined) return null
    member.readSeq = Math.max(member.readSeq, seq)
    return member.readSeq
  }

  async memberAdvanceReadMany (items: ReadonlyArray<{ conversationId: string, userId: string, seq: number }>): Promise<Array<number | null>> {
    for (const { conversationId, userId, seq } of items) {
      const member = this.findMember(conversationId, userId)
      if (member !== undefined) member.readSeq = Math.max(member.readSeq, seq)
    }
    return items.map(({ conversationId, userId }) => this.findMember(conversationId, userId)?.readSeq ?? null)
  }

  async memberListByUser (userId: string): Promise<MemberRecord[]> {
    const conversationIds = [...(this.membershipsByUser.get(userId) ?? [])].sort(compare)
    const result: MemberRecord[] = []
    for (const conversationId of conversationIds) {
      const member = this.findMember(conversationId, userId)
      if (member !== undefined) result.push({ ...member })
    }
    return result
  }

  async memberPageByUser (userId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]> {
    if (!Number.isSafeInteger(page.limit)) throw new RangeError(`page limit must be an integer, got ${String(page.limit)}`)
    if (page.limit <= 0) return []
    const after = page.after
    const conversationIds = [...(this.membershipsByUser.get(userId) ?? [])]
      .filter((id) => after === null || compare(id, after) > 0)
      .sort(compare)
      .slice(0, page.limit)
    return conversationIds.flatMap((conversationId) => {
      const member = this.findMember(conversationId, userId)
      return member === undefined ? [] : [{ ...member }]
    })
  }

  async memberCountByUser (userId: string): Promise<number> {
    return this.membershipsByUser.get(userId)?.size ?? 0
  }

  async memberCountByUsers (userIds: readonly string[]): Promise<Map<string, number>> {
    const result = new Map<string, number>()
    for (const userId of new Set(userIds)) {
      const count = this.membershipsByUser.get(userId)?.size ?? 0
      if (count > 0) result.set(userId, count)
    }
    return result
  }

  async memberContactOf (userId: string, others: readonly string[]): Promise<Set<string>> {
    const mine = this.membershipsByUser.get(userId) ?? new Set<string>()
    const found = new Set<string>()
    for (const other of new Set(others)) {
      for (const id of this.membershipsByUser.get(other) ?? []) {
        const c = this.conversations.get(id)
        // a group they share, or a direct conversation the other one opened
        if (c !== undefined && mine.has(id) && (c.kind === 'group' || c.createdBy === other)) { found.add(other); break }
      }
    }
    return found
  }

  async blockAdd (userId: string, blockedId: string, at: number, max: number): Promise<'added' | 'exists' | 'full'> {
    let mine = this.blocks.get(userId)
    if (mine?.has(blockedId) === true) return 'exists'
    if ((mine?.size ?? 0) >= max) return 'full'
    if (mine === undefined) this.blocks.set(userId, mine = new Map())
    mine.set(blockedId, at)
    let blockers = this.blockedBy.get(blockedId)
    if (blockers === undefined) this.blockedBy.set(blockedId, blockers = new Set())
    blockers.add(userId)
    return 'added'
  }

  async blockRemove (userId: string, blockedId: string): Promise<boolean> {
    const mine = this.blocks.get(userId)
    if (mine?.delete(blockedId) !== true) return false
    if (mine.size === 0) this.blocks.delete(userId)
    const blockers = this.blockedBy.get(blockedId)
    blockers?.delete(userId)
    if (blockers?.size === 0) this.blockedBy.delete(blockedId)
    return true
  }

  async blockList (userId: string): Promise<BlockRecord[]> {
    return [...(this.blocks.get(userId) ?? [])]
      .map(([blockedId, at]) => ({ blockedId, at }))
      .sort((a, b) => a.at - b.at || compare(a.blockedId, b.blockedId))
  }

  async blockersAmong (userId: string, others: readonly string[]): Promise<Set<string>> {
    const blockers = this.blockedBy.get(userId)
    return new Set(blockers === undefined ? [] : others.filter(u => blockers.has(u)))
  }

  async mentionAddMany (mentions: readonly MentionRecord[]): Promise<void> {
    for (const m of mentions) {
      let byConv = this.mentions.get(m.userId)
      if (byConv === undefined) this.mentions.set(m.userId, byConv = new Map())
      let bySeq = byConv.get(m.conversationId)
      if (bySeq === undefined) byConv.set(m.conversationId, bySeq = new Map())
      bySeq.set(m.seq, m.senderId)
    }
  }

  async mentionCountMany (userId: string, conversationIds: readonly string[]): Promise<Map<string, number>> {
    const counts = new Map<string, number>()
    for (const conv of new Set(conversationIds)) {
      const readSeq = this.findMember(conv, userId)?.readSeq
      if (readSeq === undefined) continue
      let n = 0
      for (const who of [userId, MENTION_ALL]) {
        for (const [seq, sender] of this.mentions.get(who)?.get(conv) ?? []) if (seq > readSeq && sender !== userId) n++
      }
      if (n > 0) counts.set(conv, n)
    }
    return counts
  }

  async pushTargetPut (record: PushTargetRecord, max: number): Promise<PushTargetPutResult> {
    const mine = this.pushTargets.get(record.userId)
    const replacing = mine?.has(record.device) === true
    if (!replacing && (mine?.size ?? 0) >= max) return { outcome: 'full', moved: [] }
    // the target moves here from wherever it was registered before
    const key = pushTargetKey(record.target)
    const owner = this.pushTargetOwners.get(key)
    const moved: PushTargetPutResult['moved'] = []
    if (owner !== undefined && (owner[0] !== record.userId || owner[1] !== record.device)) {
      await this.pushTargetRemove(owner[0], owner[1])
      moved.push({ userId: owner[0], device: owner[1] })
    }
    const old = mine?.get(record.device)
    if (old !== undefined) this.pushTargetOwners.delete(pushTargetKey(old.target))
    let devices = this.pushTargets.get(record.userId)
    if (devices === undefined) this.pushTargets.set(record.userId, devices = new Map())
    devices.set(record.device, { ...record, target: { ...record.target } })
    this.pushTargetOwners.set(key, [record.userId, record.device])
    return { outcome: replacing ? 'replaced' : 'added', moved }
  }

  async pushTargetRemove (userId: string, device: string, only?: PushTarget): Promise<boolean> {
    const devices = this.pushTargets.get(userId)
    const held = devices?.get(device)
    if (devices === undefined || held === undefined) return false
    if (only !== undefined && pushTargetKey(only) !== pushTargetKey(held.target)) return false
    devices.delete(device)
    if (devices.size === 0) this.pushTargets.delete(userId)
    this.pushTargetOwners.delete(pushTargetKey(held.target))
    return true
  }

  async pushTargetsOf (userIds: readonly string[]): Promise<PushTargetRecord[]> {
    return [...new Set(userIds)].sort(compare).flatMap(u => [...(this.pushTargets.get(u)?.values() ?? [])]
      .sort((a, b) => compare(a.device, b.device))
      .map(r => ({ ...r, target: { ...r.target } })))
  }

  async inviteCreate (invite: InviteRecord, max: number, now: number): Promise<'added' | 'full'> {
    const codeId = inviteCodeId(invite.codeHash)
    const mine = this.invitesByConversation.get(invite.conversationId)
    for (const hash of [...(mine?.values() ?? [])]) {
      const held = this.invites.get(hash)
      if (held !== undefined && !inviteLive(held, now)) this.deleteInvite(held)
    }
    if ((mine?.size ?? 0) >= max) return 'full'
    if (this.invites.has(invite.codeHash) || mine?.has(codeId) === true) {
      throw new StoreConflictError(`an invite with code id "${codeId}" (or this code) exists already`)
    }
    this.invites.set(invite.codeHash, { ...invite })
    let byId = this.invitesByConversation.get(invite.conversationId)
    if (byId === undefined) this.invitesByConversation.set(invite.conversationId, byId = new Map())
    byId.set(codeId, invite.codeHash)
    return 'added'
  }

  async inviteGet (codeHash: string): Promise<InviteRecord | null> {
    const invite = this.invites.get(codeHash)
    return invite === undefined ? null : { ...invite }
  }

  async inviteList (conversationId: string, now: number): Promise<InviteRecord[]> {
    return [...(this.invitesByConversation.get(conversationId)?.values() ?? [])]
      .flatMap(hash => {
        const invite = this.invites.get(hash)
        return invite !== undefined && inviteLive(invite, now) ? [{ ...invite }] : []
      })
      .sort((a, b) => a.createdAt - b.createdAt || compare(inviteCodeId(a.codeHash), inviteCodeId(b.codeHash)))
  }

  async inviteUse (codeHash: string, now: number): Promise<boolean> {
    const invite = this.invites.get(codeHash)
    if (invite === undefined || !inviteLive(invite, now)) return false
    invite.uses++
    return true
  }

  async inviteRelease (codeHash: string): Promise<void> {
    const invite = this.invites.get(codeHash)
    if (invite !== undefined && invite.uses > 0) invite.uses--
  }

  async inviteRemove (conversationId: string, codeId: string): Promise<boolean> {
    const hash = this.invitesByConversation.get(conversationId)?.get(codeId)
    const invite = hash === undefined ? undefined : this.invites.get(hash)
    if (invite === undefined) return false
    this.deleteInvite(invite)
    return true
  }

  async inviteRemoveByCreator (conversationId: string, userId: string): Promise<number> {
    let removed = 0
    for (const hash of [...(this.invitesByConversation.get(conversationId)?.values() ?? [])]) {
      const invite = this.invites.get(hash)
      if (invite?.createdBy === userId) {
        this.deleteInvite(invite)
        removed++
      }
    }
    return removed
  }

  async removalMark (conversationId: string, userId: string, at: number): Promise<void> {
    let users = this.removals.get(conversationId)
    if (users === undefined) this.removals.set(conversationId, users = new Map())
    users.set(userId, at)
  }

  async removalClear (conversationId: string, userIds: readonly string[]): Promise<void> {
    const users = this.removals.get(conversationId)
    if (users === undefined) return
    for (const u of userIds) users.delete(u)
    if (users.size === 0) this.removals.delete(conversationId)
  }

  async removalGet (conversationId: string, userId: string): Promise<number | null> {
    return this.removals.get(conversationId)?.get(userId) ?? null
  }

  private deleteInvite (invite: InviteRecord): void {
    this.invites.delete(invite.codeHash)
    const byId = this.invitesByConversation.get(invite.conversationId)
    byId?.delete(inviteCodeId(invite.codeHash))
    if (byId?.size === 0) this.invitesByConversation.delete(invite.conversationId)
  }

  /** Sets one field of a user; a change only if the value differs, like MySQL's updated_at. */
  private userSet<K extends 'disabled' | 'secretHash' | 'groupInvites'> (id: string, field: K, value: UserRecord[K]): boolean {
    const user = this.users.get(id)
    if (user === undefined) return false
    if (user[field] !== value) {
      user[field] = value
      this.userChanged(id)
    }
    return true
  }

  private userChanged (id: string): void {
    this.userChangedAt.set(id, ++this.userVersion)
  }

  private listMembers (conversationId: string): MemberRecord[] {
    const byUser = this.members.get(conversationId)
    if (byUser === undefined) return []
    return [...byUser.values()].sort((a, b) => compare(a.userId, b.userId)).map((m) => ({ ...m }))
  }

  private findMember (conversationId: string, userId: string): MemberRecord | undefined {
    return this.members.get(conversationId)?.get(userId)
  }

  private insertMember (member: MemberRecord): void {
    let byUser = this.members.get(member.conversationId)
    if (byUser === undefined) {
      byUser = new Map()
      this.members.set(member.conversationId, byUser)
    }
    byUser.set(member.userId, { ...member })
    let conversationIds = this.membershipsByUser.get(member.userId)
    if (conversationIds === undefined) {
      conversationIds = new Set()
      this.membershipsByUser.set(member.userId, conversationIds)
    }
    conversationIds.add(member.conversationId)
  }

  private deleteMember (conversationId: string, userId: string): void {
    const byUser = this.members.get(conversationId)
    byUser?.delete(userId)
    if (byUser?.size === 0) this.members.delete(conversationId)
    const conversationIds = this.membershipsByUser.get(userId)
    conversationIds?.delete(conversationId)
    if (conversationIds?.size === 0) this.membershipsByUser.delete(userId)
  }
}

function copyConversation (c: ConversationRecord): ConversationRecord {
  return c.channel === undefined ? { ...c } : { ...c, channel: { ...c.channel } }
}

/**
 * The order of utf8mb4_bin: UTF-8 byte order, which is code point order. JavaScript's `<`
 * compares UTF-16 code units, which agrees except where a surrogate (a code point above U+FFFF)
 * meets U+E000..U+FFFF; rank() moves the surrogates above those. ('B' < 'a' here, as in MySQL.)
 */
/** The index of the first of `sorted` (byte order) that sorts after `id`: binary search. */
function firstAfter (sorted: readonly string[], id: string): number {
  let lo = 0
  let hi = sorted.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (compare(sorted[mid] as string, id) <= 0) lo = mid + 1
    else hi = mid
  }
  return lo
}

function compare (a: string, b: string): number {
  const length = Math.min(a.length, b.length)
  for (let i = 0; i < length; i++) {
    const x = a.charCodeAt(i)
    const y = b.charCodeAt(i)
    if (x !== y) return rank(x) - rank(y)
  }
  return a.length - b.length
}

function rank (codeUnit: number): number {
  if (codeUnit >= 0xd800 && codeUnit <= 0xdfff) return codeUnit + 0x2000
  if (codeUnit >= 0xe000) return codeUnit - 0x800
  return codeUnit
}
