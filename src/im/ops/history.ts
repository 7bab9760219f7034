/**
 * history: messages of one conversation by seq range, in either direction, capped page size.
 *   { after: N }            -> the oldest page with seq > N (forward sync after reconnect)
 *   { before: N }           -> the newest page with seq < N (scroll-back)
 *   { after: A, before: B } -> seq in (A, B), oldest first
 *   {}                      -> the newest page
 *
 * Retention removes the oldest messages of a conversation, a prefix of its seqs (MessageStore.
 * removeExpired): what is kept is the run firstSeq..lastSeq. A page of a range that starts below
 * firstSeq starts there instead and says so (`firstSeq`), so that a client syncing forward moves its
 * gapless mark up to firstSeq - 1 instead of waiting for messages that are gone.
 */
import type { MessageEnvelope, RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { requireMember } from '../access.js'
import { RawJsonArray } from '../../protocol/raw-json.js'
import { countWithin } from './pages.js'
import type { StoredMessage } from '../../store/types.js'

export interface HistoryResult {
  conv: string
  /** The envelopes, serialized once per message (see im/envelopes.ts). */
  messages: RawJsonArray<MessageEnvelope>
  lastSeq: number
  /** More messages exist in the requested direction beyond this page. */
  hasMore: boolean
  /** The page size applied (requests above limits.historyPageMax are clamped). */
  limit: number
  /**
   * Present only when retention removed messages of the requested range: the lowest seq the server
   * still holds (every seq below it is gone for good). The page then starts there (forward), or
   * ends the range there (backward, `hasMore` false).
   */
  firstSeq?: number
}

export async function history (caller: Caller, req: RequestOf<'history'>, services: Services): Promise<HistoryResult> {
  await requireMember(services, caller, req.conv)
  const max = services.config.limits.historyPageMax
  const limit = Math.min(req.limit ?? max, max)
  const lastSeq = await services.sequencer.lastSeqForSync(req.conv)
  const fromSeq = (req.after ?? 0) + 1
  const toSeq = Math.min(req.before !== undefined ? req.before - 1 : lastSeq, lastSeq)
  const direction = req.after !== undefined ? 'forward' : 'backward'
  if (toSeq < fromSeq) return { conv: req.conv, messages: new RawJsonArray([]), lastSeq, hasMore: false, limit }
  const found = keptRun(await services.messages.range(req.conv, { fromSeq, toSeq, limit, direction }))
  // where the kept messages start, when the range reaches below them
  let firstSeq: number | undefined
  const first = found[0]?.seq
  if (first === undefined) {
    const kept = await services.messages.firstSeq(req.conv)
    if (kept > fromSeq) firstSeq = kept
  } else if (first > fromSeq && (direction === 'forward' || found.length < limit)) {
    // forward: the store skipped the removed prefix; backward: fewer than asked, so nothing below
    firstSeq = first
  }
  const page = withinBytes(found.map(m => services.envelopes.of(m)), services.config.limits.pageBytes, direction)
  const pageFirst = found[found.length - page.length]?.seq ?? 0
  const pageLast = found[page.length - 1]?.seq ?? 0
  const hasMore = page.length > 0 && (direction === 'forward' ? pageLast < toSeq : pageFirst > (firstSeq ?? fromSeq))
  const result: HistoryResult = { conv: req.conv, messages: new RawJsonArray(page), lastSeq, hasMore, limit }
  if (firstSeq !== undefined) result.firstSeq = firstSeq
  return result
}

/**
 * The page from its last hole on: retention removes the oldest seqs first, so a page read while it
 * removes them may hold a few of them before a hole; they are gone (or going) like those below.
 */
function keptRun (messages: StoredMessage[]): StoredMessage[] {
  for (let i = messages.length - 1; i > 0; i--) {
    if ((messages[i]?.seq ?? 0) !== (messages[i - 1]?.seq ?? 0) + 1) return messages.slice(i)
  }
  return messages
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
