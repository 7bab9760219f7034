/**
 * Unread counts: real messages (not changes) after a read cursor. Each entry stores the count of
 * real messages up to it (StoredMessage.count), so unread is the count at the conversation's tail
 * minus the count at the cursor: no scan, and without a read at all in the common cases (nothing
 * unread, or a conversation that never had a change, where counts are seqs).
 */
import { tailOf, type Tail } from './sequencer.js'
import type { Services } from './context.js'
import { countOf, isChangeKind, type ConversationHead, type StoredMessage } from '../store/types.js'
import { forEachLimited } from '../store/limited.js'

/**
 * A conversation's tail: its head record's latest entry, or what this node's sequencer knows if
 * that is more (a head lags what another node stored by up to the store's headLagMs, and after a
 * crash between the two writes until lastSeq repairs it).
 */
export function tailNow (services: Services, conversationId: string, headLatest: StoredMessage | null, taken?: Tail): Tail {
  let tail = tailOf(headLatest)
  // `taken`: the tail headsNotKnown found (no head record was read for it), in case this node
  // has dropped it since (a failed write drops a conversation's tail until it is read again)
  for (const t of [services.sequencer.lowerTail(conversationId), taken]) if (t !== undefined && t.seq > tail.seq) tail = t
  return tail
}

/**
 * The head records of those conversations whose tail this node cannot answer for itself
 * (Sequencer.syncTail): where it can, the tail is what it knows (tailNow with no head record) and a
 * preview is the message at the tail's lastReal, which the store keeps in memory while it is recent
 * (list reads it by key with the previews of lagging heads). This took the head reads off `list` in
 * the cluster soak: ~60 of FerretDB's ~135 requests a second, each a primary-key read.
 */
export async function headsNotKnown (services: Services, conversationIds: readonly string[]): Promise<{ heads: Map<string, ConversationHead>, known: Map<string, Tail> }> {
  const known = new Map<string, Tail>()
  const unknown: string[] = []
  for (const c of conversationIds) {
    const tail = services.sequencer.syncTail(c)
    if (tail !== undefined) known.set(c, tail)
    else unknown.push(c)
  }
  return { heads: unknown.length === 0 ? new Map() : await services.messages.latestMany(unknown), known }
}

/** Tails read from the store at a time by withTails. */
const EXACT_TAILS_CONCURRENCY = 16

/**
 * Each item with its tail (tailNow). While this node may not know every tail a lagging head hides
 * (Sequencer.tailsComplete: a node that just started, or whose link to the other nodes is down or
 * just came back), each tail is read from the store instead, exactly (sequencer.tailFor: past the
 * tail it knows, else the head and past it), EXACT_TAILS_CONCURRENCY at a time.
 */
export async function withTails<T extends { conversationId: string, headLatest: StoredMessage | null, taken?: Tail }> (services: Services, items: readonly T[]): Promise<Array<T & { tail: Tail }>> {
  const out = items.map(item => ({ ...item, tail: tailNow(services, item.conversationId, item.headLatest, item.taken) }))
  if (services.sequencer.tailsComplete()) return out
  await forEachLimited(out, EXACT_TAILS_CONCURRENCY, async (item) => {
    const exact = await services.sequencer.tailFor(item.conversationId)
    if (exact.seq > item.tail.seq) item.tail = exact
  })
  return out
}

/** The unread count when it needs no read: undefined if the count at readSeq is needed. */
export function unreadWithoutRead (tail: Tail, readSeq: number): number | undefined {
  if (readSeq >= tail.seq) return 0
  if (tail.count === tail.seq || readSeq <= 0) return tail.count - Math.max(0, readSeq)
  return undefined
}

/** Unread counts of several (conversation, tail, readSeq), with one store call for those that need one. */
export async function unreadMany (services: Services, items: ReadonlyArray<{ conversationId: string, tail: Tail, readSeq: number }>): Promise<number[]> {
  const out = items.map(i => unreadWithoutRead(i.tail, i.readSeq))
  const needed = items.filter((_, n) => out[n] === undefined)
  if (needed.length === 0) return out as number[]
  const found = await services.messages.getMany(needed.map(i => ({ conversationId: i.conversationId, seq: i.readSeq })))
  const counts = new Map(found.map(m => [`${m.conversationId}:${m.seq}`, countOf(m)]))
  // Retention removed the entry at the cursor and everything up to the first kept entry. Removed
  // messages still count as unread (as lastSeq - readSeq counts them without changes): the count at
  // the cursor is taken from the first kept entry's, as if every removed entry after the cursor was
  // a real message (exact then; otherwise unread is somewhat high until the cursor moves).
  const gone = [...new Set(needed.filter(i => !counts.has(`${i.conversationId}:${i.readSeq}`)).map(i => i.conversationId))]
  if (gone.length > 0) {
    const firsts = new Map(await Promise.all(gone.map(async c => [c, await services.messages.firstSeq(c)] as const)))
    const kept = await services.messages.getMany([...firsts].filter(([, seq]) => seq > 0).map(([conversationId, seq]) => ({ conversationId, seq })))
    // real messages before the first kept entry
    const realBefore = new Map(kept.map(m => [m.conversationId, countOf(m) - (isChangeKind(m.kind) ? 0 : 1)]))
    for (const item of needed) {
      const real = realBefore.get(item.conversationId)
      const first = firsts.get(item.conversationId) ?? 0
      if (real !== undefined && item.readSeq < first) counts.set(`${item.conversationId}:${item.readSeq}`, Math.max(0, real - (first - 1 - item.readSeq)))
    }
  }
  return items.map((item, n) => out[n] ?? Math.max(0, item.tail.count - (counts.get(`${item.conversationId}:${item.readSeq}`) ?? item.tail.count)))
}

/**
 * A user's unread messages over their conversations that are not muted (a push's badge), counting
 * at most `maxConversations` memberships (in id order): one page of memberships, heads and reads
 * per listPageMax conversations.
 */
export async function totalUnread (services: Services, userId: string, maxConversations: number): Promise<number> {
  let total = 0
  let after: string | null = null
  let left = maxConversations
  while (left > 0) {
    const limit = Math.min(left, services.config.limits.listPageMax)
    const page = await services.meta.memberPageByUser(userId, { after, limit })
    const counted = page.filter(m => !m.muted)
    const { heads, known } = await headsNotKnown(services, counted.map(m => m.conversationId))
    // a badge: the head records raised to what this node knows, without reading tails from the store
    const items = counted.map(m => ({ conversationId: m.conversationId, tail: tailNow(services, m.conversationId, heads.get(m.conversationId)?.latest ?? null, known.get(m.conversationId)), readSeq: m.readSeq }))
    for (const n of await unreadMany(services, items)) total += n
    if (page.length < limit) break
    left -= page.length
    after = page.at(-1)?.conversationId ?? null
  }
  return total
}
