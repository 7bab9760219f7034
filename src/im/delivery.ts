/**
 * Delivery: what happens once messages are stored. The sequencer hands each committed batch here
 * (in seq order per conversation, before it answers the senders): every message goes to every
 * member's inbox (Publisher), a channel's once to the channel's topic; then, in a cluster, the
 * other nodes learn the highest seq stored per conversation, so that their sequencers do not
 * collide with it (Sequencer.observe), and which messages were changed (edit, delete, react), so
 * that they drop cached copies of them.
 */
import { countOf, lastRealOf, type StoredMessage } from '../store/types.js'
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { ClusterBus } from '../broker/bus.js'
import { SEQ_TOPIC } from '../protocol/topics.js'
import { MENTION_ALL } from '../protocol/schemas.js'
import type { MentionLog } from './mentions.js'
import type { Webhooks } from './webhooks.js'
import type { PushService } from './push.js'
import { toEnvelope } from './envelopes.js'

/** What the sequencer calls with each batch of newly stored messages. */
export interface CommitListener {
  committed: (messages: StoredMessage[]) => void | Promise<void>
}

export class Delivery implements CommitListener {
  /**
   * A `mention` event to each member the message mentions (`@all`: every member), the sender
   * left out, muted or not: a mention breaks through mute.
   */
  private mentioned (m: StoredMessage, memberIds: readonly string[]): void {
    const mentions = m.mentions ?? []
    const all = mentions.includes(MENTION_ALL)
    const named = new Set(mentions)
    const to = memberIds.filter(u => u !== m.senderId && (all || named.has(u)))
    if (to.length > 0) this.publisher.event(to, { type: 'mention', conv: m.conversationId, seq: m.seq, from: m.senderId, all })
  }

  constructor (
    private readonly directory: ConversationDirectory,
    private readonly publisher: Publisher,
    private readonly bus: ClusterBus,
    private readonly mentions: MentionLog | null = null,
    private readonly webhooks: Webhooks | null = null,
    private readonly push: PushService | null = null
  ) {}

  async committed (stored: StoredMessage[]): Promise<void> {
    // per message: the webhook's envelope is built only when an endpoint wants it
    const hooked = this.webhooks?.wants('message.stored') === true
    for (const m of stored) {
      const entry = this.directory.peek(m.conversationId) ?? await this.directory.get(m.conversationId)
      if (entry === null) continue
      if (entry.conversation.kind === 'channel') {
        // read diffusion: one publish to the channel topic, fanned out by the broker; no push, no mentions
        this.publisher.channelMessage(m)
        if (hooked) this.webhooks?.emit('message.stored', toEnvelope(m))
        continue
      }
      this.publisher.message(m, entry.memberIds)
      if (hooked) this.webhooks?.emit('message.stored', toEnvelope(m))
      this.push?.noteStored(m)
      if (m.mentions !== undefined) {
        this.mentioned(m, entry.memberIds)
        this.mentions?.note(m)
      }
    }
    if (this.bus.clustered) {
      // seqs: what nodes of the version before counts read; tails: [seq, count, lastReal]
      const seqs: Record<string, number> = {}
      const tails: Record<string, [number, number, number]> = {}
      const changed: Array<[string, number]> = []
      for (const m of stored) {
        if (m.seq > (seqs[m.conversationId] ?? 0)) {
          seqs[m.conversationId] = m.seq
          tails[m.conversationId] = [m.seq, countOf(m), lastRealOf(m)]
        }
        if (m.target !== undefined) changed.push([m.conversationId, m.target])
      }
      this.bus.publish(SEQ_TOPIC, changed.length > 0 ? { seqs, tails, changed } : { seqs, tails })
    }
  }
}
