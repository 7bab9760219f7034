/**
 * Delivery: what happens once messages are stored. The sequencer hands each committed batch here
 * (in seq order per conversation, before it answers the senders): every message goes to every
 * member's inbox (Publisher), then, in a cluster, the other nodes learn the highest seq stored
 * per conversation, so that their sequencers do not collide with it (Sequencer.observe).
 */
import type { StoredMessage } from '../store/types.js'
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { ClusterBus } from '../broker/bus.js'
import { SEQ_TOPIC } from '../protocol/topics.js'

/** What the sequencer calls with each batch of newly stored messages. */
export interface CommitListener {
  committed: (messages: StoredMessage[]) => void | Promise<void>
}

export class Delivery implements CommitListener {
  constructor (
    private readonly directory: ConversationDirectory,
    private readonly publisher: Publisher,
    private readonly bus: ClusterBus
  ) {}

  async committed (stored: StoredMessage[]): Promise<void> {
    for (const m of stored) {
      const entry = this.directory.peek(m.conversationId) ?? await this.directory.get(m.conversationId)
      if (entry !== null) this.publisher.message(m, entry.memberIds)
    }
    if (this.bus.clustered) {
      const seqs: Record<string, number> = {}
      for (const m of stored) seqs[m.conversationId] = Math.max(m.seq, seqs[m.conversationId] ?? 0)
      this.bus.publish(SEQ_TOPIC, { seqs })
    }
  }
}
