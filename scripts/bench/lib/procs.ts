/**
 * Child processes of the benchmark: every process it starts is tracked here and killed when the
 * runner exits (normally, on an error, on SIGINT/SIGTERM). Also reads a process's own kernel
 * accounting: CPU seconds from /proc/<pid>/stat and peak/current RSS from /proc/<pid>/status.
 */
import { spawn, execFileSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { readFileSync } from 'node:fs'
import net from 'node:net'

const children = new Set<ChildProcess>()
const exitHooks: Array<() => void> = []
let handlersInstalled = false

/** Runs `fn` (synchronously) when the runner exits, however it exits short of SIGKILL. */
export function onExit (fn: () => void): void {
  installHandlers()
  exitHooks.push(fn)
}

function runExitHooks (): void {
  for (const fn of exitHooks.splice(0)) {
    try { fn() } catch { /* best effort */ }
  }
}

function killAll (signal: NodeJS.Signals): void {
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null && c.pid !== undefined) {
      try { process.kill(c.pid, signal) } catch { /* already gone */ }
    }
  }
}

function installHandlers (): void {
  if (handlersInstalled) return
  handlersInstalled = true
  process.on('exit', () => { killAll('SIGKILL'); runExitHooks() })
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\nbench: ${sig}: stopping every child process\n`)
      killAll('SIGTERM')
      setTimeout(() => { killAll('SIGKILL'); process.exit(130) }, 1500).unref()
    })
  }
}

/** Tracks a child so that it never outlives the runner. */
export function track<T extends ChildProcess> (child: T): T {
  installHandlers()
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export function spawnTracked (cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  return track(spawn(cmd, args, options))
}

/** Stops a child: `signal`, then SIGKILL after `graceMs`. Resolves once it has exited. */
export async function stopChild (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  try { child.kill(signal) } catch { /* gone */ }
  const timer = setTimeout(() => { try { child.kill('SIGKILL') } catch { /* gone */ } }, graceMs)
  await exited
  clearTimeout(timer)
}

let clkTck: number | undefined
function ticksPerSecond (): number {
  if (clkTck === undefined) {
    try {
      clkTck = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim()) || 100
    } catch {
      clkTck = 100
    }
  }
  return clkTck
}

export interface ProcSample {
  /** user + system CPU seconds of the process (all its threads) since it started */
  cpuSeconds: number
  /** resident set size now, bytes */
  rssBytes: number
  /** peak resident set size (VmHWM), bytes */
  peakRssBytes: number
  /** read and write system calls so far (/proc/<pid>/io syscr, syscw; 0 if unreadable) */
  syscr: number
  syscw: number
  at: number
}

/** One reading of a process's own accounting. Throws if the process is gone. */
export function sampleProc (pid: number): ProcSample {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  // fields after "(comm)": state is field 3; utime and stime are fields 14 and 15
  const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  const utime = Number(rest[11])
  const stime = Number(rest[12])
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const kb = (name: string): number => {
    const m = new RegExp(`^${name}:\\s+(\\d+) kB`, 'm').exec(status)
    return m === null ? 0 : Number(m[1]) * 1024
  }
  let syscr = 0
  let syscw = 0
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8')
    syscr = Number(/^syscr: (\d+)/m.exec(io)?.[1] ?? 0)
    syscw = Number(/^syscw: (\d+)/m.exec(io)?.[1] ?? 0)
  } catch { /* not permitted */ }
  return { cpuSeconds: (utime + stime) / ticksPerSecond(), rssBytes: kb('VmRSS'), peakRssBytes: kb('VmHWM'), syscr, syscw, at: performance.now() }
}

/** CPU seconds the whole machine spent busy (all cores, all processes) since boot, from /proc/stat. */
export function machineBusySeconds (): number {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0] // cpu user nice system idle iowait irq softirq steal ...
  const f = line.trim().split(/\s+/).slice(1).map(Number)
  const busy = f[0] + f[1] + f[2] + (f[5] ?? 0) + (f[6] ?? 0) + (f[7] ?? 0)
  return busy / ticksPerSecond()
}

/** The executable name and command line of a process, to check that a pid is the one we mean. */
export function describeProc (pid: number): { comm: string, cmdline: string } {
  return {
    comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
    cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
  }
}

/** N distinct free TCP ports on 127.0.0.1 (held open together, then released). */
export async function freePorts (n: number): Promise<number[]> {
  const servers: net.Server[] = []
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer()
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', () => resolve()) })
      servers.push(s)
    }
    return servers.map(s => (s.address() as net.AddressInfo).port)
  } finally {
    await Promise.all(servers.map(s => new Promise<void>(resolve => s.close(() => resolve()))))
  }
}

export function sleep (ms: number): Promise<void> {
  return new Promise(resolve => setTimeout(resolve, ms))
}

/** Polls `check` every `everyMs` until it returns true; throws after `timeoutMs`. */
export async function waitFor (what: string, check: () => boolean | Promise<boolean>, timeoutMs = 30_000, everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    let ok = false
    try { ok = await check() } catch { ok = false }
    if (ok) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(everyMs)
  }
}

/** True when something accepts TCP connections on 127.0.0.1:port. */
export function canConnect (port: number): Promise<boolean> {
  return new Promise(resolve => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}
