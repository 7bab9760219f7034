/**
 * MySqlMetadataStore: the shared contract suite on a fresh database per test, plus what is
 * particular to this backend (migrations, the start-up schema version check, config checks).
 */
import mysql from 'mysql2/promise'
import { MYSQL_MIGRATIONS } from '../src/store/migrations/mysql.js'
import { MYSQL_SCHEMA_VERSION, MySqlMetadataStore } from '../src/store/metadata-mysql.js'
import type { UserRecord } from '../src/store/types.js'
import { describeMetadataStore } from './contract/metadata-store.contract.js'
import { freshMysqlUrl } from './helpers/db.js'

/** Runs statements on the database named by a mysql:// URL (setup and teardown only). */
async function onDatabase (url: string, work: (conn: mysql.Connection, dbName: string) => Promise<void>): Promise<void> {
  const parsed = new URL(url)
  const dbName = decodeURIComponent(parsed.pathname.slice(1))
  const conn = await mysql.createConnection({
    host: parsed.hostname,
    port: Number(parsed.port || 3306),
    user: decodeURIComponent(parsed.username),
    password: decodeURIComponent(parsed.password)
  })
  try {
    await work(conn, dbName)
  } finally {
    await conn.end()
  }
}

async function dropDatabase (url: string): Promise<void> {
  await onDatabase(url, async (conn, dbName) => {
    await conn.query(`DROP DATABASE IF EXISTS \`${dbName}\``)
  })
}

describeMetadataStore('mysql', async () => {
  const url = await freshMysqlUrl()
  return { store: new MySqlMetadataStore({ url, poolSize: 5 }), cleanup: async () => await dropDatabase(url) }
})

/** The migration 2 objects (columns and indexes) that exist in the database. */
async function migration2Objects (url: string): Promise<string[]> {
  let found: string[] = []
  await onDatabase(url, async (conn, dbName) => {
    const [columns] = await conn.query<mysql.RowDataPacket[]>(
      "SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users' AND COLUMN_NAME IN ('group_invites', 'updated_at')",
      [dbName])
    const [indexes] = await conn.query<mysql.RowDataPacket[]>(
      "SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND INDEX_NAME IN ('idx_users_updated_at', 'idx_conversations_created_by')",
      [dbName])
    found = [...columns, ...indexes].map((row) => String(row.name)).sort()
  })
  return found
}

const MIGRATION_2_OBJECTS = ['group_invites', 'idx_conversations_created_by', 'idx_users_updated_at', 'updated_at']

function sleep (ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}

describe('MySqlMetadataStore specifics', () => {
  let url: string
  const stores: MySqlMetadataStore[] = []

  function open (options: { userChangesMarginMs?: number } = {}): MySqlMetadataStore {
    const store = new MySqlMetadataStore({ url, ...options })
    stores.push(store)
    return store
  }

  function alice (): UserRecord {
    return { id: 'alice', kind: 'user', displayName: 'A', secretHash: 'h', disabled: false, createdAt: 1, groupInvites: 'anyone' }
  }

  beforeEach(async () => {
    url = await freshMysqlUrl()
  })

  afterEach(async () => {
    await Promise.all(stores.splice(0).map(async (s) => await s.close()))
    await dropDatabase(url)
  })

  test('MYSQL_SCHEMA_VERSION is the highest migration, versions strictly increasing', () => {
    const versions = MYSQL_MIGRATIONS.map((m) => m.version)
    expect(versions).toStrictEqual([...versions].sort((a, b) => a - b))
    expect(new Set(versions).size).toBe(versions.length)
    expect(MYSQL_SCHEMA_VERSION).toBe(versions[versions.length - 1])
  })

  test('init is idempotent: twice on one store, then again from a second store', async () => {
    const first = open()
    await first.init()
    await first.userCreate(alice())
    await first.init()
    const second = open()
    await second.init()
    expect((await second.userGet('alice'))?.displayName).toBe('A')

    await onDatabase(url, async (conn, dbName) => {
      const [rows] = await conn.query<mysql.RowDataPacket[]>(`SELECT version FROM \`${dbName}\`.schema_migrations ORDER BY version`)
      expect(rows.map((r) => r.version)).toStrictEqual(MYSQL_MIGRATIONS.map((m) => m.version))
    })
  })

  test('stores starting concurrently on one fresh database migrate it once', async () => {
    const racing = [open(), open(), open()] as const
    await Promise.all(racing.map(async (s) => await s.init()))
    await racing[0].userCreate(alice())
    expect((await racing[2].userGet('alice'))?.id).toBe('alice')

    await onDatabase(url, async (conn, dbName) => {
      const [rows] = await conn.query<mysql.RowDataPacket[]>(`SELECT version FROM \`${dbName}\`.schema_migrations ORDER BY version`)
      expect(rows.map((r) => r.version)).toStrictEqual(MYSQL_MIGRATIONS.map((m) => m.version))
    })
  })

  test('init refuses a database whose schema is newer than this build', async () => {
    await open().init()
    const future = MYSQL_SCHEMA_VERSION + 1
    await onDatabase(url, async (conn, dbName) => {
      await conn.query(`INSERT INTO \`${dbName}\`.schema_migrations (version, name, applied_at) VALUES (?, 'from the future', ?)`, [future, Date.now()])
    })

    const outdated = open()
    await expect(outdated.init()).rejects.toThrow(new RegExp(`schema version ${future}\\b.*\\b${MYSQL_SCHEMA_VERSION}\\b`))
    // The failed start released the migration lock: a later start-up gets the same answer, not a timeout.
    await expect(open().init()).rejects.toThrow(`schema version ${future}`)
  })

  test('the constructor rejects bad options', () => {
    expect(() => new MySqlMetadataStore({ url: 'not a url' })).toThrow(/valid URL/)
    expect(() => new MySqlMetadataStore({ url: 'postgres://u:p@localhost/db' })).toThrow(/mysql:\/\//)
    expect(() => new MySqlMetadataStore({ url: 'mysql://u:p@localhost:3306/' })).toThrow(/database/)
    expect(() => new MySqlMetadataStore({ url, poolSize: 0 })).toThrow(/poolSize/)
    expect(() => new MySqlMetadataStore({ url, userChangesMarginMs: -1 })).toThrow(/userChangesMarginMs/)
  })

  describe('migration 2 is safe to run again (MySQL 8 has no ADD COLUMN / ADD INDEX IF NOT EXISTS)', () => {
    // (the records of later migrations go too: init runs what comes after the highest version recorded)
    test('run twice: with its version record gone, init applies nothing and records it again', async () => {
      const store = open()
      await store.init()
      await store.userCreate({ ...alice(), groupInvites: 'contacts' })
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 2`)
      })

      await open().init()
      expect(await migration2Objects(url)).toStrictEqual(MIGRATION_2_OBJECTS)
      expect(await store.userGet('alice')).toStrictEqual({ ...alice(), groupInvites: 'contacts' })
      await onDatabase(url, async (conn, dbName) => {
        const [rows] = await conn.query<mysql.RowDataPacket[]>(`SELECT version FROM \`${dbName}\`.schema_migrations ORDER BY version`)
        expect(rows.map((r) => r.version)).toStrictEqual(MYSQL_MIGRATIONS.map((m) => m.version))
      })
    })

    test('after a crash half way through, init completes it', async () => {
      await open().init()
      // What a crash after the first two statements leaves: two of the four objects, no record.
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`ALTER TABLE \`${dbName}\`.users DROP INDEX idx_users_updated_at`)
        await conn.query(`ALTER TABLE \`${dbName}\`.conversations DROP INDEX idx_conversations_created_by`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 2`)
      })
      expect(await migration2Objects(url)).toStrictEqual(['group_invites', 'updated_at'])

      await open().init()
      expect(await migration2Objects(url)).toStrictEqual(MIGRATION_2_OBJECTS)
    })

    test('upgrades a version-1 database with users in it', async () => {
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`USE \`${dbName}\``)
        await conn.query('CREATE TABLE schema_migrations (version INT NOT NULL, name VARCHAR(255) NOT NULL, applied_at BIGINT NOT NULL, PRIMARY KEY (version))')
        const [first] = MYSQL_MIGRATIONS
        if (first === undefined) throw new Error('no migration 1')
        for (const statement of first.statements) {
          if (typeof statement !== 'string') throw new Error('migration 1 has only plain statements')
          await conn.query(statement)
        }
        await conn.query("INSERT INTO schema_migrations VALUES (1, 'users, conversations, members', 0)")
        await conn.query("INSERT INTO users (id, kind, display_name, secret_hash, disabled, created_at) VALUES ('alice', 'user', 'A', 'h', 0, 1)")
      })

      const store = open()
      await store.init()
      expect(await store.userGet('alice')).toStrictEqual(alice())
      const { cursor } = await store.userChanges(null)
      await store.userSetGroupInvites('alice', 'contacts')
      expect((await store.userChanges(cursor)).users).toStrictEqual([{ ...alice(), groupInvites: 'contacts' }])
    })
  })

  // (as above, the records of later migrations go too)
  describe('migration 3 (blocks)', () => {
    test('run again with its record gone: the blocks stay', async () => {
      const store = open()
      await store.init()
      await store.userCreate(alice())
      expect(await store.blockAdd('alice', 'bob', 5, 10)).toBe('added')
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 3`)
      })
      await open().init()
      expect(await store.blockList('alice')).toStrictEqual([{ blockedId: 'bob', at: 5 }])
    })

    test('upgrades a version-2 database: the table and its reverse index are created', async () => {
      await open().init()
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DROP TABLE \`${dbName}\`.blocks`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 3`)
      })
      const store = open()
      await store.init()
      await store.userCreate(alice())
      expect(await store.blockAdd('bob', 'alice', 5, 10)).toBe('added')
      expect(await store.blockersAmong('alice', ['bob'])).toStrictEqual(new Set(['bob']))
      await onDatabase(url, async (conn, dbName) => {
        const [indexes] = await conn.query<mysql.RowDataPacket[]>(
          "SELECT DISTINCT INDEX_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'blocks'", [dbName])
        expect(indexes.map((row) => String(row.name)).sort()).toStrictEqual(['PRIMARY', 'idx_blocks_blocked'])
      })
    })
  })

  describe('migration 4 (mentions)', () => {
    test('run again with its record gone: the mentions stay; a version-3 database gets the table', async () => {
      const first = open()
      await first.init()
      await first.userCreate(alice())
      await first.conversationCreate({ id: 'g1', kind: 'group', name: 'g', directKey: null, createdBy: 'alice', createdAt: 1 },
        [{ conversationId: 'g1', userId: 'alice', role: 'owner', readSeq: 0, muted: false, joinedAt: 1 }])
      await first.mentionAddMany([{ conversationId: 'g1', userId: 'alice', seq: 3, senderId: 'bob' }])
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 4`)
      })
      const again = open()
      await again.init()
      expect(await again.mentionCountMany('alice', ['g1'])).toStrictEqual(new Map([['g1', 1]]))
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DROP TABLE \`${dbName}\`.mentions`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 4`)
      })
      const upgraded = open()
      await upgraded.init()
      expect(await upgraded.mentionCountMany('alice', ['g1'])).toStrictEqual(new Map())
      await upgraded.mentionAddMany([{ conversationId: 'g1', userId: '@all', seq: 4, senderId: 'bob' }])
      expect(await upgraded.mentionCountMany('alice', ['g1'])).toStrictEqual(new Map([['g1', 1]]))
    })
  })

  describe('migration 6 (users by kind)', () => {
    test('a version-5 database gets idx_users_kind; run again with its record gone, nothing changes; userPage of a kind reads that index', async () => {
      const indexColumns = async (): Promise<string[]> => {
        let columns: string[] = []
        await onDatabase(url, async (conn, dbName) => {
          const [rows] = await conn.query<mysql.RowDataPacket[]>(
            "SELECT COLUMN_NAME AS name FROM information_schema.STATISTICS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'users' AND INDEX_NAME = 'idx_users_kind' ORDER BY SEQ_IN_INDEX", [dbName])
          columns = rows.map((r) => String(r.name))
        })
        return columns
      }
      const first = open()
      await first.init()
      await first.userCreate(alice())
      expect(await indexColumns()).toStrictEqual(['kind', 'id'])
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`ALTER TABLE \`${dbName}\`.users DROP INDEX idx_users_kind`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 6`)
      })
      const upgraded = open()
      await upgraded.init()
      expect(await indexColumns()).toStrictEqual(['kind', 'id'])
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 6`)
      })
      const again = open()
      await again.init()
      expect(await indexColumns()).toStrictEqual(['kind', 'id'])
      expect((await again.userPage({ after: null, limit: 10, kind: 'user' })).map((u) => u.id)).toStrictEqual(['alice'])
      await onDatabase(url, async (conn, dbName) => {
        // enough users, few of them bots, for the optimizer to prefer the index
        const rows = Array.from({ length: 500 }, (_, i) => [`u${i}`, i % 100 === 0 ? 'bot' : 'user', 'U', 'h', 0, 1])
        await conn.query(`INSERT INTO \`${dbName}\`.users (id, kind, display_name, secret_hash, disabled, created_at) VALUES ?`, [rows])
        await conn.query(`ANALYZE TABLE \`${dbName}\`.users`)
        const [plan] = await conn.query<mysql.RowDataPacket[]>(`EXPLAIN SELECT id FROM \`${dbName}\`.users WHERE kind = 'bot' AND id > 'a' ORDER BY id LIMIT 5`)
        expect(plan[0]?.key).toBe('idx_users_kind')
      })
    })
  })

  describe('migration 7 (channels)', () => {
    test('a version-6 database gets the channel kind and columns, keeps its conversations; run again with its record gone, nothing changes', async () => {
      const first = open()
      await first.init()
      await first.conversationCreate({ id: 'g1', kind: 'group', name: 'G', directKey: null, createdBy: 'alice', createdAt: 1 }, [])
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`ALTER TABLE \`${dbName}\`.conversations DROP COLUMN channel_public, DROP COLUMN channel_post`)
        await conn.query(`ALTER TABLE \`${dbName}\`.conversations MODIFY kind ENUM('direct', 'group') NOT NULL`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 7`)
      })
      const channel = { id: 'c1', kind: 'channel' as const, name: 'C', directKey: null, createdBy: 'alice', createdAt: 2, channel: { public: true, postPolicy: 'members' as const } }
      const upgraded = open()
      await upgraded.init()
      await upgraded.conversationCreate(channel, [])
      expect(await upgraded.conversationGet('c1')).toStrictEqual(channel)
      expect(await upgraded.conversationGet('g1')).toStrictEqual({ id: 'g1', kind: 'group', name: 'G', directKey: null, createdBy: 'alice', createdAt: 1 })
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 7`)
      })
      const again = open()
      await again.init()
      expect(await again.conversationGet('c1')).toStrictEqual(channel)
    })
  })

  describe('migration 8 (invites)', () => {
    test('a version-7 database gets the table; run again with its record gone, the invites stay; only the hash of a code is stored', async () => {
      const invite = { codeHash: 'ab12cd34' + '0'.repeat(56), conversationId: 'c1', createdBy: 'alice', createdAt: 1, expiresAt: 1000, maxUses: 3, uses: 0 }
      const first = open()
      await first.init()
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DROP TABLE \`${dbName}\`.invites`)
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 8`)
      })
      const upgraded = open()
      await upgraded.init()
      await upgraded.conversationCreate({ id: 'c1', kind: 'channel', name: 'C', directKey: null, createdBy: 'alice', createdAt: 1, channel: { public: false, postPolicy: 'admins' } }, [])
      expect(await upgraded.inviteCreate(invite, 5, 0)).toBe('added')
      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`DELETE FROM \`${dbName}\`.schema_migrations WHERE version >= 8`)
      })
      const again = open()
      await again.init()
      expect(await again.inviteGet(invite.codeHash)).toStrictEqual(invite)
      await onDatabase(url, async (conn, dbName) => {
        const [columns] = await conn.query<mysql.RowDataPacket[]>(
          "SELECT COLUMN_NAME AS name FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = ? AND TABLE_NAME = 'invites' ORDER BY ORDINAL_POSITION", [dbName])
        expect(columns.map((c) => String(c.name))).toStrictEqual(['code_hash', 'conversation_id', 'code_id', 'created_by', 'created_at', 'expires_at', 'max_uses', 'uses'])
      })
    })
  })

  describe('userChanges', () => {
    test('sees changes made by another store on the same database (another process)', async () => {
      const watcher = open()
      const admin = open()
      await watcher.init()
      await admin.init()
      await admin.userCreate(alice())
      const { cursor } = await watcher.userChanges(null)

      await admin.userSetDisabled('alice', true)
      const changes = await watcher.userChanges(cursor)
      expect(changes.users).toContainEqual({ ...alice(), disabled: true })
    })

    test('with no margin, reports exactly the users changed since the cursor', async () => {
      const store = open({ userChangesMarginMs: 0 })
      await store.init()
      await store.userCreate(alice())
      await store.userCreate({ ...alice(), id: 'bob' })
      await sleep(20)
      const { cursor } = await store.userChanges(null)
      await sleep(20)

      await store.userSetSecret('bob', 'new')
      await sleep(20) // so that the next cursor is a later millisecond than bob's change
      const changes = await store.userChanges(cursor)
      expect(changes.users.map((u) => u.id)).toStrictEqual(['bob'])
      expect((await store.userChanges(changes.cursor)).users).toStrictEqual([])
    })

    test('setting a value it already has is no change: MySQL keeps updated_at, nothing is reported', async () => {
      const store = open({ userChangesMarginMs: 0 })
      await store.init()
      await store.userCreate(alice())
      await sleep(20)
      const { cursor } = await store.userChanges(null)
      expect(await store.userSetDisabled('alice', false)).toBe(true)
      expect((await store.userChanges(cursor)).users).toStrictEqual([])
    })

    test('the margin catches a change whose transaction commits after the next cursor was taken', async () => {
      const withMargin = open()
      const withoutMargin = open({ userChangesMarginMs: 0 })
      await withMargin.init()
      await withoutMargin.init()
      await withMargin.userCreate(alice())
      const start = (await withMargin.userChanges(null)).cursor

      await onDatabase(url, async (conn, dbName) => {
        await conn.query(`USE \`${dbName}\``)
        await conn.query("SET time_zone = '+00:00'")
        await conn.beginTransaction()
        await conn.query("UPDATE users SET disabled = 1 WHERE id = 'alice'") // updated_at = now, not the commit time
        await sleep(50)
        const taken = await withMargin.userChanges(start)
        const takenWithout = await withoutMargin.userChanges(start)
        expect(taken.users.find((u) => u.disabled)).toBeUndefined() // not committed yet
        await sleep(50)
        await conn.commit()

        expect((await withMargin.userChanges(taken.cursor)).users).toContainEqual({ ...alice(), disabled: true })
        // Without the margin the change is stamped before the cursor and never reported.
        expect((await withoutMargin.userChanges(takenWithout.cursor)).users).toStrictEqual([])
      })
    })
  })
})
