/**
 * One fuzz run: start a server, create the accounts, give the fuzz user some conversations,
 * start the bystanders, run both streams at once (each over several lanes), then check that the
 * server is alive and healthy and that its log holds no error, shrink the first failures with
 * fast-check against the live server, and stop the server gracefully (exit code 0 expected).
 *
 * Cases come from fc.sample with the run's seed, so a seed names the same inputs every time; the
 * i-th case of a stream is fast-check's run i for that seed, which is what shrinking replays
 * (fc.check with `path: "i"`).
 */
import fc from 'fast-check'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { isDeepStrictEqual } from 'node:util'
import mqtt from 'mqtt'
import mysql from 'mysql2/promise'
import { FuzzServer, FUZZ_CONFIG } from './server.js'
import { countStored, freshDatabases, type DrillDatabases, type ServiceUrls } from '../lib/services.js'
import { keepsConnection, packetCase, RAW_USER, WILL_PAYLOAD, WILL_TOPIC, type PacketCase } from './packets.js'
import { runPacketCase, type PacketContext, type PacketOutcome, type PacketResult } from './packet-stream.js'
import { checkFieldCoverage, describeCase, FUZZ_USER, OPS, requestCase, SHY_USER, type RequestCase } from './requests.js'
import { RequestLane, type LaneOptions, type RequestResult } from './request-stream.js'
import { Bystander, BYSTANDERS, type BystanderStats } from './bystander.js'
import { ReplyMemory } from './oracle.js'
import { httpCase, runHttpCase, type HttpCase, type HttpContext, type HttpResult } from './http.js'
import { ROOT } from '../bench/lib/targets.js'
import type { OpName, Reply } from '../../src/protocol/schemas.js'

export interface FuzzOptions {
  seed: number
  /** Mutated packets to send (stream 1); cases hold 1-4 packets each. */
  packets: number
  /** Fuzzed requests to publish (stream 2). */
  requests: number
  /** Fuzzed HTTP requests (stream 3). */
  http: number
  packetLanes: number
  requestLanes: number
  httpLanes: number
  /** How long a fuzzed connection may take to answer the probe PINGREQ before it counts as unanswered. */
  probeMs: number
  replyTimeoutMs: number
  stallMs: number
  /** Failures to shrink per stream (0: none). */
  shrink: number
  /**
   * The server on MongoDB, MySQL and Redis at these URLs instead of the embedded default: a MongoDB
   * and a MySQL database made for the run, Redis database `redisDb`; all three emptied (dropped)
   * after a run without failures, kept otherwise.
   */
  stores: ServiceUrls | null
  /** The Redis logical database of a run on `stores`: emptied at the start (the CLI takes only an empty one other than 0). */
  redisDb: number
  /**
   * With `stores`: a second node on the same stores and Redis (a cluster of two). The fuzz streams
   * hit the first; one bystander (byb, WebSocket) chats through the second, so their exchanges
   * cross Redis while the first node is under fire.
   */
  cluster: boolean
  log: (line: string) => void
}

export const DEFAULT_OPTIONS: Omit<FuzzOptions, 'log'> = {
  seed: 20240601,
  packets: 5000,
  requests: 5000,
  http: 2000,
  packetLanes: 24,
  requestLanes: 4,
  httpLanes: 4,
  probeMs: 300,
  replyTimeoutMs: 10_000,
  stallMs: 2000,
  shrink: 3,
  stores: null,
  redisDb: 0,
  cluster: false
}

export interface Failure {
  stream: 'packets' | 'requests' | 'http' | 'bystander' | 'server'
  /** Index of the case in its stream (fast-check run index), when there is one. */
  index?: number
  problem: string
  input?: string
  detail?: string
  /** fast-check's smallest failing input, when shrinking reproduced the failure. */
  shrunk?: string
}

export interface FuzzReport {
  ok: boolean
  seed: number
  /** What the server stored its data in. */
  stores: 'embedded' | 'mongodb+mysql+redis'
  durationMs: number
  config: typeof FUZZ_CONFIG
  packets: {
    cases: number
    packets: number
    bytes: number
    outcomes: Record<PacketOutcome, number>
    byTransport: Record<'tcp' | 'ws', number>
    loggedIn: number
    connacks: Record<string, number>
    replies: number
    mustStayAlive: number
    /** Logins whose CONNECT carried the settings will (never to be published). */
    armedWills: number
    /** Connections whose first packet claimed a length over the limit, or a malformed one (must be closed). */
    mustClose: number
  }
  requests: {
    sent: number
    replies: number
    closedViolations: number
    reconnects: number
    fromCache: number
    codes: Record<string, number>
    byOp: Record<string, Record<string, number>>
    deviations: { count: number, examples: string[] }
  }
  http: {
    cases: number
    /** Answers by status ('none' without one). */
    statuses: Record<string, number>
    /** Error answers by code. */
    codes: Record<string, number>
  }
  bystander: BystanderStats
  server: {
    alive: boolean
    health: number
    /** RSS once the accounts and conversations exist, before the streams. */
    rssStartMB: number | null
    /** V8 heap in use after a forced full GC, before the streams and after them. */
    heapStartMB: number | null
    heapEndMB: number | null
    rssMB: number | null
    peakRssMB: number | null
    exit: { code: number | null, signal: string | null } | null
    errorLines: string[]
    warnings: Record<string, number>
    /** The server said it ran on in-memory stores (the embedded default). */
    inMemoryStores: boolean | null
  }
  /** --stores: what the run's own databases held at the end (messages in MongoDB, users in MySQL). */
  stored: { messages: number, users: number } | null
  /** --cluster: the second node after the run (the bystander byb's). */
  secondNode: {
    /** Its MQTT connections by transport (its /metrics) once the bystanders were chatting: byb's is there. */
    connectionsDuringRun: Record<string, number> | null
    alive: boolean
    health: number
    exit: { code: number | null, signal: string | null } | null
    errorLines: string[]
    warnings: Record<string, number>
    inMemoryStores: boolean
  } | null
  failures: Failure[]
}

const MB = 1024 * 1024
const toMB = (bytes: number | null): number | null => bytes === null ? null : Math.round(bytes / MB * 10) / 10

function printable (b: Buffer): string {
  const text = b.toString('utf8')
  const shown = Buffer.from(text, 'utf8').equals(b) ? JSON.stringify(text) : `hex:${b.toString('hex')}`
  return shown.length > 600 ? `${shown.slice(0, 600)}…(${b.length} bytes)` : shown
}

function describeRequestFailure (c: RequestCase, r: RequestResult): string {
  return `publish ${JSON.stringify(r.topic)} qos ${c.qos}${c.dup ? ' dup' : ''}${c.retain ? ' retain' : ''}: ${printable(r.payload)}${r.reply !== null ? ` -> ${JSON.stringify(r.reply).slice(0, 400)}` : ''}`
}

/** The packet cases, cut where the packets they hold reach `packets`. */
function packetCases (seed: number, packets: number): PacketCase[] {
  if (packets <= 0) return []
  const all = fc.sample(packetCase, { seed, numRuns: packets })
  const out: PacketCase[] = []
  let n = 0
  for (const c of all) {
    if (n >= packets) break
    out.push(c)
    n += c.packets.length
  }
  return out
}

/** Runs `work` for every item (with its index) on `lanes` concurrent workers, until done or `abort()`. */
async function inLanes<T> (items: readonly T[], lanes: number, abort: () => boolean, work: (lane: number, item: T, i: number) => Promise<void>): Promise<void> {
  const queue = items.entries() // shared by the lanes: each item is taken by one of them
  await Promise.all(Array.from({ length: Math.min(lanes, items.length) }, async (_v, lane) => {
    for (const [i, item] of queue) {
      if (abort()) return
      await work(lane, item, i)
    }
  }))
}

export async function runFuzz (options: Partial<FuzzOptions> = {}): Promise<FuzzReport> {
  const opts: FuzzOptions = { ...DEFAULT_OPTIONS, log: () => {}, ...options }
  const { log, seed } = opts
  checkFieldCoverage()
  const started = performance.now()
  const failures: Failure[] = []
  const pCases = packetCases(seed, opts.packets)
  const rCases = opts.requests > 0 ? fc.sample(requestCase, { seed, numRuns: opts.requests }) : []
  const hCases = opts.http > 0 ? fc.sample(httpCase, { seed, numRuns: opts.http }) : []
  log(`fuzz: seed ${seed}: ${pCases.length} packet cases (${pCases.reduce((s, c) => s + c.packets.length, 0)} packets), ${rCases.length} requests, ${hCases.length} HTTP requests`)

  if (opts.cluster && opts.stores === null) throw new Error('a cluster run needs stores (MongoDB, MySQL and Redis)')
  const databases: DrillDatabases | null = opts.stores === null ? null : await freshDatabases(opts.stores, opts.redisDb, 'mqimfuzz')
  if (databases !== null) log(`fuzz: on ${namesOf(databases)}`)
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-fuzz-'))
  const server = new FuzzServer(dir, databases, opts.cluster ? 'fuzz-n1' : null)
  const second = opts.cluster ? new FuzzServer(path.join(dir, 'node2'), databases, 'fuzz-n2') : null
  try {
    return await fuzzWith(server, second, dir, databases, opts, { started, failures, pCases, rCases, hCases })
  } catch (err) {
    // a start-up, account or stream step that threw: the servers do not outlive the run, and what
    // they left is named
    await Promise.all([server.stop().catch(() => {}), second?.stop().catch(() => {})])
    // the nodes' own words, kept beside their config
    try {
      writeFileSync(path.join(dir, 'node1.log'), server.log)
      if (second !== null) writeFileSync(path.join(dir, 'node2.log'), second.log)
    } catch {}
    log(`fuzz: the run stopped on an error; server directory kept: ${dir}${databases === null ? '' : `; databases kept: ${namesOf(databases)}`}`)
    throw err
  }
}

/** The databases of a --stores run, named for a log (no credentials). */
function namesOf (db: DrillDatabases): string {
  const redis = new URL(db.redisUrl)
  return `MongoDB database ${db.mongoDb}, MySQL database ${new URL(db.mysqlUrl).pathname.slice(1)}, Redis ${redis.host} database ${redis.pathname.slice(1) || '0'}`
}

/** What the server wrote into the run's own databases: messages in MongoDB, users in MySQL. */
async function storedCounts (db: DrillDatabases): Promise<{ messages: number, users: number }> {
  const messages = [...(await countStored(db)).values()].reduce((a, b) => a + b, 0)
  const conn = await mysql.createConnection(db.mysqlUrl)
  try {
    const [rows] = await conn.query('SELECT COUNT(*) AS n FROM users')
    return { messages, users: Number((rows as Array<{ n: number }>)[0]?.n ?? 0) }
  } finally {
    await conn.end()
  }
}

/**
 * Stops a node and judges how: a clean exit on SIGTERM (when it was up), no error in its log, and
 * (on stores) not on in-memory stores. Failures are added to `failures`; returns its exit and error lines.
 */
async function stopAndJudge (node: FuzzServer, name: string, wasUp: boolean, onStores: boolean, failures: Failure[]): Promise<{ exit: { code: number | null, signal: NodeJS.Signals | null }, errorLines: string[] }> {
  const exit = await node.stop()
  if (wasUp && exit.code !== 0) failures.push({ stream: 'server', problem: `${name} did not stop cleanly on SIGTERM (exit ${exit.code ?? exit.signal})`, detail: node.log.slice(-3000) })
  const findings = node.findings()
  for (const f of findings) failures.push({ stream: 'server', problem: `${name}'s log: ${f.msg}`, detail: f.line })
  if (onStores && node.inMemoryStores) failures.push({ stream: 'server', problem: `${name} ran on in-memory stores although the run was given MongoDB, MySQL and Redis` })
  return { exit, errorLines: findings.map(f => f.line) }
}

async function fuzzWith (server: FuzzServer, second: FuzzServer | null, dir: string, databases: DrillDatabases | null, opts: FuzzOptions,
  run: { started: number, failures: Failure[], pCases: PacketCase[], rCases: RequestCase[], hCases: HttpCase[] }): Promise<FuzzReport> {
  const { log, seed } = opts
  const { started, failures, pCases, rCases, hCases } = run
  let crashed = false
  /** What each lane was doing, for a report if the server dies. */
  const inFlight = new Map<string, string>()
  server.onUnexpectedExit = (exit) => {
    crashed = true
    failures.push({ stream: 'server', problem: `the server exited during the run (${exit.code ?? exit.signal})`, detail: `in flight when it died:\n${[...inFlight.values()].join('\n')}\nlast output:\n${server.log.slice(-4000)}` })
  }
  if (second !== null) {
    second.onUnexpectedExit = (exit) => {
      failures.push({ stream: 'server', problem: `the second node exited during the run (${exit.code ?? exit.signal})`, detail: `last output:\n${second.log.slice(-4000)}` })
    }
  }
  const abort = (): boolean => crashed

  const report: FuzzReport = {
    ok: false,
    seed,
    stores: databases === null ? 'embedded' : 'mongodb+mysql+redis',
    durationMs: 0,
    config: FUZZ_CONFIG,
    packets: { cases: 0, packets: 0, bytes: 0, outcomes: { closed: 0, alive: 0, unanswered: 0 }, byTransport: { tcp: 0, ws: 0 }, loggedIn: 0, connacks: {}, replies: 0, mustStayAlive: 0, armedWills: 0, mustClose: 0 },
    requests: { sent: 0, replies: 0, closedViolations: 0, reconnects: 0, fromCache: 0, codes: {}, byOp: {}, deviations: { count: 0, examples: [] } },
    http: { cases: 0, statuses: {}, codes: {} },
    bystander: { exchanges: 0, historyChecks: 0, failures: [], request: { p50: NaN, p99: NaN, max: NaN }, delivery: { p50: NaN, p99: NaN, max: NaN } },
    server: { alive: false, health: 0, rssStartMB: null, heapStartMB: null, heapEndMB: null, rssMB: null, peakRssMB: null, exit: null, errorLines: [], warnings: {}, inMemoryStores: null },
    stored: null,
    secondNode: null,
    failures
  }
  const lanes: RequestLane[] = []
  // what the oracle can tell of the server's reply memory: every publish of the run counts
  const memory = new ReplyMemory()
  let bystander: Bystander | null = null
  let fzKey = ''
  let convs: string[] = []
  let pctx: PacketContext | null = null
  let secondConnections: Record<string, number> | null = null

  try {
    await server.start()
    log(`fuzz: server pid ${server.pid} on mqtt ${server.mqttPort}, http ${server.httpPort} (config in ${dir})`)
    const mqttUrl = `mqtt://127.0.0.1:${server.mqttPort}`
    const wsUrl = `ws://127.0.0.1:${server.httpPort}/mqtt`
    if (second !== null) {
      await second.start()
      log(`fuzz: second node pid ${second.pid} on mqtt ${second.mqttPort}, http ${second.httpPort}: the bystander byb's`)
    }

    // accounts: the fuzzers and their peers are bots (a login costs one SHA-256), the bystanders people
    fzKey = await server.addBot(FUZZ_USER)
    const rawKey = await server.addBot(RAW_USER)
    const peerKey = await server.addBot('fzpeer')
    await server.addBot('fzpeer2')
    const shyKey = await server.addBot(SHY_USER)
    const passwords: Record<string, string> = {}
    for (const u of BYSTANDERS) {
      passwords[u] = randomBytes(18).toString('base64url')
      await server.addUser(u, passwords[u])
    }
    convs = await seedConversations(mqttUrl, { fz: fzKey, peer: peerKey, shy: shyKey })

    report.server.heapStartMB = toMB(await server.heapAfterGc())
    const before = server.sample()
    report.server.rssStartMB = before === null ? null : Math.round(before.rssBytes / MB)

    // (in a cluster byb is on the second node: every exchange crosses Redis)
    const bystanderWsUrl = second === null ? wsUrl : `ws://127.0.0.1:${second.httpPort}/mqtt`
    bystander = new Bystander({ mqttUrl, wsUrl: bystanderWsUrl, passwords, stallMs: opts.stallMs, pauseMs: 20, timeoutMs: opts.replyTimeoutMs, memory })
    await bystander.start()
    await bystander.warm(3)
    if (second !== null) secondConnections = await second.connections()

    const limits = server.limits
    for (let k = 0; k < opts.requestLanes; k++) {
      lanes.push(new RequestLane({ url: k % 2 === 0 ? mqttUrl : wsUrl, key: fzKey, device: `c${k}`, limits, replyTimeoutMs: opts.replyTimeoutMs, convs, memory }))
    }
    pctx = { mqttPort: server.mqttPort, httpPort: server.httpPort, key: rawKey, probeMs: opts.probeMs, legalProbeMs: opts.replyTimeoutMs, maxConnectPacketBytes: limits.maxConnectPacketBytes, maxPacketBytes: limits.maxPacketBytes }
    const packetResults: Array<PacketResult | undefined> = []
    const requestResults: Array<RequestResult | undefined> = []
    const httpResults: Array<HttpResult | undefined> = []
    // no answer may hold the admin token or where the server keeps its code and data (secrets[0-2])
    const hctx: HttpContext = { httpPort: server.httpPort, adminToken: server.token, convs, secrets: [server.token, ROOT, dir], timeoutMs: opts.replyTimeoutMs }

    const t0 = performance.now()
    await Promise.all([
      inLanes(pCases, opts.packetLanes, abort, async (lane, pCase, i) => {
        inFlight.set(`p${lane}`, `packet case ${i}: ${JSON.stringify(pCase).slice(0, 1500)}`)
        memory.notePublishes(pCase.packets.length) // (an upper bound: not every packet is a publish)
        const r = await runPacketCase(pCase, `r${i}`, pctx as PacketContext)
        // once the server is dead, what the cases in flight saw is its death, reported once above
        if (!crashed) packetResults[i] = r
        inFlight.delete(`p${lane}`)
      }),
      inLanes(rCases, opts.requestLanes, abort, async (lane, rCase, i) => {
        inFlight.set(`r${lane}`, `request case ${i}: ${describeCase(rCase).slice(0, 1500)}`)
        try {
          const requestLane = lanes[lane]
          if (requestLane === undefined) throw new Error(`no request lane ${lane}`)
          const r = await requestLane.run(rCase)
          if (!crashed) requestResults[i] = r
        } catch (err) {
          // the lane could not (re)connect: the server refused the fuzz user or is gone
          if (!crashed) failures.push({ stream: 'requests', index: i, problem: `lane c${lane} failed: ${(err as Error).message}`, input: describeCase(rCase) })
        }
        inFlight.delete(`r${lane}`)
      }),
      inLanes(hCases, opts.httpLanes, abort, async (lane, hCase, i) => {
        inFlight.set(`h${lane}`, `HTTP case ${i}: ${JSON.stringify(hCase).slice(0, 1500)}`)
        const r = await runHttpCase(hCase, hctx)
        if (!crashed) httpResults[i] = r
        inFlight.delete(`h${lane}`)
      })
    ])
    log(`fuzz: streams done in ${Math.round(performance.now() - t0)} ms`)

    // ---- stream 1 figures
    const p = report.packets
    for (const [i, pCase] of pCases.entries()) {
      const r = packetResults[i]
      if (r === undefined) continue
      p.cases++
      p.packets += r.packets
      p.bytes += r.bytes
      p.outcomes[r.outcome]++
      p.byTransport[pCase.transport]++
      if (pCase.login) p.loggedIn++
      if (pCase.login && pCase.packets.every(x => x.mutations.length === 0 && keepsConnection(x.base))) p.mustStayAlive++
      if (r.armedWill) p.armedWills++
      if (r.mustClose) p.mustClose++
      for (const code of r.connacks) p.connacks[code] = (p.connacks[code] ?? 0) + 1
      p.replies += r.replies
      if (r.problem !== null) failures.push({ stream: 'packets', index: i, problem: r.problem, input: JSON.stringify(pCase).slice(0, 3000), detail: `bytes: ${r.hex}` })
    }
    // ---- stream 2 figures
    const q = report.requests
    for (const [i, rCase] of rCases.entries()) {
      const r = requestResults[i]
      if (r === undefined) continue
      q.sent++
      if (r.outcome === 'closed-violation') q.closedViolations++
      if (r.reply !== null) q.replies++
      if (r.fromCache) q.fromCache++
      const code = r.code ?? (r.outcome === 'closed-violation' ? 'closed' : 'none')
      q.codes[code] = (q.codes[code] ?? 0) + 1
      const op = !r.topic.startsWith('im/req/') ? '(topics outside im/req/)' : OPS.includes(r.op as OpName) ? r.op : '(unknown operations)'
      q.byOp[op] ??= {}
      q.byOp[op][code] = (q.byOp[op][code] ?? 0) + 1
      if (r.deviation !== null) {
        q.deviations.count++
        if (q.deviations.examples.length < 3) q.deviations.examples.push(`${r.deviation}: ${describeRequestFailure(rCase, r)}`)
      }
      if (r.problem !== null) failures.push({ stream: 'requests', index: i, problem: r.problem, input: describeCase(rCase), detail: describeRequestFailure(rCase, r) })
    }
    q.reconnects = lanes.reduce((s, l) => s + l.reconnects, 0)
    // ---- stream 3 figures
    const h = report.http
    for (const [i, hCase] of hCases.entries()) {
      const r = httpResults[i]
      if (r === undefined) continue
      h.cases++
      const status = r.status === null ? 'none' : String(r.status)
      h.statuses[status] = (h.statuses[status] ?? 0) + 1
      if (r.code !== null) h.codes[r.code] = (h.codes[r.code] ?? 0) + 1
      if (r.problem !== null) failures.push({ stream: 'http', index: i, problem: r.problem, input: JSON.stringify(hCase).slice(0, 3000), detail: `request: ${JSON.stringify(r.request)}` })
    }

    // ---- no will was ever published: RAW_USER's setting is still the default
    if (!crashed) {
      await new Promise(resolve => setTimeout(resolve, 200))
      await withClient(mqttUrl, RAW_USER, rawKey, async (req) => {
        const setting = ((await req('settings', {})) as { result: { groupInvites: string } }).result.groupInvites
        if (setting !== 'anyone') failures.push({ stream: 'packets', problem: `a will was published: ${RAW_USER}'s groupInvites is "${setting}" after ${p.armedWills} logins with the will ${WILL_TOPIC} ${WILL_PAYLOAD}` })
      })
    }
  } finally {
    if (bystander !== null) report.bystander = await bystander.stop()
    for (const f of report.bystander.failures) failures.push({ stream: 'bystander', problem: f })
    await Promise.all(lanes.map(async l => { await l.stop() }))
  }

  // ---- the server after the storm
  report.server.alive = server.alive
  report.server.health = server.alive ? await server.health() : 0
  const sample = server.sample()
  report.server.rssMB = sample === null ? null : Math.round(sample.rssBytes / MB)
  report.server.peakRssMB = sample === null ? null : Math.round(sample.peakRssBytes / MB)
  report.server.heapEndMB = toMB(await server.heapAfterGc())
  if (server.alive && report.server.health !== 200) failures.push({ stream: 'server', problem: `/healthz answered ${report.server.health} after the run` })

  if (server.alive && opts.shrink > 0 && pctx !== null) {
    await shrinkFailures(failures, opts, pCases, rCases, pctx, { url: `mqtt://127.0.0.1:${server.mqttPort}`, key: fzKey, device: 'shrink', limits: server.limits, replyTimeoutMs: opts.replyTimeoutMs, convs, memory })
  }

  if (second !== null) {
    const health = second.alive ? await second.health() : 0
    const alive = second.alive
    if (alive && health !== 200) failures.push({ stream: 'server', problem: `the second node's /healthz answered ${health} after the run` })
    const { exit: exit2, errorLines } = await stopAndJudge(second, 'the second node', alive, true, failures)
    if ((secondConnections?.ws ?? 0) === 0) failures.push({ stream: 'bystander', problem: `the second node had no WebSocket connection while the bystanders chatted (${JSON.stringify(secondConnections)}): byb was not on it` })
    report.secondNode = {
      connectionsDuringRun: secondConnections,
      alive,
      health,
      exit: { code: exit2.code, signal: exit2.signal },
      errorLines,
      warnings: second.warnings(),
      inMemoryStores: second.inMemoryStores
    }
  }
  const { exit, errorLines } = await stopAndJudge(server, 'the server', !crashed, databases !== null, failures)
  report.server.exit = { code: exit.code, signal: exit.signal }
  report.server.errorLines.push(...errorLines)
  report.server.warnings = server.warnings()
  report.server.inMemoryStores = server.inMemoryStores
  if (databases !== null) {
    // the server wrote into the run's own databases, not into memory or some other database
    report.stored = await storedCounts(databases)
    if (report.stored.messages === 0 || report.stored.users === 0) failures.push({ stream: 'server', problem: `the run's own databases hold ${report.stored.messages} messages and ${report.stored.users} users: the server stored its data elsewhere` })
  }
  report.durationMs = Math.round(performance.now() - started)
  report.ok = failures.length === 0
  // what a failed run leaves is kept for a look
  if (report.ok) rmSync(dir, { recursive: true, force: true })
  else log(`fuzz: server directory kept: ${dir}`)
  if (databases !== null && report.ok) {
    for (const problem of await databases.drop()) log(`fuzz: could not drop ${problem}`)
  } else if (databases !== null) log(`fuzz: databases kept: ${namesOf(databases)}`)
  return report
}

type Requester = (op: string, body: Record<string, unknown>) => Promise<Reply>

/** Runs `steps` with a client of `user` (device `setup`) whose requests must all succeed. */
async function withClient (url: string, user: string, key: string, steps: (req: Requester) => Promise<void>): Promise<void> {
  const client = await mqtt.connectAsync(url, { clientId: `${user}:setup`, username: user, password: key, protocolVersion: 4, reconnectPeriod: 0 })
  const pending = new Map<string, (r: Reply) => void>()
  client.on('message', (_t, payload) => {
    const r = JSON.parse(payload.toString('utf8')) as Reply
    if (typeof r.id === 'string') pending.get(r.id)?.(r)
  })
  let n = 0
  const req = async (op: string, body: Record<string, unknown>): Promise<Reply> => {
    const id = `setup-${n++}`
    const reply = new Promise<Reply>((resolve, reject) => {
      pending.set(id, resolve)
      setTimeout(() => reject(new Error(`${user}: no reply to ${op} within 10 s`)), 10_000).unref()
    })
    client.publish(`im/req/${op}`, JSON.stringify({ id, ...body }), { qos: 1 })
    const r = await reply
    if (!r.ok) throw new Error(`${user}: ${op} failed: ${JSON.stringify(r.error)}`)
    return r
  }
  try { await steps(req) } finally { await client.endAsync(true) }
}

/**
 * Conversations for the fuzz user to start from: a direct one, a group it owns, and one it is
 * only a member of. And fzshy's invitation setting.
 */
async function seedConversations (url: string, keys: { fz: string, peer: string, shy: string }): Promise<string[]> {
  const convs: string[] = []
  const session = async (user: string, key: string, steps: (req: Requester) => Promise<void>): Promise<void> => { await withClient(url, user, key, steps) }
  const conv = (r: Reply): string => (r.ok ? r.result as { conv: string } : { conv: '' }).conv
  await session(FUZZ_USER, keys.fz, async (req) => {
    convs.push(conv(await req('direct', { user: 'fzpeer' })))
    convs.push(conv(await req('create-group', { name: 'fuzz owned', members: ['fzpeer', 'fzpeer2'] })))
    for (const c of convs) for (let i = 0; i < 3; i++) await req('send', { conv: c, msgId: `seed-${i}`, kind: 'text', body: `seed ${i}` })
  })
  await session('fzpeer', keys.peer, async (req) => {
    const c = conv(await req('create-group', { name: 'fuzz member', members: [FUZZ_USER, 'fzpeer2'] }))
    await req('send', { conv: c, msgId: 'seed-0', kind: 'text', body: 'seed' })
    convs.push(c)
  })
  await session(SHY_USER, keys.shy, async (req) => {
    await req('settings', { groupInvites: 'contacts' })
  })
  return convs
}

/**
 * Replays the first failures of each stream alone, as fast-check run `index` of the seed, and
 * lets fast-check shrink them against the live server. A failure that needed the state or the
 * load of the whole run may not reproduce alone: that is said too.
 */
async function shrinkFailures (failures: Failure[], opts: FuzzOptions, pCases: PacketCase[], rCases: RequestCase[], pctx: PacketContext, laneOptions: LaneOptions): Promise<void> {
  const budget = { interruptAfterTimeLimit: 60_000, markInterruptAsFailure: false }
  const lane = new RequestLane(laneOptions)
  let shrinkDevice = 0
  try {
    for (const stream of ['requests', 'packets'] as const) {
      for (const f of failures.filter(x => x.stream === stream && x.index !== undefined).slice(0, opts.shrink)) {
        const index = f.index as number
        opts.log(`fuzz: shrinking ${stream} case ${index}`)
        let first: unknown = null
        let lastProblem = ''
        const details = stream === 'requests'
          ? await fc.check(fc.asyncProperty(requestCase, async (c) => {
            first ??= c
            const r = await lane.run(c)
            if (r.problem !== null) lastProblem = r.problem
            return r.problem === null
          }), { seed: opts.seed, path: String(index), numRuns: 1, ...budget })
          : await fc.check(fc.asyncProperty(packetCase, async (c) => {
            first ??= c
            const r = await runPacketCase(c, `s${shrinkDevice++}`, pctx)
            if (r.problem !== null) lastProblem = r.problem
            return r.problem === null
          }), { seed: opts.seed, path: String(index), numRuns: 1, ...budget })
        const original = stream === 'requests' ? rCases[index] : pCases[index]
        if (!isDeepStrictEqual(first, original)) {
          f.shrunk = 'not shrunk: fast-check replayed a different case for this index'
        } else if (details.failed && details.counterexample !== null) {
          const c = details.counterexample[0]
          f.shrunk = `${stream === 'requests' ? describeCase(c as RequestCase) : JSON.stringify(c)} (after ${details.numShrinks} shrinks; ${lastProblem})`
        } else {
          f.shrunk = 'did not reproduce when replayed alone'
        }
      }
    }
  } finally {
    await lane.stop()
  }
}
