/** listAll: the SDK's loop over `list` pages (cursor, `next`), servers from before paging, the page bound, the local sort. */
import { listAll, sortConversations, type ListPage } from '../../src/client/list.js'
import type { ConversationSummary } from '../../src/protocol/schemas.js'

const summary = (conv: string, ts?: number): ConversationSummary => ({
  conv,
  kind: 'group',
  name: conv,
  role: 'member',
  lastSeq: ts === undefined ? 0 : 1,
  last: ts === undefined ? null : { conv, seq: 1, msgId: 'm', from: 'alice', ts, kind: 'text', body: 'hi' },
  readSeq: 0,
  unread: ts === undefined ? 0 : 1,
  mentions: 0,
  muted: false
})

/** A server paging `all` (in conversation-id order) by `size`, recording the cursors it was asked for. */
function pagedServer (all: ConversationSummary[], size: number): { fetch: (cursor: string | undefined) => Promise<ListPage>, cursors: Array<string | undefined> } {
  const sorted = [...all].sort((a, b) => a.conv < b.conv ? -1 : 1)
  const cursors: Array<string | undefined> = []
  return {
    cursors,
    fetch: async (cursor) => {
      cursors.push(cursor)
      const from = cursor === undefined ? 0 : sorted.findIndex(c => c.conv > cursor)
      const page = sorted.slice(from, from + size)
      const more = from + size < sorted.length
      return { conversations: page, next: more ? page.at(-1)?.conv ?? null : null }
    }
  }
}

test('every page is fetched until next is null, and the whole list comes back sorted', async () => {
  const all = Array.from({ length: 7 }, (_, i) => summary(`c${i}`, i === 3 ? undefined : 1000 + (i * 37) % 7))
  const server = pagedServer(all, 3)
  const list = await listAll(server.fetch)
  expect(list.complete).toBe(true)
  expect(server.cursors).toEqual([undefined, 'c2', 'c5'])
  expect(list.conversations.map(c => c.conv)).toEqual(sortConversations([...all]).map(c => c.conv))
  // newest first, the conversation without messages last
  expect(list.conversations[0]?.last?.ts).toBe(Math.max(...all.map(c => c.last?.ts ?? 0)))
  expect(list.conversations.at(-1)?.conv).toBe('c3')
})

test('a server from before paging (no next) is one page', async () => {
  let calls = 0
  const list = await listAll(async () => {
    calls++
    return { conversations: [summary('b', 5), summary('a', 5), summary('c', 9)] }
  })
  expect(calls).toBe(1)
  expect(list).toEqual({ complete: true, conversations: [summary('c', 9), summary('a', 5), summary('b', 5)] })
})

test('a conversation on two pages keeps its later summary', async () => {
  const pages: ListPage[] = [
    { conversations: [summary('a', 1), summary('b', 2)], next: 'b' },
    { conversations: [summary('b', 3)], next: null }
  ]
  const list = await listAll(async () => pages.shift() as ListPage)
  expect(list.conversations.map(c => [c.conv, c.last?.ts])).toEqual([['b', 3], ['a', 1]])
})

test('the loop stops at the page bound and says the list is incomplete', async () => {
  let calls = 0
  const list = await listAll(async () => {
    calls++
    return { conversations: [summary(`c${calls}`)], next: 'same-cursor-for-ever' }
  }, 5)
  expect(calls).toBe(5)
  expect(list.complete).toBe(false)
  expect(list.conversations).toHaveLength(5)
})
