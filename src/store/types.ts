/**
 * Storage contracts. Business logic depends on these interfaces only; adapters are
 * chosen by name from config (see src/store/index.ts) and get their config by constructor.
 *
 * Every adapter must pass the shared contract suites in test/contract/.
 */

export type UserKind = 'user' | 'bot'
export type ConversationKind = 'direct' | 'group'
export type Role = 'owner' | 'admin' | 'member'
/** Who may add a user to groups: anyone, or only people who already share a conversation with them. */
export type GroupInvites = 'anyone' | 'contacts'

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
  /** Who may add this user to groups (default 'anyone'). */
  groupInvites: GroupInvites
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
  /** Several users in one round trip; unknown ids are left out; no order. */
  userGetMany (ids: readonly string[]): Promise<UserRecord[]>
  userList (): Promise<UserRecord[]>
  /** Returns false if no such user. */
  userSetDisabled (id: string, disabled: boolean): Promise<boolean>
  /** Returns false if no such user. */
  userSetSecret (id: string, secretHash: string): Promise<boolean>
  /** Returns false if no such user. */
  userSetGroupInvites (id: string, groupInvites: GroupInvites): Promise<boolean>
  /**
   * Users whose record changed (disabled, secret, settings) since `cursor`, and the cursor to
   * pass next time. `null` starts now: no users, just a cursor. Every change made after a cursor
   * was returned is reported by the next call with that cursor, also when it was made by another
   * process (the admin tool writing MySQL directly); changes shortly before it may be reported
   * again, so callers must be idempotent. Used to end the sessions of disabled accounts.
   * Cursors are opaque and adapter-specific; a malformed one throws. Setting a field to the value
   * it has is no change (MySQL does not move updated_at then).
   */
  userChanges (cursor: string | null): Promise<{ users: UserRecord[], cursor: string }>

  /**
   * Creates the conversation and its initial members atomically: either all rows exist
   * afterwards or none. Throws StoreConflictError if the id exists, or (direct) if a
   * conversation with the same directKey exists.
   */
  conversationCreate (conversation: ConversationRecord, members: MemberRecord[]): Promise<void>
  conversationGet (id: string): Promise<ConversationRecord | null>
  /** Several conversations in one round trip; unknown ids are left out, repeated ids answered once; no order. */
  conversationGetMany (ids: readonly string[]): Promise<ConversationRecord[]>
  /** Groups created by the user with createdAt >= since (the per-user creation quota). */
  conversationCountCreatedSince (userId: string, since: number): Promise<number>
  conversationGetDirect (directKey: string): Promise<ConversationRecord | null>
  /** Returns false if no such conversation. */
  conversationRename (id: string, name: string): Promise<boolean>

  memberList (conversationId: string): Promise<MemberRecord[]>
  memberGet (conversationId: string, userId: string): Promise<MemberRecord | null>
  /** Adds members that are not members yet; returns the user ids actually added. */
  memberAdd (members: MemberRecord[]): Promise<string[]>
  /** Members of several conversations in one round trip: conversation id -> members (absent: none). */
  memberListMany (conversationIds: readonly string[]): Promise<Map<string, MemberRecord[]>>
  /** Member counts of several conversations in one round trip (absent: 0). */
  memberCountMany (conversationIds: readonly string[]): Promise<Map<string, number>>
  /**
   * Removes the member. With `successor` (another member), the leaver must be the owner, and the
   * successor becomes the owner in the same step: either both changes happen or neither. Returns
   * false (and changes nothing) if userId is not a member, or (with a successor) not the owner,
   * or the successor is not a member. So two concurrent hand-overs never leave two owners.
   */
  memberRemove (conversationId: string, userId: string, successor?: string): Promise<boolean>
  memberSetRole (conversationId: string, userId: string, role: Role): Promise<boolean>
  /**
   * Atomically: `to` becomes the owner and `from` (the owner) an admin. Returns false and changes
   * nothing unless `from` is the owner right now, `to` is a member, and from !== to: of two
   * concurrent transfers by the same owner one succeeds, never both.
   */
  memberTransferOwnership (conversationId: string, from: string, to: string): Promise<boolean>
  memberSetMuted (conversationId: string, userId: string, muted: boolean): Promise<boolean>
  /**
   * readSeq = max(readSeq, seq). Returns the resulting readSeq, or null if not a member.
   * Must be safe under concurrent calls (a single conditional UPDATE, not read-modify-write).
   */
  memberAdvanceRead (conversationId: string, userId: string, seq: number): Promise<number | null>
  /**
   * memberAdvanceRead of several (conversation, user) cursors in a constant number of round trips:
   * the resulting readSeq of each item, in the order given (null: not a member). An item may repeat
   * a cursor; each gets the cursor's resulting readSeq. Safe under concurrent calls, like memberAdvanceRead.
   */
  memberAdvanceReadMany (items: ReadonlyArray<{ conversationId: string, userId: string, seq: number }>): Promise<Array<number | null>>
  /** All memberships of one user (for listing conversations and authorizing). */
  memberListByUser (userId: string): Promise<MemberRecord[]>
  /**
   * One page of a user's memberships, by conversation id ascending, ids > `after` (null: from the
   * start). The order is byte order (MySQL utf8mb4_bin), so 'B' < 'a'. A limit of 0 or less gives
   * an empty page; a limit that is not an integer throws RangeError.
   */
  memberPageByUser (userId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]>
  /** How many conversations the user is a member of. */
  memberCountByUser (userId: string): Promise<number>
  /** How many conversations each of several users is a member of, in one round trip (absent: 0). */
  memberCountByUsers (userIds: readonly string[]): Promise<Map<string, number>>
  /**
   * Of `others`, those whose contact `userId` is: who share a group with userId, or a direct
   * conversation that they opened themselves (createdBy). Opening a direct conversation with
   * someone does not make one their contact. userId itself counts when listed and in a group or in
   * a direct conversation it opened.
   */
  memberContactOf (userId: string, others: readonly string[]): Promise<Set<string>>
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
    /**
     * With 'clientMsgId': the stored message with that key, when the store found it while telling
     * the conflicts apart (a retried batch); otherwise ask findByClientMsgId.
     */
    existing?: StoredMessage
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
  /**
   * Highest stored seq of the conversation, 0 if none. Exact: a store that keeps a head record per
   * conversation looks past it and repairs it (see messages-mongo.ts).
   */
  lastSeq (conversationId: string): Promise<number>
  /** The message with the highest seq, or null. Exact, like lastSeq. */
  latest (conversationId: string): Promise<StoredMessage | null>
  /**
   * The latest message of each of several conversations in one query (absent: none), from head
   * records where the store keeps them: never ahead of the stored messages, and behind them only
   * after a crash between the two writes, until lastSeq or latest of that conversation repairs it.
   */
  latestMany (conversationIds: readonly string[]): Promise<Map<string, StoredMessage>>
  /**
   * Messages with fromSeq <= seq <= toSeq, sorted by seq ascending, at most `limit`. Callers keep
   * toSeq <= lastSeq. A store may read the seqs themselves ([fromSeq, fromSeq + limit) forward,
   * (toSeq - limit, toSeq] backward): a conversation's seqs are gapless (the sequencer's
   * invariant), so that is the same page; where seqs are missing, the page is then shorter.
   */
  range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]>
}
