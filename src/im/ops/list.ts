/** list: my conversations with lastSeq, last-message preview, readSeq, unread count and muted flag. */
import type { ConversationSummary, RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { toEnvelope } from '../publisher.js'

export async function list (caller: Caller, _req: RequestOf<'list'>, services: Services): Promise<{ conversations: ConversationSummary[] }> {
  const memberships = await services.meta.memberListByUser(caller.userId)
  const summaries = await Promise.all(memberships.map(async (m): Promise<ConversationSummary | null> => {
    const entry = await services.directory.get(m.conversationId)
    if (entry === null) return null
    const last = await services.messages.latest(m.conversationId)
    const lastSeq = last?.seq ?? 0
    const summary: ConversationSummary = {
      conv: m.conversationId,
      kind: entry.conversation.kind,
      name: entry.conversation.name,
      role: m.role,
      lastSeq,
      last: last === null ? null : toEnvelope(last),
      readSeq: m.readSeq,
      unread: Math.max(0, lastSeq - m.readSeq),
      muted: m.muted
    }
    if (entry.conversation.kind === 'direct') {
      const peer = [...entry.members.keys()].find(u => u !== caller.userId)
      if (peer !== undefined) summary.peer = peer
    }
    return summary
  }))
  const conversations = summaries.filter((s): s is ConversationSummary => s !== null)
  conversations.sort((a, b) => (b.last?.ts ?? 0) - (a.last?.ts ?? 0) || a.conv.localeCompare(b.conv))
  return { conversations }
}
