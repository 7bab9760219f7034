/**
 * history's lastSeq on one node: taken from the sequencer when it has written the conversation
 * (no store query per page; on FerretDB that query is a collection scan), and from the store when
 * it has not (e.g. right after a restart). The answer is the same either way.
 */
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import type { StoredMessage } from '../src/store/types.js'
import { startServer, addUser, connect } from './helpers/im.js'

/** The in-memory store, counting queries of a conversation's end (lastSeq, or latest: its seq and counts). */
class CountingStore extends MemoryMessageStore {
  lastSeqCalls = 0
  override async lastSeq (conversationId: string): Promise<number> {
    this.lastSeqCalls++
    return await super.lastSeq(conversationId)
  }

  override async latest (conversationId: string): Promise<StoredMessage | null> {
    this.lastSeqCalls++
    return await super.latest(conversationId)
  }
}

test('history answers lastSeq without a store query once the sequencer knows it, and from the store after a restart', async () => {
  const meta = new MemoryMetadataStore()
  const messages = new CountingStore()
  let server = await startServer({}, { meta, messages })
  await addUser(server, 'alice')
  await addUser(server, 'bob')
  let alice = await connect(server, 'alice', 'a')
  const { conv } = await alice.request('direct', { user: 'bob' })
  for (let i = 1; i <= 5; i++) await alice.request('send', { conv, msgId: `m${i}`, kind: 'text', body: `hi ${i}` })
  const before = messages.lastSeqCalls // the sequencer loaded it once, for the first send
  const pages = [await alice.request('history', { conv, after: 0, limit: 2 }), await alice.request('history', { conv, after: 2, limit: 2 }), await alice.request('history', { conv })]
  expect(pages.map(p => [p.lastSeq, p.hasMore, p.messages.map((m: { seq: number }) => m.seq)])).toEqual([[5, true, [1, 2]], [5, true, [3, 4]], [5, false, [1, 2, 3, 4, 5]]])
  expect(messages.lastSeqCalls).toBe(before)
  await alice.end()
  await server.stop()

  // a new server on the same stores: its sequencer knows nothing yet, so history asks the store
  server = await startServer({}, { meta, messages })
  alice = await connect(server, 'alice', 'a2')
  const calls = messages.lastSeqCalls
  const page = await alice.request('history', { conv, after: 3 })
  expect([page.lastSeq, page.hasMore, page.messages.map((m: { seq: number }) => m.seq)]).toEqual([5, false, [4, 5]])
  expect(messages.lastSeqCalls).toBe(calls + 1)
  await alice.end()
  await server.stop()
})
