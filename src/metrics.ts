/**
 * Prometheus metrics (prom-client), served at GET /metrics on the HTTP listener (src/http/app.ts).
 *
 * One registry per server (tests and a cluster drill run several servers in one process, and the
 * library's global registry would mix them). What is counted where:
 *   - requests by operation and result code: the dispatcher (every request it answers) and the
 *     hooks (refusals for the rate, answered before the dispatcher);
 *   - send -> stored latency and commit batch sizes: the sequencer;
 *   - store operations: every method of both stores, timed, by store and method, and their errors
 *     (instrumentStore: a Proxy around the store, installed once at start-up);
 *   - deliveries (one per member a stored entry is published to): the publisher;
 *   - connections by transport, sessions, slow-consumer and flood cuts, tarpitted sockets: read
 *     from their owners when scraped (no bookkeeping on the hot path);
 *   - Node's process metrics (CPU, memory, event-loop lag, GC), prefixed `mqim_`.
 * With `metrics.enabled: false` every recording method is a no-op and the stores are not wrapped.
 *
 * Labels have bounded values only: operation names are the documented ones (an unknown name is
 * counted as `unknown`), codes are the closed set of src/errors.ts.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client'
import { isOpName } from './protocol/schemas.js'
import type { SubscriptionRepairStats } from './broker/upstream.js'

export interface MetricsOptions {
  enabled: boolean
}

/** Values read when /metrics is scraped. */
export interface MetricsSources {
  connections: () => Record<string, number>
  sessions: () => number
  slowConsumersCut: () => number
  floodsCut: () => number
  tarpitted: () => number
  /** Cluster: the repairs of the matcher of offline sessions after a Redis break (src/broker/upstream.ts, 19). */
  subscriptionRepair?: () => SubscriptionRepairStats | null
  /** Cluster: this node's clock minus the Redis server's, in seconds (null until measured). */
  clockOffset?: () => number | null
}

const LATENCY_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]

export class Metrics {
  readonly registry = new Registry()
  readonly enabled: boolean
  private readonly requests: Counter<'op' | 'code'>
  private readonly commitLatency: Histogram
  private readonly commitBatch: Histogram
  private readonly storeLatency: Histogram<'store' | 'op'>
  private readonly storeErrors: Counter<'store' | 'op'>
  private readonly deliveries: Counter
  private readonly webhooks: Counter<'event' | 'outcome'>
  private readonly pushes: Counter<'kind' | 'outcome'>
  private readonly seqConflicts: Counter
  private readonly seqConflictsTold: Counter
  private readonly orderWait: Histogram
  private readonly orderFills: Counter
  private readonly resendFills: Counter
  private readonly noticeFills: Counter
  private readonly orderTimeouts: Counter
  private readonly publishesDropped: Counter<'qos'>

  constructor (options: MetricsOptions) {
    this.enabled = options.enabled
    const registers = [this.registry]
    this.requests = new Counter({ name: 'mqim_requests_total', help: 'Requests answered, by operation and result code (ok, or the error code)', labelNames: ['op', 'code'], registers, collect: this.flush })
    this.commitLatency = new Histogram({ name: 'mqim_send_commit_seconds', help: 'From a send (or change) reaching the sequencer to its entry being stored', buckets: LATENCY_BUCKETS, registers })
    this.commitBatch = new Histogram({ name: 'mqim_commit_batch_entries', help: 'Entries per sequencer batch write (group commit)', buckets: BATCH_BUCKETS, registers })
    this.storeLatency = new Histogram({ name: 'mqim_store_operation_seconds', help: 'Store operations by store (messages, meta) and method', labelNames: ['store', 'op'], buckets: LATENCY_BUCKETS, registers })
    this.storeErrors = new Counter({ name: 'mqim_store_errors_total', help: 'Store operations that failed, by store and method', labelNames: ['store', 'op'], registers })
    this.deliveries = new Counter({ name: 'mqim_deliveries_total', help: 'Stored entries published to members (one per member)', registers, collect: this.flush })
    this.webhooks = new Counter({ name: 'mqim_webhooks_total', help: 'Webhook deliveries by event and outcome (delivered, retried, dropped; before-send: allowed, refused, failed-open, failed-closed)', labelNames: ['event', 'outcome'], registers, collect: this.flush })
    this.seqConflicts = new Counter({ name: 'mqim_seq_conflicts_total', help: 'Batch writes that met a seq another node had stored first (cluster: both wrote one conversation at once)', registers })
    this.seqConflictsTold = new Counter({ name: 'mqim_seq_conflicts_told_total', help: "Seq conflicts whose retry took the other node's tail from its commit notice, which came while the write was on its way (no store read); the rest of mqim_seq_conflicts_total read the entry that won by key, or reload the tail after 16 in a row or a failed read", registers })
    this.orderWait = new Histogram({ name: 'mqim_delivery_order_wait_seconds', help: "Cluster: conversations of committed batches whose delivery waited (that conversation only) until another node's fan-out of the seqs before theirs had arrived, and how long", buckets: LATENCY_BUCKETS, registers })
    this.orderTimeouts = new Counter({ name: 'mqim_delivery_order_timeouts_total', help: "Cluster: order waits that ran out (another node's fan-out never came: a lost mark, a node that died; that node then delivers the seqs before from the store, see mqim_delivery_order_filled_total)", registers })
    this.orderFills = new Counter({ name: 'mqim_delivery_order_filled_total', help: 'Cluster: entries this node read from the store and delivered itself after an order wait ran out, before the seq that waited (another node stored them and their delivery had not arrived; some may come from that node too if it was only late)', registers })
    this.resendFills = new Counter({ name: 'mqim_delivery_resend_filled_total', help: 'Cluster: entries this node read from the store and delivered itself after a resend was answered with an entry another node stored whose delivery had not arrived 15 s later (that node died before delivering it; some may come from that node too if it was only late)', registers })
    this.noticeFills = new Counter({ name: 'mqim_delivery_notice_filled_total', help: 'Cluster: entries this node read from the store and delivered itself because another node said it stored them (its commit notice) and no delivery of them had arrived 15 s later (that node died or lost Redis before delivering them; some may come from that node too if it was only late)', registers })
    this.publishesDropped = new Counter({ name: 'mqim_publishes_dropped_total', help: 'Publishes to clients dropped, neither delivered live nor queued, because too many waited for their queue entries (Redis stalled), by QoS', labelNames: ['qos'], registers })
    this.pushes = new Counter({ name: 'mqim_push_total', help: 'Pushes by kind (webpush, gateway) and outcome (queued, delivered, retry, gone: target removed, rejected, expired: retries ran out, dropped: queue full, collapsed)', labelNames: ['kind', 'outcome'], registers, collect: this.flush })
    if (this.enabled) collectDefaultMetrics({ register: this.registry, prefix: 'mqim_' })
  }

  /** Gauges and counters read from their owners at scrape time. */
  watch (sources: MetricsSources): void {
    const registers = [this.registry]
    new Gauge({ // eslint-disable-line no-new
      name: 'mqim_connections',
      help: 'Open MQTT connections on this node, by transport',
      labelNames: ['transport'],
      registers,
      collect () { for (const [transport, n] of Object.entries(sources.connections())) this.set({ transport }, n) }
    })
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({ name, help, registers, collect () { this.set(read()) } }) // eslint-disable-line no-new
    }
    gauge('mqim_sessions', 'Authenticated sessions on this node', sources.sessions)
    gauge('mqim_slow_consumers_cut_total', 'Connections closed for not reading (since start)', sources.slowConsumersCut)
    gauge('mqim_request_floods_cut_total', 'Connections closed for flooding requests beyond the rate (since start)', sources.floodsCut)
    gauge('mqim_tarpitted_connections', 'Connections held unread during a login backoff', sources.tarpitted)
    const clockOffset = sources.clockOffset
    if (clockOffset !== undefined) {
      gauge('mqim_clock_offset_seconds', "Cluster: this node's clock minus the Redis server's (NaN until measured); the nodes' values should agree within 0.1 s, as delivery order across nodes compares their clocks", () => clockOffset() ?? Number.NaN)
    }
    const repair = sources.subscriptionRepair
    if (repair !== undefined && repair() !== null) {
      const stat = (key: keyof SubscriptionRepairStats) => (): number => repair()?.[key] ?? 0
      gauge('mqim_subscription_repairs_total', 'Cluster: reads of every session\'s subscriptions from Redis (one at start, one after each reconnect of the subscriber connection)', stat('reads'))
      gauge('mqim_subscription_repair_failures_total', 'Cluster: reads of the sessions\' subscriptions that failed (each tried again, backing off to 30 s)', stat('failures'))
      gauge('mqim_subscription_repair_added_total', 'Cluster: subscriptions this node had missed (their broadcast lost while its Redis link was down) and a repair added to its matcher of offline sessions', stat('added'))
      gauge('mqim_subscription_repair_removed_total', 'Cluster: subscriptions gone from Redis that this node still matched (a lost broadcast) and a repair removed', stat('removed'))
      gauge('mqim_subscription_repair_last_sessions', 'Cluster: persistent sessions with QoS 1 subscriptions that the last repair found in Redis', stat('lastSessions'))
      gauge('mqim_subscription_repair_last_seconds', 'Cluster: how long the last repair took, reading Redis and handing the differences over', stat('lastSeconds'))
    }
  }

  /**
   * Counts of the labelled counters, kept as plain numbers where they happen (the send path) and
   * added to their counter when it is read (/metrics): counting costs no label hashing. Bounded:
   * every label value is one of a closed set (see the top of this file). Keyed by the first
   * label's name, which differs between the counters.
   */
  private readonly tallies = new Map<string, { n: number, add: (n: number) => void }>()

  private count<L extends string> (counter: Counter<L>, a: L, b: L, av: string, bv: string, n = 1): void {
    const key = `${a}\u0000${av}\u0000${bv}`
    const tally = this.tallies.get(key)
    if (tally !== undefined) tally.n += n
    else this.tallies.set(key, { n, add: (k) => counter.inc({ [a]: av, [b]: bv } as Partial<Record<L, string>>, k) })
  }

  /** Deliveries counted since the counter was last read. */
  private deliveredSince = 0

  /** Adds what was counted since the last read to the counters (each counter's collect()). */
  private readonly flush = (): void => {
    for (const tally of this.tallies.values()) {
      if (tally.n > 0) tally.add(tally.n)
      tally.n = 0
    }
    if (this.deliveredSince > 0) this.deliveries.inc(this.deliveredSince)
    this.deliveredSince = 0
  }

  request (op: string, code: string): void {
    if (this.enabled) this.count(this.requests, 'op', 'code', isOpName(op) ? op : 'unknown', code)
  }

  /** One batch written: its size, and each entry's time from submit to stored. */
  committed (submittedAt: readonly number[], now: number): void {
    if (!this.enabled) return
    this.commitBatch.observe(submittedAt.length)
    for (const at of submittedAt) this.commitLatency.observe((now - at) / 1000)
  }

  /** A batch write met another node's seq (see the sequencer). */
  seqConflict (): void {
    if (this.enabled) this.seqConflicts.inc()
  }

  /** A seq conflict resolved from another node's notice, without a store read (see the sequencer). */
  seqConflictTold (): void {
    if (this.enabled) this.seqConflictsTold.inc()
  }

  /** A publish to clients was dropped (see src/broker/fanout.ts). */
  publishDropped (qos: 0 | 1): void {
    if (this.enabled) this.publishesDropped.inc({ qos: String(qos) })
  }

  /** A delivery waited this long for another node's fan-out (see Delivery). */
  orderWaited (ms: number): void {
    if (this.enabled) this.orderWait.observe(ms / 1000)
  }

  /** An order wait ran out (see Delivery). */
  orderWaitTimedOut (): void {
    if (this.enabled) this.orderTimeouts.inc()
  }

  /** After an order wait ran out, `n` entries were read from the store and delivered (see Delivery). */
  orderFilled (n: number): void {
    if (this.enabled) this.orderFills.inc(n)
  }

  /** After a resend of an entry whose delivery had not arrived, `n` entries were read from the store and delivered (see Delivery.resent). */
  resendFilled (n: number): void {
    if (this.enabled) this.resendFills.inc(n)
  }

  /** Another node's notice told of entries whose delivery had not arrived 15 s later: `n` were read from the store and delivered (see Delivery.watch). */
  noticeFilled (n: number): void {
    if (this.enabled) this.noticeFills.inc(n)
  }

  webhook (event: string, outcome: string): void {
    if (this.enabled) this.count(this.webhooks, 'event', 'outcome', event, outcome)
  }

  push (kind: string, outcome: string, n = 1): void {
    if (this.enabled && n > 0) this.count(this.pushes, 'kind', 'outcome', kind, outcome, n)
  }

  delivered (n: number): void {
    if (this.enabled) this.deliveredSince += n
  }

  /**
   * The store with every method timed (async ones until they settle) and failures counted; the
   * store itself when metrics are off. Methods that are not functions pass through.
   */
  instrumentStore<T extends object> (store: T, name: 'messages' | 'meta'): T {
    if (!this.enabled) return store
    const latency = this.storeLatency
    const errors = this.storeErrors
    const wrapped = new Map<PropertyKey, unknown>()
    return new Proxy(store, {
      get (target, prop, receiver) {
        const value = Reflect.get(target, prop, receiver) as unknown
        if (typeof value !== 'function' || prop === 'constructor' || typeof prop === 'symbol') return value
        let fn = wrapped.get(prop)
        if (fn === undefined) {
          const method = value as (...args: unknown[]) => unknown
          // one labelled child per method, made once
          const timer = latency.labels({ store: name, op: prop })
          const failed = errors.labels({ store: name, op: prop })
          fn = function (this: unknown, ...args: unknown[]): unknown {
            const end = timer.startTimer()
            let result: unknown
            try {
              result = method.apply(target, args)
            } catch (err) {
              failed.inc()
              throw err
            }
            if (result instanceof Promise) {
              return result.then(v => { end(); return v }, (err: unknown) => { end(); failed.inc(); throw err })
            }
            end()
            return result
          }
          wrapped.set(prop, fn)
        }
        return fn
      }
    })
  }

  async text (): Promise<string> {
    return await this.registry.metrics()
  }

  get contentType (): string {
    return this.registry.contentType
  }
}
