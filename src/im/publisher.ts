/**
 * Everything the server publishes goes through here: messages to members' inboxes, events,
 * and replies to one device. Per-user inbox topics (see topics.md, "Diffusion"): one QoS 1
 * publish per member, so membership changes take effect at once and authorizeForward is a
 * prefix check.
 */
import type { Aedes, Client } from 'aedes'
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

  constructor (broker: Aedes, logger: Logger, available: () => boolean = () => true) {
    this.broker = broker
    this.logger = logger
    this.available = available
  }

  private publish (topic: string, payload: Buffer, onError?: () => void): void {
    this.broker.publish({ cmd: 'publish', topic, payload, qos: 1, retain: false, dup: false }, (err?: Error) => {
      if (!err) return
      this.logger.warn('publish failed', { topic, err: String(err) })
      onError?.()
    })
  }

  /** Delivers one stored message to every member, serialized once. */
  message (message: StoredMessage, memberIds: Iterable<string>): void {
    const payload = Buffer.from(JSON.stringify(toEnvelope(message)))
    for (const userId of memberIds) this.publish(messageTopic(userId), payload)
  }

  event (userIds: Iterable<string>, event: ImEvent): void {
    const payload = Buffer.from(JSON.stringify(event))
    for (const userId of userIds) this.publish(eventTopic(userId), payload)
  }

  /** Server-to-server notice to every node (QoS 0; `$` topics reach no client). */
  control (topic: string, payload: string): void {
    this.broker.publish({ cmd: 'publish', topic, payload: Buffer.from(payload), qos: 0, retain: false, dup: false }, (err?: Error) => {
      if (err) this.logger.warn('control publish failed', { topic, err: String(err) })
    })
  }

  /**
   * Replies are routed like everything else (so a sibling device subscribed to this reply topic
   * sees them too). If routing fails (Redis down in a cluster), the reply still reaches the
   * requesting connection directly, at QoS 0, so a sender is never left without an answer.
   */
  reply (userId: string, deviceId: string, reply: Reply, requester?: Client): void {
    const topic = replyTopic(userId, deviceId)
    const payload = Buffer.from(JSON.stringify(reply))
    const direct = (client: Client): void => { client.publish({ cmd: 'publish', topic, payload, qos: 0, retain: false, dup: false }, () => {}) }
    // Routing known to be down: a publish would wait for Redis (Aedes' publish pipeline can hang
    // until it is back), so answer the requester at once.
    if (requester !== undefined && !this.available()) {
      direct(requester)
      return
    }
    this.publish(topic, payload, requester === undefined
      ? undefined
      : () => direct(requester))
  }
}
