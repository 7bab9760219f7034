/**
 * Everything the server sends to clients goes through here: messages to members' inboxes,
 * events, and replies to one device. Per-user inbox topics (see topics.md, "Diffusion"): one QoS 1
 * publish per member, so membership changes take effect at once and authorizeForward is a prefix
 * check. Every publish goes through the fan-out (src/broker/fanout.ts), which routes them in the
 * order they were made (Aedes drops a packet whose brokerCounter is lower than the last one a
 * device got), and in a cluster sends what goes to several users across Redis once. Before
 * publishing to a set of users, their connections on this node are held (Sessions.hold; in a
 * cluster, on each node as the fan-out arrives) so that everything written to each for one commit
 * leaves in one socket write.
 */
import type { Client } from 'aedes'
import type { StoredMessage } from '../store/types.js'
import type { ImEvent, Reply } from '../protocol/schemas.js'
import { serializeReply } from '../protocol/raw-json.js'
import type { EnvelopeCache } from './envelopes.js'
import { channelTopic, clientIdOf, eventTopic, messageTopic } from '../protocol/topics.js'
import type { Logger } from '../log.js'
import type { Session, Sessions } from '../broker/sessions.js'
import type { Metrics } from '../metrics.js'
import type { Webhooks } from './webhooks.js'
import { QUEUE_TIMEOUT_MS, type FanOut } from '../broker/fanout.js'

export interface PublisherOptions {
  /** True when other nodes share the broker (Redis): reply watchers may be connected elsewhere. */
  clustered: boolean
  /** False while the broker cannot route publishes (a cluster whose Redis is down). */
  available: () => boolean
  /** Serialized envelopes, shared with history and list (a message delivered is often asked for soon after). */
  envelopes: EnvelopeCache
  logger: Logger
  metrics?: Metrics
  /** member events also go to the webhooks (member.changed). */
  webhooks?: Webhooks
  /** Clustered: whether a connection on another node may watch this user's replies (UsersElsewhere). */
  watchedElsewhere?: (userId: string) => boolean
  /** Clustered: whether this user may have a connection on another node (UsersElsewhere). */
  connectedElsewhere?: (userId: string) => boolean
}

/**
 * How long close() waits for fan-outs still being queued for persistent sessions: as long as one
 * may be held (QUEUE_TIMEOUT_MS), so that the other nodes get the marks they may be waiting for.
 */
const CLOSE_DRAIN_MS = QUEUE_TIMEOUT_MS + 1000

export class Publisher {
  constructor (private readonly sessions: Sessions, private readonly fan: FanOut, private readonly opts: PublisherOptions) {}

  /** False while the broker cannot route publishes (a cluster whose Redis is down). */
  available (): boolean {
    return this.opts.available()
  }

  /** Whether many publishes wait for their queue entries (Redis slow): new work had better wait. */
  backlogged (): boolean {
    return this.fan.backlogged
  }

  /** Through the fan-out too (what this node publishes must reach the emitter in the order it was made). */
  private publish (topic: string, payload: Buffer, qos: 0 | 1): void {
    if (this.closed) return
    this.fan.publish([topic], payload, qos)
  }

  private closed = false
  /** Reply copies routed through the cluster for watchers (since start). */
  repliesRouted = 0
  /** Events for a user's other devices not published: there was none, here or elsewhere (since start). */
  noOtherDevices = 0

  /**
   * The node is stopping: its stored messages have been delivered (the sequencer is closed), what
   * is left are events about connections ending with it (clients sync by seq on reconnect).
   */
  async close (): Promise<void> {
    await this.fan.drain(CLOSE_DRAIN_MS)
    this.closed = true
  }

  /**
   * Cluster: `listener(conversation, seq)` once a node's message (this node's too) was routed and
   * delivered here: the order of deliveries across nodes waits for these (Delivery).
   */
  onPublished (listener: (conversationId: string, seq: number) => void): void {
    this.fan.onMark(listener)
  }

  /** Through the fan-out (held here first on one node). */
  private publishTo (userIds: readonly string[], topicOf: (userId: string) => string, payload: Buffer, qos: 0 | 1, except?: string): void {
    if (this.closed) return
    if (!this.opts.clustered) this.sessions.hold(userIds)
    this.fan.publish(userIds.map(topicOf), payload, qos, undefined, except)
  }

  /** Delivers one stored message to every member, serialized once. */
  message (message: StoredMessage, memberIds: readonly string[]): void {
    if (this.closed) return
    if (!this.opts.clustered) this.sessions.hold(memberIds)
    const accepted = this.fan.publish(memberIds.map(messageTopic), this.opts.envelopes.of(message), 1, [message.conversationId, message.seq])
    this.opts.metrics?.delivered(accepted)
  }

  /**
   * Delivers one stored channel message: one publish to the channel topic, which the broker fans
   * out to the members' subscribed connections (one Redis publish in a cluster). QoS 0: never
   * queued for offline sessions; members that were away pull with history {after}.
   */
  channelMessage (message: StoredMessage): void {
    if (this.closed) return
    this.fan.publish([channelTopic(message.conversationId)], this.opts.envelopes.of(message), 0, [message.conversationId, message.seq])
  }

  /**
   * An event only online devices get (QoS 0: never queued for an offline session, dropped for a
   * connection that cannot take it): typing, and state a device gets again on its own when it comes
   * back (its read cursors, with `list`; group receipt aggregates, with `receipts` or the next one).
   * In the cluster soak, read events and group receipts made half of all publishes: at QoS 0 they
   * cost no queue entry and acknowledgement in Redis, and no PUBACK.
   */
  ephemeral (userIds: readonly string[], event: ImEvent): void {
    this.publishTo(userIds, eventTopic, Buffer.from(JSON.stringify(event)), 0)
  }

  /**
   * A QoS 0 event for the user's devices other than the one that caused it (its `read`: the reply
   * has the same figures). With no other connection of the user, here or (in a cluster) possibly
   * on another node, nothing is published at all (most `read` requests come from a user's only
   * device); else that device is left out.
   */
  toOtherDevices (userId: string, deviceId: string, event: ImEvent): void {
    const requester = clientIdOf(userId, deviceId)
    if (this.sessions.countOf(userId, requester) === 0 && !(this.opts.clustered && this.opts.connectedElsewhere?.(userId) !== false)) {
      this.noOtherDevices++
      return
    }
    this.publishTo([userId], eventTopic, Buffer.from(JSON.stringify(event)), 0, requester)
  }

  event (userIds: Iterable<string>, event: ImEvent): void {
    if (event.type === 'member') this.opts.webhooks?.emit('member.changed', event)
    const ids = Array.isArray(userIds) ? userIds as string[] : [...userIds]
    if (ids.length > 0) this.publishTo(ids, eventTopic, Buffer.from(JSON.stringify(event)), 1)
  }

  /**
   * A reply is written straight to the requesting connection, before the request's PUBACK (so a
   * client that has the PUBACK has the reply; a client that lost the connection first resends
   * the request and gets the same reply from the hooks' reply cache). Other connections of the
   * same user that watch the reply topic (mosquitto_sub on `im/u/<user>/#`) get a QoS 0 copy:
   * written to them directly, unless one may be connected to another node (a cluster, see
   * UsersElsewhere): then the copy is routed, to the watchers here too (the requester skips the
   * routed copy, see BrokerHooks.authorizeForward).
   */
  /** Writes a reply to the requester (and its watchers); returns the reply's size in bytes. */
  reply (session: Session, reply: Reply, requester: Client): number {
    const topic = session.replyTopic
    const payload = serializeReply(reply)
    this.sessions.writeDirect(requester, topic, payload)
    // (routing known to be down: a publish would wait for Redis, as Aedes' publish pipeline can
    // hang until it is back; the watchers elsewhere miss this reply)
    if (this.opts.clustered && this.opts.available() && this.opts.watchedElsewhere?.(session.userId) !== false) {
      this.repliesRouted++
      this.publish(topic, payload, 0)
    } else {
      for (const w of this.sessions.watchers(session.userId, topic, requester)) this.sessions.writeDirect(w, topic, payload)
    }
    return payload.length
  }
}
