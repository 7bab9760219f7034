/**
 * One mqim node as a child process: `node --import tsx src/main.ts`, so the child's pid is the
 * server's own (SIGKILL/SIGTERM reach the server, not a wrapper such as npm).
 */
import type { ChildProcess } from 'node:child_process'
import { appendFileSync, mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { SERVER_NODE_FLAGS, freePort, sleep, spawnTracked, stoppingEverything } from './procs.js'
import { ROOT, type DrillDatabases } from './services.js'
import { deepMerge } from '../../src/config.js'

export interface NodeOptions {
  id: string
  db: DrillDatabases
  /** Directory for this node's data (admin token) and config file. */
  dataDir: string
  /** Deep-merged over config/default.json (MQIM_CONFIG). */
  config?: Record<string, unknown>
  logLevel?: 'debug' | 'info' | 'warn' | 'error'
  /** Called when the process exits without kill() having been called. */
  onUnexpectedExit?: (node: MqimNode) => void
  /** Extra node options for the server process, before `--import tsx` (e.g. `--trace-gc`). */
  nodeArgs?: string[]
  /**
   * Called with each line the process writes to stdout (without its newline). A line for which it
   * returns true is consumed: it is not kept in `log` (e.g. --trace-gc lines). Without it, stdout
   * is kept as it comes.
   */
  onStdoutLine?: (line: string) => boolean | undefined
  /** Every line kept in `log` is also appended to this file (whole, not only the last 20,000 characters). */
  logFile?: string
}

export interface HealthSample {
  t: number
  node: string
  /** HTTP status, or 0 when the request failed (process gone, no answer within 3 s). */
  status: number
  body: { status?: string, checks?: Record<string, string> } | null
}

/** Limits that a pipelining load would otherwise hit (per-connection request rate). */
export const DRILL_CONFIG = {
  limits: { requestsPerSecond: 1_000_000, requestBurst: 1_000_000, historyPageMax: 5000 }
}

export class MqimNode {
  mqttPort = 0
  httpPort = 0
  private child: ChildProcess | null = null
  private output = ''
  /** Exit of the current process, once it has exited. */
  exit: { code: number | null, signal: NodeJS.Signals | null } | null = null
  private exited: Promise<void> = Promise.resolve()
  private killed = false

  constructor (readonly opts: NodeOptions) {}

  get id (): string { return this.opts.id }
  get pid (): number | undefined { return this.child?.pid }
  get running (): boolean { return this.child !== null && this.exit === null }
  /** The last 20,000 characters of the node's stdout and stderr. */
  get log (): string { return this.output }

  /**
   * Starts the process (on the same ports when restarted) and waits for /healthz to answer 200. A
   * first start whose ports were taken between their choice and the node's listen (another test
   * process got them: EADDRINUSE) is tried again on other ports, up to 3 times.
   */
  async start (timeoutMs = 60_000): Promise<void> {
    const fresh = this.mqttPort === 0
    for (let attempt = 1; ; attempt++) {
      try {
        await this.startOnce(timeoutMs)
        return
      } catch (err) {
        if (!fresh || attempt >= 3 || this.exit === null || !this.output.includes('EADDRINUSE')) throw err
        this.mqttPort = 0
        this.httpPort = 0
        this.output = ''
      }
    }
  }

  private async startOnce (timeoutMs: number): Promise<void> {
    if (this.running) throw new Error(`${this.id} is already running`)
    if (this.mqttPort === 0) {
      this.mqttPort = await freePort()
      this.httpPort = await freePort()
    }
    mkdirSync(this.opts.dataDir, { recursive: true })
    const configFile = path.join(this.opts.dataDir, 'config.json')
    writeFileSync(configFile, JSON.stringify(deepMerge(DRILL_CONFIG, this.opts.config ?? {})))
    const { db } = this.opts
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      MQIM_CONFIG: configFile,
      MQIM_HOST: '127.0.0.1',
      MQIM_MONGO_URL: db.mongoUrl,
      MQIM_MONGO_DB: db.mongoDb,
      MQIM_MYSQL_URL: db.mysqlUrl,
      MQIM_REDIS_URL: db.redisUrl,
      MQIM_NODE_ID: this.id,
      MQIM_MQTT_PORT: String(this.mqttPort),
      MQIM_HTTP_PORT: String(this.httpPort),
      MQIM_DATA_DIR: this.opts.dataDir,
      MQIM_LOG_LEVEL: this.opts.logLevel ?? 'warn'
    }
    // jest's --experimental-vm-modules must not leak into the server process
    delete env.NODE_OPTIONS
    const child = spawnTracked(process.execPath, [...SERVER_NODE_FLAGS, ...(this.opts.nodeArgs ?? []), '--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    this.exit = null
    this.killed = false
    this.exited = new Promise(resolve => child.once('exit', (code, signal) => {
      this.exit = { code, signal }
      if (!this.killed && !stoppingEverything()) this.opts.onUnexpectedExit?.(this)
      resolve()
    }))
    const logFile = this.opts.logFile
    if (logFile !== undefined) mkdirSync(path.dirname(logFile), { recursive: true })
    const keep = (chunk: Buffer | string): void => {
      this.output = (this.output + chunk.toString()).slice(-20_000)
      if (logFile !== undefined) appendFileSync(logFile, chunk)
    }
    const onLine = this.opts.onStdoutLine
    if (onLine === undefined) {
      child.stdout?.on('data', keep)
    } else {
      let partial = ''
      child.stdout?.on('data', (chunk: Buffer) => {
        const lines = (partial + chunk.toString('utf8')).split('\n')
        partial = lines.pop() ?? ''
        // a line that never ends is kept as output rather than held without bound
        if (partial.length > 65_536) { keep(partial); partial = '' }
        for (const line of lines) if (onLine(line) !== true) keep(line + '\n')
      })
    }
    child.stderr?.on('data', keep)
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const exit = this.exit as MqimNode['exit']
      if (exit !== null) throw new Error(`${this.id} exited during start-up (${exit.code ?? exit.signal}):\n${this.output}`)
      if (Date.now() > deadline) throw new Error(`${this.id} did not answer /healthz with 200 within ${timeoutMs} ms:\n${this.output}`)
      if ((await this.health()).status === 200) return
      await sleep(100)
    }
  }

  /** Sends `signal` and waits until the process has exited. */
  async kill (signal: NodeJS.Signals = 'SIGKILL', graceMs = 30_000): Promise<{ code: number | null, signal: NodeJS.Signals | null }> {
    const child = this.child
    if (child === null) return { code: null, signal: null }
    if (this.exit === null) {
      this.killed = true
      child.kill(signal)
      const timer = signal === 'SIGKILL' ? undefined : setTimeout(() => { child.kill('SIGKILL') }, graceMs)
      await this.exited
      clearTimeout(timer)
    }
    return this.exit as { code: number | null, signal: NodeJS.Signals | null }
  }

  async waitExit (): Promise<void> {
    await this.exited
  }

  /** GET /metrics (Prometheus text; loopback needs no token), or null if it does not answer. */
  async metricsText (): Promise<string | null> {
    try {
      const res = await fetch(`http://127.0.0.1:${this.httpPort}/metrics`, { signal: AbortSignal.timeout(5000) })
      return res.ok ? await res.text() : null
    } catch {
      return null
    }
  }

  async health (): Promise<HealthSample> {
    const t = Date.now()
    try {
      const res = await fetch(`http://127.0.0.1:${this.httpPort}/healthz`, { signal: AbortSignal.timeout(3000) })
      const body = await res.json() as HealthSample['body']
      return { t, node: this.id, status: res.status, body }
    } catch {
      return { t, node: this.id, status: 0, body: null }
    }
  }
}

/** Polls /healthz of some nodes every `intervalMs` until stopped; keeps every sample. */
export class HealthMonitor {
  readonly samples: HealthSample[] = []
  private stopped = false
  private loop: Promise<void> | null = null

  constructor (private readonly nodes: MqimNode[], private readonly intervalMs = 250) {}

  start (): this {
    this.loop = (async () => {
      while (!this.stopped) {
        const started = Date.now()
        this.samples.push(...await Promise.all(this.nodes.filter(n => n.running).map(async n => await n.health())))
        await sleep(Math.max(0, this.intervalMs - (Date.now() - started)))
      }
    })()
    return this
  }

  async stop (): Promise<void> {
    this.stopped = true
    await this.loop
  }

  between (from: number, to: number): HealthSample[] {
    return this.samples.filter(s => s.t >= from && s.t <= to)
  }
}
