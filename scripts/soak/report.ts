/** The soak's one JSON line: figures, slopes and targets. */
import type { World } from './device.js'
import { pct, round, slope, type GcTrace, type Metrics, type Op, type Sample } from './metrics.js'
import type { Mix } from './mix.js'
import type { Calibration } from '../bench/lib/calibrate.js'

export interface Target { value: number | null, goal: string, met: boolean }

export interface ReportInput {
  opts: { minutes: number, rate: number, users: number, cluster: boolean, seed: number }
  mix: Mix
  metrics: Metrics
  samples: Sample[]
  loadMs: number
  /** /healthz polled with every sample: how often a node answered other than 200 */
  health: { samples: number, not_ok: number, first_not_ok: string | null }
  nodes: string[]
  nodeExits: string[]
  world: World
  gcs: GcTrace[]
  /** Each node's /metrics text at the end of the load (null: it did not answer). */
  promText?: Array<string | null>
  /** Each node's /metrics text when the last minute of the load began (null: it did not answer). */
  promTextLastMinute?: Array<string | null>
  /** The machine's own speed before the services started and after the nodes stopped (scripts/bench/lib/calibrate.ts); `after` is set last. */
  calibration?: { before: Calibration | null, after: Calibration | null }
}

/** A histogram's cumulative bucket counts by upper bound (seconds; +Inf as Infinity), summed over its label sets. */
export function histogramBuckets (text: string | null, name: string): Map<number, number> {
  const buckets = new Map<number, number>()
  const prefix = `${name}_bucket{`
  for (const line of (text ?? '').split('\n')) {
    if (!line.startsWith(prefix)) continue
    const m = /le="([^"]+)"\} ([\d.e+-]+)$/.exec(line)
    if (m === null) continue
    const le = m[1] === '+Inf' ? Number.POSITIVE_INFINITY : Number(m[1])
    const n = Number(m[2])
    if (!Number.isFinite(n) || Number.isNaN(le)) continue
    buckets.set(le, (buckets.get(le) ?? 0) + n)
  }
  return buckets
}

/**
 * The q-quantile (0 < q < 1) in ms of what a histogram counted between two scrapes, interpolated
 * linearly inside its bucket as Prometheus' histogram_quantile does (so it is only as fine as the
 * buckets: between 50 and 100 ms, say); the count is `n`. A quantile in the +Inf bucket is the
 * highest finite bound, marked `above`. Null without observations in between, or without a finite
 * bucket. A bucket lower after than before means a restart in between: what it counted since.
 */
export function quantileBetween (before: Map<number, number>, after: Map<number, number>, q: number): { ms: number, n: number, above?: true } | null {
  const bounds = [...after.keys()].sort((a, b) => a - b)
  // a bucket that went down: the process restarted in between, and counted from 0 since (as
  // Prometheus takes a counter reset)
  const reset = bounds.some(le => (after.get(le) ?? 0) < (before.get(le) ?? 0))
  const counts = bounds.map(le => (after.get(le) ?? 0) - (reset ? 0 : before.get(le) ?? 0))
  const n = counts.at(-1) ?? 0
  // (no finite bucket: nothing to tell)
  if (n <= 0 || !bounds.some(Number.isFinite)) return null
  const rank = q * n
  let lower = 0
  let below = 0
  for (let i = 0; i < bounds.length; i++) {
    const le = bounds[i] as number
    const c = counts[i] as number
    if (c >= rank) {
      if (!Number.isFinite(le)) return { ms: round(lower * 1000, 1), n, above: true }
      const within = c - below
      const at = within <= 0 ? le : lower + (le - lower) * ((rank - below) / within)
      return { ms: round(at * 1000, 1), n }
    }
    lower = le
    below = c
  }
  return null
}

/**
 * Where the last minute's send latency went, per node: the server's own part (a send reaching the
 * sequencer to its entry stored, mqim_send_commit_seconds between the two scrapes), which the
 * generator's figure includes along with the way in, the reply's way out and its own event loop.
 */
function serverCommitLastMinute (before: Array<string | null> | undefined, after: Array<string | null> | undefined, nodes: string[]) {
  if (before === undefined || after === undefined) return null
  return nodes.map((id, i) => {
    const b = histogramBuckets(before[i] ?? null, 'mqim_send_commit_seconds')
    const a = histogramBuckets(after[i] ?? null, 'mqim_send_commit_seconds')
    const p50 = before[i] == null ? null : quantileBetween(b, a, 0.5)
    const p99 = before[i] == null ? null : quantileBetween(b, a, 0.99)
    return { id, p50_ms: p50?.ms ?? null, p99_ms: p99?.ms ?? null, ...(p99?.above === true ? { p99_above_buckets: true } : {}), n: p99?.n ?? 0 }
  })
}

/**
 * Store calls over the whole run, summed over the nodes, from mqim_store_operation_seconds:
 * `store.op` -> calls per second of load and mean ms, the `top` most called first.
 */
export function storeOps (texts: Array<string | null>, seconds: number, top = 15): Record<string, { per_s: number, mean_ms: number }> {
  const count = new Map<string, number>()
  const sum = new Map<string, number>()
  for (const text of texts) {
    for (const line of (text ?? '').split('\n')) {
      const m = /^mqim_store_operation_seconds_(count|sum)\{store="(\w+)",op="(\w+)"\} ([\d.e+-]+)$/.exec(line)
      if (m === null) continue
      const key = `${m[2] ?? ''}.${m[3] ?? ''}`
      const into = m[1] === 'count' ? count : sum
      into.set(key, (into.get(key) ?? 0) + Number(m[4]))
    }
  }
  return Object.fromEntries([...count].sort((a, b) => b[1] - a[1]).slice(0, top)
    .map(([key, n]) => [key, { per_s: round(n / seconds, 1), mean_ms: round(((sum.get(key) ?? 0) / Math.max(1, n)) * 1000, 1) }]))
}

/** MB/min over the samples after the warm-up. */
function slopeOf (samples: Sample[], warmupS: number, value: (s: Sample) => number | null): number | null {
  const points: Array<[number, number]> = []
  for (const s of samples) {
    const v = value(s)
    if (s.t >= warmupS && v !== null) points.push([s.t / 60, v])
  }
  const k = slope(points)
  return k === null ? null : round(k, 2)
}

function mean (values: Array<number | null | undefined>): number | null {
  const v = values.filter((x): x is number => typeof x === 'number')
  return v.length === 0 ? null : round(v.reduce((a, b) => a + b, 0) / v.length, 1)
}

/** Mean main-thread ms of a node's major GCs; null without one. */
function meanGcMs (gc: GcTrace | undefined): number | null {
  return gc === undefined || gc.majorGcs === 0 ? null : round(gc.majorGcMs / gc.majorGcs, 1)
}

export function buildReport (r: ReportInput) {
  const { metrics, mix, samples, opts } = r
  const seconds = r.loadMs / 1000
  const minutes = opts.minutes
  const last = minutes - 1
  const warmupS = Math.min(60, (minutes * 60) / 3)
  const lat = (op: Op, m: number): { p50: number | null, p99: number | null, n: number } => {
    const h = metrics.minute(op, m)
    return { p50: pct(h, 50), p99: pct(h, 99), n: h?.total ?? 0 }
  }
  const sendsOk = metrics.ok.send ?? 0
  const achieved = round(sendsOk / seconds, 1)
  const c = metrics.counts
  const nodes = r.nodes.map((id, i) => ({
    id,
    rss_start_mb: samples.find(s => s.t >= warmupS)?.nodes[i]?.rssMb ?? null,
    rss_end_mb: samples.at(-1)?.nodes[i]?.rssMb ?? null,
    rss_slope_mb_per_min: slopeOf(samples, warmupS, s => s.nodes[i]?.rssMb ?? null),
    heap_after_gc_end_mb: samples.at(-1)?.nodes[i]?.heapAfterGcMb ?? null,
    heap_after_gc_slope_mb_per_min: slopeOf(samples, warmupS, s => s.nodes[i]?.heapAfterGcMb ?? null),
    major_gcs: r.gcs[i]?.majorGcs ?? 0,
    major_gc_main_thread_ms_mean: meanGcMs(r.gcs[i]),
    cpu_pct_mean: mean(samples.map(s => s.nodes[i]?.cpuPct))
  }))
  const maxOf = (vals: Array<number | null>): number | null => {
    const v = vals.filter((x): x is number => x !== null)
    return v.length === 0 ? null : Math.max(...v)
  }
  const heapSlope = maxOf(nodes.map(n => n.heap_after_gc_slope_mb_per_min))
  const rssSlope = nodes.every(n => n.rss_slope_mb_per_min !== null) ? round(nodes.reduce((a, n) => a + (n.rss_slope_mb_per_min ?? 0), 0), 2) : null
  const first = { send: lat('send', 0), read: lat('read', 0) }
  const lastMin = { send: lat('send', last), read: lat('read', last) }
  const unexpected = metrics.unexpectedTotal()
  // the 10 s samples whose window lies (mostly) in the last minute
  const lastMinuteSamples = samples.filter(s => s.t >= last * 60 + 5)
  const p99Last = lastMin.send.p99
  const p99First = first.send.p99
  const targets = {
    achieved_sends_per_s: { value: achieved, goal: `>= ${round(opts.rate * 0.98, 1)} (98 % of offered)`, met: achieved >= opts.rate * 0.98 },
    send_p99_last_vs_first: {
      value: p99Last === null || p99First === null || p99First === 0 ? null : round(p99Last / p99First, 2),
      goal: '<= 2 (last minute p99 / first minute p99)',
      met: p99Last !== null && p99First !== null && p99Last <= 2 * p99First
    },
    send_p99_last_minute_ms: { value: p99Last, goal: '<= 100', met: p99Last !== null && p99Last <= 100 },
    heap_after_gc_slope_mb_per_min: { value: heapSlope, goal: '<= 1 (every node)', met: heapSlope !== null && heapSlope <= 1 },
    unexpected_errors: { value: unexpected, goal: '= 0', met: unexpected === 0 }
  } satisfies Record<string, Target>
  const perMinute = Array.from({ length: minutes }, (_, m) => {
    const s = lat('send', m)
    const rd = lat('read', m)
    return {
      minute: m + 1,
      sends_ok_per_s: round(metrics.okInMinute('send', m) / 60, 1),
      send_p50: s.p50,
      send_p99: s.p99,
      reads_ok_per_s: round(metrics.okInMinute('read', m) / 60, 1),
      read_p50: rd.p50,
      read_p99: rd.p99,
      list_p99: lat('list', m).p99,
      history_p99: lat('history', m).p99,
      connect_p99: lat('connect', m).p99
    }
  })
  return {
    mode: opts.cluster ? 'cluster' : 'single',
    nodes: r.nodes.length,
    duration_s: round(seconds, 1),
    users: opts.users,
    seed: opts.seed,
    conversations: { groups: r.world.groups.length, directs: r.world.directs.length, group_members: r.world.groups.reduce((a, g) => a + g.members.length, 0) },
    offered_sends_per_s: opts.rate,
    achieved_sends_per_s: achieved,
    sends: {
      due: mix.sendsDue,
      ok: sendsOk,
      not_made_window_full: mix.notSentWindowFull,
      not_made_no_member_online: mix.notSentNoMemberOnline
    },
    send_ms: { first_minute: first.send, last_minute: lastMin.send },
    read_ms: { first_minute: first.read, last_minute: lastMin.read },
    reads: { ok: metrics.ok.read ?? 0, per_s: round((metrics.ok.read ?? 0) / seconds, 1), deferred_unacked: c.reads_deferred ?? 0 },
    deliveries: c.deliveries ?? 0,
    events: Object.fromEntries(Object.entries(c).filter(([k]) => k.startsWith('events_')).map(([k, v]) => [k.slice(7), v])),
    reconnects: {
      done: c.reconnects ?? 0,
      clean: c.reconnects_clean ?? 0,
      persistent: c.reconnects_persistent ?? 0,
      failed: c.reconnects_failed ?? 0,
      skipped_no_idle_device: c.reconnects_skipped ?? 0,
      unplanned: c.reconnects_unplanned ?? 0
    },
    lists: { done: c.lists ?? 0, pages: c.list_pages ?? 0 },
    histories: { done: c.histories ?? 0, pages: c.history_pages ?? 0, messages: c.history_messages ?? 0, truncated: c.history_truncated ?? 0 },
    changes: { direct: c.changes_direct ?? 0, add: c.changes_add ?? 0, remove: c.changes_remove ?? 0, skipped: c.changes_skipped ?? 0 },
    store_ops: storeOps(r.promText ?? [], seconds),
    rss_slope_mb_per_min: rssSlope,
    heap_after_gc_slope_mb_per_min: heapSlope,
    slope_warmup_s: warmupS,
    per_node: nodes,
    cpu_pct_mean: {
      ferretdb: mean(samples.map(s => s.cpuPct.ferretdb)),
      mariadb: mean(samples.map(s => s.cpuPct.mariadb)),
      ...(opts.cluster ? { redis: mean(samples.map(s => s.cpuPct.redis)) } : {}),
      generator: mean(samples.map(s => s.cpuPct.generator)),
      other: mean(samples.map(s => s.otherPct)),
      steal: mean(samples.map(s => s.stealPct)),
      machine: mean(samples.map(s => s.machinePct))
    },
    generator_loop_delay_ms: { p99_max: maxOf(samples.map(s => s.loopP99Ms)), max: maxOf(samples.map(s => s.loopMaxMs)) },
    calibration: r.calibration ?? { before: null, after: null },
    last_minute: {
      server_send_commit_ms: serverCommitLastMinute(r.promTextLastMinute, r.promText, r.nodes),
      generator_loop_delay_p99_max_ms: maxOf(lastMinuteSamples.map(s => s.loopP99Ms)),
      machine_pct: mean(lastMinuteSamples.map(s => s.machinePct)),
      other_pct: mean(lastMinuteSamples.map(s => s.otherPct)),
      steal_pct: mean(lastMinuteSamples.map(s => s.stealPct))
    },
    errors: metrics.errors,
    expected_errors: metrics.expected,
    healthz: r.health,
    node_exits: r.nodeExits,
    per_minute: perMinute,
    targets,
    all_targets_met: Object.values(targets).every(t => t.met)
  }
}
