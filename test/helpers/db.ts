/**
 * Access to the real test databases started by scripts/test.sh (or given by the caller).
 * Tests about a database never fall back to the in-memory adapters: a missing URL fails loudly.
 */
import { randomBytes } from 'node:crypto'
import mysql from 'mysql2/promise'

function requireEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set. Run the tests with "npm test", which starts MariaDB, Redis and FerretDB on free ports, or set ${name} yourself.`)
  }
  return value
}

export function uniqueName (prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
}

/** Creates a fresh, empty MySQL/MariaDB database and returns a mysql:// URL pointing at it. */
export async function freshMysqlUrl (): Promise<string> {
  const base = new URL(requireEnv('MQIM_MYSQL_URL'))
  const dbName = uniqueName('mqimt')
  const admin = await mysql.createConnection({
    host: base.hostname,
    port: Number(base.port || 3306),
    user: decodeURIComponent(base.username),
    password: decodeURIComponent(base.password)
  })
  try {
    await admin.query(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`)
  } finally {
    await admin.end()
  }
  base.pathname = `/${dbName}`
  return base.toString()
}

/** Returns a MongoDB URL (FerretDB in tests) and a fresh database name. */
export function freshMongo (): { url: string, dbName: string } {
  return { url: requireEnv('MQIM_MONGO_URL'), dbName: uniqueName('mqimt') }
}

export function redisUrl (): string {
  return requireEnv('MQIM_REDIS_URL')
}
