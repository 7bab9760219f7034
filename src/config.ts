/**
 * Configuration: config/default.json, then the JSON file named by MQIM_CONFIG (deep-merged),
 * then environment overrides. Validated by zod; an invalid value stops start-up with a
 * message naming the field and the expected form.
 */
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { z } from 'zod'

const port = z.number().int().min(0).max(65535)

const MemoryAdapter = z.object({ adapter: z.literal('memory') }).strict()
const MongoAdapter = z.object({
  adapter: z.literal('mongodb'),
  /** mongodb://host:port/ (MongoDB 6+, or FerretDB in tests) */
  url: z.string().regex(/^mongodb(\+srv)?:\/\//, 'a mongodb:// or mongodb+srv:// URL'),
  database: z.string().regex(/^[A-Za-z0-9_-]{1,63}$/, 'a database name of letters, digits, _ or -').default('mqim')
}).strict()
const MySqlAdapter = z.object({
  adapter: z.literal('mysql'),
  /** mysql://user:password@host:port/database (MySQL 8 or MariaDB 10.11+) */
  url: z.string().regex(/^mysql:\/\/.+\/[A-Za-z0-9_]+(\?.*)?$/, 'a mysql://user:password@host:port/database URL (optionally ?ssl=true or ?ssl-ca=/path/ca.pem)'),
  poolSize: z.number().int().min(1).max(200).default(10)
}).strict()

export const ConfigSchema = z.object({
  /** Interface the listeners bind to. */
  host: z.string().min(1),
  /** MQTT over TCP. 0 = pick a free port. */
  mqtt: z.object({ port }).strict(),
  /** HTTP: MQTT over WebSocket at /mqtt, /healthz, and the loopback-only admin API at /admin. */
  http: z.object({ port }).strict(),
  /** MQTT over TLS; enabled when both cert and key (PEM file paths) are set. */
  tls: z.object({ port, cert: z.string().min(1).nullable(), key: z.string().min(1).nullable() }).strict()
    .refine(t => (t.cert === null) === (t.key === null), { message: 'set both tls.cert and tls.key, or neither' }),
  /** This node's name in a cluster (logs, presence); null = a random id per start. */
  nodeId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, '1-64 of A-Z a-z 0-9 _ . -').nullable(),
  /** Where the server keeps its admin token (and nothing else on the embedded default). */
  dataDir: z.string().min(1),
  messageStore: z.discriminatedUnion('adapter', [MemoryAdapter, MongoAdapter]),
  metadataStore: z.discriminatedUnion('adapter', [MemoryAdapter, MySqlAdapter]),
  broker: z.object({
    /** memory: one process (embedded default). redis: sessions, queues and routing shared by every node. */
    persistence: z.discriminatedUnion('adapter', [
      z.object({ adapter: z.literal('memory') }).strict(),
      z.object({
        adapter: z.literal('redis'),
        url: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL'),
        /** Offline QoS 1 messages older than this are dropped from session queues (clients sync by seq). */
        packetTTLSeconds: z.number().int().min(1).default(7 * 24 * 3600),
        /** At most this many queued messages are delivered on reconnect; the rest comes from history. */
        maxSessionDelivery: z.number().int().min(1).default(1000)
      }).strict()
    ]),
    /** Disconnect a client whose socket does not drain within this time (Aedes drainTimeout). */
    drainTimeoutMs: z.number().int().min(100),
    /** Aedes/mqemitter in-flight message slots. */
    concurrency: z.number().int().min(1),
    connectTimeoutMs: z.number().int().min(100)
  }).strict(),
  limits: z.object({
    /** Largest accepted request payload in bytes (default 64 KiB). */
    maxPayloadBytes: z.number().int().min(256).max(16 * 1024 * 1024),
    /** Largest history page; larger requests are clamped. */
    historyPageMax: z.number().int().min(1).max(10000),
    groupMembersMax: z.number().int().min(2),
    /** Token bucket per connection: sustained requests per second and burst size. */
    requestsPerSecond: z.number().positive(),
    requestBurst: z.number().int().min(1)
  }).strict(),
  sequencer: z.object({
    /** Group commit: at most this many messages per MongoDB insert. */
    batchMaxMessages: z.number().int().min(1).max(10000),
    /** Group commit: wait up to this long for more messages before writing (0 = at the end of the current event-loop turn). */
    batchDelayMs: z.number().min(0).max(1000),
    /** How long a failing write is retried before the senders get UNAVAILABLE. */
    writeRetryMs: z.number().int().min(0)
  }).strict(),
  presence: z.object({
    /** A connection counts as online this long after its node last refreshed it (a dead node's lapse). */
    ttlMs: z.number().int().min(3000),
    /** At most one presence event per user per interval (the latest state wins). */
    notifyIntervalMs: z.number().int().min(0),
    /** Members of conversations larger than this get no presence events of each other. */
    maxAudience: z.number().int().min(2)
  }).strict(),
  log: z.object({ level: z.enum(['debug', 'info', 'warn', 'error', 'silent']) }).strict()
}).strict()

export type Config = z.infer<typeof ConfigSchema>

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

/** config/default.json of the package: found upwards from this file (src/ when run by tsx, dist/src/ when built). */
function findDefaultConfig (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++) {
    const candidate = path.join(dir, 'config', 'default.json')
    if (existsSync(candidate)) return candidate
    dir = path.dirname(dir)
  }
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'config', 'default.json')
}
export const DEFAULT_CONFIG_PATH = findDefaultConfig()

type Json = Record<string, unknown>

function isObject (v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function deepMerge (base: Json, over: Json): Json {
  const out: Json = { ...base }
  for (const [k, v] of Object.entries(over)) {
    const b = out[k]
    // a store section replaces the default wholesale when the adapter changes
    out[k] = isObject(b) && isObject(v) && !('adapter' in v && v.adapter !== b.adapter) ? deepMerge(b, v) : v
  }
  return out
}

function readJson (file: string): Json {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`)
  }
  try {
    const parsed: unknown = JSON.parse(text)
    if (!isObject(parsed)) throw new Error('top level must be a JSON object')
    return parsed
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`)
  }
}

function envPort (env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) throw new ConfigError(`${name}: expected a port number 0-65535, got "${raw}"`)
  return Number(raw)
}

/** Environment overrides, documented in README "Configuration". */
export function envOverrides (env: NodeJS.ProcessEnv): Json {
  const o: Json = {}
  if (env.MQIM_HOST) o.host = env.MQIM_HOST
  const mqttPort = envPort(env, 'MQIM_MQTT_PORT')
  if (mqttPort !== undefined) o.mqtt = { port: mqttPort }
  const httpPort = envPort(env, 'MQIM_HTTP_PORT')
  if (httpPort !== undefined) o.http = { port: httpPort }
  const tls: Json = {}
  const tlsPort = envPort(env, 'MQIM_TLS_PORT')
  if (tlsPort !== undefined) tls.port = tlsPort
  if (env.MQIM_TLS_CERT) tls.cert = env.MQIM_TLS_CERT
  if (env.MQIM_TLS_KEY) tls.key = env.MQIM_TLS_KEY
  if (Object.keys(tls).length > 0) o.tls = tls
  if (env.MQIM_DATA_DIR) o.dataDir = env.MQIM_DATA_DIR
  if (env.MQIM_MONGO_URL) {
    o.messageStore = { adapter: 'mongodb', url: env.MQIM_MONGO_URL, ...(env.MQIM_MONGO_DB ? { database: env.MQIM_MONGO_DB } : {}) }
  }
  if (env.MQIM_MYSQL_URL) o.metadataStore = { adapter: 'mysql', url: env.MQIM_MYSQL_URL }
  if (env.MQIM_REDIS_URL) o.broker = { persistence: { adapter: 'redis', url: env.MQIM_REDIS_URL } }
  if (env.MQIM_NODE_ID) o.nodeId = env.MQIM_NODE_ID
  if (env.MQIM_LOG_LEVEL) o.log = { level: env.MQIM_LOG_LEVEL }
  return o
}

function describeIssue (issue: z.core.$ZodIssue): string {
  const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)'
  return `${field}: ${issue.message}`
}

/** Validates a raw config object; throws ConfigError naming every bad field. */
export function parseConfig (raw: unknown): Config {
  const result = ConfigSchema.safeParse(raw)
  if (!result.success) {
    throw new ConfigError('invalid configuration:\n  ' + result.error.issues.map(describeIssue).join('\n  '))
  }
  return result.data
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv
  /** Extra values merged last (tests use this for ports 0 and stores). */
  overrides?: Json
}

/** True when nodes share the broker through Redis: other nodes may hold connections and write conversations. */
export function isClustered (config: Config): boolean {
  return config.broker.persistence.adapter !== 'memory'
}

export function loadConfig (options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  let raw = readJson(DEFAULT_CONFIG_PATH)
  if (env.MQIM_CONFIG) raw = deepMerge(raw, readJson(env.MQIM_CONFIG))
  raw = deepMerge(raw, envOverrides(env))
  if (options.overrides) raw = deepMerge(raw, options.overrides)
  return parseConfig(raw)
}
