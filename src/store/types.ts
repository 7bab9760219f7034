/**
 * Storage contracts. Business logic depends on these interfaces only; adapters are
 * chosen by name from config (see src/store/index.ts) and get their config by constructor.
 *
 * Every adapter must pass the shared contract suites in test/contract/.
 */

export type UserKind = 'user' | 'bot'
export type ConversationKind = 'direct' | 'group'
export type Role = 'owner' | 'admin' | 'member'

export interface UserRecord {
  /** Login name, also the MQTT username. Pattern: ^[a-z0-9][a-z0-9_.-]{0,31}$ */
  id: string
  kind: UserKind
  displayName: string
  /** scrypt hash of the password (users) or sha256 hash of the API key (bots), see src/auth/secrets.ts */
  secretHash: string
  disabled: boolean
  /** epoch milliseconds */
  createdAt: number
}

export interface ConversationRecord {
  /** Server-generated id. Pattern: ^[A-Za-z0-9_-]{1,40}$ */
  id: string
  kind: ConversationKind
  /** Group name; null for direct conversations. */
  name: string | null
  /** For direct conversations: the two user ids sorted and joined by '|'; unique. null for groups. */
  directKey: string | null
  createdBy: string
  createdAt: number
}

export interface MemberRecord {
  conversationId: string
  userId: string
  role: Role
  /** Highest seq this member has read; never decreases. 0 = nothing read. */
  readSeq: number
  muted: boolean
  joinedAt: number
}

/** Thrown by adapters for outcomes the caller is expected to handle. */
export class StoreConflictError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'StoreConflictError'
  }
}

export interface MetadataStore {
  /** Connect, apply pending schema migrations, verify the schema version. */
  init (): Promise<void>
  close (): Promise<void>

  /** Throws StoreConflictError if the id exists. */
  userCreate (user: UserRecord): Promise<void>
  userGet (id: string): Promise<UserRecord | null>
  userList (): Promise<UserRecord[]>
  /** Returns false if no such user. */
  userSetDisabled (id: string, disabled: boolean): Promise<boolean>
  /** Returns false if no such user. */
  userSetSecret (id: string, secretHash: string): Promise<boolean>

  /**
   * Creates the conversation and its initial members atomically: either all rows exist
   * afterwards or none. Throws StoreConflictError if the id exists, or (direct) if a
   * conversation with the same directKey exists.
   */
  conversationCreate (conversation: ConversationRecord, members: MemberRecord[]): Promise<void>
  conversationGet (id: string): Promise<ConversationRecord | null>
  conversationGetDirect (directKey: string): Promise<ConversationRecord | null>
  /** Returns false if no such conversation. */
  conversationRename (id: string, name: string): Promise<boolean>

  memberList (conversationId: string): Promise<MemberRecord[]>
  memberGet (conversationId: string, userId: string): Promise<MemberRecord | null>
  /** Adds members that are not members yet; returns the user ids actually added. */
  memberAdd (members: MemberRecord[]): Promise<string[]>
  /** Returns false if the user was not a member. */
  memberRemove (conversationId: string, userId: string): Promise<boolean>
  memberSetRole (conversationId: string, userId: string, role: Role): Promise<boolean>
  memberSetMuted (conversationId: string, userId: string, muted: boolean): Promise<boolean>
  /**
   * readSeq = max(readSeq, seq). Returns the resulting readSeq, or null if not a member.
   * Must be safe under concurrent calls (a single conditional UPDATE, not read-modify-write).
   */
  memberAdvanceRead (conversationId: string, userId: string, seq: number): Promise<number | null>
  /** All memberships of one user (for listing conversations and authorizing). */
  memberListByUser (userId: string): Promise<MemberRecord[]>
}

export type MessageKind = 'text' | 'custom'

export interface StoredMessage {
  conversationId: string
  seq: number
  /** Client-generated id, unique per (conversation, sender). Pattern: ^[A-Za-z0-9_-]{1,64}$ */
  clientMsgId: string
  senderId: string
  /** Server timestamp, epoch milliseconds. */
  ts: number
  kind: MessageKind
  /** text: a string; custom: any JSON value. */
  body: unknown
  /** seq of the message this one replies to, or null. */
  replyTo: number | null
}

/**
 * Result of an ordered batch insert: messages [0, inserted) are stored; if `conflict` is set,
 * message `inserted` hit a unique index and messages after it were not attempted.
 */
export interface InsertBatchResult {
  inserted: number
  conflict?: {
    /** 'clientMsgId': (conversation, sender, clientMsgId) exists. 'seq': (conversation, seq) exists. */
    kind: 'clientMsgId' | 'seq'
  }
}

export interface RangeQuery {
  /** Inclusive lower bound (>= 1). */
  fromSeq: number
  /** Inclusive upper bound. */
  toSeq: number
  /** Maximum number of messages returned. */
  limit: number
  /** 'forward': the lowest seqs of the range first; 'backward': the highest seqs first (result still sorted ascending). */
  direction: 'forward' | 'backward'
}

export interface MessageStore {
  /** Connect and ensure indexes. */
  init (): Promise<void>
  close (): Promise<void>
  /**
   * Inserts in order, stopping at the first unique-index conflict (MongoDB ordered insert
   * semantics). Any other failure throws; the stored messages are then an unknown prefix of
   * the batch, and retrying the same batch is safe (it reports a clientMsgId conflict for a
   * message already stored).
   */
  insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult>
  findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null>
  /** Highest stored seq of the conversation, 0 if none. */
  lastSeq (conversationId: string): Promise<number>
  /** The message with the highest seq, or null. */
  latest (conversationId: string): Promise<StoredMessage | null>
  /** Messages with fromSeq <= seq <= toSeq, sorted by seq ascending, at most `limit`. */
  range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]>
}
