/**
 * In-process MetadataStore on Maps, for tests and single-process development.
 *
 * Behaves like the MySQL adapter: the same conflicts, the same "false / null when missing"
 * answers, ids compared exactly. Records are copied on the way in and out, so callers never
 * hold references to stored state.
 */
import {
  StoreConflictError,
  type ConversationRecord,
  type MemberRecord,
  type MetadataStore,
  type Role,
  type UserRecord
} from './types.js'

export class MemoryMetadataStore implements MetadataStore {
  private readonly users = new Map<string, UserRecord>()
  private readonly conversations = new Map<string, ConversationRecord>()
  /** directKey → conversation id */
  private readonly directKeys = new Map<string, string>()
  /** conversation id → user id → membership */
  private readonly members = new Map<string, Map<string, MemberRecord>>()
  /** user id → conversation ids, the equivalent of the MySQL index on members(user_id) */
  private readonly membershipsByUser = new Map<string, Set<string>>()

  async init (): Promise<void> {}

  async close (): Promise<void> {}

  async userCreate (user: UserRecord): Promise<void> {
    if (this.users.has(user.id)) throw new StoreConflictError(`user "${user.id}" already exists`)
    this.users.set(user.id, { ...user })
  }

  async userGet (id: string): Promise<UserRecord | null> {
    const user = this.users.get(id)
    return user === undefined ? null : { ...user }
  }

  async userList (): Promise<UserRecord[]> {
    return [...this.users.values()].sort((a, b) => compare(a.id, b.id)).map((u) => ({ ...u }))
  }

  async userSetDisabled (id: string, disabled: boolean): Promise<boolean> {
    const user = this.users.get(id)
    if (user === undefined) return false
    user.disabled = disabled
    return true
  }

  async userSetSecret (id: string, secretHash: string): Promise<boolean> {
    const user = this.users.get(id)
    if (user === undefined) return false
    user.secretHash = secretHash
    return true
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

    this.conversations.set(conversation.id, { ...conversation })
    if (conversation.directKey !== null) this.directKeys.set(conversation.directKey, conversation.id)
    for (const member of members) this.insertMember(member)
  }

  async conversationGet (id: string): Promise<ConversationRecord | null> {
    const conversation = this.conversations.get(id)
    return conversation === undefined ? null : { ...conversation }
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
    const byUser = this.members.get(conversationId)
    if (byUser === undefined) return []
    return [...byUser.values()].sort((a, b) => compare(a.userId, b.userId)).map((m) => ({ ...m }))
  }

  async memberGet (conversationId: string, userId: string): Promise<MemberRecord | null> {
    const member = this.findMember(conversationId, userId)
    return member === undefined ? null : { ...member }
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

  async memberRemove (conversationId: string, userId: string): Promise<boolean> {
    const byUser = this.members.get(conversationId)
    if (byUser?.delete(userId) !== true) return false
    if (byUser.size === 0) this.members.delete(conversationId)
    const conversationIds = this.membershipsByUser.get(userId)
    conversationIds?.delete(conversationId)
    if (conversationIds?.size === 0) this.membershipsByUser.delete(userId)
    return true
  }

  async memberSetRole (conversationId: string, userId: string, role: Role): Promise<boolean> {
    const member = this.findMember(conversationId, userId)
    if (member === undefined) return false
    member.role = role
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

  async memberListByUser (userId: string): Promise<MemberRecord[]> {
    const conversationIds = [...(this.membershipsByUser.get(userId) ?? [])].sort(compare)
    const result: MemberRecord[] = []
    for (const conversationId of conversationIds) {
      const member = this.findMember(conversationId, userId)
      if (member !== undefined) result.push({ ...member })
    }
    return result
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
}

/** Code-unit order, which for the ASCII ids we allow is the byte order of utf8mb4_bin. */
function compare (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}
