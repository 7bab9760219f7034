/**
 * Everything the server publishes goes through here: messages to members' inboxes, events,
 * and replies to one device. Per-user inbox topics (see topics.md, "Diffusion"): one QoS 1
 * publish per member, so membership changes take effect at once and authorizeForward is a
 * prefix check.
 */
import type { Aedes, Client } from 'aedes'
import type { Writable } from 'node:stream'
import mqttPacket from 'mqtt-packet'
import type { StoredMessage } from '../store/types.js'
import type { ImEvent, MessageEnvelope, Reply } from '../protocol/schemas.js'
import { eventTopic, messageTopic, replyTopic } from '../protocol/topics.js'
import type { Logger } from '../log.js'

export function toEnvelope (m: StoredMessage): MessageEnvelope {
  const e: MessageEnvelope = { conv: m.conversationId, seq: m.seq, msgId: m.clientMsgId, from: m.senderId, ts: m.ts, kind: m.kind, body: m.body }
  if (m.replyTo !== null) e.replyTo = m.replyTo
  return e
}

export class Publisher {
  private readonly broker: Aedes
  private readonly logger: Logger

  /** False while the broker cannot route publishes (a cluster whose Redis is down). */
  readonly available: () => boolean
  /**
   * Called with the recipients before a message or event is published to them, so that their
   * connections can coalesce what the broker writes to them (src/broker/coalesce.ts).
   */
  holdWrites: (userIds: readonly string[]) => void = () => {}
  /**
   * The other connections of this node that watch a reply topic (a subscription of the same user
   * matching it), or null when watchers may be anywhere (a cluster): then the copy is routed.
   */
  replyWatchers: (userId: string, topic: string, requester: Client | undefined) => Client[] | null = () => null

  constructor (broker: Aedes, logger: Logger, available: () => boolean = () => true) {
    this.broker = broker
    this.logger = logger
    this.available = available
  }

  private publish (topic: string, payload: Buffer): void {
    this.broker.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err?: Error) => {
      if (err) this.logger.warn('publish failed', { topic, err: String(err) })
    })
  }

  /** Delivers one stored message to every member, serialized once. */
  message (message: StoredMessage, memberIds: readonly string[]): void {
    const payload = Buffer.from(JSON.stringify(toEnvelope(message)))
    this.holdWrites(memberIds)
    for (const userId of memberIds) this.publish(messageTopic(userId), payload)
  }

  event (userIds: Iterable<string>, event: ImEvent): void {
    const ids = Array.isArray(userIds) ? userIds as string[] : [...userIds]
    const payload = Buffer.from(JSON.stringify(event))
    this.holdWrites(ids)
    for (const userId of ids) this.publish(eventTopic(userId), payload)
  }

  /** Server-to-server notice to every node (QoS 0; `$` topics reach no client). */
  control (topic: string, payload: string): void {
    this.broker.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.logger.warn('control publish failed', { topic, err: String(err) })
    })
  }

  /**
   * A reply is written straight to the requesting connection, before the request's PUBACK (so a
   * client that has the PUBACK has the reply; a client that lost the connection first resends
   * the request and gets the same reply from the hooks' reply cache). Other connections of the
   * same user that watch the reply topic (mosquitto_sub on `im/u/<user>/#`) get a QoS 0 copy:
   * written to them directly when they are all on this node, else routed (the requester skips
   * the routed copy, see BrokerHooks.authorizeForward).
   */
  reply (userId: string, deviceId: string, reply: Reply, requester?: Client): void {
    const topic = replyTopic(userId, deviceId)
    const payload = Buffer.from(JSON.stringify(reply))
    if (requester !== undefined) writeDirect(requester, topic, payload)
    const watchers = this.replyWatchers(userId, topic, requester)
    if (watchers !== null) {
      for (const w of watchers) writeDirect(w, topic, payload)
      return
    }
    // routing known to be down: a publish would wait for Redis (Aedes' publish pipeline can hang
    // until it is back); the watchers miss this reply
    if (!this.available()) return
    this.broker.publish({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.logger.warn('reply publish failed', { topic, err: String(err) })
    })
  }
}

/** Writes a QoS 0 publish to one connection now, bypassing routing. False if it is not connected. */
export function writeDirect (client: Client, topic: string, payload: Buffer): boolean {
  // the same test as Aedes' own writes: `connecting` stays true until a resumed session's queue
  // has been sent, and requests are handled (and answered) during that time
  const c = client as unknown as { connected?: boolean, connecting?: boolean, errored?: boolean, conn?: Writable }
  if ((c.connected !== true && c.connecting !== true) || c.errored === true || c.conn === undefined || c.conn.destroyed) return false
  mqttPacket.writeToStream({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, c.conn)
  return true
}
