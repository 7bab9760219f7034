/**
 * Versioned schema migrations for the MySQL/MariaDB metadata store (MySQL 8, MariaDB 10.11).
 *
 * Rules for adding a migration:
 * - append to MYSQL_MIGRATIONS with the next version; never edit or reorder an applied one;
 * - DDL commits implicitly in MySQL, so write each statement to be safe to re-run
 *   (IF NOT EXISTS / IF EXISTS): a crash between a statement and the version record
 *   makes the next start-up run the whole migration again.
 *
 * Ids use utf8mb4_bin so that they compare byte for byte (case-sensitive), like the
 * in-memory adapter. Timestamps are epoch milliseconds in BIGINT columns.
 */

export interface MysqlMigration {
  version: number
  name: string
  statements: string[]
}

const TABLE_OPTIONS = 'ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin'

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
  }
]

/** The schema version this build of mqim expects: the highest migration version. */
export const MYSQL_SCHEMA_VERSION: number = MYSQL_MIGRATIONS.reduce((max, m) => Math.max(max, m.version), 0)
