/**
 * MetadataStore on MySQL 8 / MariaDB 10.11 (mysql2/promise).
 *
 * Schema comes from the versioned migrations in ./migrations/mysql.ts, applied by init()
 * under a named server lock so that several processes can start at once.
 *
 * Batched reads send one statement per IN_CHUNK distinct ids (`IN (...)`), so a call costs
 * one round trip for up to IN_CHUNK ids and no query for none.
 *
 * The user change feed (userChanges) rests on users.updated_at, which the server sets from its
 * own clock whenever a row changes, whoever changes it: see userChanges().
 */
import { readFileSync } from 'node:fs'
import { createHash } from 'node:crypto'
import mysql from 'mysql2/promise'
import type { Pool, PoolConnection, ResultSetHeader, RowDataPacket } from 'mysql2/promise'
import type { PoolConnection as CallbackPoolConnection } from 'mysql2'
import { MYSQL_MIGRATIONS, MYSQL_SCHEMA_VERSION, type MysqlStatement } from './migrations/mysql.js'
import {
  StoreConflictError,
  inviteCodeId,
  inviteLive,
  pushTargetKey,
  type PushTarget,
  type PushTargetPutResult,
  type PushTargetRecord,
  type BlockRecord,
  type ConversationKind,
  type PostPolicy,
  type ConversationRecord,
  type GroupInvites,
  type InviteRecord,
  type MemberRecord,
  type MentionRecord,
  type MetadataStore,
  type Role,
  type UserKind,
  type UserRecord,
  userPageWanted
} from './types.js'
import { MENTION_ALL } from '../protocol/schemas.js'

export { MYSQL_SCHEMA_VERSION }

export interface MySqlMetadataStoreOptions {
  /** mysql://user:pass@host:port/dbname — the database must exist. */
  url: string
  /** Maximum number of pooled connections. Default 10. */
  poolSize?: number
  /**
   * userChanges() reports the users whose updated_at is at least (cursor - this margin), so that
   * a change is still seen when its transaction commits up to this long after its UPDATE ran
   * (updated_at is the time of the statement, not of the commit). Default 5000.
   */
  userChangesMarginMs?: number
}

const DEFAULT_POOL_SIZE = 10
/** Prepared statements kept per connection (least recently used closed past it). */
const MAX_PREPARED_STATEMENTS = 128
const DEFAULT_PORT = 3306
/** Server-wide lock name held while migrations run (GET_LOCK). */
const MIGRATION_LOCK = 'mqim_migrations'
const MIGRATION_LOCK_TIMEOUT_SECONDS = 30
/** Attempts of a transaction that InnoDB aborted as a deadlock victim. */
const TRANSACTION_ATTEMPTS = 3
/** Ids per statement of a batched read: bounds the statement and packet size. */
const IN_CHUNK = 1000
/** mentionAddMany: rows per INSERT. */
const MENTIONS_CHUNK = 500
const DEFAULT_USER_CHANGES_MARGIN_MS = 5000

const ER_DUP_ENTRY = 1062
const ER_LOCK_DEADLOCK = 1213

const USER_COLUMNS = 'id, kind, display_name, secret_hash, disabled, created_at, group_invites'
const CONVERSATION_COLUMNS = 'id, kind, name, direct_key, created_by, created_at, channel_public, channel_post'
const MEMBER_COLUMNS = 'conversation_id, user_id, role, read_seq, muted, joined_at'
const INVITE_COLUMNS = 'code_hash, conversation_id, code_id, created_by, created_at, expires_at, max_uses, uses'

interface UserRow extends RowDataPacket {
  id: string
  kind: UserKind
  display_name: string
  secret_hash: string
  disabled: number
  created_at: number | string
  group_invites: GroupInvites
}

interface ConversationRow extends RowDataPacket {
  id: string
  kind: ConversationKind
  name: string | null
  direct_key: string | null
  created_by: string
  created_at: number | string
  channel_public: number | null
  channel_post: PostPolicy | null
}

interface MemberRow extends RowDataPacket {
  conversation_id: string
  user_id: string
  role: Role
  read_seq: number | string
  muted: number
  joined_at: number | string
}

interface VersionRow extends RowDataPacket {
  version: number | null
}

interface LockRow extends RowDataPacket {
  acquired: number | null
}

/** Byte order of ASCII ids, as utf8mb4_bin sorts them. */
function compareBytes (a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0
}

/** memberAdvanceReadMany: cursors per UPDATE (and SELECT) statement. */
const READ_MANY_CHUNK = 500

interface ReadSeqRow extends RowDataPacket {
  read_seq: number | string
}

interface CountRow extends RowDataPacket {
  n: number | string
}

interface ConversationCountRow extends RowDataPacket {
  conversation_id: string
  n: number | string
}

interface UserIdRow extends RowDataPacket {
  user_id: string
}

interface UserCountRow extends RowDataPacket {
  user_id: string
  n: number | string
}

interface RoleRow extends RowDataPacket {
  user_id: string
  role: Role
}

interface NowRow extends RowDataPacket {
  now: Date
}

interface BlockRow extends RowDataPacket {
  blocked_id: string
  blocked_at: number | string
}

export class MySqlMetadataStore implements MetadataStore {
  private readonly pool: Pool
  private readonly userChangesMarginMs: number
  private closed = false

  constructor (options: MySqlMetadataStoreOptions) {
    const poolSize = options.poolSize ?? DEFAULT_POOL_SIZE
    if (!Number.isInteger(poolSize) || poolSize < 1) {
      throw new Error(`mysql metadata store: poolSize must be a positive integer, got ${String(options.poolSize)}`)
    }
    this.userChangesMarginMs = options.userChangesMarginMs ?? DEFAULT_USER_CHANGES_MARGIN_MS
    if (!Number.isSafeInteger(this.userChangesMarginMs) || this.userChangesMarginMs < 0) {
      throw new Error(`mysql metadata store: userChangesMarginMs must be a non-negative integer, got ${String(options.userChangesMarginMs)}`)
    }
    const target = parseMysqlUrl(options.url)
    this.pool = mysql.createPool({
      ...target,
      connectionLimit: poolSize,
      supportBigNumbers: true,
      charset: 'utf8mb4',
      timezone: 'Z',
      // no stack captured per query for the error it might raise (mysql2's default: about 1 % of a
      // busy node's CPU in the soak's profile); an error still names the statement's code and message
      trace: false,
      // each connection's cache of prepared statements: mysql2's default bound (16,000) is
      // allocated in full when the connection opens (four arrays of that length, 512 KB a
      // connection, 5.1 MB for a pool of 10, all of it marked by every full GC); this store
      // prepares ~40 fixed statements (lists go through query, see memberAdvanceReadMany)
      maxPreparedStatements: MAX_PREPARED_STATEMENTS,
      // Affected-row counts of UPDATE are "rows matched", so setting a field to its current
      // value still reports the row as found (mysql2's default, stated because we rely on it).
      flags: ['FOUND_ROWS']
    })
    // The server stamps users.updated_at (and NOW()) in the session time zone. UTC on every
    // connection makes those stamps one monotonic clock, with no daylight-saving jumps back, and
    // the same in every process that runs this store; mysql2's `timezone: 'Z'` then reads and
    // writes them as UTC. The event hands over mysql2's callback connection (its typings say
    // otherwise); the command is queued before any other on the new connection, and a connection
    // that cannot run it is closed, failing whatever was queued after it.
    this.pool.on('connection', (connection) => {
      const conn = connection as unknown as CallbackPoolConnection
      conn.promise().query("SET time_zone = '+00:00'").catch(() => conn.destroy())
    })
  }

  async init (): Promise<void> {
    const conn = await this.pool.getConnection()
    try {
      const [lock] = await conn.query<LockRow[]>('SELECT GET_LOCK(?, ?) AS acquired', [MIGRATION_LOCK, MIGRATION_LOCK_TIMEOUT_SECONDS])
      if (lock[0]?.acquired !== 1) {
        throw new Error(`mysql metadata store: could not take the "${MIGRATION_LOCK}" lock within ${MIGRATION_LOCK_TIMEOUT_SECONDS}s; is another process stuck migrating?`)
      }
      try {
        await migrate(conn)
      } finally {
        await conn.query('SELECT RELEASE_LOCK(?)', [MIGRATION_LOCK])
      }
    } finally {
      conn.release()
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    await this.pool.end()
  }

  async userCreate (user: UserRecord): Promise<void> {
    await this.write(
      `INSERT INTO users (${USER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)`,
      [user.id, user.kind, user.displayName, user.secretHash, user.disabled, user.createdAt, user.groupInvites],
      `user "${user.id}" already exists`
    )
  }

  async userGet (id: string): Promise<UserRecord | null> {
    const [rows] = await this.pool.execute<UserRow[]>(`SELECT ${USER_COLUMNS} FROM users WHERE id = ?`, [id])
    return rows[0] === undefined ? null : toUser(rows[0])
  }

  async userGetMany (ids: readonly string[]): Promise<UserRecord[]> {
    const rows = await this.selectIn<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id IN (?)`, ids)
    return rows.map(toUser)
  }

  async userList (): Promise<UserRecord[]> {
    const [rows] = await this.pool.execute<UserRow[]>(`SELECT ${USER_COLUMNS} FROM users ORDER BY id`)
    return rows.map(toUser)
  }

  async userPage (page: { after: string | null, limit: number, kind?: UserKind }): Promise<UserRecord[]> {
    if (!userPageWanted(page.limit)) return []
    // one index range, read in id order (utf8mb4_bin: byte order): the primary key, or
    // idx_users_kind (kind, id) for one kind
    const where: string[] = []
    const values: unknown[] = []
    if (page.kind !== undefined) { where.push('kind = ?'); values.push(page.kind) }
    if (page.after !== null) { where.push('id > ?'); values.push(page.after) }
    const [rows] = await this.pool.query<UserRow[]>(
      `SELECT ${USER_COLUMNS} FROM users ${where.length === 0 ? '' : `WHERE ${where.join(' AND ')}`} ORDER BY id LIMIT ?`, [...values, page.limit])
    return rows.map(toUser)
  }

  async userSetDisabled (id: string, disabled: boolean): Promise<boolean> {
    return await this.update('UPDATE users SET disabled = ? WHERE id = ?', [disabled, id])
  }

  async userSetSecret (id: string, secretHash: string): Promise<boolean> {
    return await this.update('UPDATE users SET secret_hash = ? WHERE id = ?', [secretHash, id])
  }

  async userSetGroupInvites (id: string, groupInvites: GroupInvites): Promise<boolean> {
    return await this.update('UPDATE users SET group_invites = ? WHERE id = ?', [groupInvites, id])
  }

  /**
   * The cursor is the database's NOW(3) in epoch milliseconds, read before the users: a change
   * stamped at or after it is reported by the next call, and one stamped before it is visible to
   * this call's read unless its transaction commits later than that read, which
   * userChangesMarginMs covers by reading from (cursor - margin). Changes inside the margin are
   * reported twice, as the interface allows. MySQL moves updated_at only when a value really
   * changes (setting `disabled` to its current value does not), which is right: nothing changed,
   * nothing to report. The clock is the server's, never Node's: several mqim processes and the
   * admin tool share it. Someone changing users with plain SQL must set time_zone '+00:00' too,
   * or the stamps of their changes are off by their UTC offset (reported late or never).
   */
  async userChanges (cursor: string | null): Promise<{ users: UserRecord[], cursor: string }> {
    const since = cursor === null ? null : parseChangeCursor(cursor)
    const [clock] = await this.pool.query<NowRow[]>('SELECT NOW(3) AS now')
    const now = clock[0]?.now
    if (now === undefined) throw new Error('mysql metadata store: SELECT NOW(3) returned no row')
    const next = String(now.getTime())
    if (since === null) return { users: [], cursor: next }
    const [rows] = await this.pool.query<UserRow[]>(
      `SELECT ${USER_COLUMNS} FROM users WHERE updated_at >= ? ORDER BY id`, [new Date(since - this.userChangesMarginMs)])
    return { users: rows.map(toUser), cursor: next }
  }

  async conversationCreate (conversation: ConversationRecord, members: MemberRecord[]): Promise<void> {
    assertMembersOf(conversation.id, members)
    try {
      await this.transaction(async (conn) => {
        await conn.execute(
          `INSERT INTO conversations (${CONVERSATION_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`,
          [conversation.id, conversation.kind, conversation.name, conversation.directKey, conversation.createdBy, conversation.createdAt,
            conversation.channel === undefined ? null : conversation.channel.public, conversation.channel?.postPolicy ?? null]
        )
        if (members.length > 0) {
          await conn.query(`INSERT INTO members (${MEMBER_COLUMNS}) VALUES ?`, [members.map(memberValues)])
        }
      })
    } catch (err) {
      throw mapConflict(err, `conversation "${conversation.id}"${conversation.directKey === null ? '' : ` or direct key "${conversation.directKey}"`} already exists, or a member is listed twice`)
    }
  }

  async conversationGet (id: string): Promise<ConversationRecord | null> {
    const [rows] = await this.pool.execute<ConversationRow[]>(`SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE id = ?`, [id])
    return rows[0] === undefined ? null : toConversation(rows[0])
  }

  async conversationGetMany (ids: readonly string[]): Promise<ConversationRecord[]> {
    const rows = await this.selectIn<ConversationRow>(`SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE id IN (?)`, ids)
    return rows.map(toConversation)
  }

  async conversationCountCreatedSince (userId: string, since: number): Promise<number> {
    // Served by idx_conversations_created_by (created_by, created_at).
    const [rows] = await this.pool.execute<CountRow[]>(
      "SELECT COUNT(*) AS n FROM conversations WHERE created_by = ? AND created_at >= ? AND kind <> 'direct'", [userId, since])
    return toSafeNumber(rows[0]?.n, 'COUNT(*)')
  }

  async conversationGetDirect (directKey: string): Promise<ConversationRecord | null> {
    const [rows] = await this.pool.execute<ConversationRow[]>(`SELECT ${CONVERSATION_COLUMNS} FROM conversations WHERE direct_key = ?`, [directKey])
    return rows[0] === undefined ? null : toConversation(rows[0])
  }

  async conversationRename (id: string, name: string): Promise<boolean> {
    return await this.update('UPDATE conversations SET name = ? WHERE id = ?', [name, id])
  }

  async memberList (conversationId: string): Promise<MemberRecord[]> {
    const [rows] = await this.pool.execute<MemberRow[]>(
      `SELECT ${MEMBER_COLUMNS} FROM members WHERE conversation_id = ? ORDER BY user_id`, [conversationId])
    return rows.map(toMember)
  }

  async memberGet (conversationId: string, userId: string): Promise<MemberRecord | null> {
    const [rows] = await this.pool.execute<MemberRow[]>(
      `SELECT ${MEMBER_COLUMNS} FROM members WHERE conversation_id = ? AND user_id = ?`, [conversationId, userId])
    return rows[0] === undefined ? null : toMember(rows[0])
  }

  async memberPage (conversationId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]> {
    if (!Number.isSafeInteger(page.limit)) throw new RangeError(`page limit must be an integer, got ${String(page.limit)}`)
    if (page.limit <= 0) return []
    // one range of the primary key (conversation_id, user_id)
    const [rows] = page.after === null
      ? await this.pool.query<MemberRow[]>(`SELECT ${MEMBER_COLUMNS} FROM members WHERE conversation_id = ? ORDER BY user_id LIMIT ?`, [conversationId, page.limit])
      : await this.pool.query<MemberRow[]>(`SELECT ${MEMBER_COLUMNS} FROM members WHERE conversation_id = ? AND user_id > ? ORDER BY user_id LIMIT ?`, [conversationId, page.after, page.limit])
    return rows.map(toMember)
  }

  async memberAdd (members: MemberRecord[]): Promise<string[]> {
    if (members.length === 0) return []
    // One row at a time so each row's outcome is known; a duplicate key rolls back only its
    // own statement (not the transaction). A fixed row order keeps concurrent calls from
    // locking rows in opposite orders.
    const ordered = [...members].sort(compareMemberKeys)
    const added = await this.transaction(async (conn) => {
      const ids = new Set<string>()
      for (const member of ordered) {
        try {
          await conn.execute(`INSERT INTO members (${MEMBER_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?)`, memberValues(member))
          ids.add(keyOf(member))
        } catch (err) {
          if (errnoOf(err) !== ER_DUP_ENTRY) throw err
        }
      }
      return ids
    })
    return members.filter((m) => added.delete(keyOf(m))).map((m) => m.userId)
  }

  async memberListMany (conversationIds: readonly string[]): Promise<Map<string, MemberRecord[]>> {
    const rows = await this.selectIn<MemberRow>(
      `SELECT ${MEMBER_COLUMNS} FROM members WHERE conversation_id IN (?) ORDER BY conversation_id, user_id`, conversationIds)
    const byConversation = new Map<string, MemberRecord[]>()
    for (const row of rows) {
      const members = byConversation.get(row.conversation_id)
      if (members === undefined) byConversation.set(row.conversation_id, [toMember(row)])
      else members.push(toMember(row))
    }
    return byConversation
  }

  async memberCountMany (conversationIds: readonly string[]): Promise<Map<string, number>> {
    const rows = await this.selectIn<ConversationCountRow>(
      'SELECT conversation_id, COUNT(*) AS n FROM members WHERE conversation_id IN (?) GROUP BY conversation_id', conversationIds)
    return new Map(rows.map((row) => [row.conversation_id, toSafeNumber(row.n, 'COUNT(*)')]))
  }

  async memberRemove (conversationId: string, userId: string, successor?: string): Promise<boolean> {
    if (successor !== undefined) return await this.memberRemoveWithSuccessor(conversationId, userId, successor)
    const [result] = await this.pool.execute<ResultSetHeader>(
      'DELETE FROM members WHERE conversation_id = ? AND user_id = ?', [conversationId, userId])
    return result.affectedRows > 0
  }

  /** The owner leaves and hands over: both rows change in one transaction, or neither. */
  private async memberRemoveWithSuccessor (conversationId: string, userId: string, successor: string): Promise<boolean> {
    if (successor === userId) return false
    return await this.transaction(async (conn) => {
      // Lock both rows before changing either: a concurrent removal of the successor then
      // waits for this transaction or makes it find one row and change nothing.
      const [rows] = await conn.query<RoleRow[]>(
        'SELECT user_id, role FROM members WHERE conversation_id = ? AND user_id IN (?) FOR UPDATE', [conversationId, [userId, successor]])
      if (rows.length !== 2 || rows.find(r => r.user_id === userId)?.role !== 'owner') return false
      await conn.execute("UPDATE members SET role = 'owner' WHERE conversation_id = ? AND user_id = ?", [conversationId, successor])
      await conn.execute('DELETE FROM members WHERE conversation_id = ? AND user_id = ?', [conversationId, userId])
      return true
    })
  }

  async memberSetRole (conversationId: string, userId: string, role: Role): Promise<boolean> {
    return await this.update('UPDATE members SET role = ? WHERE conversation_id = ? AND user_id = ?', [role, conversationId, userId])
  }

  /**
   * One transaction: both rows are locked and checked (from is the owner, to a member) before
   * either changes, so a concurrent transfer or removal waits and then finds the new state.
   */
  async memberTransferOwnership (conversationId: string, from: string, to: string): Promise<boolean> {
    if (from === to) return false
    return await this.transaction(async (conn) => {
      const [rows] = await conn.query<RoleRow[]>(
        'SELECT user_id, role FROM members WHERE conversation_id = ? AND user_id IN (?) FOR UPDATE', [conversationId, [from, to]])
      if (rows.length !== 2 || rows.find(r => r.user_id === from)?.role !== 'owner') return false
      await conn.execute(
        "UPDATE members SET role = CASE user_id WHEN ? THEN 'owner' ELSE 'admin' END WHERE conversation_id = ? AND user_id IN (?, ?)",
        [to, conversationId, from, to])
      return true
    })
  }

  async memberSetMuted (conversationId: string, userId: string, muted: boolean): Promise<boolean> {
    return await this.update('UPDATE members SET muted = ? WHERE conversation_id = ? AND user_id = ?', [muted, conversationId, userId])
  }

  async memberAdvanceRead (conversationId: string, userId: string, seq: number): Promise<number | null> {
    const found = await this.update(
      'UPDATE members SET read_seq = GREATEST(read_seq, ?) WHERE conversation_id = ? AND user_id = ?',
      [seq, conversationId, userId])
    if (!found) return null
    // A concurrent call may have raised it further, which is still the resulting readSeq.
    const [rows] = await this.pool.execute<ReadSeqRow[]>(
      'SELECT read_seq FROM members WHERE conversation_id = ? AND user_id = ?', [conversationId, userId])
    return rows[0] === undefined ? null : toSafeNumber(rows[0].read_seq, 'members.read_seq')
  }

  /**
   * Two statements per READ_MANY_CHUNK distinct cursors: one UPDATE joined with the cursors as a
   * derived table (GREATEST keeps it forward-only under concurrent calls), one SELECT of the results.
   * Client-side placeholders (query, not execute): a prepared statement per batch size would fill
   * the statement cache.
   */
  async memberAdvanceReadMany (items: ReadonlyArray<{ conversationId: string, userId: string, seq: number }>): Promise<Array<number | null>> {
    const wanted = new Map<string, { conversationId: string, userId: string, seq: number }>()
    for (const item of items) {
      const key = `${item.conversationId}\n${item.userId}`
      const known = wanted.get(key)
      if (known === undefined || known.seq < item.seq) wanted.set(key, item)
    }
    // in key order: two groups updating the same rows at once (two nodes) lock them in the same order
    const cursors = [...wanted.values()].sort((a, b) => compareBytes(a.conversationId, b.conversationId) || compareBytes(a.userId, b.userId))
    const result = new Map<string, number>()
    for (let start = 0; start < cursors.length; start += READ_MANY_CHUNK) {
      const chunk = cursors.slice(start, start + READ_MANY_CHUNK)
      const rows = chunk.map(() => 'SELECT ? AS c, ? AS u, ? AS s').join(' UNION ALL ')
      const [updated] = await this.pool.query<ResultSetHeader>(
        `UPDATE members m JOIN (${rows}) v ON m.conversation_id = v.c AND m.user_id = v.u SET m.read_seq = GREATEST(m.read_seq, v.s)`,
        chunk.flatMap(c => [c.conversationId, c.userId, c.seq]))
      // every row moved (the usual case: a read marks what is new): each cursor is now its seq,
      // and the SELECT's round trip is saved ("Changed: N" of the server's OK packet; a server
      // that does not say gives 0, and the rows are read)
      if (updated.changedRows === chunk.length) {
        for (const c of chunk) result.set(`${c.conversationId}\n${c.userId}`, c.seq)
        continue
      }
      const [found] = await this.pool.query<Array<ReadSeqRow & { conversation_id: string, user_id: string }>>(
        `SELECT conversation_id, user_id, read_seq FROM members WHERE (conversation_id, user_id) IN (${chunk.map(() => '(?, ?)').join(', ')})`,
        chunk.flatMap(c => [c.conversationId, c.userId]))
      for (const row of found) result.set(`${row.conversation_id}\n${row.user_id}`, toSafeNumber(row.read_seq, 'members.read_seq'))
    }
    return items.map(i => result.get(`${i.conversationId}\n${i.userId}`) ?? null)
  }

  async memberListByUser (userId: string): Promise<MemberRecord[]> {
    const [rows] = await this.pool.execute<MemberRow[]>(
      `SELECT ${MEMBER_COLUMNS} FROM members WHERE user_id = ? ORDER BY conversation_id`, [userId])
    return rows.map(toMember)
  }

  async memberPageByUser (userId: string, page: { after: string | null, limit: number }): Promise<MemberRecord[]> {
    if (!pageWanted(page.limit)) return []
    // idx_members_user holds (user_id, conversation_id): the page is one index range, read in
    // conversation_id order (utf8mb4_bin: byte order).
    const [rows] = page.after === null
      ? await this.pool.query<MemberRow[]>(
        `SELECT ${MEMBER_COLUMNS} FROM members WHERE user_id = ? ORDER BY conversation_id LIMIT ?`, [userId, page.limit])
      : await this.pool.query<MemberRow[]>(
        `SELECT ${MEMBER_COLUMNS} FROM members WHERE user_id = ? AND conversation_id > ? ORDER BY conversation_id LIMIT ?`,
        [userId, page.after, page.limit])
    return rows.map(toMember)
  }

  async memberCountByUser (userId: string): Promise<number> {
    const [rows] = await this.pool.execute<CountRow[]>('SELECT COUNT(*) AS n FROM members WHERE user_id = ?', [userId])
    return toSafeNumber(rows[0]?.n, 'COUNT(*)')
  }

  async memberCountByUsers (userIds: readonly string[]): Promise<Map<string, number>> {
    // served by idx_members_user (user_id)
    const rows = await this.selectIn<UserCountRow>(
      'SELECT user_id, COUNT(*) AS n FROM members WHERE user_id IN (?) GROUP BY user_id', userIds)
    return new Map(rows.map((row) => [row.user_id, toSafeNumber(row.n, 'COUNT(*)')]))
  }

  async memberContactOf (userId: string, others: readonly string[]): Promise<Set<string>> {
    const rows = await this.selectIn<UserIdRow>(
      `SELECT DISTINCT theirs.user_id FROM members AS mine
         JOIN conversations AS c ON c.id = mine.conversation_id
         JOIN members AS theirs ON theirs.conversation_id = mine.conversation_id
         WHERE mine.user_id = ? AND (c.kind = 'group' OR c.created_by = theirs.user_id) AND theirs.user_id IN (?)`, others, [userId])
    return new Set(rows.map((row) => row.user_id))
  }

  /**
   * One transaction: the blocker's users row is locked first, so a user's concurrent calls take
   * turns and the count they check is exact (a user with no users row is not serialized; mqim
   * only blocks for signed-in users). The reads after the lock are plain consistent reads: InnoDB
   * takes the transaction's snapshot at its first one, after the lock was granted, so they see
   * what the previous holder committed, and they lock no ranges of blocks (locking reads would
   * take gap locks that deadlock with neighbouring users' inserts). INSERT IGNORE adds nothing
   * when the pair exists.
   */
  async blockAdd (userId: string, blockedId: string, at: number, max: number): Promise<'added' | 'exists' | 'full'> {
    return await this.transaction(async (conn) => {
      await conn.execute('SELECT id FROM users WHERE id = ? FOR UPDATE', [userId])
      const [found] = await conn.execute<RowDataPacket[]>('SELECT 1 FROM blocks WHERE user_id = ? AND blocked_id = ?', [userId, blockedId])
      if (found.length > 0) return 'exists'
      const [counted] = await conn.execute<CountRow[]>('SELECT COUNT(*) AS n FROM blocks WHERE user_id = ?', [userId])
      if (toSafeNumber(counted[0]?.n, 'COUNT(*)') >= max) return 'full'
      const [result] = await conn.execute<ResultSetHeader>(
        'INSERT IGNORE INTO blocks (user_id, blocked_id, blocked_at) VALUES (?, ?, ?)', [userId, blockedId, at])
      return result.affectedRows > 0 ? 'added' : 'exists'
    })
  }

  async blockRemove (userId: string, blockedId: string): Promise<boolean> {
    const [result] = await this.pool.execute<ResultSetHeader>('DELETE FROM blocks WHERE user_id = ? AND blocked_id = ?', [userId, blockedId])
    return result.affectedRows > 0
  }

  async blockList (userId: string): Promise<BlockRecord[]> {
    // the primary key's range of this user (at most limits.blocksPerUser rows), sorted by time
    const [rows] = await this.pool.execute<BlockRow[]>(
      'SELECT blocked_id, blocked_at FROM blocks WHERE user_id = ? ORDER BY blocked_at, blocked_id', [userId])
    return rows.map((row) => ({ blockedId: row.blocked_id, at: toSafeNumber(row.blocked_at, 'blocks.blocked_at') }))
  }

  /** INSERT IGNORE, MENTIONS_CHUNK rows per statement: the same mention stored twice is one row. */
  async mentionAddMany (mentions: readonly MentionRecord[]): Promise<void> {
    for (let start = 0; start < mentions.length; start += MENTIONS_CHUNK) {
      const rows = mentions.slice(start, start + MENTIONS_CHUNK).map(m => [m.userId, m.conversationId, m.seq, m.senderId])
      await this.pool.query('INSERT IGNORE INTO mentions (user_id, conversation_id, seq, sender_id) VALUES ?', [rows])
    }
  }

  /** One statement per IN_CHUNK conversations: the primary key's ranges past each member's read_seq. */
  async mentionCountMany (userId: string, conversationIds: readonly string[]): Promise<Map<string, number>> {
    const rows = await this.selectIn<ConversationCountRow>(
      `SELECT x.conversation_id, COUNT(*) AS n FROM mentions x
        JOIN members m ON m.conversation_id = x.conversation_id AND m.user_id = ?
        WHERE x.user_id IN (?, '${MENTION_ALL}') AND x.seq > m.read_seq AND x.sender_id <> ? AND x.conversation_id IN (?)
        GROUP BY x.conversation_id`,
      conversationIds, [userId, userId, userId])
    return new Map(rows.map((row) => [row.conversation_id, toSafeNumber(row.n, 'COUNT(*)')]))
  }

  async pushTargetPut (record: PushTargetRecord, max: number): Promise<PushTargetPutResult> {
    const key = targetKeyHash(record.target)
    return await this.transaction(async (conn) => {
      await conn.execute('SELECT id FROM users WHERE id = ? FOR UPDATE', [record.userId])
      const [held] = await conn.execute<RowDataPacket[]>('SELECT device FROM push_targets WHERE user_id = ?', [record.userId])
      const replacing = held.some(row => row.device === record.device)
      if (!replacing && held.length >= max) return { outcome: 'full', moved: [] }
      // the target moves here from wherever it was registered before
      const [others] = await conn.execute<RowDataPacket[]>(
        'SELECT user_id, device FROM push_targets WHERE target_key = ? AND NOT (user_id = ? AND device = ?) FOR UPDATE', [key, record.userId, record.device])
      if (others.length > 0) await conn.execute('DELETE FROM push_targets WHERE target_key = ? AND NOT (user_id = ? AND device = ?)', [key, record.userId, record.device])
      await conn.execute(
        `INSERT INTO push_targets (user_id, device, target_key, target, created_at) VALUES (?, ?, ?, ?, ?)
          ON DUPLICATE KEY UPDATE target_key = VALUES(target_key), target = VALUES(target), created_at = VALUES(created_at)`,
        [record.userId, record.device, key, JSON.stringify(record.target), record.at])
      return { outcome: replacing ? 'replaced' : 'added', moved: others.map(row => ({ userId: String(row.user_id), device: String(row.device) })) }
    })
  }

  async pushTargetRemove (userId: string, device: string, only?: PushTarget): Promise<boolean> {
    if (only === undefined) return await this.update('DELETE FROM push_targets WHERE user_id = ? AND device = ?', [userId, device])
    return await this.update('DELETE FROM push_targets WHERE user_id = ? AND device = ? AND target_key = ?', [userId, device, targetKeyHash(only)])
  }

  async pushTargetsOf (userIds: readonly string[]): Promise<PushTargetRecord[]> {
    const rows = await this.selectIn<PushTargetRow>('SELECT user_id, device, target, created_at FROM push_targets WHERE user_id IN (?)', userIds)
    return rows
      .map(row => ({ userId: row.user_id, device: row.device, target: JSON.parse(row.target) as PushTarget, at: toSafeNumber(row.created_at, 'created_at') }))
      .sort((a, b) => compareBytes(a.userId, b.userId) || compareBytes(a.device, b.device))
  }

  async blockersAmong (userId: string, others: readonly string[]): Promise<Set<string>> {
    // served by idx_blocks_blocked (blocked_id, user_id)
    const rows = await this.selectIn<UserIdRow>('SELECT user_id FROM blocks WHERE blocked_id = ? AND user_id IN (?)', others, [userId])
    return new Set(rows.map((row) => row.user_id))
  }

  /**
   * One transaction: the conversation's row is locked first, so the creations of one conversation
   * take turns and the count they check is exact. As in blockAdd, the reads after the lock are
   * plain consistent reads, and dead invites are deleted by primary key: no ranges of invites are
   * locked (a range lock would deadlock with a neighbouring conversation's insert).
   */
  async inviteCreate (invite: InviteRecord, max: number, now: number): Promise<'added' | 'full'> {
    try {
      return await this.transaction(async (conn) => {
        await conn.execute('SELECT id FROM conversations WHERE id = ? FOR UPDATE', [invite.conversationId])
        const [held] = await conn.execute<InviteRow[]>(`SELECT ${INVITE_COLUMNS} FROM invites WHERE conversation_id = ?`, [invite.conversationId])
        const dead = held.map(toInvite).filter(i => !inviteLive(i, now)).map(i => i.codeHash)
        if (dead.length > 0) await conn.query('DELETE FROM invites WHERE code_hash IN (?)', [dead])
        if (held.length - dead.length >= max) return 'full'
        await conn.execute(`INSERT INTO invites (${INVITE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`, [
          invite.codeHash, invite.conversationId, inviteCodeId(invite.codeHash), invite.createdBy, invite.createdAt, invite.expiresAt, invite.maxUses, invite.uses])
        return 'added'
      })
    } catch (err) {
      throw mapConflict(err, `an invite with code id "${inviteCodeId(invite.codeHash)}" (or this code) exists already`)
    }
  }

  async inviteGet (codeHash: string): Promise<InviteRecord | null> {
    const [rows] = await this.pool.execute<InviteRow[]>(`SELECT ${INVITE_COLUMNS} FROM invites WHERE code_hash = ?`, [codeHash])
    return rows[0] === undefined ? null : toInvite(rows[0])
  }

  async inviteList (conversationId: string, now: number): Promise<InviteRecord[]> {
    // uq_invites_code_id's range of the conversation: at most channels.invitesPerChannel rows (inviteCreate removes the dead ones)
    const [rows] = await this.pool.execute<InviteRow[]>(
      `SELECT ${INVITE_COLUMNS} FROM invites WHERE conversation_id = ? AND expires_at > ? AND (max_uses IS NULL OR uses < max_uses)
        ORDER BY created_at, code_id`, [conversationId, now])
    return rows.map(toInvite)
  }

  /** One conditional UPDATE: InnoDB checks the condition on the row as the last committer left it, so the last use goes once. */
  async inviteUse (codeHash: string, now: number): Promise<boolean> {
    return await this.update(
      'UPDATE invites SET uses = uses + 1 WHERE code_hash = ? AND expires_at > ? AND (max_uses IS NULL OR uses < max_uses)', [codeHash, now])
  }

  async inviteRelease (codeHash: string): Promise<void> {
    await this.pool.execute('UPDATE invites SET uses = uses - 1 WHERE code_hash = ? AND uses > 0', [codeHash])
  }

  async inviteRemove (conversationId: string, codeId: string): Promise<boolean> {
    return await this.update('DELETE FROM invites WHERE conversation_id = ? AND code_id = ?', [conversationId, codeId])
  }

  /** Found by a consistent read, deleted by primary key (no range locks, as in inviteCreate). */
  async inviteRemoveByCreator (conversationId: string, userId: string): Promise<number> {
    const [rows] = await this.pool.execute<InviteRow[]>(
      'SELECT code_hash FROM invites WHERE conversation_id = ? AND created_by = ?', [conversationId, userId])
    if (rows.length === 0) return 0
    const [result] = await this.pool.query<ResultSetHeader>('DELETE FROM invites WHERE code_hash IN (?)', [rows.map(r => r.code_hash)])
    return result.affectedRows
  }

  async removalMark (conversationId: string, userId: string, at: number): Promise<void> {
    await this.pool.execute(
      'INSERT INTO removals (conversation_id, user_id, removed_at) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE removed_at = VALUES(removed_at)',
      [conversationId, userId, at])
  }

  async removalClear (conversationId: string, userIds: readonly string[]): Promise<void> {
    const ids = [...new Set(userIds)]
    for (let i = 0; i < ids.length; i += IN_CHUNK) {
      await this.pool.query('DELETE FROM removals WHERE conversation_id = ? AND user_id IN (?)', [conversationId, ids.slice(i, i + IN_CHUNK)])
    }
  }

  async removalGet (conversationId: string, userId: string): Promise<number | null> {
    const [rows] = await this.pool.execute<Array<RowDataPacket & { removed_at: number | string }>>(
      'SELECT removed_at FROM removals WHERE conversation_id = ? AND user_id = ?', [conversationId, userId])
    const [row] = rows
    return row === undefined ? null : toSafeNumber(row.removed_at, 'removals.removed_at')
  }

  /**
   * Runs a SELECT whose last placeholder is an `IN (?)` list once per IN_CHUNK distinct ids and
   * concatenates the rows; with no ids it runs nothing. `leading` fills the placeholders before
   * the list. Each id is in exactly one chunk, so rows keyed by it are never repeated.
   */
  private async selectIn<Row extends RowDataPacket> (sql: string, ids: readonly string[], leading: string[] = []): Promise<Row[]> {
    const rows: Row[] = []
    for (const chunk of chunksOf([...new Set(ids)], IN_CHUNK)) {
      // query, not execute: mysql2 expands an array into a quoted list only client-side.
      const [found] = await this.pool.query<Row[]>(sql, [...leading, chunk])
      rows.push(...found)
    }
    return rows
  }

  /** Runs an UPDATE; true if it matched a row. */
  private async update (sql: string, values: Array<string | number | boolean>): Promise<boolean> {
    const [result] = await this.pool.execute<ResultSetHeader>(sql, values)
    return result.affectedRows > 0
  }

  /** Runs an INSERT, turning a duplicate key into StoreConflictError. */
  private async write (sql: string, values: Array<string | number | boolean | null>, conflictMessage: string): Promise<void> {
    try {
      await this.pool.execute(sql, values)
    } catch (err) {
      throw mapConflict(err, conflictMessage)
    }
  }

  /** Runs work in a transaction on one connection, retrying if InnoDB picks it as a deadlock victim. */
  private async transaction<T> (work: (conn: PoolConnection) => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      const conn = await this.pool.getConnection()
      let healthy = true
      try {
        await conn.beginTransaction()
        const result = await work(conn)
        await conn.commit()
        return result
      } catch (err) {
        try {
          await conn.rollback()
        } catch {
          // The connection is unusable; the server rolls back when it goes away.
          healthy = false
        }
        if (errnoOf(err) === ER_LOCK_DEADLOCK && attempt < TRANSACTION_ATTEMPTS) continue
        throw err
      } finally {
        if (healthy) conn.release()
        else conn.destroy()
      }
    }
  }
}

/** Brings the schema up to MYSQL_SCHEMA_VERSION. The caller holds the migration lock. */
async function migrate (conn: PoolConnection): Promise<void> {
  await conn.query(`CREATE TABLE IF NOT EXISTS schema_migrations (
    version INT NOT NULL,
    name VARCHAR(255) NOT NULL,
    applied_at BIGINT NOT NULL,
    PRIMARY KEY (version)
  ) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`)
  const [rows] = await conn.query<VersionRow[]>('SELECT MAX(version) AS version FROM schema_migrations')
  const current = rows[0]?.version ?? 0
  if (current > MYSQL_SCHEMA_VERSION) {
    throw new Error(`mysql metadata store: database schema version ${current} is newer than version ${MYSQL_SCHEMA_VERSION} known to this build of mqim; upgrade mqim or use another database`)
  }
  const pending = [...MYSQL_MIGRATIONS].sort((a, b) => a.version - b.version).filter((m) => m.version > current)
  for (const migration of pending) {
    for (const statement of migration.statements) {
      await runMigrationStatement(conn, statement)
    }
    await conn.query('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)',
      [migration.version, migration.name, Date.now()])
  }
}

/** Runs one statement of a migration; a guarded one only if its guard finds it not applied. */
async function runMigrationStatement (conn: PoolConnection, statement: MysqlStatement): Promise<void> {
  if (typeof statement === 'string') {
    await conn.query(statement)
    return
  }
  const [applied] = await conn.query<RowDataPacket[]>(statement.appliedIf.sql, statement.appliedIf.values)
  if (applied.length === 0) await conn.query(statement.sql)
}

/**
 * mysql://user:pass@host:port/dbname[?ssl=true][&ssl-ca=/path/ca.pem]
 *   ssl=true      TLS, server certificate checked against the system CAs
 *   ssl-ca=FILE   TLS, server certificate checked against this CA bundle (PEM)
 */
function parseMysqlUrl (url: string): { host: string, port: number, user: string, password: string, database: string, ssl?: { ca?: Buffer, rejectUnauthorized: boolean } } {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new Error('mysql metadata store: url is not a valid URL (expected mysql://user:pass@host:port/dbname)')
  }
  if (parsed.protocol !== 'mysql:') {
    throw new Error(`mysql metadata store: url must start with mysql://, got ${parsed.protocol}//`)
  }
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''))
  if (database === '' || database.includes('/')) {
    throw new Error('mysql metadata store: url must name one database (mysql://user:pass@host:port/dbname)')
  }
  for (const key of parsed.searchParams.keys()) {
    if (key !== 'ssl' && key !== 'ssl-ca') throw new Error(`mysql metadata store: unknown url parameter "${key}" (known: ssl, ssl-ca)`)
  }
  const target = {
    host: parsed.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: parsed.port === '' ? DEFAULT_PORT : Number(parsed.port),
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password),
    database
  }
  const caFile = parsed.searchParams.get('ssl-ca')
  if (caFile !== null) return { ...target, ssl: { ca: readFileSync(caFile), rejectUnauthorized: true } }
  const ssl = parsed.searchParams.get('ssl')
  if (ssl === 'true') return { ...target, ssl: { rejectUnauthorized: true } }
  if (ssl !== null && ssl !== 'false') throw new Error('mysql metadata store: url parameter ssl must be true or false')
  return target
}

function errnoOf (err: unknown): number | undefined {
  if (typeof err === 'object' && err !== null && 'errno' in err && typeof err.errno === 'number') {
    return err.errno
  }
  return undefined
}

function mapConflict (err: unknown, message: string): unknown {
  return errnoOf(err) === ER_DUP_ENTRY ? new StoreConflictError(message) : err
}

function assertMembersOf (conversationId: string, members: MemberRecord[]): void {
  const stray = members.find((m) => m.conversationId !== conversationId)
  if (stray !== undefined) {
    throw new Error(`conversationCreate: member "${stray.userId}" belongs to conversation "${stray.conversationId}", not "${conversationId}"`)
  }
}

function chunksOf<T> (items: T[], size: number): T[][] {
  const chunks: T[][] = []
  for (let start = 0; start < items.length; start += size) chunks.push(items.slice(start, start + size))
  return chunks
}

/** Whether a page limit asks for any rows (0 or less: none); throws if it is not an integer. */
function pageWanted (limit: number): boolean {
  if (!Number.isSafeInteger(limit)) throw new RangeError(`page limit must be an integer, got ${String(limit)}`)
  return limit > 0
}

/** A userChanges cursor: epoch milliseconds of the database clock, as a decimal string. */
function parseChangeCursor (cursor: string): number {
  const ms = /^\d{1,15}$/.test(cursor) ? Number(cursor) : NaN
  if (!Number.isSafeInteger(ms)) throw new Error(`mysql metadata store: not a userChanges cursor: "${cursor}"`)
  return ms
}

function keyOf (member: MemberRecord): string {
  return `${member.conversationId}\u0000${member.userId}`
}

function compareMemberKeys (a: MemberRecord, b: MemberRecord): number {
  const ka = keyOf(a)
  const kb = keyOf(b)
  return ka < kb ? -1 : ka > kb ? 1 : 0
}

function memberValues (m: MemberRecord): Array<string | number | boolean> {
  return [m.conversationId, m.userId, m.role, m.readSeq, m.muted, m.joinedAt]
}

/** BIGINT columns come back as strings when they exceed 2^53 (supportBigNumbers); refuse to round them. */
function toSafeNumber (value: number | string | undefined, column: string): number {
  const n = Number(value)
  if (!Number.isSafeInteger(n)) {
    throw new Error(`mysql metadata store: ${column} value ${String(value)} is not a safe integer`)
  }
  return n
}

function toUser (row: UserRow): UserRecord {
  return {
    id: row.id,
    kind: row.kind,
    displayName: row.display_name,
    secretHash: row.secret_hash,
    disabled: row.disabled !== 0,
    createdAt: toSafeNumber(row.created_at, 'users.created_at'),
    groupInvites: row.group_invites
  }
}

function toConversation (row: ConversationRow): ConversationRecord {
  return {
    id: row.id,
    kind: row.kind,
    name: row.name,
    directKey: row.direct_key,
    createdBy: row.created_by,
    createdAt: toSafeNumber(row.created_at, 'conversations.created_at'),
    ...(row.kind === 'channel' ? { channel: { public: row.channel_public === 1, postPolicy: row.channel_post ?? 'admins' } } : {})
  }
}

function toMember (row: MemberRow): MemberRecord {
  return {
    conversationId: row.conversation_id,
    userId: row.user_id,
    role: row.role,
    readSeq: toSafeNumber(row.read_seq, 'members.read_seq'),
    muted: row.muted !== 0,
    joinedAt: toSafeNumber(row.joined_at, 'members.joined_at')
  }
}

interface PushTargetRow extends RowDataPacket {
  user_id: string
  device: string
  target: string
  created_at: number | string
}

interface InviteRow extends RowDataPacket {
  code_hash: string
  conversation_id: string
  code_id: string
  created_by: string
  created_at: number | string
  expires_at: number | string
  max_uses: number | null
  uses: number
}

function toInvite (row: InviteRow): InviteRecord {
  return {
    codeHash: row.code_hash,
    conversationId: row.conversation_id,
    createdBy: row.created_by,
    createdAt: toSafeNumber(row.created_at, 'invites.created_at'),
    expiresAt: toSafeNumber(row.expires_at, 'invites.expires_at'),
    maxUses: row.max_uses,
    uses: row.uses
  }
}

/** The unique key of a push target: SHA-256 of what makes it the same target (pushTargetKey). */
function targetKeyHash (target: PushTarget): string {
  return createHash('sha256').update(pushTargetKey(target)).digest('hex')
}
