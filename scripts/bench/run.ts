/**
 * `npm run bench`: mqim against raw Aedes and Mosquitto on the same machine, in the same run.
 *
 *   npm run bench                      full run: table on stdout, JSON in bench-results/
 *   npm run bench -- --quick           every scenario at a small size (< 5 min); last line = JSON ratios
 *   npm run bench -- --only hostile    the bystander's p99 under attack / without (not in the default set)
 *   npm run bench -- --only push       send p99 with the push gateway down or hanging / up (not in the default set)
 *   npm run bench -- --only upload     100 uploads of 1 MiB through mqim vs direct PUTs to the same store (local
 *                                      disk; and S3 when MQIM_S3_* are set): rate ratio and server RSS growth
 *   npm run bench -- --only changes    group50 with 20 % edits and reactions vs plain sends, windows interleaved on one broker (also part of group)
 *   npm run bench -- --only channel    one channel of 10,000 (quick) / 18,000 (full) connected subscribers vs raw Aedes
 *   options: --rounds N   --workers N   --only direct,group,changes,connections,sync,store,hostile,channel,push,upload
 *            --attacks stuck-subscriber,wrong-passwords,subscriptions,big-pages,request-flood (which attacks hostile runs)
 *            --profile    (V8 CPU profile of every mqim server, into bench-results/profiles/)
 *            --keep       (keep the scratch directory with broker logs)
 *            --services DIR  (use services already started by `scripts/services.sh start DIR`)
 *            --mqim-root DIR (run the mqim server from another checkout, e.g. with a patch to try)
 *            --brokers mqim,aedes,mosquitto (which brokers the flow and connection scenarios run)
 *
 * Every broker runs in its own process, started fresh for each measurement; the load comes from
 * worker processes (scripts/bench/worker.ts). Rounds interleave the brokers (aedes, mqim,
 * mosquitto, then the reverse order) and the ratios are medians over rounds of per-round ratios.
 * See BENCHMARKS.md.
 */
import { execFileSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { headerComment, intOption, listOption, parseCommandLine, printUsage } from '../lib/cli.js'
import { exitStatus, installSignalHandlers, onCleanup, runCleanups } from '../lib/procs.js'
import { createMysqlDatabase, readServicesEnv, servicesOfDir, startServices, stopServices, type ServiceUrls } from '../lib/services.js'
import { ATTACKS, runHostile, type HostileParams, type HostileResult } from './hostile.js'
import { runPush, type PushParams, type PushResult } from './push.js'
import { median } from './lib/hist.js'
import { LoaderPool } from './lib/loader.js'
import type { AttackName } from './lib/protocol.js'
import { MOSQUITTO, ROOT, type MqimStores, type TargetKind } from './lib/targets.js'
import {
  runChannel, runConnections, runDirect, runGroup, runGroupChanges, runRawInsert, runSync,
  type ChannelParams, type ConnParams, type ConnResult, type Ctx, type DirectParams, type FlowResult, type FlowTiming, type GroupParams, type RawInsertResult, type SyncParams, type SyncResult
} from './scenarios.js'
import { runUpload, s3FromEnv, uploadTable, type UploadParams, type UploadResult } from './upload.js'

// ---------------------------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------------------------

/** group50-changes: one request in this many is an edit or a reaction (20 %). */
const CHANGE_EVERY = 5
const SCENARIOS = ['direct', 'group', 'changes', 'connections', 'sync', 'store', 'hostile', 'channel', 'push', 'upload'] as const
type Scenario = typeof SCENARIOS[number]
/** What runs without --only: hostile is asked for by name (it runs the server at its default limits, and may kill it), push and upload too. */
const DEFAULT_SCENARIOS: readonly Scenario[] = ['direct', 'group', 'changes', 'connections', 'sync', 'store', 'channel']
const BROKERS: readonly TargetKind[] = ['mqim', 'aedes', 'mosquitto']

interface Options {
  quick: boolean
  rounds: number | null
  workers: number
  only: Set<Scenario>
  attacks: AttackName[]
  profile: boolean
  keep: boolean
  services: string | null
  mqimRoot: string | undefined
  brokers: Set<TargetKind>
}

function options (argv: string[]): Options {
  const usage = headerComment(new URL(import.meta.url))
  return parseCommandLine(usage, () => {
    const { values } = parseArgs({
      args: argv,
      options: {
        quick: { type: 'boolean' },
        rounds: { type: 'string' },
        workers: { type: 'string' },
        only: { type: 'string' },
        attacks: { type: 'string' },
        profile: { type: 'boolean' },
        keep: { type: 'boolean' },
        services: { type: 'string' },
        'mqim-root': { type: 'string' },
        brokers: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
    if (values.help === true) printUsage(usage)
    return {
      quick: values.quick === true,
      rounds: values.rounds === undefined ? null : intOption('rounds', values.rounds, 1),
      workers: intOption('workers', values.workers, Math.max(2, os.availableParallelism())),
      only: new Set(listOption('only', values.only, SCENARIOS, DEFAULT_SCENARIOS)),
      attacks: listOption('attacks', values.attacks, ATTACKS, ATTACKS),
      profile: values.profile === true,
      keep: values.keep === true,
      services: values.services === undefined ? null : path.resolve(values.services),
      mqimRoot: values['mqim-root'] === undefined ? undefined : path.resolve(values['mqim-root']),
      brokers: new Set(listOption('brokers', values.brokers, BROKERS, BROKERS))
    }
  })
}

interface Sizes {
  /** rounds of the direct scenario (each: mqim, aedes, mosquitto) */
  rounds: number
  direct: DirectParams
  directTiming: FlowTiming
  groupRounds: number
  groups: GroupParams[]
  groupTiming: FlowTiming
  connections: ConnParams
  connectionRounds: number
  sync: SyncParams
  syncRounds: number
  storeRounds: number
  store: DirectParams
  storeTiming: FlowTiming
  rawInsert: { batch: number, seconds: number }
  hostile: HostileParams
  push: PushParams
  upload: UploadParams
  channel: ChannelParams
  channelTiming: FlowTiming
}

const BODY = 100

function sizes (quick: boolean, rounds: number | null): Sizes {
  if (quick) {
    return {
      rounds: rounds ?? 2,
      direct: { pairs: 50, window: 8, bodyBytes: BODY },
      directTiming: { warmMs: 1000, measureMs: 3000 },
      groupRounds: rounds ?? 1,
      groups: [{ members: 50, senders: 4, window: 8, bodyBytes: BODY }, { members: 500, senders: 2, window: 4, bodyBytes: BODY }],
      groupTiming: { warmMs: 1000, measureMs: 3000 },
      connections: { users: 50, devicesPerUser: 100 },
      connectionRounds: 1,
      sync: { conversations: 20, messagesPerConversation: 500, pageLimit: 200 },
      syncRounds: 1,
      storeRounds: rounds ?? 1,
      store: { pairs: 200, window: 8, bodyBytes: BODY },
      storeTiming: { warmMs: 1500, measureMs: 4000 },
      rawInsert: { batch: 500, seconds: 4 },
      hostile: { rounds: rounds ?? 3, windowMs: 3000, warmMs: 1000, settleMaxMs: 10_000, bystanderRate: 100, requestTimeoutMs: 10_000 },
      push: { rounds: rounds ?? 2, pairs: 100, rate: 200, warmMs: 2000, measureMs: 5000 },
      upload: { uploads: 50, bytes: 1024 * 1024, concurrency: 4, rounds: rounds ?? 1 },
      channel: { members: 10_000, senders: 2, window: 2, bodyBytes: BODY },
      channelTiming: { warmMs: 2000, measureMs: 4000 }
    }
  }
  return {
    rounds: rounds ?? 3,
    direct: { pairs: 200, window: 4, bodyBytes: BODY },
    directTiming: { warmMs: 3000, measureMs: 10_000 },
    groupRounds: rounds ?? 3,
    groups: [{ members: 50, senders: 4, window: 8, bodyBytes: BODY }, { members: 500, senders: 3, window: 4, bodyBytes: BODY }],
    groupTiming: { warmMs: 2000, measureMs: 8000 },
    connections: { users: 100, devicesPerUser: 100 },
    connectionRounds: 2,
    sync: { conversations: 20, messagesPerConversation: 500, pageLimit: 200 },
    syncRounds: 3,
    storeRounds: rounds ?? 3,
    store: { pairs: 200, window: 8, bodyBytes: BODY },
    storeTiming: { warmMs: 3000, measureMs: 10_000 },
    rawInsert: { batch: 500, seconds: 8 },
    hostile: { rounds: rounds ?? 5, windowMs: 5000, warmMs: 1000, settleMaxMs: 15_000, bystanderRate: 100, requestTimeoutMs: 10_000 },
    push: { rounds: rounds ?? 3, pairs: 200, rate: 300, warmMs: 3000, measureMs: 10_000 },
    upload: { uploads: 100, bytes: 1024 * 1024, concurrency: 4, rounds: rounds ?? 3 },
    // not the issue's 50,000: every subscriber is a TCP connection from 127.0.0.1 to one port, and
    // the broker's process may hold 20,000 descriptors here (ulimit -n), the kernel lends 28,232
    // ephemeral ports toward one address (ip_local_port_range)
    channel: { members: 18_000, senders: 2, window: 2, bodyBytes: BODY },
    channelTiming: { warmMs: 3000, measureMs: 8000 }
  }
}

// ---------------------------------------------------------------------------------------------
// services (FerretDB + MariaDB) for the store scenario
// ---------------------------------------------------------------------------------------------

/** The services' URLs and the pids of their servers. */
interface Services { urls: ServiceUrls, pids: { ferretdb: number, mariadb: number } }

function servicesIn (dir: string): Services {
  const env = readServicesEnv(dir)
  return { urls: servicesOfDir(dir), pids: { ferretdb: Number(env.MQIM_MONGO_PID), mariadb: Number(env.MQIM_MYSQL_PID) } }
}

async function services (log: (l: string) => void, existing: string | null): Promise<Services> {
  if (existing !== null) {
    log(`using the services of ${existing}`)
    return servicesIn(existing)
  }
  const dir = mkdtempSync(path.join('/tmp', 'mqim-bench-svc-'))
  onCleanup(async () => {
    await stopServices(dir).catch(() => { /* best effort */ })
    rmSync(dir, { recursive: true, force: true })
  })
  log(`starting FerretDB + MariaDB (+ Redis) with scripts/services.sh in ${dir}`)
  await startServices(dir)
  return servicesIn(dir)
}

async function freshStores (urls: ServiceUrls): Promise<MqimStores> {
  const { url, dbName } = await createMysqlDatabase(urls.mysqlUrl, 'bench')
  return { mongoUrl: urls.mongoUrl, mongoDb: dbName, mysqlUrl: url }
}

// ---------------------------------------------------------------------------------------------
// reporting
// ---------------------------------------------------------------------------------------------

function machine (): Record<string, unknown> {
  const version = (cmd: string, args: string[]): string => {
    try {
      return (execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 5000 }).split('\n')[0] ?? '').trim()
    } catch (err) {
      const out = (err as { stdout?: string }).stdout ?? ''
      return (out.split('\n')[0] ?? '').trim() || 'unknown'
    }
  }
  const pkg = (name: string): string => {
    try { return (JSON.parse(readFileSync(path.join(ROOT, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version } catch { return 'unknown' }
  }
  return {
    nproc: os.availableParallelism(),
    cpu: os.cpus()[0]?.model ?? 'unknown',
    memoryGiB: Math.round(os.totalmem() / 2 ** 30 * 10) / 10,
    os: `${os.type()} ${os.release()}`,
    node: process.version,
    aedes: pkg('aedes'),
    mqttjs: pkg('mqtt'),
    mosquitto: version(MOSQUITTO, ['-h']),
    loadAverage: os.loadavg().map(x => Math.round(x * 100) / 100)
  }
}

/** The key of an attack's ratio in the JSON line and the targets. */
function hostileKey (attack: AttackName): string {
  return `hostile_${attack.replace(/-/g, '_')}`
}

const f = (x: number, d = 0): string => Number.isFinite(x) ? x.toFixed(d) : '-'

function pad (cells: string[], widths: number[]): string {
  return cells.map((c, i) => i < 2 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0)).join('  ')
}

function table (flows: FlowResult[], conns: ConnResult[], syncs: SyncResult[], raws: RawInsertResult[]): string {
  const out: string[] = []
  if (flows.length > 0) {
    const head = ['scenario', 'broker', 'load', 'deliv/s', 'sends/s', 'p50 ms', 'p95 ms', 'p99 ms', 'srv CPU', 'CPU s/1k', 'loader', 'peak MiB', 'errors', 'n']
    const widths = [12, 24, 6, 9, 8, 7, 7, 8, 7, 9, 6, 8, 6, 2]
    out.push(pad(head, widths))
    out.push(widths.map(w => '-'.repeat(w)).join('  '))
    const groups = new Map<string, FlowResult[]>()
    for (const r of flows) {
      const key = `${r.scenario}|${r.label}|${r.load}`
      groups.set(key, [...(groups.get(key) ?? []), r])
    }
    for (const rs of groups.values()) {
      const [first] = rs
      if (first === undefined) continue
      const m = (fn: (r: FlowResult) => number): number => median(rs.map(fn))
      out.push(pad([
        first.scenario, first.label, first.load === 'max' ? 'max' : 'half',
        f(m(r => r.deliveredPerSec)), f(m(r => r.sendsPerSec)),
        f(m(r => r.latencyMs.p50), 1), f(m(r => r.latencyMs.p95), 1), f(m(r => r.latencyMs.p99), 1),
        f(m(r => r.serverCpuUtil), 2), f(m(r => r.cpuSecondsPer1kDelivered), 4), f(m(r => r.loaderCpuUtil), 2),
        f(m(r => r.peakRssMiB)), String(rs.reduce((a, r) => a + r.errors.total, 0)), String(rs.length)
      ], widths))
    }
  }
  if (conns.length > 0) {
    out.push('')
    out.push(pad(['connections', 'broker', 'conns', 'conn/s', 'p50 ms', 'p99 ms', 'KiB/conn', 'RSS MiB', 'errors', 'n'], [12, 24, 6, 8, 8, 8, 9, 8, 6, 2]))
    const byLabel = new Map<string, ConnResult[]>()
    for (const c of conns) byLabel.set(c.label, [...(byLabel.get(c.label) ?? []), c])
    for (const [label, cs] of byLabel) {
      const m = (fn: (r: ConnResult) => number): number => median(cs.map(fn))
      out.push(pad(['connections', label, f(m(c => c.connections)), f(m(c => c.connectsPerSec)), f(m(c => c.connectLatencyMs.p50), 1), f(m(c => c.connectLatencyMs.p99), 1), f(m(c => c.kibPerConnection), 1), f(m(c => c.rssAfterMiB)), String(cs.reduce((a, c) => a + c.errors, 0)), String(cs.length)], [12, 24, 6, 8, 8, 8, 9, 8, 6, 2]))
    }
  }
  if (syncs.length > 0) {
    out.push('')
    for (const s of syncs) out.push(`${s.scenario.padEnd(12)}  ${s.label.padEnd(24)}  ${s.messages} messages / ${s.conversations} conversations / ${s.pages} pages: ${f(s.syncSeconds, 2)} s (round ${s.round}, errors ${s.errors})`)
  }
  if (raws.length > 0) {
    for (const r of raws) out.push(`${'raw-insert'.padEnd(12)}  ${'FerretDB insertMany'.padEnd(24)}  ${r.batch}/batch: ${f(r.docsPerSec)} docs/s, batch p50 ${f(r.batchLatencyMs.p50, 1)} ms p99 ${f(r.batchLatencyMs.p99, 1)} ms (round ${r.round})`)
  }
  return out.join('\n')
}

function hostileTable (results: HostileResult[]): string {
  const widths = [16, 24, 17, 19, 7, 7, 6, 9, 8, 8]
  const out = [pad(['hostile', 'broker', 'p99 base rtt/dlv', 'p99 attack rtt/dlv', 'x rtt', 'x dlv', 'x', 'srv CPU', 'RSS MiB', 'rounds'], widths)]
  out.push(widths.map(w => '-'.repeat(w)).join('  '))
  for (const h of results) {
    const cpu = (kind: 'baseline' | 'attack'): number => median(h.windows.filter(w => w.kind === kind).map(w => w.serverCpuUtil))
    out.push(pad([
      h.attack, h.label,
      `${f(h.p99Ms.baseline.rtt, 1)} / ${f(h.p99Ms.baseline.delivery, 1)}`,
      `${f(h.p99Ms.attack.rtt, 1)} / ${f(h.p99Ms.attack.delivery, 1)}`,
      f(h.rttRatio ?? NaN, 1), f(h.deliveryRatio ?? NaN, 1), f(h.ratio ?? NaN, 1),
      `${f(cpu('baseline'), 2)}/${f(cpu('attack'), 2)}`,
      f(h.server.peakRssMiB), String(h.rounds.length)
    ], widths))
    const last = h.attacker[h.attacker.length - 1]
    const counters = last === undefined ? 'none' : Object.entries(last.counters).map(([k, v]) => `${k} ${v}`).join(', ')
    out.push(`${''.padEnd(16)}  server ${h.server.survived ? 'survived' : `did NOT survive: ${h.server.died ?? `/healthz ${h.server.healthz}`}`}; attacker (last round, ${last === undefined ? '-' : f(last.seconds, 1)} s): ${counters}`)
  }
  return out.join('\n')
}

// ---------------------------------------------------------------------------------------------
// main
// ---------------------------------------------------------------------------------------------

async function main (): Promise<number> {
  const opts = options(process.argv.slice(2))
  installSignalHandlers('bench')
  const S = sizes(opts.quick, opts.rounds)
  const started = Date.now()
  const log = (line: string): void => { process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(0).padStart(4)}s] ${line}\n`) }
  const resultsDir = path.join(ROOT, 'bench-results')
  mkdirSync(resultsDir, { recursive: true })
  const scratch = mkdtempSync(path.join(os.tmpdir(), 'mqim-bench-'))
  if (!opts.keep) onCleanup(() => rmSync(scratch, { recursive: true, force: true }))
  const cpuProfDir = opts.profile ? path.join(resultsDir, 'profiles', new Date().toISOString().replace(/[:.]/g, '-')) : undefined
  if (cpuProfDir !== undefined) mkdirSync(cpuProfDir, { recursive: true })

  log(`mqim bench (${opts.quick ? 'quick' : 'full'}): direct ${S.rounds} round(s), groups ${S.groupRounds}, store ${S.storeRounds}; ${opts.workers} load workers; scratch ${scratch}`)
  const pool = await LoaderPool.start(opts.workers)
  const ctx: Ctx = { pool, dir: scratch, cpuProfDir, mqimRoot: opts.mqimRoot, log }
  const flows: FlowResult[] = []
  const conns: ConnResult[] = []
  const syncs: SyncResult[] = []
  const raws: RawInsertResult[] = []
  const hostile: HostileResult[] = []
  let push: PushResult | null = null
  const uploads: UploadResult[] = []
  const failures: string[] = []
  // alternate the order each round so that drift on a noisy machine hits every broker alike
  const enabled = (list: TargetKind[]): TargetKind[] => list.filter(k => opts.brokers.has(k))
  const order = (r: number): TargetKind[] => enabled(r % 2 === 1 ? ['aedes', 'mqim', 'mosquitto'] : ['mosquitto', 'mqim', 'aedes'])
  const directOrder = (r: number): TargetKind[] => enabled(r % 2 === 1 ? ['mqim', 'aedes', 'mosquitto'] : ['mqim', 'mosquitto', 'aedes'])
  const attempt = async (what: string, fn: () => Promise<void>): Promise<void> => {
    try {
      await fn()
    } catch (err) {
      const msg = `${what}: ${err instanceof Error ? err.message : String(err)}`
      failures.push(msg)
      log(`FAILED ${msg}`)
    }
  }

  try {
    if (opts.only.has('direct')) {
      log(`direct: ${S.direct.pairs} pairs, window ${S.direct.window}, ${S.direct.bodyBytes} B bodies; max load, then paced at half of mqim's max`)
      for (let r = 1; r <= S.rounds; r++) {
        // mqim first: its max rate sets the paced rate of the round, offered to every broker
        let half: number | null = null
        for (const kind of directOrder(r)) {
          await attempt(`direct ${kind} r${r}`, async () => {
            const res = await runDirect(ctx, kind, r, S.direct, S.directTiming, kind === 'mqim' ? 'half' : half)
            const [max] = res
            if (kind === 'mqim' && max !== undefined) half = max.sendsPerSec / 2
            flows.push(...res)
          })
        }
      }
    }
    if (opts.only.has('group')) {
      for (const g of S.groups) {
        log(`group${g.members}: ${g.members} members, ${g.senders} senders, window ${g.window}`)
        for (let r = 1; r <= S.groupRounds; r++) {
          for (const kind of order(r)) {
            await attempt(`group${g.members} ${kind} r${r}`, async () => { flows.push(...await runGroup(ctx, kind, r, g, S.groupTiming)) })
          }
          // the same shape with 20 % of the requests edits and reactions, against plain sends on the same broker
          if (g.members === 50 && opts.only.has('changes')) {
            await attempt(`group50-changes mqim r${r}`, async () => { flows.push(...await runGroupChanges(ctx, r, { ...g, changeEvery: CHANGE_EVERY }, S.groupTiming)) })
          }
        }
      }
    }
    if (opts.only.has('changes') && !opts.only.has('group')) {
      const g = S.groups.find(x => x.members === 50)
      if (g === undefined) throw new Error('no group of 50 in this mode')
      log(`group50 sends vs changes: 50 members, ${g.senders} senders, window ${g.window}, every ${CHANGE_EVERY}th request an edit or a reaction`)
      for (let r = 1; r <= S.groupRounds; r++) {
        await attempt(`group50-changes mqim r${r}`, async () => { flows.push(...await runGroupChanges(ctx, r, { ...g, changeEvery: CHANGE_EVERY }, S.groupTiming)) })
      }
    }
    if (opts.only.has('channel')) {
      const c = S.channel
      log(`channel${c.members}: ${c.members} connected subscribers of one channel, ${c.senders} senders, window ${c.window} (baselines: the same publish to the same subscribers)`)
      for (let r = 1; r <= S.groupRounds; r++) {
        for (const kind of order(r).filter(k => k !== 'mosquitto')) {
          await attempt(`channel${c.members} ${kind} r${r}`, async () => { flows.push(...await runChannel(ctx, kind, r, c, S.channelTiming)) })
        }
      }
    }
    if (opts.only.has('connections')) {
      const n = S.connections.users * S.connections.devicesPerUser
      log(`connections: ${n} idle clean=false connections (${S.connections.users} users x ${S.connections.devicesPerUser} devices)`)
      for (let r = 1; r <= S.connectionRounds; r++) {
        for (const kind of order(r)) {
          await attempt(`connections ${kind} r${r}`, async () => { conns.push(await runConnections(ctx, kind, r, S.connections)) })
        }
      }
    }
    if (opts.only.has('sync')) {
      log(`sync: ${S.sync.conversations * S.sync.messagesPerConversation} missed messages in ${S.sync.conversations} conversations (embedded stores)`)
      for (let r = 1; r <= S.syncRounds; r++) {
        await attempt(`sync r${r}`, async () => { syncs.push(await runSync(ctx, r, S.sync)) })
      }
    }
    if (opts.only.has('store')) {
      await attempt('store', async () => {
        const { urls, pids } = await services(log, opts.services)
        ctx.storePids = pids
        log(`store: raw insertMany (${S.rawInsert.batch}/batch) vs mqim on FerretDB + MariaDB (${S.store.pairs} pairs, window ${S.store.window})`)
        for (let r = 1; r <= S.storeRounds; r++) {
          await attempt(`raw insert r${r}`, async () => { raws.push(await runRawInsert(ctx, r, urls.mongoUrl, S.rawInsert.batch, S.rawInsert.seconds, BODY)) })
          await attempt(`store mqim r${r}`, async () => {
            const stores = await freshStores(urls)
            flows.push(...await runDirect(ctx, 'mqim', r, S.store, S.storeTiming, null, { stores }, 'store'))
          })
        }
        if (!opts.quick) {
          await attempt('sync on FerretDB', async () => {
            syncs.push(await runSync(ctx, 1, S.sync, { stores: await freshStores(urls) }, 'sync-ferret'))
          })
        }
      })
    }
    if (opts.only.has('hostile')) {
      const h = S.hostile
      log(`hostile: ${opts.attacks.join(', ')}; each on a fresh server at its default limits, ${h.rounds} rounds of a ${h.windowMs / 1000} s baseline window and a ${h.windowMs / 1000} s attack window; bystander ${h.bystanderRate} sends/s from 127.0.0.1, attacker from 127.0.0.2`)
      for (const attack of opts.attacks) {
        await attempt(`hostile ${attack}`, async () => { hostile.push(await runHostile(ctx, attack, h)) })
      }
    }
    if (opts.only.has('push')) {
      const pp = S.push
      log(`push: ${pp.pairs} direct conversations to offline peers with a gateway target, ${pp.rate} sends/s; the gateway up, down (refusing) and hanging (never answering), ${pp.rounds} rounds`)
      await attempt('push', async () => { push = await runPush(ctx, pp) })
    }
    if (opts.only.has('upload')) {
      const s3 = s3FromEnv()
      log(`upload: ${S.upload.uploads} uploads of ${S.upload.bytes} bytes, ${S.upload.concurrency} at a time, through mqim vs direct, ${S.upload.rounds} round(s); stores: local${s3 === null ? ' (s3 not run: MQIM_S3_* not set)' : ', s3'}`)
      await attempt('upload local', async () => { uploads.push(await runUpload(ctx, 'local', S.upload, s3)) })
      if (s3 !== null) await attempt('upload s3', async () => { uploads.push(await runUpload(ctx, 's3', S.upload, s3)) })
    }
  } finally {
    await pool.close()
  }

  // ratios: per round, then the median over rounds
  const pick = (scenario: string, target: TargetKind, round: number, load: 'max' | 'paced' = 'max'): FlowResult | undefined =>
    flows.find(x => x.scenario === scenario && x.target === target && x.round === round && x.load === load)
  const perRound = (scenario: string, fn: (m: FlowResult, b: FlowResult) => number, base: TargetKind = 'aedes'): number[] => {
    const out: number[] = []
    for (let r = 1; r <= (scenario === 'direct' ? S.rounds : S.groupRounds); r++) {
      const m = pick(scenario, 'mqim', r)
      const b = pick(scenario, base, r)
      if (m !== undefined && b !== undefined) out.push(fn(m, b))
    }
    return out
  }
  const rnd = (x: number, d = 3): number | null => Number.isFinite(x) ? Math.round(x * 10 ** d) / 10 ** d : null
  const directRatios = perRound('direct', (m, b) => m.deliveredPerSec / b.deliveredPerSec)
  // per round: the changes windows' deliveries over the plain windows' on the same broker
  const changeRatios: number[] = []
  for (let r = 1; r <= S.groupRounds; r++) {
    const of = (scenario: string): number => flows.filter(x => x.scenario === scenario && x.target === 'mqim' && x.round === r).reduce((a, x) => a + x.deliveredPerSec, 0)
    const ratio = of('group50-changes') / of('group50-sends')
    if (Number.isFinite(ratio)) changeRatios.push(ratio)
  }
  // CPU per delivered message at equal load: both paced at half of mqim's max send rate
  const cpuRatios: number[] = []
  for (let r = 1; r <= S.rounds; r++) {
    const m = pick('direct', 'mqim', r, 'paced')
    const b = pick('direct', 'aedes', r, 'paced')
    if (m !== undefined && b !== undefined) cpuRatios.push(m.cpuSecondsPer1kDelivered / b.cpuSecondsPer1kDelivered)
  }
  const cpuRatiosAtMax = perRound('direct', (m, b) => m.cpuSecondsPer1kDelivered / b.cpuSecondsPer1kDelivered)
  const storeRatios: number[] = []
  for (let r = 1; r <= S.storeRounds; r++) {
    const m = pick('store', 'mqim', r)
    const raw = raws.find(x => x.round === r)
    if (m !== undefined && raw !== undefined) storeRatios.push(m.storedPerSec / raw.docsPerSec)
  }
  const halfP99 = flows.filter(x => x.scenario === 'direct' && x.target === 'mqim' && x.load === 'paced').map(x => x.latencyMs.p99)
  const kib = conns.filter(c => c.target === 'mqim').map(c => c.kibPerConnection)
  const sync = syncs.filter(s => s.scenario === 'sync').map(s => s.syncSeconds)

  const ratios: Record<string, number | null> = {
    direct_vs_aedes: rnd(median(directRatios)),
    cpu_per_msg_vs_aedes: rnd(median(cpuRatios)),
    store_vs_raw_insert: rnd(median(storeRatios)),
    p99_ms_at_half_load: rnd(median(halfP99), 1),
    kib_per_connection: rnd(median(kib), 1),
    sync_10k_s: rnd(median(sync), 3)
  }
  // hostile: the bystander's p99 under attack / without, per attack (only when it ran: the quick
  // line of the default scenarios keeps its shape)
  for (const h of hostile) ratios[hostileKey(h.attack)] = h.ratio === null ? null : rnd(h.ratio, 2)
  const pushed = push as PushResult | null
  if (pushed !== null) {
    ratios.push_p99_down_vs_up = pushed.p99DownVsUp === null ? null : rnd(pushed.p99DownVsUp, 2)
    ratios.push_p99_hanging_vs_up = pushed.p99HangingVsUp === null ? null : rnd(pushed.p99HangingVsUp, 2)
  }
  const channelScenario = `channel${S.channel.members}`
  if (opts.only.has('channel')) {
    ratios.channel_vs_aedes = rnd(median(perRound(channelScenario, (m, b) => m.deliveredPerSec / b.deliveredPerSec)))
    ratios.kib_per_channel_subscriber = rnd(median(flows.filter(x => x.scenario === channelScenario && x.target === 'mqim' && x.load === 'max').map(x => x.kibPerSubscriber ?? NaN)), 1)
  }
  if (opts.only.has('changes')) ratios.group50_changes_vs_sends = rnd(median(changeRatios))
  const goals: Array<[string, '>=' | '<=', number]> = [
    ['direct_vs_aedes', '>=', 0.6],
    ['cpu_per_msg_vs_aedes', '<=', 2],
    ['store_vs_raw_insert', '>=', 0.5],
    ['p99_ms_at_half_load', '<=', 50],
    ['kib_per_connection', '<=', 50],
    ['sync_10k_s', '<=', 2],
    ...hostile.map(h => [hostileKey(h.attack), '<=', 3] as [string, '<=', number]),
    ...(opts.only.has('channel') ? [['channel_vs_aedes', '>=', 0.8], ['kib_per_channel_subscriber', '<=', 20]] as Array<[string, '>=' | '<=', number]> : []),
    ...(opts.only.has('changes') ? [['group50_changes_vs_sends', '>=', 0.9]] as Array<[string, '>=' | '<=', number]> : [])
  ]
  const targets = goals.map(([key, op, goal]) => {
    const v = ratios[key] ?? null
    const met = v === null ? null : op === '>=' ? v >= goal : v <= goal
    // a server that did not survive the attack misses its target whatever the ratio of the rounds before
    const h = hostile.find(x => hostileKey(x.attack) === key)
    return { key, value: v, goal: `${op} ${goal}`, met: h !== undefined && !h.server.survived ? false : met }
  })
  // the same ratios over the rounds in which other jobs on the machine stayed below 0.2 cores
  // during both windows of the pair (NaN when there is none)
  const quiet = (x: FlowResult | undefined): boolean => x !== undefined && x.foreignCpuUtil < 0.2
  const quietRatios = (load: 'max' | 'paced', fn: (m: FlowResult, b: FlowResult) => number): number[] => {
    const out: number[] = []
    for (let r = 1; r <= S.rounds; r++) {
      const m = pick('direct', 'mqim', r, load)
      const b = pick('direct', 'aedes', r, load)
      if (m !== undefined && b !== undefined && quiet(m) && quiet(b)) out.push(fn(m, b))
    }
    return out
  }
  const extra = {
    quiet_rounds: {
      direct_vs_aedes: quietRatios('max', (m, b) => m.deliveredPerSec / b.deliveredPerSec).map(x => rnd(x)),
      cpu_per_msg_vs_aedes: quietRatios('paced', (m, b) => m.cpuSecondsPer1kDelivered / b.cpuSecondsPer1kDelivered).map(x => rnd(x)),
      p99_ms_at_half_load: flows.filter(x => x.scenario === 'direct' && x.target === 'mqim' && x.load === 'paced' && quiet(x)).map(x => rnd(x.latencyMs.p99, 1))
    },
    cpu_per_msg_vs_aedes_at_max: rnd(median(cpuRatiosAtMax)),
    group50_vs_aedes: rnd(median(perRound('group50', (m, b) => m.deliveredPerSec / b.deliveredPerSec))),
    group500_vs_aedes: rnd(median(perRound('group500', (m, b) => m.deliveredPerSec / b.deliveredPerSec))),
    // the channel: per-delivery send -> deliver latency (the p99 is about the last deliveries of a message)
    channel_p50_ms: rnd(median(flows.filter(x => x.scenario === channelScenario && x.target === 'mqim' && x.load === 'max').map(x => x.latencyMs.p50)), 1),
    channel_p99_ms: rnd(median(flows.filter(x => x.scenario === channelScenario && x.target === 'mqim' && x.load === 'max').map(x => x.latencyMs.p99)), 1),
    channel_aedes_p99_ms: rnd(median(flows.filter(x => x.scenario === channelScenario && x.target === 'aedes' && x.load === 'max').map(x => x.latencyMs.p99)), 1),
    direct_vs_mosquitto: rnd(median(perRound('direct', (m, b) => m.deliveredPerSec / b.deliveredPerSec, 'mosquitto'))),
    group500_vs_mosquitto: rnd(median(perRound('group500', (m, b) => m.deliveredPerSec / b.deliveredPerSec, 'mosquitto'))),
    aedes_vs_mosquitto_direct: rnd(median(perRound('direct', (_m, b) => b.deliveredPerSec).map((a, i) => a / (perRound('direct', (_m, b) => b.deliveredPerSec, 'mosquitto')[i] ?? NaN)))),
    sync_ferretdb_s: rnd(median(syncs.filter(s => s.scenario === 'sync-ferret').map(s => s.syncSeconds)), 3),
    per_round: { direct_vs_aedes: directRatios.map(x => rnd(x)), cpu_per_msg_vs_aedes: cpuRatios.map(x => rnd(x)), cpu_per_msg_vs_aedes_at_max: cpuRatiosAtMax.map(x => rnd(x)), store_vs_raw_insert: storeRatios.map(x => rnd(x)), p99_ms_at_half_load: halfP99.map(x => rnd(x, 1)), group50_changes_vs_sends: changeRatios.map(x => rnd(x)) }
  }

  const report = {
    mode: opts.quick ? 'quick' : 'full',
    /** cores used by other jobs during the measurement windows (median); above ~0.2 the run was disturbed */
    foreignLoadCores: rnd(median(flows.map(f => f.foreignCpuUtil)), 2),
    startedAt: new Date(started).toISOString(),
    durationSeconds: Math.round((Date.now() - started) / 1000),
    machine: machine(),
    workers: opts.workers,
    sizes: S,
    ratios,
    targets,
    extra,
    failures,
    flows,
    connections: conns,
    sync: syncs,
    rawInsert: raws,
    hostile,
    push,
    uploads,
    profiles: cpuProfDir ?? null
  }
  const stamp = new Date(started).toISOString().replace(/[:.]/g, '-')
  const file = path.join(resultsDir, `bench-${report.mode}-${stamp}.json`)
  writeFileSync(file, JSON.stringify(report, null, 2) + '\n')
  writeFileSync(path.join(resultsDir, `latest-${report.mode}.json`), JSON.stringify(report, null, 2) + '\n')

  process.stdout.write('\n' + table(flows, conns, syncs, raws) + '\n\n')
  if (hostile.length > 0) process.stdout.write(hostileTable(hostile) + '\n\n')
  if (uploads.length > 0) process.stdout.write(uploadTable(uploads, S.upload) + '\n\n')
  const foreign = median(flows.map(f => f.foreignCpuUtil))
  if (foreign > 0.2) {
    process.stdout.write(`NOTE: other jobs on this machine used ${foreign.toFixed(2)} cores (median over the measurement windows): the figures are disturbed; rerun on a quiet machine\n\n`)
  }
  // how busy the machine was (other jobs) in the windows behind each figure
  const windowsOf: Partial<Record<string, FlowResult[]>> = {
    direct_vs_aedes: flows.filter(x => x.scenario === 'direct' && x.load === 'max' && x.target !== 'mosquitto'),
    cpu_per_msg_vs_aedes: flows.filter(x => x.scenario === 'direct' && x.load === 'paced' && x.target !== 'mosquitto'),
    store_vs_raw_insert: flows.filter(x => x.scenario === 'store'),
    p99_ms_at_half_load: flows.filter(x => x.scenario === 'direct' && x.load === 'paced' && x.target === 'mqim'),
    channel_vs_aedes: flows.filter(x => x.scenario === channelScenario && x.load === 'max')
  }
  for (const t of targets) {
    const ws = windowsOf[t.key] ?? []
    const worst = ws.length === 0 ? 0 : Math.max(...ws.map(w => w.foreignCpuUtil))
    let note = worst > 0.2 ? `   (disturbed: other jobs used up to ${worst.toFixed(2)} cores in its windows)` : ''
    const h = hostile.find(x => hostileKey(x.attack) === t.key)
    if (h !== undefined) {
      const busiest = Math.max(0, ...h.windows.map(w => w.foreignCpuUtil))
      note = `   (server ${h.server.survived ? 'survived' : `did not survive: ${h.server.died ?? `/healthz ${h.server.healthz}`}`}; RSS ${h.server.rssEndMiB.toFixed(0)} MiB, peak ${h.server.peakRssMiB.toFixed(0)} MiB${busiest > 0.2 ? `; disturbed: other jobs used up to ${busiest.toFixed(2)} cores in its windows` : ''})`
    }
    process.stdout.write(`${t.met === null ? 'n/a ' : t.met ? 'MET ' : 'MISS'}  ${t.key.padEnd(22)} ${String(t.value).padStart(9)}   target ${t.goal}${note}\n`)
  }
  process.stdout.write(`\nextra: ${JSON.stringify({ ...extra, per_round: undefined })}\n`)
  if (failures.length > 0) process.stdout.write(`\nfailures:\n  ${failures.join('\n  ')}\n`)
  process.stdout.write(`results: ${path.relative(ROOT, file)} (${report.durationSeconds} s)\n`)
  process.stdout.write(JSON.stringify(ratios) + '\n')
  return failures.length > 0 ? 1 : 0
}

let status = 1
try {
  status = await main()
} catch (err) {
  process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
} finally {
  await runCleanups()
}
// exit now: a client or timer left behind by a failed step must not keep the runner alive
process.exit(exitStatus(status))
