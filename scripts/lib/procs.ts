/**
 * Child processes of the drills: every mqim node a drill starts is tracked here, so that none
 * outlives the drill (normal exit, error, SIGINT/SIGTERM). Cleanup hooks (e.g. stopping the
 * drill's own services) run on the same occasions.
 */
import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process'
import net from 'node:net'

const children = new Set<ChildProcess>()
const cleanups: Array<() => Promise<void> | void> = []
let signalHandlers = false
let stoppingAll = false

/** True once every child is being killed (signal, cleanup): their exits are expected. */
export function stoppingEverything (): boolean {
  return stoppingAll
}

export const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

export async function waitUntil (predicate: () => boolean, timeoutMs: number, what: string, stepMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!predicate()) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`)
    await sleep(stepMs)
  }
}

/** A free TCP port on 127.0.0.1 (released before returning, so take it soon). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      server.close(() => resolve(port))
    })
  })
}

/** Kills every tracked child that is still running (synchronous: usable in an 'exit' handler). */
export function killAllChildren (signal: NodeJS.Signals = 'SIGKILL'): void {
  stoppingAll = true
  for (const c of children) {
    if (c.exitCode === null && c.signalCode === null) {
      try { c.kill(signal) } catch { /* already gone */ }
    }
  }
}

/**
 * Installs SIGINT/SIGTERM handlers that kill the children, run the cleanup hooks and exit.
 * Only for scripts: inside jest, the test's afterAll does the cleanup.
 */
export function installSignalHandlers (): void {
  if (signalHandlers) return
  signalHandlers = true
  process.on('exit', () => killAllChildren('SIGKILL'))
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.once(sig, () => {
      process.stderr.write(`\ndrill: ${sig}: stopping every child process and service\n`)
      killAllChildren('SIGKILL')
      void runCleanups().finally(() => process.exit(130))
    })
  }
}

/** Registers an async cleanup (run by runCleanups, in reverse order of registration). */
export function onCleanup (fn: () => Promise<void> | void): void {
  cleanups.push(fn)
}

export async function runCleanups (): Promise<void> {
  killAllChildren('SIGKILL')
  while (cleanups.length > 0) {
    const fn = cleanups.pop() as () => Promise<void> | void
    try { await fn() } catch (err) { process.stderr.write(`drill: cleanup failed: ${String(err)}\n`) }
  }
}

export function spawnTracked (cmd: string, args: string[], options: SpawnOptions): ChildProcess {
  const child = spawn(cmd, args, options)
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
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
