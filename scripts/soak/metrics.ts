/**
 * The soak's figures: latencies per operation bucketed per minute of the run (histograms, so the
 * memory does not grow with the number of requests), outcome counts by operation and code, and
 * every 10 s the servers' RSS, heap after the last full GC (from --trace-gc), CPU of the servers,
 * the services and the load generator itself.
 */
import os from 'node:os'
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks'
import { Histogram } from '../bench/lib/hist.js'
import { sampleProc, machineBusySeconds, machineStealSeconds } from '../bench/lib/proc-stats.js'

const CORES = Math.max(1, os.availableParallelism())

export type Op = 'send' | 'read' | 'list' | 'history' | 'connect' | 'direct' | 'add-members' | 'remove-member'

/** Latency and outcome counts of every operation, per minute of the load. */
export class Metrics {
  /** op -> minute -> histogram (answered requests, and timeouts at the timeout value) */
  private readonly hists = new Map<Op, Histogram[]>()
  /** This 10 s window's histograms, for the progress lines. */
  private window = new Map<Op, Histogram>()
  /** `${op}:${code}` -> count of unexpected failures (error replies, timeouts, lost connections) */
  readonly errors: Record<string, number> = {}
  /** The same for failures the mix provokes itself (e.g. NOT_MEMBER right after a removal). */
  readonly expected: Record<string, number> = {}
  /** op -> successful requests */
  readonly ok: Record<string, number> = {}
  /** op -> successful requests per minute (by publish time) */
  private readonly okPerMinute = new Map<Op, number[]>()
  /** Counters without latency (sends not made, reconnects, sync pages, ...). */
  readonly counts: Record<string, number> = {}
  private start = 0

  begin (now: number): void { this.start = now }
  get started (): number { return this.start }

  minuteOf (t: number): number {
    return Math.max(0, Math.floor((t - this.start) / 60_000))
  }

  count (name: string, n = 1): void {
    this.counts[name] = (this.counts[name] ?? 0) + n
  }

  /** A request published at `t0` (performance/Date ms) that took `ms` and succeeded. */
  success (op: Op, t0: number, ms: number): void {
    this.ok[op] = (this.ok[op] ?? 0) + 1
    this.record(op, t0, ms)
    if (t0 < this.start) return
    let perMinute = this.okPerMinute.get(op)
    if (perMinute === undefined) this.okPerMinute.set(op, perMinute = [])
    const m = this.minuteOf(t0)
    perMinute[m] = (perMinute[m] ?? 0) + 1
  }

  /** Successful requests of `op` published in minute `m`. */
  okInMinute (op: Op, m: number): number {
    return this.okPerMinute.get(op)?.[m] ?? 0
  }

  /** A failure; `latencyMs` (the timeout, or the time to an error reply) is recorded for answered/timed-out requests. */
  failure (op: Op, code: string, expected: boolean, t0?: number, latencyMs?: number): void {
    const key = `${op}:${code}`
    const into = expected ? this.expected : this.errors
    into[key] = (into[key] ?? 0) + 1
    if (t0 !== undefined && latencyMs !== undefined) this.record(op, t0, latencyMs)
  }

  private record (op: Op, t0: number, ms: number): void {
    if (t0 < this.start) return // set-up traffic
    let perMinute = this.hists.get(op)
    if (perMinute === undefined) this.hists.set(op, perMinute = [])
    const m = this.minuteOf(t0)
    let h = perMinute[m]
    if (h === undefined) perMinute[m] = h = new Histogram()
    h.add(ms)
    let w = this.window.get(op)
    if (w === undefined) this.window.set(op, w = new Histogram())
    w.add(ms)
  }

  minute (op: Op, m: number): Histogram | undefined {
    return this.hists.get(op)?.[m]
  }

  /** This window's histograms; starts a new window. */
  takeWindow (): Map<Op, Histogram> {
    const w = this.window
    this.window = new Map()
    return w
  }

  unexpectedTotal (): number {
    return Object.values(this.errors).reduce((a, b) => a + b, 0)
  }
}

export function pct (h: Histogram | undefined, p: number): number | null {
  if (h === undefined || h.total === 0) return null
  return round(h.percentile(p), 1)
}

export function round (x: number, digits = 2): number {
  const f = 10 ** digits
  return Math.round(x * f) / f
}

/** Least-squares slope of y over x (null with fewer than 2 points or no spread in x). */
export function slope (points: Array<[number, number]>): number | null {
  if (points.length < 2) return null
  const n = points.length
  const mx = points.reduce((a, [x]) => a + x, 0) / n
  const my = points.reduce((a, [, y]) => a + y, 0) / n
  let sxx = 0
  let sxy = 0
  for (const [x, y] of points) {
    sxx += (x - mx) ** 2
    sxy += (x - mx) * (y - my)
  }
  return sxx === 0 ? null : sxy / sxx
}

/**
 * The heap size after the last full GC, from one node's --trace-gc lines. Node prints them for
 * every isolate of the process, each line tagged `[pid:0x<isolate>]`: besides the main one there
 * is at least the module-loader thread of `--import tsx` (a heap of a few MB). The main isolate is
 * the one with the most GCs (it does nearly all the allocating).
 */
export class GcTrace {
  private readonly isolates = new Map<string, Isolate>()

  private get main (): Isolate | undefined {
    let best: Isolate | undefined
    for (const i of this.isolates.values()) if (best === undefined || i.gcs > best.gcs) best = i
    return best
  }

  /** MB after the most recent Mark-Compact of the main isolate, null until its first one. */
  get lastAfterMb (): number | null { return this.main?.lastAfterMb ?? null }
  get majorGcs (): number { return this.main?.majorGcs ?? 0 }
  /**
   * Main-thread ms of the main isolate's Mark-Compacts, summed: each one's pause and its
   * incremental marking steps before it (what delays the node's requests; V8's marking threads
   * take CPU besides).
   */
  get majorGcMs (): number { return this.main?.majorGcMs ?? 0 }

  /** Takes a stdout line; true when it was a GC trace line (consumed). */
  line (line: string): boolean {
    // "[pid:0x...]  1234 ms: Mark-Compact 45.2 (60.1) -> 30.1 (61.0) MB, pooled: 0 MB, 19.39 / 0.09 ms
    //  (+ 73.1 ms in 67 steps since start of marking, ...) ..."
    const tag = /^\[\d+:(0x[0-9a-f]+)\]\s+[\d.]+ ms: /.exec(line)
    if (tag === null) return false
    const key = tag[1] as string
    let isolate = this.isolates.get(key)
    if (isolate === undefined) this.isolates.set(key, isolate = { gcs: 0, majorGcs: 0, majorGcMs: 0, lastAfterMb: null })
    isolate.gcs++
    const m = / Mark-Compact(?: \(reduce\))? [\d.]+ \([\d.]+\) -> ([\d.]+) \([\d.]+\) MB/.exec(line)
    if (m !== null) {
      isolate.lastAfterMb = Number(m[1])
      isolate.majorGcs++
      const pause = / MB, (?:pooled: [\d.]+ MB, )?([\d.]+) \/ [\d.]+ ms/.exec(line)
      const steps = /\(\+ ([\d.]+) ms in \d+ steps/.exec(line)
      isolate.majorGcMs += (pause === null ? 0 : Number(pause[1])) + (steps === null ? 0 : Number(steps[1]))
    }
    return true
  }
}

interface Isolate { gcs: number, majorGcs: number, majorGcMs: number, lastAfterMb: number | null }

export interface ProcRef { name: string, pid: number }

export interface Sample {
  /** seconds since the load started */
  t: number
  /** per server node */
  nodes: Array<{ id: string, rssMb: number | null, heapAfterGcMb: number | null, cpuPct: number | null }>
  /** CPU % (of one core) of the services and of the load generator over the last window */
  cpuPct: Record<string, number | null>
  /** whole machine busy, % of all cores (steal included) */
  machinePct: number | null
  /**
   * What the machine was busy with besides the soak's own processes (nodes, services, generator),
   * % of one core: the kernel's network work for them, other jobs, and steal (next)
   */
  otherPct: number | null
  /** CPU time the hypervisor gave to other machines, % of one core (a shared host) */
  stealPct: number | null
  /** the load generator's event-loop delay over the window */
  loopP99Ms: number
  loopMaxMs: number
}

/** Samples the processes every `intervalMs`; keeps every sample (a few hundred over a long run). */
export class Sampler {
  readonly samples: Sample[] = []
  private timer: NodeJS.Timeout | null = null
  private prevCpu = new Map<number, number>()
  private prevGen = process.cpuUsage()
  private prevMachine: number | null = null
  private prevSteal: number | null = null
  private prevAt = 0
  private readonly loop: IntervalHistogram

  constructor (
    private readonly nodes: Array<{ id: string, pid: () => number | undefined, gc: GcTrace }>,
    private readonly services: ProcRef[],
    private readonly t0: () => number
  ) {
    this.loop = monitorEventLoopDelay({ resolution: 10 })
  }

  start (intervalMs: number, onSample: (s: Sample) => void): void {
    this.loop.enable()
    this.baseline()
    this.timer = setInterval(() => onSample(this.take()), intervalMs)
  }

  stop (): void {
    if (this.timer !== null) clearInterval(this.timer)
    this.timer = null
    this.loop.disable()
  }

  private cpuOf (pid: number | undefined): number | null {
    if (pid === undefined) return null
    try {
      return sampleProc(pid).cpuSeconds
    } catch {
      return null
    }
  }

  private baseline (): void {
    this.prevAt = performance.now()
    for (const n of this.nodes) {
      const pid = n.pid()
      const cpu = this.cpuOf(pid)
      if (pid !== undefined && cpu !== null) this.prevCpu.set(pid, cpu)
    }
    for (const s of this.services) {
      const cpu = this.cpuOf(s.pid)
      if (cpu !== null) this.prevCpu.set(s.pid, cpu)
    }
    this.prevGen = process.cpuUsage()
    try { this.prevMachine = machineBusySeconds() } catch { this.prevMachine = null }
    try { this.prevSteal = machineStealSeconds() } catch { this.prevSteal = null }
  }

  /** CPU % of `pid` since the previous sample. */
  private cpuPct (pid: number | undefined, seconds: number): number | null {
    if (pid === undefined) return null
    const now = this.cpuOf(pid)
    if (now === null) return null
    const prev = this.prevCpu.get(pid)
    this.prevCpu.set(pid, now)
    return prev === undefined ? null : round(100 * (now - prev) / seconds, 1)
  }

  take (): Sample {
    const at = performance.now()
    const seconds = Math.max(0.001, (at - this.prevAt) / 1000)
    this.prevAt = at
    const nodes = this.nodes.map(n => {
      const pid = n.pid()
      let rssMb: number | null = null
      try {
        if (pid !== undefined) rssMb = round(sampleProc(pid).rssBytes / 1048576, 1)
      } catch { /* gone */ }
      return { id: n.id, rssMb, heapAfterGcMb: n.gc.lastAfterMb, cpuPct: this.cpuPct(pid, seconds) }
    })
    const cpuPct: Record<string, number | null> = {}
    for (const s of this.services) cpuPct[s.name] = this.cpuPct(s.pid, seconds)
    const gen = process.cpuUsage(this.prevGen)
    this.prevGen = process.cpuUsage()
    cpuPct.generator = round(100 * (gen.user + gen.system) / 1e6 / seconds, 1)
    let machinePct: number | null = null
    let stealPct: number | null = null
    try {
      const busy = machineBusySeconds()
      if (this.prevMachine !== null) machinePct = round(100 * (busy - this.prevMachine) / seconds / CORES, 1)
      this.prevMachine = busy
      const steal = machineStealSeconds()
      if (this.prevSteal !== null && Number.isFinite(steal)) stealPct = round(100 * (steal - this.prevSteal) / seconds, 1)
      this.prevSteal = Number.isFinite(steal) ? steal : null
    } catch { /* no /proc/stat */ }
    const ours = [...nodes.map(n => n.cpuPct), ...Object.values(cpuPct)]
    const otherPct = machinePct === null || ours.some(v => v === null) ? null : round(machinePct * CORES - ours.reduce((a: number, v) => a + (v ?? 0), 0), 1)
    const sample: Sample = {
      t: round((Date.now() - this.t0()) / 1000, 1),
      nodes,
      cpuPct,
      machinePct,
      otherPct,
      stealPct,
      loopP99Ms: round(this.loop.percentile(99) / 1e6, 1),
      loopMaxMs: round(this.loop.max / 1e6, 1)
    }
    this.loop.reset()
    this.samples.push(sample)
    return sample
  }
}
