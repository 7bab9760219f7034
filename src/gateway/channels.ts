/**
 * Channel subscriptions: who receives a channel's topic `im/c/<conv>/m`.
 *
 * A channel message is published once to its topic and fanned out by the broker (one Redis
 * publish in a cluster), so what decides who gets it is the broker's subscriptions:
 *   - authorize: a connection may subscribe a channel topic (exactly, no wildcards) when its user
 *     is a member (one cached lookup, see ConversationDirectory.channelMember), at most
 *     channels.subscriptionsPerConnection of them. A membership that changed while it was being
 *     checked is checked again.
 *   - joined: new members' connections are subscribed by the server (on every node: the notice
 *     goes over the cluster bus), so they receive the channel without asking.
 *   - left: removed members' connections stop receiving at once: the topic leaves the session's
 *     set of channels synchronously (authorizeForward delivers a channel topic only to a session
 *     holding it, an O(1) set lookup), then the broker subscription is removed.
 */
import type { Client, Subscription, UnsubscribePacket } from 'aedes'
import type { Logger } from '../log.js'
import type { ClusterBus } from '../broker/bus.js'
import type { Session, Sessions } from '../broker/sessions.js'
import type { ConversationDirectory } from '../im/directory.js'
import { CHANNEL_MEMBERS_TOPIC, channelTopic, parseChannelTopic } from '../protocol/topics.js'
import { SubscriptionBroadcastTimeoutError } from '../broker/upstream.js'

/** Times a subscribe check runs again when the membership changed while it was read. */
const AUTHORIZE_TRIES = 3

export class ChannelSubscriptions {
  /** Channel topics whose subscribe check is in flight, per connection. */
  private readonly checking = new WeakMap<Session, Set<string>>()

  constructor (
    private readonly sessions: Sessions,
    private readonly directory: ConversationDirectory,
    private readonly bus: ClusterBus,
    private readonly logger: Logger,
    private readonly limits: { subscriptionsPerConnection: number }
  ) {
    bus.on(CHANNEL_MEMBERS_TOPIC, (notice) => {
      const { conv, users, action } = notice
      if (typeof conv !== 'string' || !Array.isArray(users) || (action !== 'joined' && action !== 'left')) return
      const ids = users.filter((u): u is string => typeof u === 'string')
      this.directory.invalidateMembersLocal(conv, ids)
      this.apply(conv, ids, action)
    })
  }

  /** The subscription if the session's user may receive this channel topic, else null (SUBACK 0x80). */
  async authorize (client: Client, session: Session, sub: Subscription): Promise<Subscription | null> {
    const conv = parseChannelTopic(sub.topic)
    if (conv === null) return null
    // checks in flight count against the bound too (one SUBSCRIBE's topics are checked at once)
    let pending = this.checking.get(session)
    if (pending === undefined) this.checking.set(session, pending = new Set())
    if (!session.channels.has(sub.topic) && !pending.has(sub.topic) && session.channels.size + pending.size >= this.limits.subscriptionsPerConnection) return null
    pending.add(sub.topic)
    try {
      return await this.check(client, session, sub, conv)
    } finally {
      pending.delete(sub.topic)
    }
  }

  private async check (client: Client, session: Session, sub: Subscription, conv: string): Promise<Subscription | null> {
    for (let i = 0; i < AUTHORIZE_TRIES; i++) {
      const mark = this.directory.mark()
      const found = await this.directory.member(conv, session.userId)
      if (found === null || found.entry.conversation.kind !== 'channel') return null
      // the connection closed meanwhile
      if (this.sessions.get(client) !== session) return null
      if (this.directory.channelMemberChangedSince(conv, session.userId, mark)) continue
      session.channels.add(sub.topic)
      if (sub.qos > 1) sub.qos = 1
      return sub
    }
    return null
  }

  /** These users became members: subscribe their connections, here and on every node. */
  joined (conv: string, userIds: readonly string[]): void {
    this.changed(conv, userIds, 'joined')
  }

  /** These users are no longer members: their connections stop receiving at once, here and on every node. */
  left (conv: string, userIds: readonly string[]): void {
    this.changed(conv, userIds, 'left')
  }

  private changed (conv: string, userIds: readonly string[], action: 'joined' | 'left'): void {
    if (userIds.length === 0) return
    this.directory.invalidateMembersLocal(conv, userIds)
    this.apply(conv, userIds, action)
    this.bus.publish(CHANNEL_MEMBERS_TOPIC, { conv, users: userIds, action })
  }

  private apply (conv: string, userIds: readonly string[], action: 'joined' | 'left'): void {
    const topic = channelTopic(conv)
    for (const userId of userIds) {
      for (const client of this.sessions.clientsOf(userId)) {
        if (action === 'joined') {
          // through authorizeSubscribe like a client's own SUBSCRIBE (no SUBACK: no message id)
          client.subscribe({ topic, qos: 0 }, (err?: Error | null) => {
            if (!err) return
            this.logger.debug({ client: client.id, topic, err }, 'channel subscription failed')
            // not confirmed through Redis (a lost broadcast, see upstream.ts 5): the connection
            // would stay without the channel; closed, the client reconnects and subscribes again
            if (err instanceof SubscriptionBroadcastTimeoutError) client.close()
          })
          continue
        }
        const session = this.sessions.get(client)
        // from now on nothing of the channel is forwarded to this connection (authorizeForward)
        session?.channels.delete(topic)
        // (a persistent session keeps the subscription in the broker's store; restored on its next
        // connect, it goes through authorize again and is refused)
        client.unsubscribe({ cmd: 'unsubscribe', unsubscriptions: [topic] } as unknown as UnsubscribePacket, (err?: Error | null) => {
          if (err) this.logger.debug({ client: client.id, topic, err }, 'channel unsubscription failed')
        })
      }
    }
  }
}
