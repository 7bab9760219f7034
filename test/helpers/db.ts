/**
 * Access to the real test databases started by scripts/test.sh (or given by the caller).
 * Tests about a database never fall back to the in-memory adapters: a missing URL fails loudly.
 */
import { MongoClient } from 'mongodb'
import mysql from 'mysql2/promise'
import { createMysqlDatabase, uniqueName } from '../../scripts/lib/services.js'

function requireEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set. Run the tests with "npm test", which starts MariaDB, Redis and FerretDB on free ports, or set ${name} yourself.`)
  }
  return value
}

/** Creates a fresh, empty MySQL/MariaDB database and returns a mysql:// URL pointing at it. */
export async function freshMysqlUrl (): Promise<string> {
  return (await createMysqlDatabase(requireEnv('MQIM_MYSQL_URL'), 'mqimt')).url
}

export function freshMongo (): { url: string, dbName: string } {
  return { url: requireEnv('MQIM_MONGO_URL'), dbName: uniqueName('mqimt') }
}

export function redisUrl (): string {
  return requireEnv('MQIM_REDIS_URL')
}

/** Drops a database made by freshMongo. */
export async function dropMongo (mongo: { url: string, dbName: string }): Promise<void> {
  const client = new MongoClient(mongo.url)
  try {
    await client.connect()
    await client.db(mongo.dbName).dropDatabase()
  } finally {
    await client.close()
  }
}

/** Drops a database made by freshMysqlUrl. */
export async function dropMysql (url: string): Promise<void> {
  const conn = await mysql.createConnection(url)
  try {
    await conn.query(`DROP DATABASE \`${new URL(url).pathname.slice(1)}\``)
  } finally {
    await conn.end()
  }
}
