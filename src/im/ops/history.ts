/**
 * history: messages of one conversation by seq range, in either direction, capped page size.
 *   { after: N }            -> the oldest page with seq > N (forward sync after reconnect)
 *   { before: N }           -> the newest page with seq < N (scroll-back)
 *   { after: A, before: B } -> seq in (A, B), oldest first
 *   {}                      -> the newest page
 */
import type { MessageEnvelope, RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { requireMember, lastSeqOf } from '../access.js'
import { RawJsonArray } from '../../protocol/raw-json.js'
import { countWithin } from './pages.js'

export interface HistoryResult {
  conv: string
  /** The envelopes, serialized once per message (see im/envelopes.ts). */
  messages: RawJsonArray<MessageEnvelope>
  lastSeq: number
  /** More messages exist in the requested direction beyond this page. */
  hasMore: boolean
  /** The page size applied (requests above limits.historyPageMax are clamped). */
  limit: number
}

export async function history (caller: Caller, req: RequestOf<'history'>, services: Services): Promise<HistoryResult> {
  await requireMember(services, caller, req.conv)
  const max = services.config.limits.historyPageMax
  const limit = Math.min(req.limit ?? max, max)
  const lastSeq = await lastSeqOf(services, req.conv)
  const fromSeq = (req.after ?? 0) + 1
  const toSeq = Math.min(req.before !== undefined ? req.before - 1 : lastSeq, lastSeq)
  const direction = req.after !== undefined ? 'forward' : 'backward'
  if (toSeq < fromSeq) return { conv: req.conv, messages: new RawJsonArray([]), lastSeq, hasMore: false, limit }
  const found = await services.messages.range(req.conv, { fromSeq, toSeq, limit, direction })
  const page = withinBytes(found.map(m => services.envelopes.of(m)), services.config.limits.pageBytes, direction)
  const span = toSeq - fromSeq + 1
  return { conv: req.conv, messages: new RawJsonArray(page), lastSeq, hasMore: span > page.length, limit }
}

/**
 * The page cut to a byte budget, keeping at least one message: the messages nearest the start of
 * the requested direction are kept, so paging on from the page's edge continues where it stopped.
 */
function withinBytes (messages: Buffer[], budget: number, direction: 'forward' | 'backward'): Buffer[] {
  const ordered = direction === 'forward' ? messages : [...messages].reverse()
  const n = countWithin(ordered, budget)
  if (n === messages.length) return messages
  return direction === 'forward' ? messages.slice(0, n) : messages.slice(messages.length - n)
}
