/**
 * The drills' backing services (MariaDB, FerretDB, Redis) through scripts/services.sh, and fresh
 * databases on them for one run.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomBytes } from 'node:crypto'
import mysql from 'mysql2/promise'
import { MongoClient } from 'mongodb'
import { Redis } from 'ioredis'
import { run } from './procs.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
const SERVICES_SH = path.join(ROOT, 'scripts', 'services.sh')

export type ServiceName = 'mongo' | 'mysql' | 'redis'
export const SERVICE_NAMES: readonly ServiceName[] = ['mongo', 'mysql', 'redis']
/** The /healthz check that reports each service. */
export const HEALTH_CHECK_OF: Record<ServiceName, 'messageStore' | 'metadataStore' | 'redis'> = {
  mongo: 'messageStore',
  mysql: 'metadataStore',
  redis: 'redis'
}

/** Server URLs as written by services.sh (MySQL without a database name). */
export interface ServiceUrls {
  mysqlUrl: string
  mongoUrl: string
  redisUrl: string
  /** The services.sh state directory, when known (needed for stop-one/start-one). */
  dir: string | null
}

async function servicesSh (...args: string[]): Promise<string> {
  return await run('bash', [SERVICES_SH, ...args], { cwd: ROOT })
}

export async function installServices (): Promise<void> {
  await servicesSh('install')
}

/** Every variable of the `env` file that services.sh writes into `dir` (URLs, and pids such as MQIM_MONGO_PID). */
export function readServicesEnv (dir: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of readFileSync(path.join(dir, 'env'), 'utf8').split('\n')) {
    const [, name, value] = /^export (\w+)=(.*)$/.exec(line.trim()) ?? []
    if (name !== undefined && value !== undefined) env[name] = value.replace(/^'(.*)'$/, '$1')
  }
  return env
}

/** The URLs of the services that services.sh started in `dir`. */
export function servicesOfDir (dir: string): ServiceUrls {
  const env = readServicesEnv(dir)
  const get = (name: string): string => {
    const v = env[name]
    if (v === undefined) throw new Error(`${dir}/env has no ${name}`)
    return v
  }
  return { mysqlUrl: get('MQIM_MYSQL_URL'), mongoUrl: get('MQIM_MONGO_URL'), redisUrl: get('MQIM_REDIS_URL'), dir }
}

/** Starts all three services on free ports with their state under `dir`. */
export async function startServices (dir: string): Promise<ServiceUrls> {
  await servicesSh('start', dir)
  return servicesOfDir(dir)
}

export async function stopServices (dir: string): Promise<void> {
  await servicesSh('stop', dir)
}

export async function stopService (dir: string, svc: ServiceName): Promise<void> {
  await servicesSh('stop-one', dir, svc)
}

/** The process name of each service (services.sh's comm_of). */
const SERVICE_COMM: Record<ServiceName, string> = { mysql: 'mariadbd', redis: 'redis-server', mongo: 'ferretdb' }

/** The pid of one service that services.sh started in `dir` (its NAME.pid file: a restart changes it). */
export function servicePid (dir: string, svc: ServiceName): number {
  const pid = Number(readFileSync(path.join(dir, `${svc}.pid`), 'utf8').trim())
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`${dir}/${svc}.pid holds no pid`)
  // (services.sh's own check: that pid is still the service, not a process that reused it)
  const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  if (comm !== SERVICE_COMM[svc]) throw new Error(`${dir}/${svc}.pid: pid ${pid} is ${comm}, not ${SERVICE_COMM[svc]}`)
  return pid
}

/** Restarts one service on the same port and data. */
export async function startService (dir: string, svc: ServiceName): Promise<void> {
  await servicesSh('start-one', dir, svc)
}

/** The services named by MQIM_MYSQL_URL, MQIM_MONGO_URL and MQIM_REDIS_URL, if all three are set. */
export function servicesFromEnv (env: NodeJS.ProcessEnv = process.env): ServiceUrls | null {
  const { MQIM_MYSQL_URL: mysqlUrl, MQIM_MONGO_URL: mongoUrl, MQIM_REDIS_URL: redisUrl } = env
  if (mysqlUrl === undefined || mysqlUrl === '' || mongoUrl === undefined || mongoUrl === '' || redisUrl === undefined || redisUrl === '') return null
  return { mysqlUrl, mongoUrl, redisUrl, dir: env.MQIM_SERVICES_DIR ?? null }
}

/** Fresh databases of one drill run. */
export interface DrillDatabases {
  /** mysql:// URL with a new, empty database. */
  mysqlUrl: string
  mongoUrl: string
  mongoDb: string
  /** redis:// URL naming the (flushed) logical database. */
  redisUrl: string
  /** Drops the MySQL and MongoDB databases and flushes the Redis database; resolves with what failed (empty when all went). */
  drop: () => Promise<string[]>
}

export function uniqueName (prefix: string): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`
}

/** Creates an empty database (named `<prefix>_…`) on the MySQL/MariaDB server of `serverUrl`; returns its mysql:// URL. */
export async function createMysqlDatabase (serverUrl: string, prefix: string): Promise<{ url: string, dbName: string }> {
  const url = new URL(serverUrl)
  const dbName = uniqueName(prefix)
  const admin = await mysql.createConnection({
    host: url.hostname,
    port: Number(url.port === '' ? 3306 : url.port),
    user: decodeURIComponent(url.username),
    password: decodeURIComponent(url.password)
  })
  try {
    await admin.query(`CREATE DATABASE \`${dbName}\` CHARACTER SET utf8mb4 COLLATE utf8mb4_bin`)
  } finally {
    await admin.end()
  }
  url.pathname = `/${dbName}`
  return { url: url.toString(), dbName }
}

/**
 * Creates a MySQL database and picks a MongoDB database name (both `<prefix>_<time>_<random>`);
 * flushes Redis database `redisDb`.
 * Redis pub/sub is not scoped by database: runs that share a Redis server must also use distinct
 * user ids and node ids (the drills prefix both with a random run tag).
 */
export async function freshDatabases (urls: ServiceUrls, redisDb = 0, prefix = 'mqimdrill'): Promise<DrillDatabases> {
  const redisUrl = new URL(urls.redisUrl)
  redisUrl.pathname = `/${redisDb}`
  const flush = async (): Promise<void> => {
    const conn = new Redis(redisUrl.toString(), { maxRetriesPerRequest: 2, lazyConnect: true })
    conn.on('error', () => {})
    try {
      await conn.connect()
      await conn.flushdb()
    } finally {
      conn.disconnect()
    }
  }
  // Redis first: a Redis that cannot be reached leaves no MySQL database behind
  await flush()
  const { url: mysqlUrl, dbName } = await createMysqlDatabase(urls.mysqlUrl, prefix)
  const mongoDb = uniqueName(prefix)
  return {
    mysqlUrl,
    mongoUrl: urls.mongoUrl,
    mongoDb,
    redisUrl: redisUrl.toString(),
    drop: async () => {
      const mongo = new MongoClient(urls.mongoUrl, { serverSelectionTimeoutMS: 5000 })
      const steps = ['MongoDB database ' + mongoDb, 'MySQL database ' + dbName, `Redis database ${redisDb}`]
      const settled = await Promise.allSettled([
        (async () => {
          try {
            await mongo.connect()
            await mongo.db(mongoDb).dropDatabase()
          } finally {
            await mongo.close()
          }
        })(),
        (async () => {
          const conn = await mysql.createConnection(mysqlUrl)
          try {
            await conn.query(`DROP DATABASE \`${dbName}\``)
          } finally {
            await conn.end()
          }
        })(),
        flush()
      ])
      return settled.flatMap((r, i) => r.status === 'rejected' ? [`${steps[i] ?? '?'}: ${r.reason instanceof Error ? r.reason.message : String(r.reason)}`] : [])
    }
  }
}

/** Number of message documents per conversation, straight from MongoDB (one scan). */
export async function countStored (db: DrillDatabases): Promise<Map<string, number>> {
  const mongo = new MongoClient(db.mongoUrl, { serverSelectionTimeoutMS: 10_000 })
  try {
    await mongo.connect()
    const rows = await mongo.db(db.mongoDb).collection('messages')
      .aggregate<{ _id: string, n: number }>([{ $group: { _id: '$c', n: { $sum: 1 } } }]).toArray()
    return new Map(rows.map(r => [r._id, r.n]))
  } finally {
    await mongo.close()
  }
}
