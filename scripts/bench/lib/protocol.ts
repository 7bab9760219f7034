/** Messages between the benchmark runner and its load-generator worker processes (IPC). */
import type { HistogramData } from './hist.js'

export interface ClientSpec {
  /** Worker-local name of the client, used by SenderSpec.key. */
  key: string
  url: string
  clientId: string
  username?: string
  password?: string
  clean: boolean
  /** Filters subscribed at QoS 1 after CONNACK. */
  subscribe: string[]
  /** The user this client belongs to: deliveries whose envelope says "from":me are echoes. */
  me: string
}

export interface SenderSpec {
  key: string
  /**
   * mqim: publish a `send` request to im/req/send (the PUBACK means "stored").
   * raw: publish the envelope itself to `topic` (plain broker forwarding).
   */
  mode: 'mqim' | 'raw'
  topic: string
  conv: string
  from: string
  /** Most messages in flight at once (see `release`). */
  window: number
  /**
   * When a message stops counting against the window. 'echo': when the sender's own copy comes
   * back through the broker (end to end: the broker has routed it to every recipient, so the
   * window bounds the broker's backlog too), or when it failed. 'ack': at the PUBACK.
   */
  release: 'echo' | 'ack'
  /** Paced sending in messages per second for this sender; null = as fast as the window allows. */
  rate: number | null
  /** Length of the text body (a send timestamp, then padding). */
  bodyBytes: number
  /** Stop after this many publishes; null = until told to stop. */
  count: number | null
  /** Prefix of msgIds; unique per run. */
  idPrefix: string
}

export interface Counters {
  /** publishes written */
  sent: number
  /** PUBACKs received */
  acked: number
  /** replies with "ok":false (mqim), by error code */
  failed: number
  failedCodes: Record<string, number>
  /** publish callbacks with an error (e.g. connection lost before the PUBACK) */
  publishErrors: number
  /** message deliveries received (all inbox deliveries, echoes included) */
  received: number
  /** deliveries of messages sent by another user (latency is measured on these) */
  peerReceived: number
  /** unexpected client errors and disconnects */
  clientErrors: number
  latency: HistogramData
}

export type Command =
  | { cmd: 'connect', clients: ClientSpec[], concurrency: number }
  | { cmd: 'start', senders: SenderSpec[] }
  | { cmd: 'mark' }
  | { cmd: 'report' }
  | { cmd: 'waitDone', timeoutMs: number }
  | { cmd: 'stop', drainMs: number }
  | { cmd: 'reset' }

export interface ConnectResult {
  connected: number
  failed: number
  errors: string[]
  elapsedMs: number
  connectLatency: HistogramData
}

export interface Report { window: Counters, totals: Counters, inflight: number, elapsedMs: number }
