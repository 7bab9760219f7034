/**
 * How fast the machine itself is, measured the same way around a benchmark's load, so that runs
 * on different days (or a run whose figures moved) can be told apart from a change in the code:
 * on this shared 2-core machine the same code and load have taken about twice the CPU on one day
 * as on the night before (inferred from the nodes' CPU share; nothing measured the machine then).
 *
 * - `cpu_ms`, `cpu_ms_min`: a fixed single-threaded workload (JSON encoding and decoding of
 *   message-like objects, what a node does most of besides system calls), the median and the
 *   fastest of 5 rounds after one round of warm-up (noise only slows a round: the fastest is the
 *   steadier figure); `cpu_others_pct`, the CPU the rest of the machine used meanwhile (% of one
 *   core, /proc/stat: near 0 on an idle machine; a reading taken beside other work says so).
 * - `loopback_rtt_us`: p50/p99 (to about 1 %, hist.ts) of sequential round trips of 32 bytes over TCP on 127.0.0.1 with
 *   a child process that echoes them: two system calls each way, a wake-up of the other process
 *   and the scheduler, which is what every hop of a send (client, node, store, Redis) pays.
 *
 * The soak takes it as it starts (before its services) and once its load and nodes have stopped
 * (the databases still up, idle). Lower is faster; one reading can be half again as slow for a few
 * seconds on this shared machine, so compare runs by several readings, with their `other` CPU.
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'
import { machineBusySeconds } from './proc-stats.js'
import { Histogram, median } from './hist.js'

export interface Calibration {
  cpu_ms: number
  cpu_ms_min: number
  /** null where /proc/stat cannot be read */
  cpu_others_pct: number | null
  loopback_rtt_us: { p50: number, p99: number, n: number }
}

export interface CalibrationOptions {
  /** Objects encoded and decoded per CPU round (default 40,000). */
  cpuObjects?: number
  /** Loopback round trips (default 4,000; the first 5 % are left out as warm-up). */
  roundTrips?: number
  /** The loopback part is given up (and its child killed) after this long (default 30 s; 1 ms to 10 minutes). */
  timeoutMs?: number
}

/** The echo server run in the child: prints its port, then echoes every byte until stdin closes. */
const ECHO = "const s=require('net').createServer(c=>{c.setNoDelay(true);c.on('data',d=>c.write(d));c.on('error',()=>{})});" +
  "s.listen(0,'127.0.0.1',()=>process.stdout.write(s.address().port+'\\n'));process.stdin.on('end',()=>process.exit(0));process.stdin.resume()"

function machineBusyOrNull (): number | null {
  try {
    const s = machineBusySeconds()
    return Number.isFinite(s) ? s : null
  } catch {
    return null
  }
}

/** Milliseconds of one round of the CPU workload. */
export function cpuRound (objects: number): number {
  const t0 = performance.now()
  let check = 0
  for (let i = 0; i < objects; i++) {
    const m = { conv: `g${i % 97}`, seq: i, msgId: `m-${i}`, from: `user${i % 300}`, kind: 'text', body: `hello ${i} `.repeat(4), ts: 1_767_225_600_000 + i }
    const back = JSON.parse(JSON.stringify(m)) as { seq: number }
    check += back.seq
  }
  // (the result is used: the loop cannot be optimized away)
  if (check < 0) throw new Error('unreachable')
  return performance.now() - t0
}

/** Sequential round trips to an echo child, the warm-up left out. */
async function loopback (roundTrips: number, timeoutMs: number): Promise<Histogram> {
  const child = spawn(process.execPath, ['-e', ECHO], { stdio: ['pipe', 'pipe', 'ignore'] })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, timeoutMs)
  let socket: net.Socket | undefined
  try {
    const port = await new Promise<number>((resolve, reject) => {
      let out = ''
      child.stdout.setEncoding('utf8')
      child.stdout.on('data', (d: string) => {
        out += d
        const n = Number.parseInt(out, 10)
        if (out.includes('\n') && Number.isInteger(n)) resolve(n)
      })
      child.once('exit', (code) => { reject(new Error(`the echo process exited (${String(code)}) before it listened`)) })
      child.once('error', reject)
    })
    const s = net.connect(port, '127.0.0.1')
    socket = s
    s.setNoDelay(true)
    await once(s, 'connect')
    const ping = Buffer.alloc(32, 7)
    const times = new Histogram()
    const warmUp = Math.floor(roundTrips / 20)
    let done = 0
    let got = 0
    let sent = 0n
    let next: (() => void) | null = null
    s.on('data', (d: Buffer) => {
      got += d.length
      if (got >= 32) {
        got -= 32
        if (done++ >= warmUp) times.add(Number(process.hrtime.bigint() - sent) / 1e6)
        next?.()
      }
    })
    const closed = once(s, 'close').then(() => { throw new Error('the echo connection closed') })
    // (it also closes when this is done: not an error then)
    closed.catch(() => {})
    for (let i = 0; i < roundTrips; i++) {
      const back = new Promise<void>(resolve => { next = resolve })
      sent = process.hrtime.bigint()
      s.write(ping)
      await Promise.race([back, closed])
    }
    return times
  } finally {
    clearTimeout(timer)
    socket?.destroy()
    child.stdin.end()
    if (child.exitCode === null && child.signalCode === null) {
      const exited = once(child, 'exit')
      const kill = setTimeout(() => { child.kill('SIGKILL') }, 2000)
      await exited
      clearTimeout(kill)
    }
  }
}

export async function calibrate (options: CalibrationOptions = {}): Promise<Calibration> {
  const objects = options.cpuObjects ?? 40_000
  const roundTrips = options.roundTrips ?? 4000
  if (!Number.isInteger(objects) || objects < 1) throw new RangeError(`cpuObjects must be a positive integer, not ${objects}`)
  if (!Number.isInteger(roundTrips) || roundTrips < 20) throw new RangeError(`roundTrips must be an integer of at least 20, not ${roundTrips}`)
  const timeoutMs = options.timeoutMs ?? 30_000
  if (!Number.isFinite(timeoutMs) || timeoutMs < 1 || timeoutMs > 600_000) throw new RangeError(`timeoutMs must be between 1 and 600,000, not ${timeoutMs}`)
  cpuRound(objects) // warm-up: optimized before it is timed
  const busy0 = machineBusyOrNull()
  const own0 = process.cpuUsage()
  const wall0 = performance.now()
  const rounds = Array.from({ length: 5 }, () => cpuRound(objects))
  const wallS = (performance.now() - wall0) / 1000
  const ownS = ((u) => (u.user + u.system) / 1e6)(process.cpuUsage(own0))
  const busy1 = machineBusyOrNull()
  const others = busy0 === null || busy1 === null || wallS <= 0 ? null : Math.max(0, (busy1 - busy0 - ownS) / wallS * 100)
  const rtts = await loopback(roundTrips, timeoutMs)
  const round1 = (x: number): number => Math.round(x * 10) / 10
  return {
    cpu_ms: round1(median(rounds)),
    cpu_ms_min: round1(Math.min(...rounds)),
    cpu_others_pct: others === null ? null : round1(others),
    loopback_rtt_us: { p50: round1(rtts.percentile(50) * 1000), p99: round1(rtts.percentile(99) * 1000), n: rtts.total }
  }
}
