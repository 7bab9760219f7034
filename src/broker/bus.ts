/**
 * The cluster bus: small server-to-server notices to every node, over the broker's own emitter
 * (mqemitter-redis in a cluster). Topics start with `$mqim/`, which no client filter can match
 * [MQTT-4.7.2-1], and carry JSON `{node, ...}`. A node ignores its own notices. On a single node
 * there is nobody to tell: publish() does nothing.
 */
import type { Aedes } from 'aedes'
import type { Logger } from '../log.js'
import { CONTROL_FILTER } from '../protocol/topics.js'

export type BusHandler = (message: Record<string, unknown>) => void

export class ClusterBus {
  private readonly handlers = new Map<string, BusHandler[]>()

  private constructor (
    private readonly broker: Aedes,
    readonly nodeId: string,
    /** False on a single node: publish() is a no-op. */
    readonly clustered: boolean,
    /** False while the broker cannot route (Redis down): notices are dropped rather than queued. */
    private readonly available: () => boolean,
    private readonly logger: Logger
  ) {}

  static async create (broker: Aedes, opts: { nodeId: string, clustered: boolean, available: () => boolean, logger: Logger }): Promise<ClusterBus> {
    const bus = new ClusterBus(broker, opts.nodeId, opts.clustered, opts.available, opts.logger)
    if (opts.clustered) {
      await new Promise<void>(resolve => broker.subscribe(CONTROL_FILTER, (packet, cb) => {
        bus.dispatch(packet.topic, packet.payload)
        cb()
      }, () => resolve()))
    }
    return bus
  }

  on (topic: string, handler: BusHandler): void {
    const list = this.handlers.get(topic) ?? []
    list.push(handler)
    this.handlers.set(topic, list)
  }

  /** Tells every other node (QoS 0, best effort: a node that misses it recovers by other means). */
  publish (topic: string, message: Record<string, unknown>): void {
    if (!this.clustered) return
    if (!this.available()) {
      this.logger.debug({ topic }, 'cluster notice dropped: routing unavailable')
      return
    }
    const payload = Buffer.from(JSON.stringify({ ...message, node: this.nodeId }))
    this.broker.publish({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.logger.warn({ topic, err }, 'cluster notice failed')
    })
  }

  private dispatch (topic: string, payload: Buffer | string): void {
    const handlers = this.handlers.get(topic)
    if (handlers === undefined) return
    let message: unknown
    try {
      message = JSON.parse(payload.toString())
    } catch {
      return
    }
    if (typeof message !== 'object' || message === null || (message as { node?: unknown }).node === this.nodeId) return
    for (const h of handlers) {
      try {
        h(message as Record<string, unknown>)
      } catch (err) {
        this.logger.error({ topic, err }, 'cluster notice handler failed')
      }
    }
  }
}
