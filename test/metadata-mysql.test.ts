/**
 * MySqlMetadataStore: the shared contract suite on a fresh database per test, plus what is
 * particular to this backend (migrations, the start-up schema version check, config checks).
 */
import mysql from 'mysql2/promise'
import { MYSQL_MIGRATIONS } from '../src/store/migrations/mysql.js'
import { MYSQL_SCHEMA_VERSION, MySqlMetadataStore } from '../src/store/metadata-mysql.js'
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

describe('MySqlMetadataStore specifics', () => {
  let url: string
  const stores: MySqlMetadataStore[] = []

  function open (): MySqlMetadataStore {
    const store = new MySqlMetadataStore({ url })
    stores.push(store)
    return store
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
    await first.userCreate({ id: 'alice', kind: 'user', displayName: 'A', secretHash: 'h', disabled: false, createdAt: 1 })
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
    const racing = [open(), open(), open()]
    await Promise.all(racing.map(async (s) => await s.init()))
    await racing[0].userCreate({ id: 'alice', kind: 'user', displayName: 'A', secretHash: 'h', disabled: false, createdAt: 1 })
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
  })
})
