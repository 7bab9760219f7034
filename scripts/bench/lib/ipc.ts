/**
 * Request/response over the IPC channel of a forked child (the load-generator workers, the
 * hostile scenario's attacker): the runner calls `IpcChild.call(command)`, the child answers each
 * command through `serveIpc`. A child exits when the runner goes away.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { track } from '../../lib/procs.js'

export type IpcReply =
  | { id: number, ok: true, result: unknown }
  | { id: number, ok: false, error: string }

/** The runner's side of one forked child (`script` run with tsx, tracked so it never outlives the runner). */
export class IpcChild<C extends object> {
  private nextId = 1
  private readonly pending = new Map<number, { resolve: (v: unknown) => void, reject: (e: Error) => void }>()
  readonly ready: Promise<void>

  constructor (readonly child: ChildProcess, readonly name: string) {
    let onReady: () => void = () => {}
    this.ready = new Promise<void>(resolve => { onReady = resolve })
    child.on('message', (msg: IpcReply | { ready: true }) => {
      if ('ready' in msg) { onReady(); return }
      const p = this.pending.get(msg.id)
      if (p === undefined) return
      this.pending.delete(msg.id)
      if (msg.ok) p.resolve(msg.result)
      else p.reject(new Error(`${name}: ${msg.error}`))
    })
    child.on('error', () => { /* a closed IPC channel: calls reject through exit below */ })
    child.once('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`${name} exited (${code ?? signal})`))
      this.pending.clear()
    })
  }

  static fork<C extends object> (script: string, name: string): IpcChild<C> {
    return new IpcChild<C>(track(fork(script, [], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc']
    })), name)
  }

  get pid (): number { return this.child.pid ?? 0 }

  async call<T> (command: C): Promise<T> {
    const id = this.nextId++
    if (!this.child.connected) throw new Error(`${this.name} is gone`)
    return await new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject })
      this.child.send({ id, ...command }, (err) => {
        if (err === null) return
        this.pending.delete(id)
        reject(new Error(`${this.name}: ${err.message}`))
      })
    })
  }
}

/** The child's side: answers every command with `handle`; exits when the runner's channel closes. */
export function serveIpc<C extends object> (script: string, handle: (command: C) => Promise<unknown>): void {
  const send = process.send?.bind(process)
  if (send === undefined) {
    process.stderr.write(`${script} is started by scripts/bench/run.ts\n`)
    process.exit(2)
  }
  process.on('disconnect', () => process.exit(0))
  process.on('message', (msg: { id: number } & C) => {
    handle(msg).then(
      (result) => send({ id: msg.id, ok: true, result } satisfies IpcReply),
      (err: unknown) => send({ id: msg.id, ok: false, error: err instanceof Error ? err.message : String(err) } satisfies IpcReply)
    )
  })
  send({ ready: true })
}
