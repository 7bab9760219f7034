/**
 * The benchmark scenarios. Each measurement starts its broker fresh, connects the clients through
 * the worker pool, warms up, then measures a window: deliveries/s, send -> deliver latency, the
 * broker's own CPU seconds and peak RSS, and errors (failed replies, publish errors, client
 * errors, deliveries that never arrived).
 *
 * Traffic shapes (the baselines get the same number of publishes and deliveries, same sizes):
 *   direct      N pairs; both ends send QoS 1. mqim: `send` to the pair's direct conversation,
 *               delivered to both members' im/u/<user>/m (peer + the sender's own copy), plus the
 *               `send` reply to the sender. Baselines: both ends subscribe to one topic per pair
 *               and publish the envelope there (peer + own copy); they have no reply.
 *   group       one group of M members, S of them sending. mqim: `send`, delivered to all M
 *               inboxes. Baselines: all M subscribe to one topic, the S senders publish to it.
 *   channel     one channel of M members, all connected and subscribed to its topic, S of them
 *               sending (postPolicy members). mqim: `send`, published once to im/c/<conv>/m and
 *               fanned out by the broker. Baselines: the group's shape (the same publish to the
 *               same subscribers). Also the server's memory per connected subscriber.
 *   connections C idle connections, clean=false, 3 subscriptions each (inbox, events, replies).
 *   sync        mqim only: 10,000 messages in 20 conversations arrive while a device is offline;
 *               it reconnects, lists, and pages everything with `history {after}`.
 *   store       mqim on FerretDB + MariaDB (direct shape) against the raw insertMany rate of
 *               the same FerretDB.
 */
import path from 'node:path'
import { readdirSync, renameSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import { MongoClient } from 'mongodb'
import { Histogram } from './lib/hist.js'
import type { LoaderPool, Totals } from './lib/loader.js'
import type { ClientSpec, SenderSpec } from './lib/protocol.js'
import { sleep } from '../lib/procs.js'
import { machineBusySeconds, sampleProc, type ProcSample } from './lib/proc-stats.js'
import { startTarget, type MqimOptions, type Target, type TargetKind } from './lib/targets.js'
import { ImClient, createBots, createChannel, createGroup, createUsers, openDirects, type Account } from './lib/im.js'

export interface Ctx {
  pool: LoaderPool
  /** processes whose CPU is reported next to the broker's (e.g. FerretDB, MariaDB) */
  storePids?: Record<string, number>
  /** per-measurement scratch directories go under here */
  dir: string
  /** V8 CPU profiles of the mqim server go here when set */
  cpuProfDir?: string
  /** run mqim from another checkout (see MqimOptions.root) */
  mqimRoot?: string
  /** extra node options for the mqim server (see MqimOptions.nodeArgs) */
  mqimNodeArgs?: string[]
  log: (line: string) => void
}

export interface FlowResult {
  scenario: string
  target: TargetKind
  label: string
  round: number
  /** 'max': closed loop, as fast as the windows allow; 'paced': fixed send rate */
  load: 'max' | 'paced'
  /** paced: the offered send rate (messages/s) */
  offeredRate: number | null
  seconds: number
  sendsPerSec: number
  /** sends acknowledged without an error reply (mqim: stored messages) per second */
  storedPerSec: number
  deliveredPerSec: number
  latencyMs: { p50: number, p95: number, p99: number, max: number, samples: number }
  serverCpuSeconds: number
  /** server CPU seconds per wall second (1.0 = one core busy) */
  serverCpuUtil: number
  cpuSecondsPer1kDelivered: number
  /** the broker's read and write system calls per delivered message (socket I/O batching) */
  syscallsPerDelivered: { read: number, write: number }
  /** load generator workers' CPU seconds per wall second, all workers together */
  loaderCpuUtil: number
  /** CPU seconds per wall second of the stores' processes (store scenario: ferretdb, mariadb) */
  storeCpuUtil: Record<string, number>
  /**
   * CPU used by everything else on the machine (other users' jobs), cores: the machine's busy time
   * minus broker, load generator, stores and runner. Above ~0.2 the window was disturbed.
   */
  foreignCpuUtil: number
  peakRssMiB: number
  /** channel: the server's RSS growth per subscriber while they connected and subscribed, KiB */
  kibPerSubscriber?: number
  errors: ErrorCounts
}

export interface ErrorCounts {
  total: number
  failedReplies: number
  failedCodes: Record<string, number>
  publishErrors: number
  clientErrors: number
  /** deliveries expected (stored messages x recipients) that never arrived */
  lost: number
}

interface Shape {
  clients: ClientSpec[]
  senders: SenderSpec[]
  /** deliveries per successful message (every subscribed recipient, the sender's own copy included) */
  fanout: number
  workerOf: (key: string) => number
}

const nonce = (): string => randomBytes(3).toString('hex')

function fakeConvId (i: number): string {
  return `c${String(i).padStart(15, '0')}`
}

// ---------------------------------------------------------------------------------------------
// shapes
// ---------------------------------------------------------------------------------------------

export interface DirectParams { pairs: number, window: number, bodyBytes: number }

async function directShape (ctx: Ctx, target: Target, p: DirectParams): Promise<Shape> {
  const W = ctx.pool.size
  const workerOfPair = new Map<string, number>()
  const clients: ClientSpec[] = []
  const senders: SenderSpec[] = []
  const tag = nonce()
  let accounts: Account[] = []
  let convs: string[] = []
  const ids = Array.from({ length: p.pairs }, (_, i) => [`pa${i}`, `pb${i}`] as const)
  if (target.kind === 'mqim') {
    accounts = await createBots(target, ids.flat())
    const byId = new Map(accounts.map(a => [a.id, a]))
    convs = await openDirects(target, ids.map(([a, b]) => [byId.get(a)!, byId.get(b)!]))
  }
  const secretOf = new Map(accounts.map(a => [a.id, a.secret]))
  ids.forEach(([a, b], i) => {
    const conv = target.kind === 'mqim' ? convs[i] : fakeConvId(i)
    if (conv === undefined) throw new Error(`pair ${i} has no conversation`)
    for (const u of [a, b]) {
      workerOfPair.set(u, i % W) // both ends in one worker: latency on one clock
      const mq = target.kind === 'mqim'
      clients.push({
        key: u,
        url: target.mqttUrl,
        clientId: `${u}:d`,
        username: mq ? u : undefined,
        password: mq ? secretOf.get(u) : undefined,
        clean: true,
        subscribe: mq ? [`im/u/${u}/m`, `im/u/${u}/r/d`] : [`bench/c/${i}`],
        me: u
      })
      senders.push(closedLoopSender(u, mq, conv, `bench/c/${i}`, p, tag))
    }
  })
  return { clients, senders, fanout: 2, workerOf: (k) => workerOfPair.get(k) ?? 0 }
}

/**
 * A sender of the flow scenarios: sends without end, at most `window` messages in flight end to end
 * (one leaves the window when its own copy comes back). mqim: `send` requests; baselines: the
 * envelope published to `rawTopic`.
 */
function closedLoopSender (u: string, mq: boolean, conv: string, rawTopic: string, p: { window: number, bodyBytes: number }, tag: string): SenderSpec {
  return {
    key: u,
    mode: mq ? 'mqim' : 'raw',
    topic: mq ? 'im/req/send' : rawTopic,
    conv,
    from: u,
    window: p.window,
    release: 'echo',
    rate: null,
    bodyBytes: p.bodyBytes,
    count: null,
    idPrefix: `${u}-${tag}`
  }
}

export interface GroupParams {
  members: number
  senders: number
  window: number
  bodyBytes: number
  /** mqim: every changeEvery-th request edits or reacts to the sender's latest message (see SenderSpec). */
  changeEvery?: number
}

async function groupShape (ctx: Ctx, target: Target, p: GroupParams): Promise<Shape> {
  const W = ctx.pool.size
  const ids = Array.from({ length: p.members }, (_, i) => `g${i}`)
  const tag = nonce()
  const mq = target.kind === 'mqim'
  let secretOf = new Map<string, string>()
  let conv = fakeConvId(0)
  if (mq) {
    const accounts = await createBots(target, ids)
    const [owner] = accounts
    if (owner === undefined) throw new Error('a group needs at least one member')
    secretOf = new Map(accounts.map(a => [a.id, a.secret]))
    conv = await createGroup(target, owner, ids.slice(1), 'bench group')
  }
  const index = new Map(ids.map((u, i) => [u, i]))
  const clients: ClientSpec[] = ids.map(u => ({
    key: u,
    url: target.mqttUrl,
    clientId: `${u}:d`,
    username: mq ? u : undefined,
    password: mq ? secretOf.get(u) : undefined,
    clean: true,
    subscribe: mq ? [`im/u/${u}/m`, `im/u/${u}/r/d`] : ['bench/g/0'],
    me: u
  }))
  const senders = ids.slice(0, p.senders).map(u => ({ ...closedLoopSender(u, mq, conv, 'bench/g/0', p, tag), changeEvery: mq ? p.changeEvery ?? null : null }))
  return { clients, senders, fanout: p.members, workerOf: (k) => (index.get(k) ?? 0) % W }
}

export interface ChannelParams { members: number, senders: number, window: number, bodyBytes: number }

async function channelShape (ctx: Ctx, target: Target, p: ChannelParams): Promise<Shape> {
  if (target.kind !== 'mqim') {
    // the same publish to the same subscribers, delivered at QoS 0 as mqim delivers a channel
    const shape = await groupShape(ctx, target, p)
    return { ...shape, clients: shape.clients.map(c => ({ ...c, subscribeQos: 0 })) }
  }
  const W = ctx.pool.size
  const ids = Array.from({ length: p.members }, (_, i) => `ch${i}`)
  const tag = nonce()
  const accounts = await createBots(target, ids)
  const [owner] = accounts
  if (owner === undefined) throw new Error('a channel needs at least one member')
  const secretOf = new Map(accounts.map(a => [a.id, a.secret]))
  const conv = await createChannel(target, owner, ids.slice(1), 'bench channel')
  const index = new Map(ids.map((u, i) => [u, i]))
  const senderIds = new Set(ids.slice(0, p.senders))
  const clients: ClientSpec[] = ids.map(u => ({
    key: u,
    url: target.mqttUrl,
    clientId: `${u}:d`,
    username: u,
    password: secretOf.get(u),
    clean: true,
    // replies are written to the requester whether or not it subscribed; the senders watch for failures
    subscribe: senderIds.has(u) ? [`im/c/${conv}/m`, `im/u/${u}/r/d`] : [`im/c/${conv}/m`],
    me: u
  }))
  const senders = ids.slice(0, p.senders).map(u => closedLoopSender(u, true, conv, '', p, tag))
  return { clients, senders, fanout: p.members, workerOf: (k) => (index.get(k) ?? 0) % W }
}

// ---------------------------------------------------------------------------------------------
// measuring a flow
// ---------------------------------------------------------------------------------------------

function loaderCpu (pool: LoaderPool): number {
  let s = 0
  for (const pid of pool.pids) {
    try { s += sampleProc(pid).cpuSeconds } catch { /* gone */ }
  }
  return s
}

function errorsOf (t: Totals, lost: number): ErrorCounts {
  return {
    total: t.failed + t.publishErrors + t.clientErrors + lost,
    failedReplies: t.failed,
    failedCodes: t.failedCodes,
    publishErrors: t.publishErrors,
    clientErrors: t.clientErrors,
    lost
  }
}

/**
 * One plain message per sender, so every conversation is active before the clock starts (the
 * sequencer loads a conversation's lastSeq from the store on its first message).
 */
async function prime (ctx: Ctx, shape: Shape): Promise<void> {
  await ctx.pool.start(shape.senders.map(s => ({ ...s, count: 1, changeEvery: null, idPrefix: `${s.idPrefix}p` })), shape.workerOf)
  await ctx.pool.waitDone(60_000)
  await ctx.pool.stop(5000)
}

async function connectShape (ctx: Ctx, shape: Shape, concurrency = 50): Promise<void> {
  const r = await ctx.pool.connect(shape.clients, concurrency, (c) => shape.workerOf(c.key))
  if (r.failed > 0) throw new Error(`${r.failed} of ${shape.clients.length} clients failed to connect: ${r.errors.join('; ')}`)
}

interface Window {
  seconds: number
  totals: Totals
  cpu0: ProcSample
  cpu1: ProcSample
  loaderCpuSeconds: number
  storeCpuSeconds: Record<string, number>
  foreignCpuSeconds: number
}

function storeCpu (ctx: Ctx): Record<string, number> {
  const out: Record<string, number> = {}
  for (const [name, pid] of Object.entries(ctx.storePids ?? {})) {
    try { out[name] = sampleProc(pid).cpuSeconds } catch { /* gone */ }
  }
  return out
}

/** Starts senders, warms up, measures one window. The senders keep running afterwards. */
async function measureWindow (ctx: Ctx, target: Target, shape: Shape, senders: SenderSpec[], warmMs: number, measureMs: number): Promise<Window> {
  await ctx.pool.start(senders, shape.workerOf)
  await sleep(warmMs)
  await ctx.pool.mark()
  const m0 = machineBusySeconds()
  const me0 = process.cpuUsage()
  const cpu0 = target.sample()
  const l0 = loaderCpu(ctx.pool)
  const s0 = storeCpu(ctx)
  await sleep(measureMs)
  const r = await ctx.pool.report()
  const cpu1 = target.sample()
  const l1 = loaderCpu(ctx.pool)
  const s1 = storeCpu(ctx)
  const me = process.cpuUsage(me0)
  const m1 = machineBusySeconds()
  const seconds = (cpu1.at - cpu0.at) / 1000
  const storeCpuSeconds: Record<string, number> = {}
  for (const [k, v1] of Object.entries(s1)) {
    const v0 = s0[k]
    if (v0 !== undefined) storeCpuSeconds[k] = v1 - v0
  }
  const ours = (cpu1.cpuSeconds - cpu0.cpuSeconds) + (l1 - l0) + Object.values(storeCpuSeconds).reduce((a, b) => a + b, 0) + (me.user + me.system) / 1e6
  return { seconds, totals: r.window, cpu0, cpu1, loaderCpuSeconds: l1 - l0, storeCpuSeconds, foreignCpuSeconds: Math.max(0, (m1 - m0) - ours) }
}

function resultOf (scenario: string, target: Target, round: number, w: Window, load: 'max' | 'paced', offeredRate: number | null): FlowResult {
  const t = w.totals
  const cpu = w.cpu1.cpuSeconds - w.cpu0.cpuSeconds
  return {
    scenario,
    target: target.kind,
    label: target.label,
    round,
    load,
    offeredRate,
    seconds: w.seconds,
    sendsPerSec: t.acked / w.seconds,
    storedPerSec: (t.acked - t.failed) / w.seconds,
    deliveredPerSec: t.received / w.seconds,
    latencyMs: { p50: t.latency.percentile(50), p95: t.latency.percentile(95), p99: t.latency.percentile(99), max: t.latency.max, samples: t.latency.total },
    serverCpuSeconds: cpu,
    serverCpuUtil: cpu / w.seconds,
    cpuSecondsPer1kDelivered: t.received > 0 ? cpu / (t.received / 1000) : NaN,
    syscallsPerDelivered: { read: (w.cpu1.syscr - w.cpu0.syscr) / t.received, write: (w.cpu1.syscw - w.cpu0.syscw) / t.received },
    loaderCpuUtil: w.loaderCpuSeconds / w.seconds,
    storeCpuUtil: Object.fromEntries(Object.entries(w.storeCpuSeconds).map(([k, v]) => [k, v / w.seconds])),
    foreignCpuUtil: w.foreignCpuSeconds / w.seconds,
    peakRssMiB: w.cpu1.peakRssBytes / 1048576,
    errors: errorsOf(t, 0)
  }
}

/** Stops the senders, waits for in-flight publishes and deliveries; returns deliveries never seen. */
async function drain (ctx: Ctx, fanout: number): Promise<{ lost: number, totals: Totals }> {
  let r = await ctx.pool.stop(15_000)
  const expected = (t: Totals): number => (t.acked - t.failed) * fanout
  let last = -1
  const deadline = Date.now() + 15_000
  while (r.totals.received < expected(r.totals) && Date.now() < deadline) {
    await sleep(200)
    r = await ctx.pool.report()
    if (r.totals.received === last) {
      // nothing arrived for a while: give it a little longer, then stop waiting
      await sleep(1000)
      r = await ctx.pool.report()
      if (r.totals.received === last) break
    }
    last = r.totals.received
  }
  return { lost: Math.max(0, expected(r.totals) - r.totals.received), totals: r.totals }
}

export interface FlowTiming { warmMs: number, measureMs: number }

export function targetDir (ctx: Ctx, scenario: string, kind: TargetKind, round: number): string {
  return path.join(ctx.dir, `${scenario}-${kind}-r${round}`)
}

/** Starts a broker fresh (retried once), runs `fn` on it, stops it (and names its CPU profiles). */
export async function withTarget<T> (ctx: Ctx, kind: TargetKind, dir: string, mqim: MqimOptions, fn: (t: Target) => Promise<T>): Promise<T> {
  const profDir = kind === 'mosquitto' ? undefined : ctx.cpuProfDir
  const before = new Set(profDir === undefined ? [] : readdirSync(profDir))
  const options = { ...mqim, cpuProfDir: profDir, root: ctx.mqimRoot, nodeArgs: ctx.mqimNodeArgs }
  let target: Target
  try {
    target = await startTarget(kind, dir, options)
  } catch (err) {
    // a shared machine can stall or kill a start once: try again before giving up
    ctx.log(`  ${kind} did not start (${(err as Error).message.split('\n')[0]}); retrying once`)
    target = await startTarget(kind, `${dir}-retry`, options)
  }
  try {
    return await fn(target)
  } finally {
    await ctx.pool.reset().catch(() => {})
    await target.stop()
    if (profDir !== undefined) {
      // name the profiles written at exit after the measurement (the main thread's is ".0.001")
      for (const f of readdirSync(profDir)) {
        if (!before.has(f) && f.startsWith('CPU.')) renameSync(path.join(profDir, f), path.join(profDir, `${path.basename(dir)}.${f}`))
      }
    }
  }
}

/**
 * One measurement of a flow scenario on a fresh broker: max load (closed loop), then optionally
 * paced: `paced: 'half'` offers half the send rate just measured (mqim: the p99 target is defined
 * there), a number offers that rate (the baselines get mqim's half rate: CPU per message at equal
 * load).
 */
export async function runFlow (
  ctx: Ctx,
  scenario: string,
  kind: TargetKind,
  round: number,
  makeShape: (t: Target) => Promise<Shape>,
  timing: FlowTiming,
  options: { paced?: 'half' | number | null, mqim?: MqimOptions, perSubscriber?: boolean } = {}
): Promise<FlowResult[]> {
  return await withTarget(ctx, kind, targetDir(ctx, scenario, kind, round), options.mqim ?? { stores: null }, async (target) => {
    const shape = await makeShape(target)
    if (options.perSubscriber === true) await sleep(1000) // setup's work settles
    const rssBefore = target.sample().rssBytes
    await connectShape(ctx, shape)
    if (options.perSubscriber === true) await sleep(1000)
    // what the connected, subscribed clients hold in the server
    const kibPerSubscriber = options.perSubscriber === true ? (target.sample().rssBytes - rssBefore) / 1024 / shape.clients.length : undefined
    await prime(ctx, shape)
    const max = await measureWindow(ctx, target, shape, shape.senders, timing.warmMs, timing.measureMs)
    const atMax = resultOf(scenario, target, round, max, 'max', null)
    const results = [atMax]
    const paced = options.paced ?? null
    if (paced !== null) {
      // let every delivery of the max phase arrive, then offer a fixed send rate
      await drain(ctx, shape.fanout)
      const rate = paced === 'half' ? atMax.sendsPerSec / 2 : paced
      const tag = nonce()
      const senders = shape.senders.map(s => ({ ...s, rate: rate / shape.senders.length, window: s.window * 8, idPrefix: `${s.idPrefix}h${tag}` }))
      const w = await measureWindow(ctx, target, shape, senders, Math.min(timing.warmMs, 1500), timing.measureMs)
      results.push(resultOf(scenario, target, round, w, 'paced', rate))
    }
    const { lost, totals } = await drain(ctx, shape.fanout)
    // errors over the whole connection set (all windows), lost deliveries included
    const errors = errorsOf(totals, lost)
    const peak = target.sample().peakRssBytes / 1048576
    for (const r of results) { r.errors = errors; r.peakRssMiB = peak; if (kibPerSubscriber !== undefined) r.kibPerSubscriber = kibPerSubscriber }
    const others = (r: FlowResult): string => Object.entries(r.storeCpuUtil).map(([k, v]) => `, ${k} ${v.toFixed(2)}`).join('')
    ctx.log(`  ${scenario} ${target.label} r${round}: ${kibPerSubscriber === undefined ? '' : `${kibPerSubscriber.toFixed(1)} KiB/subscriber; `}${results.map(r => `${r.load} ${Math.round(r.deliveredPerSec)} deliveries/s, ${Math.round(r.sendsPerSec)} sends/s, p99 ${r.latencyMs.p99.toFixed(1)} ms, cpu ${r.serverCpuUtil.toFixed(2)} (${(r.cpuSecondsPer1kDelivered * 1000).toFixed(1)} ms/1k, ${r.syscallsPerDelivered.write.toFixed(2)} w/${r.syscallsPerDelivered.read.toFixed(2)} r syscalls per delivery), loader ${r.loaderCpuUtil.toFixed(2)}${others(r)}, other jobs ${r.foreignCpuUtil.toFixed(2)}`).join('; ')}; errors ${errors.total}`)
    return results
  })
}

export async function runDirect (ctx: Ctx, kind: TargetKind, round: number, p: DirectParams, timing: FlowTiming, paced: 'half' | number | null, mqim?: MqimOptions, scenario = 'direct'): Promise<FlowResult[]> {
  return await runFlow(ctx, scenario, kind, round, async t => await directShape(ctx, t, p), timing, { paced, mqim })
}

/** Plain sends in a group (edits and reactions against them: runGroupChanges). */
export async function runGroup (ctx: Ctx, kind: TargetKind, round: number, p: GroupParams, timing: FlowTiming): Promise<FlowResult[]> {
  return await runFlow(ctx, `group${p.members}`, kind, round, async t => await groupShape(ctx, t, p), timing)
}

/**
 * Edits and reactions against plain sends on one mqim broker: the group's shape, measured in
 * windows of plain sends (`group<N>-sends`) and of sends with every changeEvery-th request an edit
 * or a reaction (`group<N>-changes`), in the order sends, changes, changes, sends, so that what
 * drifts during a run (the stored messages, the heap, the machine) weighs on both alike, after a
 * warm-up window that is not counted. The ratio of the two is taken within one broker, not between
 * two brokers started a minute apart.
 */
export async function runGroupChanges (ctx: Ctx, round: number, p: GroupParams & { changeEvery: number }, timing: FlowTiming): Promise<FlowResult[]> {
  const name = `group${p.members}`
  return await withTarget(ctx, 'mqim', targetDir(ctx, `${name}-changes`, 'mqim', round), { stores: null }, async (target) => {
    const shape = await groupShape(ctx, target, p)
    await connectShape(ctx, shape)
    await prime(ctx, shape)
    const results: FlowResult[] = []
    // drain's figures are over the whole connection set: the last one covers every window
    let drained: { lost: number, totals: Totals } | null = null
    // a first window of both kinds, not counted: the first measured window would otherwise carry
    // the warm-up (code not optimized yet, caches and heap still growing) for one side only
    for (const [i, changes] of [null, false, true, true, false].entries()) {
      const tag = `${i}${nonce()}`
      const senders = shape.senders.map(s => ({ ...s, changeEvery: changes === false ? null : p.changeEvery, idPrefix: `${s.idPrefix}w${tag}` }))
      const w = await measureWindow(ctx, target, shape, senders, timing.warmMs, timing.measureMs)
      if (changes !== null) results.push(resultOf(`${name}-${changes ? 'changes' : 'sends'}`, target, round, w, 'max', null))
      drained = await drain(ctx, shape.fanout)
    }
    if (drained === null) throw new Error('no window was measured')
    const errors = errorsOf(drained.totals, drained.lost)
    const peak = target.sample().peakRssBytes / 1048576
    for (const r of results) { r.errors = errors; r.peakRssMiB = peak }
    ctx.log(`  ${name} sends/changes mqim r${round}: ${results.map(r => `${r.scenario.slice(name.length + 1)} ${Math.round(r.deliveredPerSec)} deliveries/s (${r.syscallsPerDelivered.write.toFixed(2)} w/delivery, other jobs ${r.foreignCpuUtil.toFixed(2)})`).join(', ')}; errors ${errors.total}`)
    return results
  })
}

/** One channel of p.members connected subscribers (mqim), against the same publish to the same subscribers (baselines). */
export async function runChannel (ctx: Ctx, kind: TargetKind, round: number, p: ChannelParams, timing: FlowTiming): Promise<FlowResult[]> {
  return await runFlow(ctx, `channel${p.members}`, kind, round, async t => await channelShape(ctx, t, p), timing, { perSubscriber: true })
}

// ---------------------------------------------------------------------------------------------
// connections
// ---------------------------------------------------------------------------------------------

export interface ConnParams { users: number, devicesPerUser: number }

export interface ConnResult {
  scenario: 'connections'
  target: TargetKind
  label: string
  round: number
  connections: number
  failed: number
  connectSeconds: number
  connectsPerSec: number
  connectLatencyMs: { p50: number, p99: number }
  rssBeforeMiB: number
  rssAfterMiB: number
  kibPerConnection: number
  serverCpuSeconds: number
  peakRssMiB: number
  errors: number
}

export async function runConnections (ctx: Ctx, kind: TargetKind, round: number, p: ConnParams): Promise<ConnResult> {
  return await withTarget(ctx, kind, targetDir(ctx, 'connections', kind, round), { stores: null }, async (target) => {
    const mq = kind === 'mqim'
    const userIds = Array.from({ length: p.users }, (_, i) => `cu${i}`)
    // real users with passwords (scrypt): fewer users, many devices each (clientId <user>:<device>)
    const accounts = mq ? await createUsers(target, userIds) : userIds.map(id => ({ id, secret: '' }))
    const W = ctx.pool.size
    // device-major order: the first wave has one device of every user, so each password is
    // verified (scrypt) about once and the cache serves the rest
    const clients: ClientSpec[] = []
    for (let d = 0; d < p.devicesPerUser; d++) {
      for (const a of accounts) {
        clients.push({
          key: `${a.id}:${d}`,
          url: target.mqttUrl,
          clientId: `${a.id}:dev${d}`,
          username: mq ? a.id : undefined,
          password: mq ? a.secret : undefined,
          clean: false,
          subscribe: mq
            ? [`im/u/${a.id}/m`, `im/u/${a.id}/e`, `im/u/${a.id}/r/dev${d}`]
            : [`bench/u/${a.id}/m`, `bench/u/${a.id}/e`, `bench/u/${a.id}/r/dev${d}`],
          me: a.id
        })
      }
    }
    await sleep(1000)
    const before = target.sample()
    const first = await ctx.pool.connect(clients.slice(0, p.users), 25, (_c, i) => i % W)
    const rest = await ctx.pool.connect(clients.slice(p.users), 100, (_c, i) => i % W)
    const connectSeconds = (first.elapsedMs + rest.elapsedMs) / 1000
    await sleep(3000) // let the broker settle (timers, presence events)
    const after = target.sample()
    const report = await ctx.pool.report()
    const connected = first.connected + rest.connected
    const lat = new Histogram()
    lat.merge(first.connectLatency.toData())
    lat.merge(rest.connectLatency.toData())
    const r: ConnResult = {
      scenario: 'connections',
      target: kind,
      label: target.label,
      round,
      connections: connected,
      failed: first.failed + rest.failed,
      connectSeconds,
      connectsPerSec: connected / connectSeconds,
      connectLatencyMs: { p50: lat.percentile(50), p99: lat.percentile(99) },
      rssBeforeMiB: before.rssBytes / 1048576,
      rssAfterMiB: after.rssBytes / 1048576,
      kibPerConnection: connected > 0 ? (after.rssBytes - before.rssBytes) / connected / 1024 : NaN,
      serverCpuSeconds: after.cpuSeconds - before.cpuSeconds,
      peakRssMiB: after.peakRssBytes / 1048576,
      errors: first.failed + rest.failed + report.totals.clientErrors
    }
    if (r.failed > 0) ctx.log(`  connections ${target.label}: ${r.failed} failed: ${[...first.errors, ...rest.errors].slice(0, 3).join('; ')}`)
    ctx.log(`  connections ${target.label} r${round}: ${connected} in ${connectSeconds.toFixed(1)} s (${Math.round(r.connectsPerSec)}/s), ${r.kibPerConnection.toFixed(1)} KiB each`)
    return r
  })
}

// ---------------------------------------------------------------------------------------------
// sync
// ---------------------------------------------------------------------------------------------

export interface SyncParams { conversations: number, messagesPerConversation: number, pageLimit: number }

export interface SyncResult {
  scenario: 'sync' | 'sync-ferret'
  target: 'mqim'
  label: string
  round: number
  messages: number
  conversations: number
  pages: number
  fillSeconds: number
  /** connect + list + every history page */
  syncSeconds: number
  errors: number
  peakRssMiB: number
}

export async function runSync (ctx: Ctx, round: number, p: SyncParams, mqim: MqimOptions = { stores: null }, scenario: SyncResult['scenario'] = 'sync'): Promise<SyncResult> {
  return await withTarget(ctx, 'mqim', targetDir(ctx, scenario, 'mqim', round), mqim, async (target) => {
    const peers = Array.from({ length: p.conversations }, (_, i) => `sp${i}`)
    const [me, ...others] = await createBots(target, ['syncer', ...peers])
    const convs = await openDirects(target, others.map(o => [me, o]))
    // the device is online once, then goes away (clean session: nothing is queued for it)
    const first = await ImClient.connect(target, me, 'phone')
    await first.end()
    // the peers send while it is offline
    const W = ctx.pool.size
    const tag = nonce()
    const clients: ClientSpec[] = others.map(o => ({ key: o.id, url: target.mqttUrl, clientId: `${o.id}:d`, username: o.id, password: o.secret, clean: true, subscribe: [`im/u/${o.id}/r/d`], me: o.id }))
    const index = new Map(others.map((o, i) => [o.id, i]))
    await ctx.pool.connect(clients, 20, (c) => (index.get(c.key) ?? 0) % W)
    const t0 = performance.now()
    await ctx.pool.start(others.map((o, i) => {
      const conv = convs[i]
      if (conv === undefined) throw new Error(`no conversation with ${o.id}`)
      return { key: o.id, mode: 'mqim', topic: 'im/req/send', conv, from: o.id, window: 32, release: 'ack', rate: null, bodyBytes: 100, count: p.messagesPerConversation, idPrefix: `${o.id}-${tag}` }
    }), (k) => (index.get(k) ?? 0) % W)
    const filled = await ctx.pool.waitDone(120_000)
    const fillSeconds = (performance.now() - t0) / 1000
    const expected = p.conversations * p.messagesPerConversation
    let errors = filled.totals.failed + filled.totals.publishErrors + Math.max(0, expected - filled.totals.acked)
    await ctx.pool.stop(5000)
    // reconnect and sync
    const s0 = performance.now()
    const im = await ImClient.connect(target, me, 'phone')
    const listed = await im.request<{ conversations: Array<{ conv: string, lastSeq: number }> }>('list', {})
    let pages = 0
    let received = 0
    await Promise.all(listed.conversations.map(async (c) => {
      let after = 0
      for (;;) {
        const page = await im.request<{ messages: Array<{ seq: number }>, hasMore: boolean }>('history', { conv: c.conv, after, limit: p.pageLimit })
        pages++
        for (const m of page.messages) {
          if (m.seq !== after + 1) errors++ // a gap or a duplicate
          after = m.seq
        }
        received += page.messages.length
        if (!page.hasMore) break
      }
      if (after !== c.lastSeq) errors++
    }))
    const syncSeconds = (performance.now() - s0) / 1000
    await im.end()
    if (received !== expected) errors += Math.abs(expected - received)
    const r: SyncResult = {
      scenario,
      target: 'mqim',
      label: target.label,
      round,
      messages: received,
      conversations: listed.conversations.length,
      pages,
      fillSeconds,
      syncSeconds,
      errors,
      peakRssMiB: target.sample().peakRssBytes / 1048576
    }
    ctx.log(`  ${scenario} ${target.label} r${round}: ${received} messages in ${pages} pages, ${syncSeconds.toFixed(2)} s (fill ${fillSeconds.toFixed(1)} s), errors ${errors}`)
    return r
  })
}

// ---------------------------------------------------------------------------------------------
// raw insert rate of the MongoDB-compatible store
// ---------------------------------------------------------------------------------------------

export interface RawInsertResult {
  scenario: 'raw-insert'
  round: number
  batch: number
  docs: number
  seconds: number
  docsPerSec: number
  batchLatencyMs: { p50: number, p99: number }
  storeCpuUtil: Record<string, number>
}

/**
 * Sequential insertMany of `batch` documents shaped like mqim's messages (same fields, _id and
 * unique (c, s) index, same write concern), for `seconds`: the rate group commit could reach.
 */
export async function runRawInsert (ctx: Ctx, round: number, mongoUrl: string, batch: number, seconds: number, bodyBytes: number): Promise<RawInsertResult> {
  const client = new MongoClient(mongoUrl)
  await client.connect()
  try {
    const coll = client.db(`bench_raw_${nonce()}`).collection('messages')
    await coll.createIndex({ c: 1, s: 1 }, { unique: true, name: 'conv_seq' })
    const convs = 100
    const seqs = new Array<number>(convs).fill(0)
    const body = `${Date.now()}.000|${'x'.repeat(Math.max(0, bodyBytes - 15))}`
    let docs = 0
    let n = 0
    const lat = new Histogram()
    const c0 = storeCpu(ctx)
    const t0 = performance.now()
    const deadline = t0 + seconds * 1000
    while (performance.now() < deadline) {
      const batchDocs = Array.from({ length: batch }, () => {
        const c = n++ % convs
        const s = (seqs[c] ?? 0) + 1
        seqs[c] = s
        const conv = fakeConvId(c)
        return { _id: `${conv}/u${c}/m${s}` as unknown as never, c: conv, s, m: `m${s}`, u: `u${c}`, t: Date.now(), k: 'text', b: body, r: null }
      })
      const b0 = performance.now()
      await coll.insertMany(batchDocs, { ordered: true, writeConcern: { w: 'majority', journal: true } })
      lat.add(performance.now() - b0)
      docs += batch
    }
    const elapsed = (performance.now() - t0) / 1000
    const c1 = storeCpu(ctx)
    const storeCpuUtil: Record<string, number> = {}
    for (const [k, v1] of Object.entries(c1)) {
      const v0 = c0[k]
      if (v0 !== undefined) storeCpuUtil[k] = (v1 - v0) / elapsed
    }
    const r: RawInsertResult = { scenario: 'raw-insert', round, batch, docs, seconds: elapsed, docsPerSec: docs / elapsed, batchLatencyMs: { p50: lat.percentile(50), p99: lat.percentile(99) }, storeCpuUtil }
    ctx.log(`  raw insertMany (${batch}/batch) r${round}: ${Math.round(r.docsPerSec)} docs/s, batch p50 ${r.batchLatencyMs.p50.toFixed(1)} ms, ferretdb cpu ${(storeCpuUtil.ferretdb ?? NaN).toFixed(2)}`)
    await coll.drop().catch(() => {})
    return r
  } finally {
    await client.close()
  }
}
