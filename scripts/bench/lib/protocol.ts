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
  /** Filters subscribed at QoS 1 (or `subscribeQos`) after CONNACK. */
  subscribe: string[]
  /** 0: deliveries at QoS 0 whatever the publish's QoS (the channel scenario's baselines: mqim delivers channels at QoS 0). */
  subscribeQos?: 0 | 1
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
  /**
   * mqim: every changeEvery-th request is a change of the sender's latest own message instead of
   * a send, alternately an `edit` and a `react` (a 👍 added, then taken back); null: sends only.
   */
  changeEvery?: number | null
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

// -------------------------------------------------------------------------------------------------
// the hostile scenario's attacker process (scripts/bench/attacker.ts)
// -------------------------------------------------------------------------------------------------

export type AttackName = 'stuck-subscriber' | 'wrong-passwords' | 'subscriptions' | 'big-pages' | 'request-flood'

export interface AttackAccount { id: string, secret: string }

export type AttackSpec =
  /** `victim` subscribes im/u/<victim>/# and stops reading; `connections` devices of `sender` send it `bodyBytes` texts in `conv`, each as soon as the previous reply came. */
  | { attack: 'stuck-subscriber', victim: AttackAccount, sender: AttackAccount, conv: string, connections: number, bodyBytes: number }
  /** `parallel` fresh connections at a time log in as `user` with a wrong password; each is retried as soon as it is refused. */
  | { attack: 'wrong-passwords', user: string, parallel: number, attemptTimeoutMs: number }
  /** One device of `user` subscribes up to `maxFilters` filters im/u/<user>/x/<i>, `filtersPerPacket` per SUBSCRIBE; a second device sends texts in `conv`, `window` requests in flight. */
  | { attack: 'subscriptions', user: AttackAccount, conv: string, maxFilters: number, filtersPerPacket: number, window: number }
  /** Each of `users` (with its conversation, filled with ~1 MiB of messages) asks for its whole history page, `window` requests in flight on one connection, each followed by the next as soon as its reply came. */
  | { attack: 'big-pages', users: Array<{ account: AttackAccount, conv: string }>, window: number }
  /** `connections` devices of `user` write chunks of `packetsPerChunk` QoS 0 publishes (half requests, half to a topic that is not one) as fast as their sockets take them. */
  | { attack: 'request-flood', user: AttackAccount, connections: number, packetsPerChunk: number }

export type AttackCommand =
  | { cmd: 'start', host: string, port: number, localAddress: string, spec: AttackSpec }
  | { cmd: 'stop' }

export interface AttackReport {
  /** from `start` until the attack was in full swing (e.g. every subscription made) */
  setupMs: number
  /** from `start` to `stop` */
  seconds: number
  /** what the attacker did and what it got back (connections, CONNACK codes, requests, replies by error code ...) */
  counters: Record<string, number>
}
