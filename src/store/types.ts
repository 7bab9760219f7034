/**
 * Storage contracts. Business logic depends on these interfaces only; adapters are
 * chosen by name from config (see src/store/index.ts) and get their config by constructor.
 *
 * Every adapter must pass the shared contract suites in test/contract/.
 */

export type UserKind = 'user' | 'bot'
export type ConversationKind = 'direct' | 'group' | 'channel'
/** Who may post in a channel: its admins and owner (the default), or every member. */
export type PostPolicy = 'admins' | 'members'
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
  /** Channels only (kind 'channel'): who may join by id, and who may post. */
  channel?: ChannelSettings
}

export interface ChannelSettings {
  /** Anyone may join by id (`join`); otherwise only admins add members. */
  public: boolean
  postPolicy: PostPolicy
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

/** Largest page of userPage: a bound on one read (the admin API asks for admin.pageMax + 1 at most). */
export const USER_PAGE_MAX = 10_001

/** A userPage limit: false for an empty page; RangeError if not an integer or above USER_PAGE_MAX. */
export function userPageWanted (limit: number): boolean {
  if (!Number.isSafeInteger(limit) || limit > USER_PAGE_MAX) throw new RangeError(`user page limit must be an integer of at most ${USER_PAGE_MAX}, got ${String(limit)}`)
  return limit > 0
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
  /**
   * One page of users by id ascending, ids > `after` (null: from the start), only of `kind` when
   * given: keyset paging, so a walk lists every user that exists throughout it exactly once,
   * whatever is created meanwhile. Byte order (MySQL utf8mb4_bin). A limit of 0 or less gives an
   * empty page; one that is not an integer, or above USER_PAGE_MAX, throws RangeError.
   */
  userPage (page: { after: string | null, limit: number, kind?: UserKind }): Promise<UserRecord[]>
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
  /**
   * One page of a conversation's members by user id ascending (byte order), ids > `after` (null:
   * from the start): keyset paging for channels, whose member lists are not read whole. A limit
   * of 0 or less gives an empty page; one that is not an integer throws RangeError.
   */
  memberPage (conversationId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]>
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

  /**
   * userId blocks blockedId from `at` on, unless userId already blocks `max` users. 'added';
   * 'exists' when it did already (nothing changes: the first time is kept, also at the bound);
   * 'full' when userId blocks `max` others (nothing added). Calls for one user are serialized (on
   * the user's record in MySQL), so concurrent calls never leave more than `max`.
   */
  blockAdd (userId: string, blockedId: string, at: number, max: number): Promise<'added' | 'exists' | 'full'>
  /** Returns false if userId did not block blockedId. */
  blockRemove (userId: string, blockedId: string): Promise<boolean>
  /** Whom userId blocks, oldest first (the same time: by id, byte order). */
  blockList (userId: string): Promise<BlockRecord[]>
  /** Of `others`, those who block userId, in one round trip (absent: they do not). */
  blockersAmong (userId: string, others: readonly string[]): Promise<Set<string>>

  /**
   * Records mentions (`userId` a member, or '@all' for every member): stored again, nothing
   * changes (the same conversation, user and seq).
   */
  mentionAddMany (mentions: readonly MentionRecord[]): Promise<void>
  /**
   * How many mentions of userId (by name or '@all', not by userId itself) each of these
   * conversations holds after userId's read cursor, in one round trip (absent: none).
   */
  mentionCountMany (userId: string, conversationIds: readonly string[]): Promise<Map<string, number>>

  /**
   * Registers (or replaces) the push target of a user's device. A target (a Web Push endpoint, a
   * gateway token) belongs to one device of one user: registering it again elsewhere moves it,
   * so a browser or phone that changes accounts stops getting the previous account's pushes
   * (`moved` says from where, so caches of those users can be dropped). 'full' when the user
   * already has `max` devices with targets and this is a new one (nothing changes). Calls for one
   * user are serialized (on the user's record in MySQL).
   */
  pushTargetPut (record: PushTargetRecord, max: number): Promise<PushTargetPutResult>
  /**
   * Removes a device's target; with `only`, only while the device still holds that target (a
   * push service's "gone" for an old subscription must not remove the one that replaced it).
   * Returns false if nothing was removed.
   */
  pushTargetRemove (userId: string, device: string, only?: PushTarget): Promise<boolean>
  /** The push targets of several users, in one round trip, by user then device (byte order). */
  pushTargetsOf (userIds: readonly string[]): Promise<PushTargetRecord[]>

  /**
   * Stores a new invite of its conversation, unless that conversation has `max` live invites
   * (inviteLive at `now`): then 'full' and nothing is added. The conversation's dead invites
   * (expired or used up) are removed first, so it never holds more than `max` invites at all.
   * Calls for one conversation are serialized (on the conversation's record in MySQL), so
   * concurrent calls never leave more than `max`. Throws StoreConflictError if the code hash
   * exists, or the conversation has an invite with the same codeId (inviteCodeId).
   */
  inviteCreate (invite: InviteRecord, max: number, now: number): Promise<'added' | 'full'>
  /** The invite with this code hash as stored (also dead ones not removed yet), or null. */
  inviteGet (codeHash: string): Promise<InviteRecord | null>
  /** The live invites of a conversation at `now`, oldest first (the same time: by codeId). */
  inviteList (conversationId: string, now: number): Promise<InviteRecord[]>
  /**
   * Takes one use of the invite, only while it is live at `now`: a single conditional change, so
   * of concurrent calls for its last use exactly one gets true. False (nothing changes) when it
   * does not exist or is dead.
   */
  inviteUse (codeHash: string, now: number): Promise<boolean>
  /** Gives back one use taken by inviteUse (that joined nobody); nothing if the invite is gone or unused. */
  inviteRelease (codeHash: string): Promise<void>
  /** Removes (revokes) the conversation's invite with this codeId; false if it has none. */
  inviteRemove (conversationId: string, codeId: string): Promise<boolean>
  /** Removes the conversation's invites that this user created; returns how many. */
  inviteRemoveByCreator (conversationId: string, userId: string): Promise<number>
  /**
   * Channels: remembers that an admin removed this user from the conversation (at `at`), so that
   * they do not come back through `join` (by id or with an invite code) until an admin adds them
   * again (removalClear). Marking again keeps one record, with the new time.
   */
  removalMark (conversationId: string, userId: string, at: number): Promise<void>
  /** Forgets the removals of these users from the conversation (an admin added them again). */
  removalClear (conversationId: string, userIds: readonly string[]): Promise<void>
  /** When an admin removed this user from the conversation (removalMark), or null. */
  removalGet (conversationId: string, userId: string): Promise<number | null>
}

/**
 * An invite code of a channel, as stored: never the code itself, only its SHA-256, so a copy of
 * the store gives no working code (MetadataStore.invite*).
 */
export interface InviteRecord {
  /** SHA-256 of the code, 64 lower-case hex digits: the key. */
  codeHash: string
  conversationId: string
  createdBy: string
  /** epoch milliseconds */
  createdAt: number
  /** It admits while now < expiresAt (epoch milliseconds). */
  expiresAt: number
  /** How many joins it admits; null: any number until it expires. */
  maxUses: number | null
  /** Joins it admitted so far. */
  uses: number
}

/** An invite's short, non-secret name (listing, revoking): the first 8 hex digits of its code hash, unique per conversation. */
export function inviteCodeId (codeHash: string): string {
  return codeHash.slice(0, 8)
}

/** Whether an invite still admits at `now`: not expired, not used up (a revoked one is gone). */
export function inviteLive (invite: Pick<InviteRecord, 'expiresAt' | 'maxUses' | 'uses'>, now: number): boolean {
  return now < invite.expiresAt && (invite.maxUses === null || invite.uses < invite.maxUses)
}

/** Where a device gets pushes: a Web Push subscription, or a token at a configured push gateway. */
export type PushTarget =
  | { kind: 'webpush', endpoint: string, p256dh: string, auth: string }
  | { kind: 'gateway', gateway: string, token: string, platform: 'ios' | 'android' | 'other' }

export interface PushTargetPutResult {
  outcome: 'added' | 'replaced' | 'full'
  /** Devices that held the same target before (now removed from them). */
  moved: Array<{ userId: string, device: string }>
}

/** One device's push target (MetadataStore.pushTarget*). */
export interface PushTargetRecord {
  userId: string
  device: string
  target: PushTarget
  /** When it was registered, epoch milliseconds. */
  at: number
}

/** What makes a push target the same wherever it is registered: its endpoint, or gateway and token. */
export function pushTargetKey (t: PushTarget): string {
  return t.kind === 'webpush' ? `webpush ${t.endpoint}` : `gateway ${t.gateway} ${t.token}`
}

/** A message that mentions someone (MetadataStore.mentionAddMany). */
export interface MentionRecord {
  conversationId: string
  /** The member mentioned, or '@all'. */
  userId: string
  seq: number
  senderId: string
}

/** One user blocked by another (MetadataStore.blockList). */
export interface BlockRecord {
  blockedId: string
  /** When it was blocked, epoch milliseconds. */
  at: number
}

/** Kinds of real messages (previews, unread) and of changes to them (edit, delete, react). */
export type MessageKind = 'text' | 'custom' | 'file' | ChangeKind
export type ChangeKind = 'edit' | 'delete' | 'react'

export function isChangeKind (kind: string): kind is ChangeKind {
  return kind === 'edit' || kind === 'delete' || kind === 'react'
}

/**
 * What later changes did to a message (absent: nothing). Applied by MessageStore.applyChange, in
 * any order and any number of times with the same outcome: each part keeps the change with the
 * highest seq (the deletion: the lowest).
 */
export interface MessageChanges {
  /** The latest edit: its seq and ts, and the body it gave the message. */
  edited?: { seq: number, ts: number, body: unknown }
  /** The deletion (the first one, by seq): its seq, ts and who deleted it (the body is then gone). */
  deleted?: { seq: number, ts: number, by: string }
  /**
   * emoji -> user -> 2 * seq + (1 if that change added the reaction, 0 if it removed it): the
   * user's latest reaction change with that emoji. A user reacts with the emoji when odd.
   */
  reactions?: Record<string, Record<string, number>>
  /** How many changes were applied (a version: caches of the message key on it). */
  version: number
}

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
  /** Messages: who the sender mentioned (user ids, or '@all'); absent: nobody. */
  mentions?: string[]
  /** Changes (edit, delete, react): the seq of the message changed. */
  target?: number
  /**
   * Real messages (not changes) of the conversation up to and including this seq, so that unread
   * is a difference of two counts. Absent on messages stored before changes existed, when every
   * entry was a message: the count is then the seq (see countOf).
   */
  count?: number
  /** Changes: the seq of the last real message before this one (0: none). */
  lastReal?: number
  /** Messages: what later changes did to it. */
  changes?: MessageChanges
}

/**
 * A StoredMessage as another node sends it over the cluster bus (JSON), checked field by field:
 * what is cached is served to clients.
 */
export function isStoredMessage (x: unknown): x is StoredMessage {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return false
  const m = x as Record<string, unknown>
  const seqOrAbsent = (v: unknown): boolean => v === undefined || (Number.isSafeInteger(v) && (v as number) >= 0)
  return typeof m.conversationId === 'string' && Number.isSafeInteger(m.seq) && (m.seq as number) >= 1 &&
    typeof m.clientMsgId === 'string' && typeof m.senderId === 'string' && typeof m.ts === 'number' &&
    typeof m.kind === 'string' && m.body !== undefined && (m.replyTo === null || Number.isSafeInteger(m.replyTo)) &&
    (m.mentions === undefined || (Array.isArray(m.mentions) && m.mentions.every(u => typeof u === 'string'))) &&
    seqOrAbsent(m.target) && seqOrAbsent(m.count) && seqOrAbsent(m.lastReal) &&
    (m.changes === undefined || (typeof m.changes === 'object' && m.changes !== null))
}

/** Real messages up to and including this entry. */
export function countOf (m: Pick<StoredMessage, 'seq' | 'count'>): number {
  return m.count ?? m.seq
}

/** The seq of the last real message up to and including this entry. */
export function lastRealOf (m: Pick<StoredMessage, 'seq' | 'kind' | 'lastReal'>): number {
  return isChangeKind(m.kind) ? m.lastReal ?? 0 : m.seq
}

/**
 * The lowest seq retention keeps of a conversation whose latest entry is `latest`: its latest real
 * message (the preview) and everything after it stay (the latest entry itself when no real message
 * is known).
 */
export function keptFrom (latest: Pick<StoredMessage, 'seq' | 'kind' | 'lastReal'>): number {
  const real = lastRealOf(latest)
  return real > 0 ? real : latest.seq
}

/** A conversation's head: its latest entry, and its latest real message as it is now (the preview). */
export interface ConversationHead {
  latest: StoredMessage
  preview: StoredMessage | null
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
   * The message with the highest seq when it is above `seq`, a seq known to be stored (a tail this
   * process wrote or was told of); null when nothing is stored past it. Exact, like latest, without
   * reading a head record: the store looks past `seq` only (on FerretDB one primary-key read, a
   * miss unless someone stored more).
   */
  latestPast (conversationId: string, seq: number): Promise<StoredMessage | null>
  /**
   * The head of each of several conversations in one query (absent: nothing stored): its latest
   * entry and its latest real message with the changes applied to it (the preview), from head
   * records where the store keeps them: never ahead of the stored messages; behind what other
   * processes stored by up to headLagMs, and after a crash between the two writes until lastSeq
   * or latest of that conversation repairs it. What this process stored it always includes.
   */
  latestMany (conversationIds: readonly string[]): Promise<Map<string, ConversationHead>>
  /**
   * How long a head record may lag what another process stored, in normal operation (head records
   * written lazily); 0 or absent: never (no head records, or one process).
   */
  readonly headLagMs?: number
  /**
   * False while the store has not yet checked its head records against the messages past them
   * (after a start: a process that died may have left heads behind); absent: always checked.
   */
  readonly headsChecked?: boolean
  /**
   * Applies a stored change (kind edit, delete or react) to its target message: idempotent and
   * order-free (each part keeps the change with the highest seq, see MessageChanges). Resolves
   * with the target as it is now, or null if the conversation has no message at that seq.
   */
  applyChange (change: StoredMessage): Promise<StoredMessage | null>
  /** Messages by seq, several conversations at once; absent ones left out; no order. */
  getMany (keys: ReadonlyArray<{ conversationId: string, seq: number }>): Promise<StoredMessage[]>
  /** Another process changed these messages: drop what is cached of them (a cluster notice). */
  forget (keys: ReadonlyArray<{ conversationId: string, seq: number }>): void
  /**
   * Another process stored these messages (a cluster notice): a store that caches documents may
   * keep them, so that reads here find them without a query. Not for messages it was told changed.
   */
  remember (messages: readonly StoredMessage[]): void
  /**
   * Told of a change the store lost to a concurrent update and applied again later (FerretDB,
   * see MongoMessageStore.verifyLater): other processes may have cached its target in between.
   * Absent: the store never does that.
   */
  onChangeLost?: ((change: StoredMessage) => void) | null
  /**
   * Messages with fromSeq <= seq <= toSeq, sorted by seq ascending, at most `limit`. Callers keep
   * toSeq <= lastSeq. A store may read the seqs themselves ([fromSeq, fromSeq + limit) forward,
   * (toSeq - limit, toSeq] backward): a conversation's seqs are gapless (the sequencer's
   * invariant), so that is the same page; where seqs are missing, the page is then shorter. Seqs
   * below firstSeq (removed by retention) are not missing but gone: a forward page of a range that
   * starts below firstSeq starts at firstSeq.
   */
  range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]>

  /**
   * Retention. The lowest seq of the conversation still stored, 0 if none is. Entries are removed
   * only by removeExpired, a prefix at a time, so what a conversation keeps is always the seqs
   * firstSeq..lastSeq (1..lastSeq when nothing was removed): `range` below firstSeq finds nothing.
   */
  firstSeq (conversationId: string): Promise<number>
  /**
   * Retention: removes the entries older than their conversation's cutoff, one bounded step of a
   * sweep over the conversations that resumes where the previous call stopped (each store instance
   * keeps its own place). Per conversation it removes a prefix: the entries from firstSeq up while
   * each is older than the cutoff (ts < cutoff), and never the latest real message (the preview)
   * nor anything after it, so lastSeq, latest, latestMany and the counts stay as they were, and no
   * seq is ever handed out twice. Removed entries are gone for every read, by seq and by
   * clientMsgId. Several processes may sweep at once: removing is idempotent.
   */
  removeExpired (rule: ExpiryRule, bounds: ExpiryBounds): Promise<ExpirySweep>
}

/** What MessageStore.removeExpired removes. */
export interface ExpiryRule {
  /**
   * Nothing this recent or newer (ts >= before, epoch ms) is removed, whatever the cutoffs: the
   * latest cutoff of any conversation. Conversations whose oldest entry is not older are skipped
   * without asking `cutoffs`.
   */
  before: number
  /**
   * The cutoff (epoch ms; entries with ts < cutoff go) of each of these conversations; absent:
   * keep everything. Asked once per step, for the conversations that have entries older than
   * `before` below their latest real message.
   */
  cutoffs: (conversationIds: readonly string[]) => Promise<ReadonlyMap<string, number>>
}

/** How much one removeExpired step may do. */
export interface ExpiryBounds {
  /** Entries removed at most (>= 1). */
  maxRemoved: number
  /** Conversations looked at at most (>= 1). */
  maxExamined: number
}

export interface ExpirySweep {
  removed: number
  /** Conversations looked at. */
  examined: number
  /**
   * True when this step reached the end of the conversations (the next starts from the first) and
   * removed everything it found expired: the sweep is done until more entries expire.
   */
  done: boolean
}
