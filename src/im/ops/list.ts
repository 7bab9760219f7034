/**
 * list: my conversations with lastSeq, last-message preview (the latest real message as it is
 * now: edited, deleted, reactions), readSeq, unread count (real messages only) and muted
 * flag, one page at a time in conversation-id order (a stable order: a page boundary does not
 * move when new messages arrive, as it would in recency order; clients sort by last.ts).
 * Steps: my memberships of the page -> their conversations and the head records (latest messages)
 * of those whose tail this node does not know (headsNotKnown), each in one batched store call,
 * whatever the page size -> one more for the previews of the others and of heads that lag what
 * another node stored (read by key: recent ones from the store's memory).
 */
import type { ConversationSummary, RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { RawJsonArray } from '../../protocol/raw-json.js'
import { countWithin } from './pages.js'
import { headsNotKnown, unreadMany, withTails } from '../unread.js'

export interface ListResult {
  /** The summaries, each serialized with its preview's envelope bytes (see im/envelopes.ts). */
  conversations: RawJsonArray<ConversationSummary>
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
  const [conversations, { heads: latest, known }, mentions] = await Promise.all([services.meta.conversationGetMany(ids), headsNotKnown(services, ids), services.meta.mentionCountMany(caller.userId, ids)])
  const byId = new Map(conversations.map(c => [c.id, c]))
  const shown = await withTails(services, memberships.flatMap(m => {
    const conversation = byId.get(m.conversationId)
    if (conversation === undefined) return []
    const head = latest.get(m.conversationId)
    return [{ m, conversation, conversationId: m.conversationId, headLatest: head?.latest ?? null, taken: known.get(m.conversationId), preview: head?.preview ?? null }]
  }))
  // A conversation whose tail this node knows has no head record read here; in a cluster a head
  // record may lag what another node stored (heads are written lazily, see the message store). When
  // this node's sequencer knows of later entries, the preview is read by key (the latest real
  // message with every change applied), all of them in one store call.
  const lagging = shown.filter(s => s.tail.seq > (s.headLatest?.seq ?? 0) && s.tail.lastReal > 0)
  if (lagging.length > 0) {
    const read = new Map((await services.messages.getMany(lagging.map(s => ({ conversationId: s.m.conversationId, seq: s.tail.lastReal })))).map(msg => [msg.conversationId, msg]))
    for (const s of lagging) s.preview = read.get(s.m.conversationId) ?? s.preview
  }
  const unread = await unreadMany(services, shown.map(s => ({ conversationId: s.m.conversationId, tail: s.tail, readSeq: s.m.readSeq })))
  const summaries: Array<{ conv: string, bytes: Buffer }> = []
  for (const [n, { m, conversation, preview, tail }] of shown.entries()) {
    const summary: Omit<ConversationSummary, 'last'> = {
      conv: m.conversationId,
      kind: conversation.kind,
      name: conversation.name,
      role: m.role,
      lastSeq: tail.seq,
      readSeq: m.readSeq,
      unread: unread[n] ?? 0,
      mentions: mentions.get(m.conversationId) ?? 0,
      muted: m.muted
    }
    // a direct conversation's key is its two members: the peer needs no member lookup
    const peer = conversation.directKey?.split('|').find(u => u !== caller.userId)
    if (conversation.kind === 'direct' && peer !== undefined) summary.peer = peer
    summaries.push({ conv: m.conversationId, bytes: withPreview(summary, preview === null ? null : services.envelopes.of(preview)) })
  }
  // a page also stops at the byte budget (previews can be large); the rest follows with `next`
  const fit = countWithin(summaries.map(s => s.bytes), services.config.limits.pageBytes)
  const lastFit = summaries[fit - 1]
  if (fit < summaries.length && lastFit !== undefined) return { conversations: new RawJsonArray(summaries.slice(0, fit).map(s => s.bytes)), next: lastFit.conv }
  const next = page.length > limit ? memberships.at(-1)?.conversationId ?? null : null
  return { conversations: new RawJsonArray(summaries.map(s => s.bytes)), next }
}

/** A summary as JSON bytes, its `last` (the preview's envelope, already serialized) as the last key. */
function withPreview (summary: Omit<ConversationSummary, 'last'>, last: Buffer | null): Buffer {
  const text = JSON.stringify(summary)
  if (last === null) return Buffer.from(`${text.slice(0, -1)},"last":null}`)
  return Buffer.concat([Buffer.from(`${text.slice(0, -1)},"last":`), last, CLOSE_BRACE])
}

const CLOSE_BRACE = Buffer.from('}')
