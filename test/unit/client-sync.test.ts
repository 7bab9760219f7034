/** ConversationSync in process, with a scripted history: ordering, duplicates, gap fills and where a conversation starts. */
import { ConversationSync, type SyncDeps } from '../../src/client/sync.js'
import { MemoryStorage, StateStore } from '../../src/client/storage.js'
import type { ImClientError } from '../../src/client/errors.js'
import type { MessageEnvelope } from '../../src/protocol/schemas.js'
import type { HistoryResult } from '../../src/client/types.js'

const msg = (seq: number, conv = 'c1'): MessageEnvelope => ({ conv, seq, msgId: `m${seq}`, from: 'alice', ts: seq, kind: 'text', body: `text ${seq}` })
const tick = async (): Promise<void> => { await new Promise(resolve => setTimeout(resolve, 0)) }

async function setup (opts: { stored?: Record<string, number>, initialized?: boolean, lastSeq?: number, pageSize?: number } = {}) {
  const storage = new MemoryStorage()
  if (opts.stored !== undefined || opts.initialized !== undefined) {
    await storage.set('k', JSON.stringify({ v: 1, initialized: opts.initialized ?? true, synced: opts.stored ?? {}, outbox: [] }))
  }
  const store = await StateStore.load(storage, 'k')
  const server = { lastSeq: opts.lastSeq ?? 0 }
  const calls: Array<{ conv: string, after: number }> = []
  const emitted: MessageEnvelope[] = []
  const synced: Array<[string, number]> = []
  const errors: ImClientError[] = []
  const pageSize = opts.pageSize ?? 200
  const deps: SyncDeps = {
    store,
    history: async (conv, after): Promise<HistoryResult> => {
      calls.push({ conv, after })
      await tick()
      const to = Math.min(server.lastSeq, after + pageSize)
      const messages = Array.from({ length: Math.max(0, to - after) }, (_, i) => msg(after + 1 + i, conv))
      return { conv, messages, lastSeq: server.lastSeq, hasMore: to < server.lastSeq, limit: pageSize }
    },
    emitMessage: (m) => { emitted.push(m) },
    emitUpdated: () => {},
    emitSynced: (conv, seq) => { synced.push([conv, seq]) },
    emitError: (e) => { errors.push(e) },
    maxBackfill: 10,
    retryMs: 10,
    isClosed: () => false
  }
  return { sync: new ConversationSync(deps), server, calls, emitted, synced, errors, store, storage }
}

test('in-order messages are emitted at once, duplicates are dropped', async () => {
  const t = await setup({ stored: { c1: 0 } })
  t.sync.receive(msg(1))
  t.sync.receive(msg(2))
  t.sync.receive(msg(2))
  t.sync.receive(msg(1))
  expect(t.emitted.map(m => m.seq)).toEqual([1, 2])
  expect(t.calls).toEqual([])
  expect(t.store.state.synced.c1).toBe(2)
  await t.store.flush()
  expect(JSON.parse((await t.storage.get('k')) ?? '{}').synced.c1).toBe(2)
})

test('a gap is filled from history (paged) before the messages after it are emitted', async () => {
  const t = await setup({ stored: { c1: 2 }, pageSize: 3 })
  t.server.lastSeq = 10
  t.sync.receive(msg(10))
  t.sync.receive(msg(9)) // arrives out of order while the fill runs
  for (let i = 0; i < 20 && t.emitted.length < 8; i++) await tick()
  expect(t.emitted.map(m => m.seq)).toEqual([3, 4, 5, 6, 7, 8, 9, 10])
  expect(t.calls.map(c => c.after)).toEqual([2, 5]) // 9 and 10 were held back: no third page
  expect(t.synced).toContainEqual(['c1', 10])
  t.sync.receive(msg(7))
  expect(t.emitted).toHaveLength(8)
})

test('catchUp on a fresh storage starts at lastSeq; later conversations start at the join or maxBackfill back', async () => {
  const t = await setup()
  t.server.lastSeq = 500
  await t.sync.catchUp(async () => ({ conversations: [{ conv: 'old', kind: 'group', name: 'g', role: 'member', lastSeq: 500, last: null, readSeq: 0, unread: 500, mentions: 0, muted: false }], complete: true }))
  expect(t.emitted).toEqual([])
  expect(t.calls).toEqual([])
  expect(t.store.state).toMatchObject({ initialized: true, synced: { old: 500 } })

  // added while connected: the first live message is the start, even with a long history before it
  t.sync.joined('joined')
  t.sync.receive(msg(301, 'joined'))
  expect(t.emitted.map(m => [m.conv, m.seq])).toEqual([['joined', 301]])

  // met otherwise (first seen as a live message): at most maxBackfill (10) back
  t.server.lastSeq = 40
  t.sync.receive(msg(40, 'other'))
  for (let i = 0; i < 10 && t.emitted.length < 11; i++) await tick()
  expect(t.emitted.filter(m => m.conv === 'other').map(m => m.seq)).toEqual([30, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40].slice(1))
})

test('catchUp forgets conversations that are no longer listed, and pulls what was missed', async () => {
  const t = await setup({ stored: { gone: 4, c1: 3 } })
  t.server.lastSeq = 6
  await t.sync.catchUp(async () => ({ conversations: [{ conv: 'c1', kind: 'direct', name: null, role: 'member', lastSeq: 6, last: null, readSeq: 0, unread: 6, mentions: 0, muted: false }], complete: true }))
  expect(t.emitted.map(m => m.seq)).toEqual([4, 5, 6])
  expect(t.store.state.synced).toEqual({ c1: 6 })
  expect(t.synced).toEqual([['c1', 6]])
})

test('catchUp with an incomplete list (the page bound was hit) forgets nothing', async () => {
  const t = await setup({ stored: { unlisted: 4, c1: 3 } })
  t.server.lastSeq = 3
  await t.sync.catchUp(async () => ({ conversations: [{ conv: 'c1', kind: 'direct', name: null, role: 'member', lastSeq: 3, last: null, readSeq: 0, unread: 3, mentions: 0, muted: false }], complete: false }))
  expect(t.store.state.synced).toEqual({ unlisted: 4, c1: 3 })
})

test('history merged by the app: older pages join the local copy silently, newer messages go through ordering', async () => {
  const t = await setup({ stored: { c1: 5 } })
  t.sync.merge('c1', [msg(1), msg(2), msg(6), msg(7)])
  expect(t.emitted.map(m => m.seq)).toEqual([6, 7])
  expect(t.sync.messages('c1').map(m => m.seq)).toEqual([1, 2, 6, 7])
  t.sync.receive(msg(7))
  t.sync.receive(msg(8))
  expect(t.sync.messages('c1').map(m => m.seq)).toEqual([1, 2, 6, 7, 8])
})
