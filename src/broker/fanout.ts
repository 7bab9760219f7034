/**
 * Everything the server publishes to clients (src/im/publisher.ts): one payload to the topics of
 * one or many users (a message to every member's inbox, an event to every member, a reply copy).
 *
 * What Aedes' own publish does, kept: each topic's packet (its own brokerCounter) is queued for the
 * persistent sessions subscribed to it (the same persistence calls; on Redis, the packets of all
 * the topics in one script), then routed, and delivered through the same authorizeForward, QoS and
 * acknowledgement of queued copies.
 *
 * What changes: (1) order. Publishes are routed in the order they were made, each waiting for the
 * queueing of those before it. Aedes needs that: a connection drops as a duplicate any packet whose
 * brokerCounter is not above the last one it got from the same node (client.js dedupe), and Aedes'
 * publish routes a QoS 0 packet at once but a QoS 1 packet only after its queueing: a QoS 0 event
 * made just after a message (a channel message committed with a group message, a read event, a
 * reply copy) reached the device first and cost it the message, live. (2) In a cluster a publish
 * per topic crossed Redis once per member: encoded, sent, received and decoded again for each of a
 * group's members (28 on average in the cluster soak). A publish to several topics now crosses
 * once: one message on FAN_TOPIC carries the payload with every topic and each packet's identity
 * (brokerId, brokerCounter: what the queued copies are known by), and every node, this one too,
 * hands it to its own subscribers of those topics. A publish to one topic is the packet itself on
 * that topic's channel, as before (only nodes with a subscriber get it).
 *
 * A publish may leave out one connection, by clientId (`except`: the device that caused a QoS 0
 * event and has its reply): its packets carry that clientId (a field Aedes keeps when it copies a
 * packet for each subscriber), and BrokerHooks.authorizeForward turns the packet away from that
 * connection, on every node.
 *
 * A fan-out may carry a mark (a conversation and seq): every node that receives it hands the mark
 * on (onMark) once it has delivered the fan-out, and the delivery's order across nodes waits for
 * those marks (src/im/delivery.ts): a mark received means the message is in Redis's stream ahead
 * of anything this node publishes next.
 *
 * Bounds: the publishes waiting for their queueing name at most MAX_PENDING_TOPICS topics (QoS 0
 * ones half of that); beyond, new ones are dropped and counted (messages are stored: devices sync
 * them by seq). A queueing unanswered for QUEUE_TIMEOUT_MS counts as failed (the live copies go).
 * A fan-out names at most FAN_CHUNK topics: a larger audience gets several.
 */
import type { Aedes } from 'aedes'
import Packet from 'aedes-packet'
import { warnEveryMinute, type Logger, type MinuteWarner } from '../log.js'
import { CLIENT_ID_MAX, FAN_TOPIC } from '../protocol/topics.js'
import { localEmitter } from './upstream.js'

/**
 * Topics of the publishes waiting for their queue entries at most: beyond, new publishes are
 * dropped (QoS 0 ones from half of it, so that events give way to messages first).
 */
export const MAX_PENDING_TOPICS = 100_000
/** Topics of one fan-out at most (also what a received one may name): more go in several. */
export const FAN_CHUNK = 5000
/** How long a publish waits for its queue entries: then it goes live without them. */
export const QUEUE_TIMEOUT_MS = 5000

interface Subscription { clientId: string, topic: string, qos: number }

/**
 * The two calls of the persistence Aedes makes to queue a QoS 1 publish (aedes.js enqueueOffline),
 * and on Redis the one that queues the packets of several topics at once (upstream.ts 14).
 */
interface QueueingPersistence {
  subscriptionsByTopic: (topic: string) => Promise<Subscription[]>
  outgoingEnqueueCombi: (subs: Subscription[], packet: Packet) => Promise<void>
  outgoingEnqueueMany?: (entries: Array<{ subs: Subscription[], packet: Packet }>) => Promise<void>
}

interface Emitter {
  emit: (message: object, done: (err?: Error) => void) => void
  on: (topic: string, handler: (message: FanMessage, done: () => void) => void, done?: () => void) => void
}

/** What crosses Redis once per fan-out. */
interface FanMessage {
  topic: string
  payload: Buffer
  qos: 0 | 1
  brokerId: string
  topics: string[]
  counters: number[]
  /** What it publishes: [conversation, seq] (see onMark). */
  mark?: [string, number]
  /** The clientId of a connection left out (see publish). */
  except?: string
}

interface Step {
  packets: Packet[]
  /** Cluster: what crosses Redis when it is not the one packet itself. */
  message: FanMessage | null
  /** May be routed: its queueing settled or timed out (QoS 0: at once). */
  ready: boolean
  /** Its queueing settled (QoS 0: nothing to queue). */
  settled: boolean
  routed?: boolean
}

export interface FanOutOptions {
  /** True in a cluster (Redis): fan-outs cross it once, `$mqim-fan` is subscribed, queueings time out. */
  clustered: boolean
  logger: Logger
  /** The bound on topics held (default MAX_PENDING_TOPICS; QoS 0 at half). */
  maxHeldTopics?: number
  /** Told of each publish dropped (metrics). */
  onDropped?: (qos: 0 | 1) => void
  /** How long a publish waits for its queue entries (default QUEUE_TIMEOUT_MS). */
  queueTimeoutMs?: number
  /** Called with the topics of each fan-out received, before they are delivered (Publisher: hold the writes). */
  beforeDeliver?: (topics: readonly string[]) => void
}

/** Told the mark of each marked fan-out received (this node's own too), after its local deliveries. */
export type MarkListener = (conversationId: string, seq: number) => void

export class FanOut {
  private readonly steps: Array<Step | undefined> = []
  private head = 0
  private readonly deliverLocally: (message: object) => void
  private drains: Array<{ target: number, done: () => void }> = []
  /** Publishes made and handed on (since start). */
  private made = 0
  private routed = 0
  /** Topics of the publishes not routed yet or whose queueing has not settled (see MAX_PENDING_TOPICS). */
  private heldTopics = 0
  private readonly markListeners: MarkListener[] = []
  /** Publishes dropped because too many were waiting (since start). */
  dropped = 0

  /** A warning at most once a minute per kind. */
  private readonly warn: MinuteWarner

  private constructor (private readonly broker: Aedes, private readonly mq: Emitter, private readonly persistence: QueueingPersistence, private readonly opts: FanOutOptions) {
    this.deliverLocally = localEmitter(mq)
    this.warn = warnEveryMinute(opts.logger)
  }

  static async create (broker: Aedes, mq: unknown, persistence: unknown, opts: FanOutOptions): Promise<FanOut> {
    const fan = new FanOut(broker, mq as Emitter, persistence as QueueingPersistence, opts)
    if (opts.clustered) {
      await new Promise<void>(resolve => fan.mq.on(FAN_TOPIC, (message, done) => {
        fan.received(message)
        done()
      }, resolve))
    }
    return fan
  }

  /** Listens to the marks of the fan-outs received (see above; in a cluster only). */
  onMark (listener: MarkListener): void {
    this.markListeners.push(listener)
  }

  /**
   * Publishes `payload` to each topic at `qos` (see above), with `mark` if given (told in a cluster
   * only), to every subscriber but the connection whose clientId is `except` (QoS 0 only).
   */
  publish (topics: readonly string[], payload: Buffer, qos: 0 | 1, mark?: [string, number], except?: string): number {
    // a very large audience in several fan-outs (the mark with the last)
    let accepted = 0
    for (let from = 0; from < topics.length; from += FAN_CHUNK) {
      const last = from + FAN_CHUNK >= topics.length
      const chunk = topics.slice(from, from + FAN_CHUNK)
      if (this.publishChunk(chunk, payload, qos, last ? mark : undefined, qos === 0 ? except : undefined)) accepted += chunk.length
    }
    return accepted
  }

  /** Whether more than a quarter of the topics the bound allows wait for their queueing (Redis slow). */
  get backlogged (): boolean {
    return this.heldTopics > (this.opts.maxHeldTopics ?? MAX_PENDING_TOPICS) / 4
  }

  /** False if dropped (the bound). */
  private publishChunk (topics: string[], payload: Buffer, qos: 0 | 1, mark: [string, number] | undefined, except: string | undefined): boolean {
    const max = this.opts.maxHeldTopics ?? MAX_PENDING_TOPICS
    if (this.heldTopics + topics.length > (qos === 0 ? max / 2 : max)) {
      this.dropped++
      this.opts.onDropped?.(qos)
      this.warn('dropped', { dropped: this.dropped, waitingTopics: this.heldTopics }, 'publishes dropped: too many wait for their queue entries (Redis slow or down; devices sync messages by seq)')
      return false
    }
    const packets = topics.map(topic => new Packet({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, this.broker))
    if (except !== undefined) for (const p of packets) p.clientId = except
    // cluster: one topic unmarked, the packet itself on the topic's own channel (only nodes with a
    // subscriber get it); else one fan-out. One node: each packet to the in-process emitter.
    const [only] = packets
    const message = !this.opts.clustered || (only !== undefined && packets.length === 1 && mark === undefined)
      ? null
      : { topic: FAN_TOPIC, payload, qos, brokerId: this.broker.id, topics, counters: packets.map(p => p.brokerCounter), ...(mark === undefined ? {} : { mark }), ...(except === undefined ? {} : { except }) }
    const step: Step = { packets, message, ready: qos === 0, settled: qos === 0 }
    this.steps.push(step)
    this.made++
    this.heldTopics += packets.length
    if (qos === 0) {
      this.pump()
      return true
    }
    // the queueing: on one node the memory persistence answers within this turn; on Redis it may
    // not answer (a stalled server): after the timeout the live copies go, and the topics stay
    // counted against the bound until the queueing itself has settled
    const queued = this.queue(packets).then(() => undefined, (err: Error) => err)
    void queued.then(() => {
      step.settled = true
      if (step.routed === true) this.heldTopics -= packets.length
    })
    let timer: NodeJS.Timeout | undefined
    const timeout = this.opts.clustered
      ? new Promise<Error>(resolve => {
        const ms = this.opts.queueTimeoutMs ?? QUEUE_TIMEOUT_MS
        timer = setTimeout(() => { resolve(new Error(`no answer in ${ms} ms`)) }, ms)
        timer.unref()
      })
      : null
    void (timeout === null ? queued : Promise.race([queued, timeout])).then((err) => {
      clearTimeout(timer)
      // as if the store had failed a moment later: the live copies still go out, the queued ones
      // may be missing (a device that was away syncs by seq)
      if (err !== undefined) this.warn('queueing', { err: err.message, topics: topics.length }, 'publish: queueing for persistent sessions failed or timed out (the live copies went without it)')
      step.ready = true
      this.pump()
    })
    return true
  }

  /** Resolves once everything published before the call has been handed on (or after `timeoutMs`). */
  async drain (timeoutMs: number): Promise<void> {
    const target = this.made
    if (this.routed >= target) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, timeoutMs)
      timer.unref()
      this.drains.push({ target, done: () => { clearTimeout(timer); resolve() } })
    })
  }

  /**
   * Each packet queued for the persistent sessions subscribed to its topic (one script on Redis).
   * The lookups are made together (each persistence answers from memory), so the scripts leave in
   * the order the publishes were made, whatever their number of topics.
   */
  private async queue (packets: Packet[]): Promise<void> {
    const subs = await Promise.all(packets.map(async p => await this.persistence.subscriptionsByTopic(p.topic)))
    const entries: Array<{ subs: Subscription[], packet: Packet }> = []
    for (let i = 0; i < packets.length; i++) {
      const s = subs[i]
      const packet = packets[i]
      if (s !== undefined && packet !== undefined && s.length > 0) entries.push({ subs: s, packet })
    }
    if (entries.length === 0) return
    if (this.persistence.outgoingEnqueueMany !== undefined) await this.persistence.outgoingEnqueueMany(entries)
    else await Promise.all(entries.map(async e => { await this.persistence.outgoingEnqueueCombi(e.subs, e.packet) }))
  }

  private pump (): void {
    for (let step = this.steps[this.head]; step?.ready === true; step = this.steps[this.head]) {
      this.steps[this.head++] = undefined
      step.routed = true
      if (step.settled) this.heldTopics -= step.packets.length
      this.routed++
      if (step.message !== null) this.emit(step.message)
      else for (const packet of step.packets) this.emit(packet)
    }
    if (this.head === this.steps.length) {
      this.steps.length = 0
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.steps.length) {
      this.steps.splice(0, this.head)
      this.head = 0
    }
    if (this.drains.length > 0) {
      this.drains = this.drains.filter(d => {
        if (d.target > this.routed) return true
        d.done()
        return false
      })
    }
  }

  private emit (message: FanMessage | Packet): void {
    try {
      this.mq.emit(message, (err?: Error) => {
        if (err) this.warn('emit', { err: err.message, topic: message.topic }, 'publish failed')
      })
    } catch (err) {
      // (a local subscriber's handler that throws: the rest still go)
      this.opts.logger.error({ err, topic: message.topic }, 'publish: local delivery failed')
    }
  }

  /** A fan-out from any node (this one too): each topic's packet to this node's subscribers. */
  private received (message: FanMessage): void {
    const { payload, qos, brokerId, topics, counters, mark, except } = message
    if (!Buffer.isBuffer(payload) || (qos !== 0 && qos !== 1) || typeof brokerId !== 'string' ||
      (except !== undefined && except !== null && !(typeof except === 'string' && except.length <= CLIENT_ID_MAX)) ||
      (mark !== undefined && mark !== null && !(Array.isArray(mark) && mark.length === 2 && typeof mark[0] === 'string' && Number.isSafeInteger(mark[1]))) ||
      !Array.isArray(topics) || !Array.isArray(counters) || topics.length !== counters.length || topics.length > FAN_CHUNK ||
      !topics.every(isDeliverableTopic) || !counters.every(c => Number.isSafeInteger(c))) {
      // something else with access to Redis
      this.warn('foreign', { topic: FAN_TOPIC }, 'a fan-out message that is not one of ours: dropped')
      return
    }
    this.opts.beforeDeliver?.(topics)
    for (let i = 0; i < topics.length; i++) {
      try {
        const packet: Record<string, unknown> = { cmd: 'publish', brokerId, brokerCounter: counters[i], topic: topics[i], payload, qos, retain: false, dup: false, messageId: undefined }
        if (typeof except === 'string') packet.clientId = except
        this.deliverLocally(packet)
      } catch (err) {
        // (a subscriber's handler that throws: the other topics still get theirs)
        this.opts.logger.error({ err, topic: topics[i] }, 'fan-out: local delivery failed')
      }
    }
    if (mark !== undefined && mark !== null) {
      for (const listener of this.markListeners) {
        try {
          listener(mark[0], mark[1])
        } catch (err) {
          this.opts.logger.error({ err }, 'fan-out: a mark listener failed')
        }
      }
    }
  }
}

/** Topic levels at most in a received fan-out (qlobber, under Aedes' emitter, throws beyond 100). */
const MAX_LEVELS = 16

/** A topic a client could subscribe to and the local emitter can match: no `$`, no wildcard, no NUL, a few levels. */
function isDeliverableTopic (t: unknown): boolean {
  if (typeof t !== 'string' || t.length === 0 || t.length > 1024 || t.startsWith('$') || t.includes('+') || t.includes('#') || t.includes('\u0000')) return false
  let levels = 1
  for (let i = 0; i < t.length; i++) if (t.charCodeAt(i) === 47 && ++levels > MAX_LEVELS) return false
  return true
}
