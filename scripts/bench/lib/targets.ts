/**
 * Brokers under test, each started fresh in its own process for each measurement:
 *   - mqim: `node --import tsx src/main.ts` with MQIM_* env (embedded stores, or FerretDB + MariaDB);
 *   - aedes: raw Aedes without hooks (scripts/bench/aedes-broker.ts);
 *   - mosquitto: /usr/sbin/mosquitto from Debian's packages.
 * The pid held is the broker process itself (checked through /proc), so CPU and RSS figures are
 * the broker's own accounting.
 */
import { createWriteStream, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { ChildProcess } from 'node:child_process'
import { SERVER_NODE_FLAGS, canConnect, freePorts, spawnTracked, stopChild, waitUntil } from '../../lib/procs.js'
import { ROOT } from '../../lib/services.js'
import { describeProc, sampleProc, type ProcSample } from './proc-stats.js'

export { ROOT }
export const MOSQUITTO = '/usr/sbin/mosquitto'

export type TargetKind = 'mqim' | 'aedes' | 'mosquitto'

export interface Target {
  kind: TargetKind
  label: string
  pid: number
  mqttUrl: string
  /** mqim only */
  httpPort: number | null
  /** mqim only: bearer token of the admin API */
  adminToken: string | null
  logFile: string
  sample: () => ProcSample
  /** How the process ended, once it has (null while it runs). */
  exit: () => { code: number | null, signal: NodeJS.Signals | null } | null
  stop: () => Promise<void>
}

export interface MqimStores {
  mongoUrl: string
  mongoDb: string
  mysqlUrl: string
}

export interface MqimOptions {
  /** null: embedded in-memory stores */
  stores: MqimStores | null
  /** write a V8 CPU profile of the server into this directory when it stops */
  cpuProfDir?: string
  /**
   * 'lifted' (default): the limits meant for people are raised for the load generator (see
   * BENCH_LIMITS); 'defaults': every limit as in config/default.json (the hostile scenario).
   */
  limits?: 'lifted' | 'defaults'
  /** run the server from this checkout instead of this one (A/B a patch: its src/main.ts, same node_modules) */
  root?: string
  /** extra node options for the server process, e.g. --max-semi-space-size=64 */
  nodeArgs?: string[]
  /** further settings, merged over the limits (e.g. push gateways) */
  config?: Record<string, unknown>
}

function makeTarget (kind: TargetKind, label: string, child: ChildProcess, port: number, logFile: string, extra: Partial<Target> = {}): Target {
  const pid = child.pid
  if (pid === undefined) throw new Error(`${label} did not start`)
  let exit: { code: number | null, signal: NodeJS.Signals | null } | null = child.exitCode !== null || child.signalCode !== null ? { code: child.exitCode, signal: child.signalCode } : null
  child.once('exit', (code, signal) => { exit = { code, signal } })
  return {
    kind,
    label,
    pid,
    mqttUrl: `mqtt://127.0.0.1:${port}`,
    httpPort: null,
    adminToken: null,
    logFile,
    sample: () => sampleProc(pid),
    exit: () => exit,
    stop: async () => { await stopChild(child, 'SIGTERM', 15_000) },
    ...extra
  }
}

export function logTail (file: string, lines = 15): string {
  try {
    return readFileSync(file, 'utf8').split('\n').slice(-lines).join('\n')
  } catch {
    return ''
  }
}

async function started (label: string, child: ChildProcess, logFile: string, ready: () => Promise<boolean>, timeoutMs = 60_000): Promise<void> {
  let exited: string | null = null
  child.once('exit', (code, signal) => { exited = `exited with ${code ?? signal}` })
  try {
    await waitUntil(async () => {
      if (exited !== null) throw new Error(exited)
      return await ready()
    }, timeoutMs, `${label} to accept connections`, 100)
  } catch (err) {
    await stopChild(child, 'SIGKILL', 1000)
    throw new Error(`${label} failed to start (${exited ?? (err as Error).message}); log ${logFile}:\n${logTail(logFile)}`)
  }
}

function checkPid (label: string, pid: number, comm: string, cmdlinePart: string): void {
  const d = describeProc(pid)
  if (d.comm !== comm || !d.cmdline.includes(cmdlinePart)) {
    throw new Error(`${label}: pid ${pid} is "${d.comm}" (${d.cmdline}), not the broker process`)
  }
}

/** The environment without MQIM_* variables (e.g. MQIM_REDIS_URL would switch on cluster mode). */
function cleanEnv (): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {}
  for (const [k, v] of Object.entries(process.env)) if (!k.startsWith('MQIM_') && k !== 'NODE_OPTIONS') env[k] = v
  return env
}

/**
 * Limits raised for the load generator, which sends far more than a person and opens thousands of
 * connections from 127.0.0.1 (many devices per user in `connections`). Only the keys that the
 * server's config/default.json has are set: its config schema refuses unknown keys.
 */
const BENCH_LIMITS: Record<string, number> = {
  requestsPerSecond: 1_000_000,
  requestBurst: 1_000_000,
  connectionsPerAddress: 100_000,
  connectionsPerUser: 100_000,
  persistentSessionsPerUser: 10_000
}

/** Login settings raised likewise: thousands of password users connect at once (scrypt in line, not refused). */
const BENCH_AUTH: Record<string, number> = {
  maxQueuedLogins: 1_000_000,
  loginsPerAddress: 1_000_000
}

/** The admin API's rate, raised likewise: the channel scenario creates 10,000 accounts through it. */
const BENCH_ADMIN: Record<string, number> = {
  requestsPerSecond: 1_000_000,
  requestBurst: 1_000_000
}

/** The config the bench gives the server of checkout `root`: BENCH_LIMITS, BENCH_AUTH and BENCH_ADMIN where it knows them. */
export function liftedConfig (root: string): Record<string, Record<string, number>> {
  const defaults = JSON.parse(readFileSync(path.join(root, 'config', 'default.json'), 'utf8')) as Record<string, Record<string, unknown> | undefined>
  const lift = (section: string, values: Record<string, number>): Record<string, number> => {
    const known = new Set(Object.keys(defaults[section] ?? {}))
    return Object.fromEntries(Object.entries(values).filter(([k]) => known.has(k)))
  }
  const config: Record<string, Record<string, number>> = { limits: lift('limits', BENCH_LIMITS) }
  const auth = lift('auth', BENCH_AUTH)
  if (Object.keys(auth).length > 0) config.auth = auth
  const adminRate = lift('admin', BENCH_ADMIN)
  if (Object.keys(adminRate).length > 0) config.admin = adminRate
  return config
}

export async function startMqim (dir: string, options: MqimOptions): Promise<Target> {
  mkdirSync(dir, { recursive: true })
  const [mqttPort, httpPort, tlsPort] = await freePorts(3)
  const dataDir = path.join(dir, 'data')
  const configFile = path.join(dir, 'config.json')
  const root = options.root ?? ROOT
  writeFileSync(configFile, JSON.stringify({ ...(options.limits === 'defaults' ? {} : liftedConfig(root)), ...options.config }, null, 2))
  const env: NodeJS.ProcessEnv = {
    ...cleanEnv(),
    MQIM_CONFIG: configFile,
    MQIM_HOST: '127.0.0.1',
    MQIM_MQTT_PORT: String(mqttPort),
    MQIM_HTTP_PORT: String(httpPort),
    MQIM_TLS_PORT: String(tlsPort),
    MQIM_DATA_DIR: dataDir,
    MQIM_LOG_LEVEL: 'warn'
  }
  if (options.stores !== null) {
    env.MQIM_MONGO_URL = options.stores.mongoUrl
    env.MQIM_MONGO_DB = options.stores.mongoDb
    env.MQIM_MYSQL_URL = options.stores.mysqlUrl
  }
  const args = [
    ...SERVER_NODE_FLAGS,
    ...(options.cpuProfDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${options.cpuProfDir}`] : []),
    ...(options.nodeArgs ?? []),
    '--import', 'tsx', 'src/main.ts'
  ]
  const logFile = path.join(dir, 'mqim.log')
  const log = createWriteStream(logFile)
  const child = spawnTracked(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.pipe(log)
  child.stderr?.pipe(log)
  const label = (options.stores === null ? 'mqim (embedded)' : 'mqim (FerretDB+MariaDB)') + (options.root !== undefined || (options.nodeArgs ?? []).length > 0 ? ' [alt]' : '')
  const tokenFile = path.join(dataDir, 'admin-token')
  await started(label, child, logFile, async () => {
    if (!existsSync(tokenFile)) return false
    try {
      const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`)
      await res.text()
      return res.status === 200
    } catch {
      return false
    }
  })
  checkPid(label, child.pid!, 'node', 'src/main.ts')
  return makeTarget('mqim', label, child, mqttPort, logFile, {
    httpPort,
    adminToken: readFileSync(tokenFile, 'utf8').trim()
  })
}

export async function startAedes (dir: string, cpuProfDir?: string): Promise<Target> {
  mkdirSync(dir, { recursive: true })
  const [port] = await freePorts(1)
  const logFile = path.join(dir, 'aedes.log')
  const log = createWriteStream(logFile)
  const script = path.join(ROOT, 'scripts', 'bench', 'aedes-broker.ts')
  // stdin is a pipe the broker watches: it exits if the runner dies
  const prof = cpuProfDir !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${cpuProfDir}`] : []
  const child = spawnTracked(process.execPath, [...prof, '--import', 'tsx', script, String(port)], { cwd: ROOT, env: cleanEnv(), stdio: ['pipe', 'pipe', 'pipe'] })
  child.stdout?.pipe(log)
  child.stderr?.pipe(log)
  await started('raw Aedes', child, logFile, async () => await canConnect(port))
  checkPid('raw Aedes', child.pid!, 'node', 'aedes-broker.ts')
  return makeTarget('aedes', 'raw Aedes', child, port, logFile)
}

export async function startMosquitto (dir: string): Promise<Target> {
  if (!existsSync(MOSQUITTO)) throw new Error(`${MOSQUITTO} is missing: run "bash scripts/services.sh install" (Debian package mosquitto)`)
  mkdirSync(dir, { recursive: true })
  const [port] = await freePorts(1)
  const conf = path.join(dir, 'mosquitto.conf')
  writeFileSync(conf, [
    `listener ${port} 127.0.0.1`,
    'allow_anonymous true',
    'persistence false',
    // like Aedes: no cap on QoS 1 messages in flight or queued per client (the defaults, 20 and
    // 1000, would drop group fan-out beyond the queue)
    'max_inflight_messages 0',
    'max_queued_messages 0',
    'set_tcp_nodelay true',
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    ''
  ].join('\n'))
  const logFile = path.join(dir, 'mosquitto.log')
  const log = createWriteStream(logFile)
  const child = spawnTracked(MOSQUITTO, ['-c', conf], { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  child.stdout?.pipe(log)
  child.stderr?.pipe(log)
  await started('Mosquitto', child, logFile, async () => await canConnect(port))
  checkPid('Mosquitto', child.pid!, 'mosquitto', conf)
  return makeTarget('mosquitto', 'Mosquitto', child, port, logFile)
}

export async function startTarget (kind: TargetKind, dir: string, mqim: MqimOptions = { stores: null }): Promise<Target> {
  switch (kind) {
    case 'mqim': return await startMqim(dir, mqim)
    case 'aedes': return await startAedes(dir, mqim.cpuProfDir)
    case 'mosquitto': return await startMosquitto(dir)
  }
}
