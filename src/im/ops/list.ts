/**
 * list: my conversations with lastSeq, last-message preview, readSeq, unread count and muted
 * flag, one page at a time in conversation-id order (a stable order: a page boundary does not
 * move when new messages arrive, as it would in recency order; clients sort by last.ts).
 * Steps: my memberships of the page -> their conversations and head records (latest messages),
 * each in one batched store call, whatever the page size.
 */
import type { ConversationSummary, RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { toEnvelope } from '../publisher.js'
import { countWithin } from './pages.js'

export interface ListResult {
  conversations: ConversationSummary[]
  /** The cursor of the next page, or null when this was the last one. */
  next: string | null
}

export async function list (caller: Caller, req: RequestOf<'list'>, services: Services): Promise<ListResult> {
  const max = services.config.limits.listPageMax
  const limit = Math.min(req.limit ?? max, max)
  // one more than the page tells whether another page follows
  const page = await services.meta.memberPageByUser(caller.userId, { after: req.cursor ?? null, limit: limit + 1 })
  const memberships = page.slice(0, limit)
  const ids = memberships.map(m => m.conversationId)
  const [conversations, latest] = await Promise.all([services.meta.conversationGetMany(ids), services.messages.latestMany(ids)])
  const byId = new Map(conversations.map(c => [c.id, c]))
  const summaries: ConversationSummary[] = []
  for (const m of memberships) {
    const conversation = byId.get(m.conversationId)
    if (conversation === undefined) continue
    const last = latest.get(m.conversationId) ?? null
    // the head record, or what this node's sequencer knows if that is more (a head lags its
    // messages only after a crash between the two writes, until lastSeq repairs it)
    const lastSeq = Math.max(last?.seq ?? 0, services.sequencer.knownLastSeq(m.conversationId) ?? 0)
    const summary: ConversationSummary = {
      conv: m.conversationId,
      kind: conversation.kind,
      name: conversation.name,
      role: m.role,
      lastSeq,
      last: last === null ? null : toEnvelope(last),
      readSeq: m.readSeq,
      unread: Math.max(0, lastSeq - m.readSeq),
      muted: m.muted
    }
    // a direct conversation's key is its two members: the peer needs no member lookup
    const peer = conversation.directKey?.split('|').find(u => u !== caller.userId)
    if (conversation.kind === 'direct' && peer !== undefined) summary.peer = peer
    summaries.push(summary)
  }
  // a page also stops at the byte budget (previews can be large); the rest follows with `next`
  const fit = countWithin(summaries, services.config.limits.pageBytes)
  const lastFit = summaries[fit - 1]
  if (fit < summaries.length && lastFit !== undefined) return { conversations: summaries.slice(0, fit), next: lastFit.conv }
  const next = page.length > limit ? memberships.at(-1)?.conversationId ?? null : null
  return { conversations: summaries, next }
}
