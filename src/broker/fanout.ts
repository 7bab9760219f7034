/**
 * Fan-out: one payload to the topics of many users (a message to every member's inbox, an event
 * to every member).
 *
 * On one node this is a broker publish per topic (the in-process emitter: cheap). In a cluster a
 * publish per topic crosses Redis once per member: encoded, sent, received and decoded again for
 * each of a group's members (28 on average in the cluster soak), a third of all the Redis traffic.
 * Here it crosses once: each topic's packet is first queued for the persistent sessions that
 * subscribe to it, as Aedes does for every QoS 1 publish before it routes it (the same
 * persistence calls; on Redis, the packets of all the topics in one script), then one message on FAN_TOPIC carries the payload once with every topic and
 * each packet's identity (brokerId, brokerCounter: what the queued copies are known by), and every
 * node, this one too, hands it to its own subscribers of those topics as if each had been
 * published there: the same authorizeForward, QoS and acknowledgement of queued copies.
 *
 * Order: in a cluster everything the server publishes to clients goes through here (a publish to
 * one topic too, as the packet itself on that topic's channel), and reaches the emitter in the
 * order it was made: one waits for the queueing of those before it. Aedes needs that: a
 * connection drops as a duplicate any packet whose brokerCounter is not above the last one it got
 * from the same node (client.js dedupe), so a QoS 0 event made after a message but routed before
 * it (the message waiting for its queue entry) would cost that connection the message.
 *
 * A fan-out may carry a mark (a conversation and seq): every node that receives it hands the mark
 * on (onMark) once it has delivered the fan-out, and the delivery's order across nodes waits for
 * those marks (src/im/delivery.ts): a mark received means the message is in Redis's stream ahead
 * of anything this node publishes next.
 *
 * Bounds: at most MAX_PENDING fan-outs wait for their queueing (Redis slow or down); beyond that
 * new ones are dropped and counted (the messages are stored: devices sync them by seq). A fan-out
 * names at most MAX_TOPICS topics (a group's members are bounded well below).
 */
import type { Aedes } from 'aedes'
import Packet from 'aedes-packet'
import type { Logger } from '../log.js'
import { FAN_TOPIC } from '../protocol/topics.js'
import { localEmitter } from './upstream.js'

/** Fan-outs waiting for their queueing at most; beyond, new ones are dropped (see above). */
export const MAX_PENDING = 10_000
/** Topics of one fan-out at most (also what a received one may name). */
export const MAX_TOPICS = 100_000

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
}

interface Step {
  /** A fan-out (several topics, or marked), or a publish to one topic. */
  message: FanMessage | Packet
  ready: boolean
}

export interface FanOutOptions {
  /** False on one node: publish() is a broker publish per topic. */
  clustered: boolean
  logger: Logger
  /** Called with the topics of each fan-out received, before they are delivered (Publisher: hold the writes). */
  beforeDeliver?: (topics: readonly string[]) => void
}

/** Told the mark of each marked fan-out received (this node's own too), after its local deliveries. */
export type MarkListener = (conversationId: string, seq: number) => void

export class FanOut {
  private readonly steps: Array<Step | undefined> = []
  private head = 0
  private pending = 0
  private readonly deliverLocally: (message: object) => void
  private drained: Array<() => void> = []
  private readonly markListeners: MarkListener[] = []
  /** Fan-outs dropped because MAX_PENDING were waiting (since start). */
  dropped = 0
  private warnedAt = Number.NEGATIVE_INFINITY
  private foreign = 0
  private foreignWarnedAt = Number.NEGATIVE_INFINITY

  private constructor (private readonly broker: Aedes, private readonly mq: Emitter, private readonly persistence: QueueingPersistence, private readonly opts: FanOutOptions) {
    this.deliverLocally = localEmitter(mq)
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

  /** Publishes `payload` to each topic at `qos` (see above), with `mark` if given (a cluster only). */
  publish (topics: readonly string[], payload: Buffer, qos: 0 | 1, mark?: [string, number]): void {
    if (!this.opts.clustered) {
      for (const topic of topics) {
        this.broker.publish({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, (err?: Error) => {
          if (err) this.opts.logger.warn({ topic, err }, 'publish failed')
        })
      }
      return
    }
    if (topics.length === 0) return
    if (topics.length > MAX_TOPICS) throw new Error(`fan-out to ${topics.length} topics (at most ${MAX_TOPICS})`)
    if (this.pending >= MAX_PENDING) {
      this.dropped++
      if (performance.now() - this.warnedAt >= 60_000) {
        this.warnedAt = performance.now()
        this.opts.logger.warn({ dropped: this.dropped, waiting: this.pending }, 'fan-outs dropped: too many wait for Redis (devices sync the messages by seq)')
      }
      return
    }
    const packets = topics.map(topic => new Packet({ cmd: 'publish', topic, payload, qos, retain: false, dup: false }, this.broker))
    // one topic, unmarked: the packet itself, on the topic's own channel (only nodes with a subscriber get it)
    const [only] = packets
    const step: Step = {
      message: packets.length === 1 && only !== undefined && mark === undefined
        ? only
        : { topic: FAN_TOPIC, payload, qos, brokerId: this.broker.id, topics: [...topics], counters: packets.map(p => p.brokerCounter), ...(mark === undefined ? {} : { mark }) },
      ready: qos === 0
    }
    this.steps.push(step)
    this.pending++
    if (qos === 0) {
      this.pump()
      return
    }
    this.queue(packets).catch((err: Error) => {
      // as if Redis had been down a moment later: the live copies still go out, the queued ones
      // are missing (a device that was away syncs by seq)
      this.opts.logger.warn({ err, topics: topics.length }, 'fan-out: queueing for persistent sessions failed')
    }).finally(() => {
      step.ready = true
      this.pump()
    })
  }

  /** Resolves once nothing waits for its queueing (or after `timeoutMs`). */
  async drain (timeoutMs: number): Promise<void> {
    if (this.head === this.steps.length) return
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, timeoutMs)
      timer.unref()
      this.drained.push(() => { clearTimeout(timer); resolve() })
    })
  }

  /** Each packet queued for the persistent sessions subscribed to its topic (one script on Redis). */
  private async queue (packets: Packet[]): Promise<void> {
    const entries: Array<{ subs: Subscription[], packet: Packet }> = []
    for (const packet of packets) {
      const subs = await this.persistence.subscriptionsByTopic(packet.topic)
      if (subs.length > 0) entries.push({ subs, packet })
    }
    if (entries.length === 0) return
    if (this.persistence.outgoingEnqueueMany !== undefined) await this.persistence.outgoingEnqueueMany(entries)
    else await Promise.all(entries.map(async e => { await this.persistence.outgoingEnqueueCombi(e.subs, e.packet) }))
  }

  private pump (): void {
    for (let step = this.steps[this.head]; step?.ready === true; step = this.steps[this.head]) {
      this.steps[this.head++] = undefined
      this.pending--
      const message = step.message
      this.mq.emit(message, (err?: Error) => {
        if (err) this.opts.logger.warn({ err, topic: message.topic }, 'fan-out publish failed')
      })
    }
    if (this.head === this.steps.length) {
      this.steps.length = 0
      this.head = 0
      const drained = this.drained
      this.drained = []
      for (const d of drained) d()
    } else if (this.head >= 1024 && this.head * 2 >= this.steps.length) {
      this.steps.splice(0, this.head)
      this.head = 0
    }
  }

  /** A fan-out from any node (this one too): each topic's packet to this node's subscribers. */
  private received (message: FanMessage): void {
    const { payload, qos, brokerId, topics, counters, mark } = message
    if (!Buffer.isBuffer(payload) || (qos !== 0 && qos !== 1) || typeof brokerId !== 'string' ||
      (mark !== undefined && mark !== null && !(Array.isArray(mark) && mark.length === 2 && typeof mark[0] === 'string' && Number.isSafeInteger(mark[1]))) ||
      !Array.isArray(topics) || !Array.isArray(counters) || topics.length !== counters.length || topics.length > MAX_TOPICS ||
      !topics.every(isDeliverableTopic) || !counters.every(c => Number.isSafeInteger(c))) {
      // something else with access to Redis: one warning a minute, with the count since the last
      this.foreign++
      if (performance.now() - this.foreignWarnedAt >= 60_000) {
        this.foreignWarnedAt = performance.now()
        this.opts.logger.warn({ topic: FAN_TOPIC, dropped: this.foreign }, 'a fan-out message that is not one of ours: dropped')
        this.foreign = 0
      }
      return
    }
    this.opts.beforeDeliver?.(topics)
    for (let i = 0; i < topics.length; i++) {
      try {
        this.deliverLocally({ cmd: 'publish', brokerId, brokerCounter: counters[i], topic: topics[i], payload, qos, retain: false, dup: false, messageId: undefined })
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
