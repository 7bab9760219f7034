/**
 * The server under fuzz: one mqim process (`node --import tsx src/main.ts`, so the child's pid is
 * the server's own) on the embedded default stores or (`--stores`) on MongoDB, MySQL and Redis,
 * on free ports, with the fuzz settings of FUZZ_CONFIG written to a MQIM_CONFIG file. Its stderr
 * (pino JSON lines at level warn and above) is kept whole and judged at the end: any error or
 * fatal line, or anything that looks like a stack trace or a Node.js warning, is a finding.
 */
import type { ChildProcess } from 'node:child_process'
import { mkdirSync, readFileSync, existsSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import WebSocket from 'ws'
import { sampleProc, type ProcSample } from '../bench/lib/proc-stats.js'
import { freePorts, waitUntil } from '../lib/procs.js'
import { spawnTracked } from '../lib/procs.js'
import { ROOT } from '../bench/lib/targets.js'
import type { DrillDatabases } from '../lib/services.js'

/**
 * Deep-merged over config/default.json. What is lifted, and why:
 * - requestsPerSecond/requestBurst: the fuzz clients send thousands of requests a second; the
 *   token bucket would answer most of them RATE_LIMITED and the operations would go untested;
 * - groupsCreatedPerHour: same for create-group (RATE_LIMITED after 30 an hour);
 * - conversationsPerUser is lowered (10,000 -> 150) so that LIMIT_REACHED is reachable: the fuzz
 *   user and the users it names join a conversation with most successful direct/create-group;
 * - connectionsPerAddress/connectionsPerUser: every raw packet case is a new connection from
 *   127.0.0.1, many of them logged in as the same fuzz bot;
 * - auth.failuresBeforeBackoff: mutated CONNECTs fail logins by the thousand from one address
 *   and for the bystanders' user ids; backoff would then refuse the fuzz clients' reconnects.
 *   (auth.maxConcurrentHashes and maxQueuedLogins stay at their defaults: the fuzz logins use
 *   API keys, which cost one SHA-256, and a busy line is answered CONNACK 3, which is fine.)
 * Everything else, payload and packet limits included, is the default.
 */
export const FUZZ_CONFIG = {
  limits: {
    requestsPerSecond: 1_000_000,
    requestBurst: 1_000_000,
    groupsCreatedPerHour: 1_000_000,
    conversationsPerUser: 150,
    connectionsPerAddress: 100_000,
    connectionsPerUser: 100_000
  },
  auth: { failuresBeforeBackoff: 1_000_000 }
}

/** The limits the request oracle needs (defaults of config/default.json, not lifted above). */
export interface ServerLimits {
  maxPayloadBytes: number
  maxPacketBytes: number
  maxConnectPacketBytes: number
  maxJsonDepth: number
}

export interface LogFinding {
  /** pino level (50 error, 60 fatal), or 0 for a line that is not a pino line. */
  level: number
  msg: string
  line: string
}

/** The environment without MQIM_* variables (npm test sets database URLs) and jest's NODE_OPTIONS. */
function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MQIM_') && k !== 'NODE_OPTIONS') env[k] = v
  return env
}

/** Lines main.ts itself writes to stderr on the embedded default, and Node's inspector notices. */
const BANNER = /^(mqim is running with in-memory stores|In-memory data lasts|\s+MQTT(\/WebSocket)?:|Create a user|Debugger listening on ws:|For help, see: https:\/\/nodejs.org\/en\/docs\/inspector|Debugger attached\.)/
/** A line that is not pino's and looks like trouble: a stack frame, an exception, a Node.js warning. */
const TROUBLE = /error|exception|uncaught|unhandled|fatal|abort|warning|^\s+at /i

export class FuzzServer {
  mqttPort = 0
  httpPort = 0
  readonly limits: ServerLimits
  private child: ChildProcess | null = null
  private adminToken = ''
  private stderr = ''
  exit: { code: number | null, signal: NodeJS.Signals | null } | null = null
  /** Called once if the process exits before stop() was called. */
  onUnexpectedExit: (exit: { code: number | null, signal: NodeJS.Signals | null }) => void = () => {}
  private stopping = false

  /** `databases`: run on MongoDB, MySQL and Redis there (null: the embedded default). */
  constructor (private readonly dir: string, private readonly databases: DrillDatabases | null = null, private readonly nodeId: string | null = null) {
    const defaults = JSON.parse(readFileSync(path.join(ROOT, 'config', 'default.json'), 'utf8')) as { limits: ServerLimits }
    const { maxPayloadBytes, maxPacketBytes, maxConnectPacketBytes, maxJsonDepth } = defaults.limits
    this.limits = { maxPayloadBytes, maxPacketBytes, maxConnectPacketBytes, maxJsonDepth }
  }

  get pid (): number | undefined { return this.child?.pid }
  get alive (): boolean { return this.child !== null && this.exit === null }
  get log (): string { return this.stderr }

  async start (): Promise<void> {
    mkdirSync(this.dir, { recursive: true })
    const [mqttPort, httpPort, tlsPort] = await freePorts(3)
    this.mqttPort = mqttPort
    this.httpPort = httpPort
    const configFile = path.join(this.dir, 'config.json')
    writeFileSync(configFile, JSON.stringify(FUZZ_CONFIG, null, 2))
    const dataDir = path.join(this.dir, 'data')
    const env: NodeJS.ProcessEnv = {
      ...cleanEnv(),
      MQIM_CONFIG: configFile,
      MQIM_HOST: '127.0.0.1',
      MQIM_MQTT_PORT: String(mqttPort),
      MQIM_HTTP_PORT: String(httpPort),
      MQIM_TLS_PORT: String(tlsPort),
      MQIM_DATA_DIR: dataDir,
      MQIM_LOG_LEVEL: 'warn',
      ...(this.nodeId === null ? {} : { MQIM_NODE_ID: this.nodeId }),
      ...(this.databases === null
        ? {}
        : { MQIM_MONGO_URL: this.databases.mongoUrl, MQIM_MONGO_DB: this.databases.mongoDb, MQIM_MYSQL_URL: this.databases.mysqlUrl, MQIM_REDIS_URL: this.databases.redisUrl })
    }
    // the inspector (loopback, a free port) only serves heapAfterGc
    const child = spawnTracked(process.execPath, ['--inspect=127.0.0.1:0', '--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    child.stdout?.on('data', (c: Buffer) => { this.stderr += c.toString('utf8') })
    child.stderr?.on('data', (c: Buffer) => { this.stderr += c.toString('utf8') })
    child.once('exit', (code, signal) => {
      this.exit = { code, signal }
      if (!this.stopping) this.onUnexpectedExit(this.exit)
    })
    const tokenFile = path.join(dataDir, 'admin-token')
    await waitUntil(async () => {
      if (this.exit !== null) throw new Error(`mqim exited during start-up (${this.exit.code ?? this.exit.signal}):\n${this.stderr}`)
      return existsSync(tokenFile) && (await this.health()) === 200
    }, 60_000, 'the mqim server to answer /healthz', 100).catch((err: Error) => {
      throw new Error(`${err.message}\n${this.stderr.slice(-4000)}`)
    })
    this.adminToken = readFileSync(tokenFile, 'utf8').trim()
  }

  /** Open MQTT connections by transport, from the node's own /metrics (loopback); null when it does not answer. */
  async connections (): Promise<Record<string, number> | null> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`, { signal: AbortSignal.timeout(5000) })
      const text = await res.text()
      if (res.status !== 200) return null
      const out: Record<string, number> = {}
      for (const [, transport, n] of text.matchAll(/^mqim_connections\{transport="([^"]+)"\} (\d+)$/gm)) if (transport !== undefined) out[transport] = Number(n)
      return out
    } catch {
      return null
    }
  }

  /** HTTP status of /healthz, 0 when it does not answer within 5 s. */
  async health (): Promise<number> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.httpPort}/healthz`, { signal: AbortSignal.timeout(5000) })
      await res.text()
      return res.status
    } catch {
      return 0
    }
  }

  /** The admin token (the data directory's admin-token file), once started. */
  get token (): string { return this.adminToken }

  private async admin (route: string, body: unknown): Promise<Record<string, unknown>> {
    const res = await fetch(`http://127.0.0.1:${this.httpPort}/admin/${route}`, {
      method: 'POST',
      headers: { authorization: `Bearer ${this.adminToken}`, 'content-type': 'application/json' },
      body: JSON.stringify(body)
    })
    const json = await res.json() as Record<string, unknown>
    if (res.status !== 201) throw new Error(`admin ${route}: HTTP ${res.status} ${JSON.stringify(json)}`)
    return json
  }

  /** A user account with a password (scrypt). */
  async addUser (id: string, password: string): Promise<void> {
    await this.admin('users', { id, password })
  }

  /** A bot account; returns its API key (a login costs one SHA-256). */
  async addBot (id: string): Promise<string> {
    return (await this.admin('bots', { id })).apiKey as string
  }

  /**
   * The server's V8 heap in use right after a full garbage collection, in bytes, through the
   * inspector protocol (HeapProfiler.collectGarbage, Runtime.getHeapUsage): unlike RSS, it does
   * not include memory the collector has simply not reclaimed yet. null if the inspector is not
   * reachable.
   */
  async heapAfterGc (): Promise<number | null> {
    const url = /Debugger listening on (ws:\/\/\S+)/.exec(this.stderr)?.[1]
    if (url === undefined || !this.alive) return null
    const ws = new WebSocket(url)
    try {
      await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
      let next = 1
      const call = async (method: string): Promise<Record<string, unknown>> => await new Promise((resolve, reject) => {
        const id = next++
        const timer = setTimeout(() => reject(new Error(`inspector: ${method} timed out`)), 30_000)
        ws.on('message', (data: Buffer) => {
          const msg = JSON.parse(data.toString('utf8')) as { id?: number, result?: Record<string, unknown>, error?: unknown }
          if (msg.id !== id) return
          clearTimeout(timer)
          if (msg.error !== undefined) reject(new Error(`inspector: ${method}: ${JSON.stringify(msg.error)}`))
          else resolve(msg.result ?? {})
        })
        ws.send(JSON.stringify({ id, method }))
      })
      await call('HeapProfiler.collectGarbage')
      return (await call('Runtime.getHeapUsage')).usedSize as number
    } catch {
      return null
    } finally {
      // a session still attached when the server exits would keep it waiting for the debugger
      ws.close()
      await new Promise(resolve => { if (ws.readyState === WebSocket.CLOSED) resolve(null); else ws.once('close', resolve) })
    }
  }

  sample (): ProcSample | null {
    if (!this.alive || this.child?.pid === undefined) return null
    try { return sampleProc(this.child.pid) } catch { return null }
  }

  /** SIGTERM (graceful stop), SIGKILL after `graceMs`; resolves with how it exited. */
  async stop (graceMs = 20_000): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
    this.stopping = true
    const child = this.child
    if (child !== null && this.exit === null) {
      const exited = new Promise(resolve => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    }
    return this.exit ?? { code: null, signal: null }
  }

  /** Error and fatal lines, and non-pino lines that look like trouble. */
  findings (): LogFinding[] {
    const out: LogFinding[] = []
    for (const line of this.stderr.split('\n')) {
      if (line.trim() === '') continue
      let parsed: { level?: unknown, msg?: unknown } | null = null
      try { parsed = JSON.parse(line) as { level?: unknown, msg?: unknown } } catch { parsed = null }
      if (parsed !== null && typeof parsed === 'object' && typeof parsed.level === 'number') {
        if (parsed.level >= 50) out.push({ level: parsed.level, msg: String(parsed.msg), line: line.slice(0, 2000) })
      } else if (!BANNER.test(line) && TROUBLE.test(line)) {
        out.push({ level: 0, msg: line.trim().slice(0, 200), line: line.slice(0, 2000) })
      }
    }
    return out
  }

  /** Whether the server said it runs on in-memory stores (main.ts's banner on the embedded default). */
  get inMemoryStores (): boolean {
    return /^mqim is running with in-memory stores/m.test(this.stderr)
  }

  /** Warning lines (level 40) counted by message. */
  warnings (): Record<string, number> {
    const out: Record<string, number> = {}
    for (const line of this.stderr.split('\n')) {
      try {
        const parsed = JSON.parse(line) as { level?: unknown, msg?: unknown }
        if (parsed.level === 40) out[String(parsed.msg)] = (out[String(parsed.msg)] ?? 0) + 1
      } catch { /* not a pino line */ }
    }
    return out
  }
}
