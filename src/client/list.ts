/**
 * `list` in pages (topics.md, "list"): pages come in conversation-id order and each names the cursor
 * of the next one (`next`, null on the last page). A server from before paging answers without
 * `next`: its one reply is the whole list. The SDK keeps handing out the whole list, sorted the way
 * the server used to sort it.
 */
import type { ConversationSummary } from '../protocol/schemas.js'

/** One page of `list`. */
export interface ListPage {
  conversations: ConversationSummary[]
  /** Cursor of the next page; null (or absent, from a server before paging) on the last one. */
  next?: string | null
}

export interface ConversationList {
  /** Newest last message first; conversations without messages last; ties by conversation id. */
  conversations: ConversationSummary[]
  /** False when the loop gave up after `maxPages` pages: the list may lack conversations. */
  complete: boolean
}

/** A defensive bound: 1,000 pages of up to 200 conversations. */
export const LIST_PAGES_MAX = 1000
/** The largest page the server gives (`limit` 1..200). */
export const LIST_PAGE_LIMIT = 200

/**
 * Fetches every page. The first request has no fields (a server from before paging refuses the
 * unknown ones); the following ones carry the cursor and ask for the largest page. A conversation
 * met twice (it moved between pages while they were fetched) keeps its later summary.
 */
export async function listAll (fetchPage: (cursor: string | undefined) => Promise<ListPage>, maxPages = LIST_PAGES_MAX): Promise<ConversationList> {
  const byConv = new Map<string, ConversationSummary>()
  let cursor: string | undefined
  let complete = false
  for (let pages = 0; pages < maxPages; pages++) {
    const page = await fetchPage(cursor)
    for (const c of page.conversations) byConv.set(c.conv, c)
    if (page.next === undefined || page.next === null) {
      complete = true
      break
    }
    cursor = page.next
  }
  return { conversations: sortConversations([...byConv.values()]), complete }
}

/** The order `list` had before paging (src/im/ops/list.ts): newest last message first, then by id. */
export function sortConversations (list: ConversationSummary[]): ConversationSummary[] {
  return list.sort((a, b) => (b.last?.ts ?? 0) - (a.last?.ts ?? 0) || a.conv.localeCompare(b.conv))
}
