/**
 * The runner's side of the load generator: a pool of worker processes (scripts/bench/worker.ts,
 * one per core by default) that each hold a share of the MQTT clients.
 */
import { fileURLToPath } from 'node:url'
import { Histogram } from './hist.js'
import { IpcChild } from './ipc.js'
import { stopChild } from '../../lib/procs.js'
import type { ClientSpec, Command, ConnectResult, Counters, Report, SenderSpec } from './protocol.js'

const WORKER = fileURLToPath(new URL('../worker.ts', import.meta.url))

/** Counters summed over the workers, with the latency histogram merged. */
export type Totals = Omit<Counters, 'latency'> & { latency: Histogram }

function sumCounters (list: Counters[]): Totals {
  const t: Totals = { sent: 0, acked: 0, failed: 0, failedCodes: {}, publishErrors: 0, received: 0, peerReceived: 0, clientErrors: 0, latency: new Histogram() }
  for (const c of list) {
    t.sent += c.sent
    t.acked += c.acked
    t.failed += c.failed
    t.publishErrors += c.publishErrors
    t.received += c.received
    t.peerReceived += c.peerReceived
    t.clientErrors += c.clientErrors
    for (const [k, v] of Object.entries(c.failedCodes)) t.failedCodes[k] = (t.failedCodes[k] ?? 0) + v
    t.latency.merge(c.latency)
  }
  return t
}

type Worker = IpcChild<Command>

export interface PoolConnectResult {
  connected: number
  failed: number
  errors: string[]
  elapsedMs: number
  connectLatency: Histogram
}

export class LoaderPool {
  private constructor (private readonly workers: Worker[]) {}

  static async start (count: number): Promise<LoaderPool> {
    const workers = Array.from({ length: count }, (_, i) => IpcChild.fork<Command>(WORKER, `worker ${i}`))
    await Promise.all(workers.map(w => w.ready))
    return new LoaderPool(workers)
  }

  get size (): number { return this.workers.length }

  /** Worker pids (to account the load generator's own CPU). */
  get pids (): number[] { return this.workers.map(w => w.pid) }

  /** Client specs are dealt to workers by `workerOf` (default: round robin). */
  async connect (clients: ClientSpec[], concurrencyPerWorker: number, workerOf: (c: ClientSpec, i: number) => number = (_c, i) => i % this.workers.length): Promise<PoolConnectResult> {
    const shares = this.workers.map(w => ({ w, specs: new Array<ClientSpec>() }))
    for (const [i, c] of clients.entries()) {
      const share = shares[workerOf(c, i) % shares.length]
      if (share === undefined) throw new RangeError(`workerOf gave no worker for client ${c.key}`)
      share.specs.push(c)
    }
    const t0 = performance.now()
    const results = await Promise.all(shares.map(({ w, specs }) => w.call<ConnectResult>({ cmd: 'connect', clients: specs, concurrency: concurrencyPerWorker })))
    const hist = new Histogram()
    for (const r of results) hist.merge(r.connectLatency)
    return {
      connected: results.reduce((a, r) => a + r.connected, 0),
      failed: results.reduce((a, r) => a + r.failed, 0),
      errors: results.flatMap(r => r.errors),
      elapsedMs: performance.now() - t0,
      connectLatency: hist
    }
  }

  /** Senders go to the worker that holds their client: `workerOfKey` must match the connect dealing. */
  async start (senders: SenderSpec[], workerOfKey: (key: string) => number): Promise<void> {
    const shares = this.workers.map(w => ({ w, specs: new Array<SenderSpec>() }))
    for (const s of senders) {
      const share = shares[workerOfKey(s.key) % shares.length]
      if (share === undefined) throw new RangeError(`workerOfKey gave no worker for sender ${s.key}`)
      share.specs.push(s)
    }
    await Promise.all(shares.map(({ w, specs }) => w.call({ cmd: 'start', senders: specs })))
  }

  async mark (): Promise<void> {
    await Promise.all(this.workers.map(w => w.call({ cmd: 'mark' })))
  }

  private merge (reports: Report[]): { window: Totals, totals: Totals, inflight: number } {
    return {
      window: sumCounters(reports.map(r => r.window)),
      totals: sumCounters(reports.map(r => r.totals)),
      inflight: reports.reduce((a, r) => a + r.inflight, 0)
    }
  }

  async report (): Promise<{ window: Totals, totals: Totals, inflight: number }> {
    return this.merge(await Promise.all(this.workers.map(w => w.call<Report>({ cmd: 'report' }))))
  }

  async waitDone (timeoutMs: number): Promise<{ window: Totals, totals: Totals, inflight: number }> {
    return this.merge(await Promise.all(this.workers.map(w => w.call<Report>({ cmd: 'waitDone', timeoutMs }))))
  }

  async stop (drainMs: number): Promise<{ window: Totals, totals: Totals, inflight: number }> {
    return this.merge(await Promise.all(this.workers.map(w => w.call<Report>({ cmd: 'stop', drainMs }))))
  }

  /** Ends every client; the workers stay for the next measurement. */
  async reset (): Promise<void> {
    await Promise.all(this.workers.map(w => w.call({ cmd: 'reset' })))
  }

  /** Ends the worker processes (and with them their clients). */
  async close (): Promise<void> {
    await Promise.all(this.workers.map(async w => { await stopChild(w.child, 'SIGTERM', 3000) }))
  }
}
