/**
 * How fast the machine itself is, measured the same way around a benchmark's load, so that runs
 * on different days (or a run whose figures moved) can be told apart from a change in the code:
 * this shared 2-core machine has been measured twice as slow on one day as on the night before,
 * with the same code and the same load.
 *
 * - `cpu_ms`: a fixed single-threaded workload (JSON encoding and decoding of message-like
 *   objects, what a node does most of besides system calls), the median of 3 rounds after one
 *   round of warm-up.
 * - `loopback_rtt_us`: p50/p99 of sequential round trips of 32 bytes over TCP on 127.0.0.1 with
 *   a child process that echoes them: two system calls each way, a wake-up of the other process
 *   and the scheduler, which is what every hop of a send (client, node, store, Redis) pays.
 *
 * Taken while nothing else of the benchmark runs (before its services start, after they stop).
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { once } from 'node:events'

export interface Calibration {
  cpu_ms: number
  loopback_rtt_us: { p50: number, p99: number, n: number }
}

export interface CalibrationOptions {
  /** Objects encoded and decoded per CPU round (default 40,000). */
  cpuObjects?: number
  /** Loopback round trips (default 4,000; the first 5 % are left out as warm-up). */
  roundTrips?: number
  /** Give up after this long (default 30 s). */
  timeoutMs?: number
}

/** The echo server run in the child: prints its port, then echoes every byte until stdin closes. */
const ECHO = "const s=require('net').createServer(c=>{c.setNoDelay(true);c.on('data',d=>c.write(d));c.on('error',()=>{})});" +
  "s.listen(0,'127.0.0.1',()=>process.stdout.write(s.address().port+'\\n'));process.stdin.on('end',()=>process.exit(0));process.stdin.resume()"

function median (xs: readonly number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)] ?? Number.NaN
}

function quantile (sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? Number.NaN
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

/** Sequential round trips to an echo child; microseconds each, warm-up left out, sorted. */
async function loopback (roundTrips: number, timeoutMs: number): Promise<number[]> {
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
    const times: number[] = []
    let got = 0
    let sent = 0n
    let next: (() => void) | null = null
    s.on('data', (d: Buffer) => {
      got += d.length
      if (got >= 32) {
        got -= 32
        times.push(Number(process.hrtime.bigint() - sent) / 1000)
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
    return times.slice(Math.floor(roundTrips / 20)).sort((a, b) => a - b)
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
  cpuRound(objects) // warm-up: optimized before it is timed
  const cpuMs = median([cpuRound(objects), cpuRound(objects), cpuRound(objects)])
  const rtts = await loopback(roundTrips, options.timeoutMs ?? 30_000)
  const round1 = (x: number): number => Math.round(x * 10) / 10
  return { cpu_ms: round1(cpuMs), loopback_rtt_us: { p50: round1(quantile(rtts, 0.5)), p99: round1(quantile(rtts, 0.99)), n: rtts.length } }
}
