/**
 * The scripts' one process module (drills, benchmark, and the tests that run them): child
 * processes that never outlive the script (normal exit, error, SIGINT/SIGTERM/SIGHUP), cleanup
 * hooks run on the same occasions, free ports, sleep and waitUntil.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import net from 'node:net'
import { setTimeout as delay } from 'node:timers/promises'

/**
 * Node options the server runs with, wherever it is started (package.json's start and start:prod
 * say the same; a unit test keeps them equal). A young generation of 16 MiB from the start
 * (V8 starts it at 1 MiB and grows it only under sustained load): with a small one, a burst of
 * connections scavenges every few milliseconds, and what is alive only while a connection is
 * being set up (its login, its Aedes connect pipeline) is promoted to the old generation and
 * stays in the process' memory until a full collection, ~14 KiB per connection (see
 * BENCHMARKS.md, "Channels").
 */
export const SERVER_NODE_FLAGS: readonly string[] = ['--min-semi-space-size=16']

const children = new Set<ChildProcess>()
const cleanups: Array<() => Promise<void> | void> = []
let cleaning: Promise<void> = Promise.resolve()
let exitHandler = false
let signalHandlers = false
let stoppingAll = false

export async function sleep (ms: number): Promise<void> {
  await delay(ms)
}

/** Polls `predicate` every `stepMs` until it returns true; throws after `timeoutMs`. Errors of the predicate propagate. */
export async function waitUntil (predicate: () => boolean | Promise<boolean>, timeoutMs = 20_000, what = 'condition', stepMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await predicate())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(stepMs)
  }
}

/** `N` numbers: a tuple when `N` is a literal (freePorts(3) gives [number, number, number]). */
type Ports<N extends number, Acc extends number[] = []> = number extends N ? number[] : Acc['length'] extends N ? Acc : Ports<N, [...Acc, number]>

/** N distinct free TCP ports on 127.0.0.1 (held open together, then released: take them soon). */
export async function freePorts<const N extends number> (n: N): Promise<Ports<N>> {
  const servers: net.Server[] = []
  try {
    for (let i = 0; i < n; i++) {
      const s = net.createServer()
      await new Promise<void>((resolve, reject) => { s.once('error', reject); s.listen(0, '127.0.0.1', () => resolve()) })
      servers.push(s)
    }
    return servers.map(s => (s.address() as net.AddressInfo).port) as Ports<N>
  } finally {
    await Promise.all(servers.map(async s => await new Promise<void>(resolve => s.close(() => resolve()))))
  }
}

export async function freePort (): Promise<number> {
  const [port] = await freePorts(1)
  return port
}

/** True when something accepts TCP connections on host:port. */
export async function canConnect (port: number, host = '127.0.0.1'): Promise<boolean> {
  return await new Promise(resolve => {
    const s = net.connect(port, host)
    s.once('connect', () => { s.destroy(); resolve(true) })
    s.once('error', () => resolve(false))
  })
}

/** True once every child is being killed (signal, cleanup): their exits are expected. */
export function stoppingEverything (): boolean {
  return stoppingAll
}

function running (c: ChildProcess): boolean {
  return c.exitCode === null && c.signalCode === null
}

/** Sends `signal` to every tracked child that is still running (synchronous: usable in an 'exit' handler). */
export function killAllChildren (signal: NodeJS.Signals = 'SIGKILL'): void {
  stoppingAll = true
  for (const c of children) {
    if (running(c)) {
      try { c.kill(signal) } catch { /* already gone */ }
    }
  }
}

/** Tracks a child so that it never outlives this process. */
export function track<T extends ChildProcess> (child: T): T {
  if (!exitHandler) {
    exitHandler = true
    process.on('exit', () => killAllChildren('SIGKILL'))
  }
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}

export function spawnTracked (cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  return track(spawn(cmd, args, options))
}

/** Stops a child: `signal`, then SIGKILL after `graceMs`. Resolves once it has exited. */
export async function stopChild (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', graceMs = 10_000): Promise<void> {
  if (!running(child)) return
  const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
  try { child.kill(signal) } catch { /* gone */ }
  const timer = setTimeout(() => { try { child.kill('SIGKILL') } catch { /* gone */ } }, graceMs)
  await exited
  clearTimeout(timer)
}

/** Runs a command to completion; rejects with its output when it exits non-zero. */
export async function run (cmd: string, args: string[], options: SpawnOptions = {}): Promise<string> {
  return await new Promise((resolve, reject) => {
    const child = spawnTracked(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout?.on('data', (c: Buffer) => { out += c.toString('utf8') })
    child.stderr?.on('data', (c: Buffer) => { out += c.toString('utf8') })
    child.once('error', reject)
    child.once('exit', (code, signal) => {
      if (code === 0) resolve(out)
      else reject(new Error(`${cmd} ${args.join(' ')} failed (${code ?? signal}):\n${out.slice(-4000)}`))
    })
  })
}

/** Registers a cleanup (stop services, remove a scratch directory), run by runCleanups in reverse order of registration. */
export function onCleanup (fn: () => Promise<void> | void): void {
  cleanups.push(fn)
}

/** Kills every child, then runs the cleanups. Concurrent calls wait for the same cleanups. */
export async function runCleanups (): Promise<void> {
  killAllChildren('SIGKILL')
  cleaning = cleaning.then(async () => {
    while (cleanups.length > 0) {
      const fn = cleanups.pop() as () => Promise<void> | void
      try { await fn() } catch (err) { process.stderr.write(`cleanup failed: ${String(err)}\n`) }
    }
  })
  await cleaning
}

let uncaughtSeen = false

/**
 * The status a script ends with (its `process.exit(exitStatus(status))`): 1 at least once an
 * exception went uncaught (see installSignalHandlers), even if the script's own work had ended
 * well and its clean-up was already running when it came.
 */
export function exitStatus (status: number): number {
  return uncaughtSeen && status === 0 ? 1 : status
}

/**
 * SIGINT/SIGTERM/SIGHUP: SIGTERM to every child, SIGKILL after 1.5 s to those still running, the
 * cleanups, exit status 130; an uncaught exception: the children killed, the cleanups, exit status
 * 1. For scripts only: inside jest, the test's afterAll cleans up.
 */
export function installSignalHandlers (name: string): void {
  if (signalHandlers) return
  signalHandlers = true
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\n${name}: ${sig}: stopping every child process and cleaning up\n`)
      killAllChildren('SIGTERM')
      void (async () => {
        const deadline = Date.now() + 1500
        while ([...children].some(running) && Date.now() < deadline) await sleep(50)
        await runCleanups()
      })().finally(() => process.exit(130))
    })
  }
  // a throw nothing catches (an event handler's) would end the process without the cleanups,
  // leaving the services it started running
  let uncaught = false
  process.on('uncaughtException', (err: unknown) => {
    uncaughtSeen = true
    process.exitCode = 1
    process.stderr.write(`\n${name}: uncaught exception${uncaught ? ' during the clean-up' : ', stopping every child process and cleaning up'}: ${String((err as { stack?: unknown } | null)?.stack ?? err)}\n`)
    if (uncaught) return
    uncaught = true
    // a clean-up that hangs does not keep the process: it ends within 30 s whatever happens
    setTimeout(() => process.exit(1), 30_000).unref()
    void runCleanups().finally(() => process.exit(1))
  })
}
