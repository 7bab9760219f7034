/**
 * The drills, shared by scripts/drill.ts (large, prints figures) and test/drill.test.ts /
 * test/outage.test.ts (modest size, asserts).
 *
 * - DrillCluster: fresh databases, users, N mqim node child processes, group conversations, and
 *   senders and receivers spread over the nodes.
 * - runCrashDrill: sustained load; node 1 gets SIGKILL (or SIGTERM) after ~40% of the acks; its
 *   clients fail over to the other nodes, senders resend every unacknowledged message with the
 *   same msgId, receivers sync by history; then everything is verified.
 * - OutageDrill: load at a steady rate while one service (mongo, mysql, redis) is stopped and
 *   started again with services.sh; health is polled throughout.
 */
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import { MySqlMetadataStore } from '../../src/store/metadata-mysql.js'
import { createUser } from '../../src/admin/accounts.js'
import { DrillClient } from './client.js'
import { Receiver, Recorder, SendLoad, type SenderSpec } from './load.js'
import { HealthMonitor, MqimNode, type HealthSample } from './node.js'
import { sleep, waitUntil } from './procs.js'
import {
  HEALTH_CHECK_OF, countStored, freshDatabases, servicePid, startService, stopService,
  type DrillDatabases, type ServiceName, type ServiceUrls
} from './services.js'
import { readHistory, verify, type Figures } from './verify.js'

export type Log = (line: string) => void

export interface ClusterOptions {
  services: ServiceUrls
  /** Redis logical database for the broker state (flushed first). */
  redisDb?: number
  nodes: number
  senders: number
  receivers: number
  conversations: number
  /** Node data directories go below this. */
  workDir: string
  /** Extra config for every node (deep-merged over the drill's limits). */
  nodeConfig?: Record<string, unknown>
  log?: Log
}

const passwordOf = (userId: string): string => `drill-pw-${userId}`

/** Fresh databases, users, nodes, groups and connected clients. */
export class DrillCluster {
  readonly convs: string[] = []
  readonly senders: SenderSpec[] = []
  readonly receivers: Receiver[] = []
  owner!: DrillClient
  private closed = false

  private constructor (
    readonly opts: ClusterOptions,
    readonly tag: string,
    readonly db: DrillDatabases,
    readonly nodes: MqimNode[]
  ) {}

  get log (): Log { return this.opts.log ?? (() => {}) }

  /** The nodes' MQTT ports, starting at node `home` (the failover order of its clients). */
  ports (home: number): number[] {
    const start = home % this.nodes.length
    return [...this.nodes.slice(start), ...this.nodes.slice(0, start)].map(node => node.mqttPort)
  }

  /** Conversations receiver j is a member of: two receivers per conversation, on different nodes. */
  static receiversOf (conv: number, receivers: number): number[] {
    return receivers === 1 ? [0] : [conv % receivers, (conv + 1) % receivers]
  }

  static async create (opts: ClusterOptions): Promise<DrillCluster> {
    const log = opts.log ?? (() => {})
    const db = await freshDatabases(opts.services, opts.redisDb ?? 0)
    // a tag makes user and node ids unique: Redis pub/sub is shared by all databases of a server
    const tag = randomBytes(3).toString('hex')
    const nodes = Array.from({ length: opts.nodes }, (_, i) => new MqimNode({
      id: `drill-${tag}-n${i + 1}`,
      db,
      dataDir: path.join(opts.workDir, `node${i + 1}`),
      config: opts.nodeConfig,
      onUnexpectedExit: (n) => log(`${n.id} (pid ${n.pid}) EXITED on its own (${n.exit?.code ?? n.exit?.signal}); its last output:\n${n.log.slice(-4000)}`)
    }))
    const cluster = new DrillCluster(opts, tag, db, nodes)
    try {
      await cluster.setUp()
    } catch (err) {
      await cluster.close()
      throw err
    }
    log(`cluster up: ${nodes.map(n => `${n.id} pid ${n.pid} mqtt ${n.mqttPort} http ${n.httpPort}`).join('; ')}`)
    return cluster
  }

  private async setUp (): Promise<void> {
    const { opts, tag, db } = this
    const owner = `${tag}-owner`
    const senders = Array.from({ length: opts.senders }, (_, i) => `${tag}-s${i}`)
    const receivers = Array.from({ length: opts.receivers }, (_, j) => `${tag}-r${j}`)
    const meta = new MySqlMetadataStore({ url: db.mysqlUrl })
    try {
      await meta.init()
      await Promise.all([owner, ...senders, ...receivers].map(async id => await createUser(meta, { id, password: passwordOf(id) })))
    } finally {
      await meta.close()
    }
    await Promise.all(this.nodes.map(async n => await n.start()))

    // the owner creates the groups through the last node (the one that is never killed)
    this.owner = new DrillClient({ userId: owner, deviceId: 'audit', password: passwordOf(owner), ports: this.ports(this.nodes.length - 1), clean: true, inbox: false })
    await this.owner.start()
    const convReceivers: string[][] = []
    for (let k = 0; k < opts.conversations; k++) {
      const rs = DrillCluster.receiversOf(k, opts.receivers).flatMap(j => receivers[j] ?? [])
      const { conv } = await this.owner.call<{ conv: string }>('create-group', { name: `drill ${k}`, members: [...senders, ...rs] })
      this.convs.push(conv)
      convReceivers.push(rs)
    }
    receivers.forEach((r, j) => {
      const mine = this.convs.filter((_, k) => convReceivers[k]?.includes(r) === true)
      this.receivers.push(new Receiver(r, 'phone', passwordOf(r), this.ports(j % this.nodes.length), mine))
    })
    senders.forEach((s, i) => {
      this.senders.push({ userId: s, client: new DrillClient({ userId: s, deviceId: 'app', password: passwordOf(s), ports: this.ports(i % this.nodes.length), clean: true, inbox: false }) })
    })
    await Promise.all([...this.receivers.map(r => r.client), ...this.senders.map(s => s.client)].map(async c => await c.start()))
  }

  get clients (): DrillClient[] {
    return [this.owner, ...this.senders.map(s => s.client), ...this.receivers.map(r => r.client)].filter(c => c !== undefined)
  }

  /**
   * Reads every conversation's history (through the owner), waits until each receiver has caught
   * up or `catchUpMs` passed, runs the receivers' final sync, and verifies.
   */
  async verify (rec: Recorder, catchUpMs = 20_000): Promise<Figures> {
    // nothing is sent any more: the store is final
    const tHistory = Date.now()
    const audits = await Promise.all(this.convs.map(async c => await readHistory(this.owner, c)))
    this.log(`history of ${audits.length} conversations read in ${Date.now() - tHistory} ms`)
    const lastSeq = new Map(audits.map(a => [a.conv, a.lastSeq]))
    const behind = (r: Receiver): string[] => [...r.held].filter(([c, list]) => list.length < (lastSeq.get(c) ?? 0)).map(([c]) => c)
    const t0 = Date.now()
    await waitUntil(() => this.receivers.every(r => behind(r).length === 0), catchUpMs, 'the receivers to catch up').catch(() => {})
    const lagging = this.receivers.reduce((n, r) => n + behind(r).length, 0)
    this.log(`history read (${audits.reduce((n, a) => n + a.history.length, 0)} messages); receivers ${lagging === 0 ? 'caught up' : `behind in ${lagging} conversations`} after ${Date.now() - t0} ms`)
    if (lagging > 0) {
      for (const r of this.receivers) this.log(r.describe(lastSeq))
      for (const n of this.nodes) this.log(`${n.id} (pid ${n.pid}) last output:\n${n.log.slice(-3000)}`)
    }
    // the client-side backstop: every conversation whose lastSeq is above what the device holds is
    // synced by history from its highest contiguous seq (retried if a connection drops)
    for (let i = 0; i < 5 && this.receivers.some(r => behind(r).length > 0); i++) {
      const tSync = Date.now()
      await Promise.all(this.receivers.map(async r => await Promise.all(behind(r).map(async c => await r.sync(c)))))
      this.log(`final sync round ${i + 1}: ${Date.now() - tSync} ms; still behind: ${this.receivers.reduce((n, r) => n + behind(r).length, 0)} conversations`)
      if (i > 0) await sleep(500)
    }
    const storedCounts = await countStored(this.db)
    this.log('verified')
    return verify({ rec, audits, receivers: this.receivers, storedCounts })
  }

  /** Stops the clients, stops the nodes (SIGTERM), drops the databases unless `keep`. */
  async close (keep = false): Promise<void> {
    if (this.closed) return
    this.closed = true
    await Promise.allSettled(this.clients.map(async c => await c.stop()))
    await Promise.allSettled(this.nodes.map(async n => await n.kill('SIGTERM', 15_000)))
    this.log('nodes stopped')
    if (keep) {
      this.log(`databases kept: MySQL ${this.db.mysqlUrl}, MongoDB ${this.db.mongoUrl} database ${this.db.mongoDb}, Redis ${this.db.redisUrl}`)
    } else {
      await this.db.drop()
      this.log('databases dropped')
    }
  }
}

export interface CrashDrillOptions extends Omit<ClusterOptions, 'senders' | 'receivers'> {
  messages: number
  senders?: number
  receivers?: number
  /** Sends in flight per sender. */
  window?: number
  /** Kill node 1 once this fraction of the messages is acknowledged. */
  killAt?: number
  signal?: 'SIGKILL' | 'SIGTERM'
  /** Give up on the load after this long. */
  timeoutMs?: number
  /** Keep the databases (for a look afterwards). */
  keep?: boolean
}

export interface CrashDrillReport extends Figures {
  timeMs: number
  /** Acks when the signal was sent, and acks after the victim had gone. */
  ackedAtKill: number
  ackedAfterKill: number
  victim: { id: string, pid: number | undefined, exit: { code: number | null, signal: NodeJS.Signals | null } | null }
  survivors: Array<{ id: string, pid: number | undefined, running: boolean, pidUnchanged: boolean }>
  /** Client connections moved to another node. */
  failovers: number
  /** Time from the signal until the first ack after the victim had gone. */
  recoveryMs: number | null
  ok: boolean
}

/** The crash drill. The cluster is created and closed here. */
export async function runCrashDrill (opts: CrashDrillOptions): Promise<CrashDrillReport> {
  const log = opts.log ?? (() => {})
  const nodes = Math.max(2, opts.nodes)
  const signal = opts.signal ?? 'SIGKILL'
  const cluster = await DrillCluster.create({
    ...opts,
    nodes,
    senders: opts.senders ?? 2 * nodes,
    receivers: opts.receivers ?? 2 * nodes
  })
  try {
    const [victim, ...survivors] = cluster.nodes
    if (victim === undefined) throw new Error('the drill needs a node to kill')
    const pids = new Map(survivors.map(n => [n.id, n.pid]))
    const rec = new Recorder()
    const load = new SendLoad(cluster.senders, cluster.convs, rec, {
      total: opts.messages,
      window: opts.window ?? 32,
      requestTimeoutMs: 15_000,
      giveUpMs: 120_000
    })
    const killAt = Math.max(1, Math.floor(opts.messages * (opts.killAt ?? 0.4)))
    let killing: Promise<unknown> | null = null
    let killedAt = 0
    let ackedAtKill = 0
    let goneAt = 0
    rec.onAck((n) => {
      if (killing !== null || n < killAt) return
      killedAt = Date.now()
      ackedAtKill = n
      log(`${n} acks: ${signal} to ${victim.id} (pid ${victim.pid})`)
      killing = victim.kill(signal).then(exit => {
        goneAt = Date.now()
        log(`${victim.id} exited (${exit.signal ?? `code ${exit.code}`}) ${goneAt - killedAt} ms after ${signal}`)
      })
    })
    const t0 = Date.now()
    load.start()
    const progress = setInterval(() => log(`  ${rec.acked.size}/${opts.messages} acked, ${rec.resent} resent`), 5000)
    try {
      const timeoutMs = opts.timeoutMs ?? 600_000
      let timer: NodeJS.Timeout | undefined
      const timedOut = new Promise<'timeout'>(resolve => { timer = setTimeout(() => resolve('timeout'), timeoutMs) })
      const outcome = await Promise.race([load.done.then(() => 'done' as const), timedOut])
      clearTimeout(timer)
      if (outcome === 'timeout') {
        load.stop()
        throw new Error(`the load did not finish within ${timeoutMs} ms (${rec.acked.size}/${opts.messages} acked)`)
      }
    } finally {
      clearInterval(progress)
    }
    const loadMs = Date.now() - t0
    if (killing === null) throw new Error(`the load ended before ${killAt} acks; node 1 was never killed`)
    await killing
    log(`load done in ${loadMs} ms; verifying`)
    const figures = await cluster.verify(rec)
    const ackedAfterKill = rec.ackedBetween(goneAt)
    // recovery: the first ack that a sender of the victim got through another node
    const victimSenders = new Set(cluster.senders.filter((_, i) => i % nodes === 0).map(s => s.userId))
    const firstAfter = [...rec.acked].filter(([id, a]) => a.port !== victim.mqttPort && victimSenders.has(rec.messages.get(id)?.sender ?? ''))
      .map(([, a]) => a.at).filter(t => t >= killedAt).sort((a, b) => a - b)[0]
    const report: CrashDrillReport = {
      ...figures,
      timeMs: loadMs,
      ackedAtKill,
      ackedAfterKill,
      victim: { id: victim.id, pid: victim.pid, exit: victim.exit },
      survivors: survivors.map(n => ({ id: n.id, pid: n.pid, running: n.running, pidUnchanged: n.pid === pids.get(n.id) })),
      failovers: cluster.clients.reduce((n, c) => n + c.failovers, 0),
      recoveryMs: firstAfter === undefined ? null : firstAfter - killedAt,
      ok: false
    }
    for (const s of report.survivors) if (!s.running || !s.pidUnchanged) report.problems.push(`survivor ${s.id} is not running any more`)
    if (signal === 'SIGTERM' && victim.exit?.code !== 0) report.problems.push(`${victim.id} exited with ${victim.exit?.code ?? victim.exit?.signal} after SIGTERM, not 0`)
    if (figures.acked !== opts.messages) report.problems.push(`${figures.acked} of ${opts.messages} messages acknowledged`)
    report.ok = report.lost === 0 && report.duplicated === 0 && report.gaps === 0 && report.problems.length === 0
    if (!report.ok) {
      for (const n of cluster.nodes) log(`--- last output of ${n.id} ---\n${n.log.slice(-3000)}`)
    }
    return report
  } finally {
    await cluster.close(opts.keep === true)
  }
}

export function describeCrash (r: CrashDrillReport, signal = 'SIGKILL'): string[] {
  const errors = Object.entries(r.errors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  return [
    `sent        ${r.sent} messages (${r.publishes} publishes)`,
    `acked       ${r.acked} (${r.ackedAtKill} before ${signal} of ${r.victim.id}, ${r.ackedAfterKill} after it had gone)`,
    `stored      ${r.stored}`,
    `delivered   ${r.delivered} of ${r.expectedDeliveries} to receivers (${r.pushes} pushed: ${r.redelivered} redelivered copies dropped, ${r.outOfOrder} beyond a gap kept aside; ${r.fromHistory} fetched by history sync)`,
    `lost        ${r.lost}`,
    `duplicated  ${r.duplicated}`,
    `gaps        ${r.gaps}`,
    `resent      ${r.resent} (failed attempts: ${errors}); ${r.ackedAsDuplicate} resends found their message already stored (duplicate: true)`,
    `failovers   ${r.failovers} client connections moved to another node; their first ack through it ${r.recoveryMs ?? '-'} ms after the ${signal}`,
    `victim      ${r.victim.id} pid ${r.victim.pid} exit ${r.victim.exit?.signal ?? r.victim.exit?.code}`,
    `survivors   ${r.survivors.map(s => `${s.id} pid ${s.pid} ${s.running ? 'running' : 'GONE'}`).join(', ')}`,
    `time        ${(r.timeMs / 1000).toFixed(1)} s (${Math.round(r.acked / (r.timeMs / 1000))} msg/s)`,
    ...r.problems.slice(0, 30).map(p => `PROBLEM     ${p}`)
  ]
}

// ------------------------------------------------------------------------------------------------
// outages
// ------------------------------------------------------------------------------------------------

export interface OutageResult {
  service: ServiceName
  /** services.sh stop-one was called / returned; start-one returned (ms since epoch). */
  stoppingAt: number
  downAt: number
  upAt: number
  /** Health samples of each node during the outage that were 503 with the service's check down. */
  degradedSamples: number
  /** Samples during the outage that were 200 (the outage was not noticed) or had no answer. */
  okSamplesDuring: number
  noAnswerSamples: number
  /** Time after start-one until every node's /healthz answered 200 again (null: never, within the wait). */
  healthyAfterMs: number | null
  /** Time after start-one until the first send published after it was acknowledged. */
  resumedAfterMs: number | null
  /** Outcomes of the send attempts published during the outage. */
  outcomesDuring: Record<string, number>
  ackedDuring: number
  /** Longest time without any ack, from the stop to 'resumed'. */
  longestAckPauseMs: number
  /** Node pids before and after; running = never exited. */
  nodes: Array<{ id: string, pidBefore: number | undefined, pidAfter: number | undefined, running: boolean }>
  problems: string[]
}

export interface OutageDrillOptions extends Omit<ClusterOptions, 'senders' | 'receivers'> {
  senders?: number
  receivers?: number
  /** Send rate per sender (messages/s). */
  ratePerSender: number
  window?: number
  requestTimeoutMs?: number
}

/** A cluster under a steady load, through which services are stopped and started. */
export class OutageDrill {
  readonly rec = new Recorder()
  readonly monitor: HealthMonitor
  private readonly load: SendLoad
  private readonly pids: Map<string, number | undefined>

  private readonly requestTimeoutMs: number

  private constructor (readonly cluster: DrillCluster, readonly opts: OutageDrillOptions) {
    this.requestTimeoutMs = opts.requestTimeoutMs ?? 12_000
    this.load = new SendLoad(cluster.senders, cluster.convs, this.rec, {
      window: opts.window ?? 8,
      ratePerSender: opts.ratePerSender,
      requestTimeoutMs: this.requestTimeoutMs,
      giveUpMs: 180_000
    })
    this.monitor = new HealthMonitor(cluster.nodes, 250)
    this.pids = new Map(cluster.nodes.map(n => [n.id, n.pid]))
  }

  static async start (opts: OutageDrillOptions): Promise<OutageDrill> {
    if (opts.services.dir === null) throw new Error('an outage drill needs the services.sh directory of its services (MQIM_SERVICES_DIR)')
    const cluster = await DrillCluster.create({ ...opts, senders: opts.senders ?? 2 * opts.nodes, receivers: opts.receivers ?? 2 * opts.nodes })
    const drill = new OutageDrill(cluster, opts)
    drill.monitor.start()
    drill.load.start()
    return drill
  }

  get log (): Log { return this.cluster.log }

  /**
   * Stops `service` for `outageMs` under the running load, starts it again, waits for recovery.
   * `how`: 'stop' ends the process (services.sh stop-one, then start-one: connections refused,
   * then a fresh process); 'hang' freezes it (SIGSTOP, then SIGCONT: its sockets stay open and
   * connections are still accepted by the kernel, but nothing is answered, as a server stuck or
   * cut off by a network that drops packets).
   */
  async outage (service: ServiceName, outageMs: number, recoveryWaitMs = 30_000, how: 'stop' | 'hang' = 'stop'): Promise<OutageResult> {
    const dir = this.cluster.opts.services.dir as string
    const { rec, cluster } = this
    const problems: string[] = []
    const check = HEALTH_CHECK_OF[service]
    const before = rec.acked.size
    await waitUntil(() => rec.acked.size >= before + 20, 30_000, 'acks before the outage')
    this.log(`${how === 'hang' ? 'freezing' : 'stopping'} ${service} (${rec.acked.size} acked so far)`)
    const stoppingAt = Date.now()
    const pid = how === 'hang' ? servicePid(dir, service) : null
    if (pid === null) await stopService(dir, service)
    else process.kill(pid, 'SIGSTOP')
    const downAt = Date.now()
    this.log(`${service} ${how === 'hang' ? 'frozen' : 'stopped'} (took ${downAt - stoppingAt} ms)`)
    try {
      await sleep(outageMs)
    } finally {
      // never left frozen, whatever happens to the caller
      if (pid !== null) process.kill(pid, 'SIGCONT')
    }
    this.log(`${how === 'hang' ? 'thawing' : 'starting'} ${service} again after ${Date.now() - downAt} ms (${rec.acked.size} acked; during the outage: ${JSON.stringify(rec.outcomes(downAt))})`)
    if (pid === null) await startService(dir, service)
    const upAt = Date.now()
    const healthy = (s: HealthSample): boolean => s.status === 200
    let healthyAt: number | null = null
    let resumedAt: number | null = null
    const deadline = upAt + recoveryWaitMs
    while (Date.now() < deadline && (healthyAt === null || resumedAt === null)) {
      if (healthyAt === null) {
        const latest = cluster.nodes.map(n => this.monitor.samples.filter(s => s.node === n.id && s.t >= upAt).at(-1))
        if (latest.every(s => s !== undefined && healthy(s))) healthyAt = Math.max(...latest.map(s => (s as HealthSample).t))
      }
      if (resumedAt === null) {
        const ok = rec.attempts.filter(a => a.outcome === 'ok' && a.t0 >= upAt).map(a => a.t1).sort((a, b) => a - b)
        resumedAt = ok[0] ?? null
      }
      await sleep(100)
    }
    const during = this.monitor.between(downAt, upAt)
    const result: OutageResult = {
      service,
      stoppingAt,
      downAt,
      upAt,
      degradedSamples: during.filter(s => s.status === 503 && s.body?.status === 'degraded' && s.body.checks?.[check] === 'down').length,
      okSamplesDuring: during.filter(s => s.status === 200).length,
      noAnswerSamples: during.filter(s => s.status === 0).length,
      healthyAfterMs: healthyAt === null ? null : healthyAt - upAt,
      resumedAfterMs: resumedAt === null ? null : resumedAt - upAt,
      outcomesDuring: rec.outcomes(stoppingAt, upAt),
      ackedDuring: rec.ackedBetween(downAt, upAt),
      longestAckPauseMs: rec.longestAckPause(stoppingAt, resumedAt ?? Date.now()),
      nodes: cluster.nodes.map(n => ({ id: n.id, pidBefore: this.pids.get(n.id), pidAfter: n.pid, running: n.running })),
      problems
    }
    for (const n of result.nodes) {
      if (!n.running || n.pidBefore !== n.pidAfter) problems.push(`${n.id} did not stay up (pid ${n.pidBefore} -> ${n.pidAfter}, running ${n.running})`)
    }
    for (const n of cluster.nodes) {
      if (!during.some(s => s.node === n.id && s.status === 503 && s.body?.checks?.[check] === 'down')) problems.push(`${n.id}: /healthz never reported 503 with ${check} down during the outage`)
    }
    if (healthyAt === null) problems.push(`/healthz did not return to 200 on every node within ${recoveryWaitMs} ms of the restart`)
    if (resumedAt === null) problems.push(`no send was acknowledged within ${recoveryWaitMs} ms of the restart`)
    for (const outcome of Object.keys(result.outcomesDuring)) {
      if (outcome.startsWith('error:') && !['error:UNAVAILABLE', 'error:INTERNAL'].includes(outcome)) problems.push(`sends during the outage got ${outcome}`)
    }
    const unanswered = result.outcomesDuring.timeout ?? 0
    if (unanswered > 0) problems.push(`${unanswered} sends published during the outage got no answer within ${this.requestTimeoutMs} ms (neither an ack nor an error)`)
    this.log(`${service}: ${JSON.stringify({ ...result, nodes: undefined })}`)
    if (problems.length > 0) for (const n of cluster.nodes) this.log(`--- last output of ${n.id} ---\n${n.log.slice(-3000)}`)
    return result
  }

  /** Stops the load, waits for every message to be acknowledged, and verifies. */
  async finish (): Promise<Figures> {
    this.load.stop()
    const gone = this.cluster.nodes.filter(n => !n.running)
    if (gone.length > 0) throw new Error(`cannot verify: ${gone.map(n => `${n.id} exited (${n.exit?.code ?? n.exit?.signal})`).join(', ')}`)
    const t0 = Date.now()
    await this.load.done
    await this.monitor.stop()
    this.log(`load stopped after ${Date.now() - t0} ms (${this.rec.acked.size} acked); verifying`)
    return await this.cluster.verify(this.rec)
  }

  async close (keep = false): Promise<void> {
    this.load.stop()
    await this.monitor.stop()
    await this.cluster.close(keep)
  }
}

export function describeOutage (r: OutageResult): string[] {
  const fmt = (o: Record<string, number>): string => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'
  return [
    `outage      ${r.service} down for ${((r.upAt - r.downAt) / 1000).toFixed(1)} s`,
    `health      ${r.degradedSamples} samples 503 degraded with the ${HEALTH_CHECK_OF[r.service]} check down, ${r.okSamplesDuring} still 200, ${r.noAnswerSamples} unanswered; 200 again ${r.healthyAfterMs ?? 'never'} ms after the restart`,
    `sends       during the outage: ${fmt(r.outcomesDuring)}; ${r.ackedDuring} acked during it`,
    `resumed     first new send acked ${r.resumedAfterMs ?? 'never'} ms after the restart; longest pause without acks ${r.longestAckPauseMs} ms`,
    `nodes       ${r.nodes.map(n => `${n.id} pid ${n.pidBefore}${n.pidAfter === n.pidBefore ? '' : ` -> ${n.pidAfter}`} ${n.running ? 'up' : 'GONE'}`).join(', ')}`,
    ...r.problems.map(p => `PROBLEM     ${p}`)
  ]
}
