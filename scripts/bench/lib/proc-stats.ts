/**
 * A process's own kernel accounting, for the benchmark's figures: CPU seconds from
 * /proc/<pid>/stat, current and peak RSS from /proc/<pid>/status, read/write system calls from
 * /proc/<pid>/io; the whole machine's busy CPU from /proc/stat.
 */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'

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

/** The machine's CPU times since boot, in ticks: /proc/stat's first line (cpu user nice system idle iowait irq softirq steal ...). */
function machineTicks (): number[] {
  return (readFileSync('/proc/stat', 'utf8').split('\n')[0] ?? '').trim().split(/\s+/).slice(1).map(Number)
}

/** CPU seconds the whole machine spent busy (all cores, all processes, steal included) since boot, from /proc/stat. */
export function machineBusySeconds (): number {
  const [user = NaN, nice = NaN, system = NaN, , , irq = 0, softirq = 0, steal = 0] = machineTicks()
  return (user + nice + system + irq + softirq + steal) / ticksPerSecond()
}

/** Seconds (summed over cores) the hypervisor gave this machine's CPUs to others since boot (/proc/stat steal). */
export function machineStealSeconds (): number {
  return (machineTicks()[7] ?? NaN) / ticksPerSecond()
}

/** The executable name and command line of a process, to check that a pid is the one we mean. */
export function describeProc (pid: number): { comm: string, cmdline: string } {
  return {
    comm: readFileSync(`/proc/${pid}/comm`, 'utf8').trim(),
    cmdline: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ').trim()
  }
}
