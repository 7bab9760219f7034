/**
 * Versioned schema migrations for the MySQL/MariaDB metadata store (MySQL 8, MariaDB 10.11).
 *
 * Rules for adding a migration:
 * - append to MYSQL_MIGRATIONS with the next version; never edit or reorder an applied one;
 * - DDL commits implicitly in MySQL, so write each statement to be safe to re-run: a crash
 *   between a statement and the version record makes the next start-up run the whole
 *   migration again. CREATE TABLE has IF NOT EXISTS everywhere. ALTER TABLE ... ADD COLUMN /
 *   ADD INDEX IF NOT EXISTS exist in MariaDB only, not in MySQL 8: use addColumn() and
 *   addIndex(), which skip the statement when information_schema shows it applied.
 *
 * Ids use utf8mb4_bin so that they compare byte for byte (case-sensitive), like the
 * in-memory adapter. Timestamps are epoch milliseconds in BIGINT columns, except
 * users.updated_at: a DATETIME(3) in UTC that the server sets itself (see metadata-mysql.ts).
 */

/**
 * A statement that is skipped when `appliedIf` (a query) returns a row: how DDL without an
 * IF NOT EXISTS form is made safe to re-run.
 */
export interface GuardedStatement {
  sql: string
  appliedIf: { sql: string, values: string[] }
}

export type MysqlStatement = string | GuardedStatement

export interface MysqlMigration {
  version: number
  name: string
  statements: MysqlStatement[]
}

const TABLE_OPTIONS = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin'

/** ALTER TABLE `table` ADD COLUMN `column` definition, unless the column exists. */
function addColumn (table: string, column: string, definition: string): GuardedStatement {
  return {
    sql: `ALTER TABLE \`${table}\` ADD COLUMN \`${column}\` ${definition}`,
    appliedIf: {
      sql: 'SELECT 1 FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND COLUMN_NAME = ?',
      values: [table, column]
    }
  }
}

/** ALTER TABLE `table` ADD INDEX `index` (columns), unless an index of that name exists. */
function addIndex (table: string, index: string, columns: string[]): GuardedStatement {
  return {
    sql: `ALTER TABLE \`${table}\` ADD INDEX \`${index}\` (${columns.map((c) => `\`${c}\``).join(', ')})`,
    appliedIf: {
      sql: 'SELECT 1 FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME = ? AND INDEX_NAME = ? LIMIT 1',
      values: [table, index]
    }
  }
}

export const MYSQL_MIGRATIONS: readonly MysqlMigration[] = [
  {
    version: 1,
    name: 'users, conversations, members',
    statements: [
      `CREATE TABLE IF NOT EXISTS users (
        id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        kind ENUM('user', 'bot') NOT NULL,
        display_name VARCHAR(255) NOT NULL,
        secret_hash VARCHAR(255) NOT NULL,
        disabled TINYINT(1) NOT NULL DEFAULT 0,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (id)
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS conversations (
        id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        kind ENUM('direct', 'group') NOT NULL,
        name VARCHAR(255) NULL,
        direct_key VARCHAR(160) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        created_by VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (id),
        UNIQUE KEY uq_conversations_direct_key (direct_key)
      ) ${TABLE_OPTIONS}`,
      `CREATE TABLE IF NOT EXISTS members (
        conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        role ENUM('owner', 'admin', 'member') NOT NULL,
        read_seq BIGINT NOT NULL DEFAULT 0,
        muted TINYINT(1) NOT NULL DEFAULT 0,
        joined_at BIGINT NOT NULL,
        PRIMARY KEY (conversation_id, user_id),
        KEY idx_members_user (user_id)
      ) ${TABLE_OPTIONS}`
    ]
  },
  {
    version: 2,
    name: 'users.group_invites, users.updated_at (change feed), conversations by creator',
    statements: [
      addColumn('users', 'group_invites', "ENUM('anyone', 'contacts') NOT NULL DEFAULT 'anyone'"),
      // Set by the server on every change of the row, by whichever process makes it, from the
      // database clock: userChanges() polls it. Existing rows get the time of the migration.
      addColumn('users', 'updated_at', 'DATETIME(3) NOT NULL DEFAULT CURRENT_TIMESTAMP(3) ON UPDATE CURRENT_TIMESTAMP(3)'),
      addIndex('users', 'idx_users_updated_at', ['updated_at']),
      // conversationCountCreatedSince: the per-user group-creation quota.
      addIndex('conversations', 'idx_conversations_created_by', ['created_by', 'created_at'])
    ]
  },
  {
    version: 3,
    name: 'blocks: who blocks whom',
    statements: [
      // The primary key serves a user's list (blockList) and the bound on it; idx_blocks_blocked
      // the other way round: which of some users block this one (blockersAmong).
      `CREATE TABLE IF NOT EXISTS blocks (
        user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        blocked_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        blocked_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, blocked_id),
        KEY idx_blocks_blocked (blocked_id, user_id)
      ) ${TABLE_OPTIONS}`
    ]
  },
  {
    version: 4,
    name: 'mentions: who a message mentions, for unread mention counts',
    statements: [
      // The primary key serves mentionCountMany: one user's (and '@all') mentions in a page of
      // conversations, past each read cursor.
      `CREATE TABLE IF NOT EXISTS mentions (
        user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        seq BIGINT NOT NULL,
        sender_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        PRIMARY KEY (user_id, conversation_id, seq)
      ) ${TABLE_OPTIONS}`
    ]
  },
  {
    version: 5,
    name: 'push_targets: where each device gets pushes',
    statements: [
      // The primary key serves a user's targets (pushTargetsOf, the bound per user); the unique
      // target_key (SHA-256 of the endpoint, or of gateway and token) moves a target between
      // accounts instead of pushing one device for two of them.
      `CREATE TABLE IF NOT EXISTS push_targets (
        user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        device VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        target_key CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        target TEXT NOT NULL,
        created_at BIGINT NOT NULL,
        PRIMARY KEY (user_id, device),
        UNIQUE KEY uq_push_targets_key (target_key)
      ) ${TABLE_OPTIONS}`
    ]
  },
  {
    version: 6,
    name: 'users by kind, in id order (userPage of one kind)',
    statements: [addIndex('users', 'idx_users_kind', ['kind', 'id'])]
  },
  {
    version: 7,
    name: 'channels: conversations of kind channel, with their join and post settings',
    statements: [
      // MODIFY is safe to re-run: the same definition again changes nothing
      "ALTER TABLE conversations MODIFY kind ENUM('direct', 'group', 'channel') NOT NULL",
      addColumn('conversations', 'channel_public', 'TINYINT(1) NULL'),
      addColumn('conversations', 'channel_post', "ENUM('admins', 'members') NULL")
    ]
  },
  {
    version: 8,
    name: 'invites: invite codes of channels, by the SHA-256 of the code',
    statements: [
      // The primary key serves a join by code (inviteGet, inviteUse: one row by its hash; the code
      // itself is never stored); uq_invites_code_id a conversation's invites (listing, the bound
      // per channel, revoking by codeId, the first 8 hex digits of the hash).
      `CREATE TABLE IF NOT EXISTS invites (
        code_hash CHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        code_id CHAR(8) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
        created_by VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        created_at BIGINT NOT NULL,
        expires_at BIGINT NOT NULL,
        max_uses INT NULL,
        uses INT NOT NULL DEFAULT 0,
        PRIMARY KEY (code_hash),
        UNIQUE KEY uq_invites_code_id (conversation_id, code_id)
      ) ${TABLE_OPTIONS}`
    ]
  },
  {
    version: 9,
    name: 'removals: users an admin removed from a channel, kept out of join until added again',
    statements: [
      `CREATE TABLE IF NOT EXISTS removals (
        conversation_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        user_id VARCHAR(64) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NOT NULL,
        removed_at BIGINT NOT NULL,
        PRIMARY KEY (conversation_id, user_id)
      ) ${TABLE_OPTIONS}`
    ]
  }
]

/** The schema version this build of mqim expects: the highest migration version. */
export const MYSQL_SCHEMA_VERSION: number = MYSQL_MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0)
