/**
 * Retention over MQTT, on the embedded stores and on FerretDB + MariaDB: direct conversations keep
 * their messages 1.5 s (groups forever), the job runs every 100 ms. What a client sees after the
 * oldest messages are gone: history starts later and says so (`firstSeq`), list still has lastSeq,
 * the preview and unread, and the SDK syncing from seq 0 gets the kept messages once, in order,
 * without a gap error and without paging on forever.
 *
 * The state the test looks at is stable: a conversation's latest real message and the changes after
 * it are never removed, so once the old messages are gone nothing else goes.
 */
import { ImClient, MemoryStorage, type MessageEnvelope } from '../src/client/index.js'
import type { ImClientError } from '../src/client/errors.js'
import type { MessageStore } from '../src/store/types.js'
import { BACKENDS } from './helpers/backends.js'
import { addUser, connect, startServer, url, waitUntil } from './helpers/im.js'

const RETENTION_MS = 1500
const DAY_MS = 24 * 3600 * 1000

/** The message store, counting history's range reads. */
function counting (store: MessageStore): { store: MessageStore, ranges: () => number } {
  let ranges = 0
  const proxy = new Proxy(store, {
    get (target, prop, receiver) {
      const value = Reflect.get(target, prop, receiver) as unknown
      if (prop === 'range') return async (...args: Parameters<MessageStore['range']>) => { ranges++; return await target.range(...args) }
      return typeof value === 'function' ? value.bind(target) : value
    }
  })
  return { store: proxy, ranges: () => ranges }
}

const seqsOf = (messages: Array<{ seq: number }>): number[] => messages.map(m => m.seq)

for (const backend of BACKENDS) {
  test(`retention (${backend.name}): history starts at the first kept message and says so; list and the SDK's sync go on above it`, async () => {
    const stores = await backend.make()
    const messages = counting(stores.messages)
    const server = await startServer({
      retention: { directDays: RETENTION_MS / DAY_MS, groupDays: null, intervalMs: 100, maxPerRun: 1000, conversationsPerRun: 1000 }
    }, { meta: stores.meta, messages: messages.store })
    const open: Array<{ end: () => Promise<void> }> = []
    try {
      for (const user of ['alice', 'bob', 'carol']) await addUser(server, user)
      const alice = await connect(server, 'alice', 'a')
      const bob = await connect(server, 'bob', 'b')
      open.push(alice, bob)
      const { conv: direct } = await alice.request('direct', { user: 'bob' })
      const { conv: quiet } = await alice.request('direct', { user: 'carol' })
      const { conv: group } = await alice.request('create-group', { name: 'kept', members: ['bob'] })
      const send = async (conv: string, msgId: string): Promise<number> => (await alice.request('send', { conv, msgId, kind: 'text', body: msgId })).seq
      for (let i = 1; i <= 5; i++) await send(direct, `d${i}`)
      for (let i = 1; i <= 3; i++) await send(quiet, `q${i}`)
      for (let i = 1; i <= 3; i++) await send(group, `g${i}`)
      await bob.request('read', { conv: direct, seq: 2 })

      // after the retention age: a new message, a reaction to it and an edit of it (the latest real
      // message and the changes after it: kept however old they get)
      await new Promise(resolve => setTimeout(resolve, RETENTION_MS + 200))
      expect(await send(direct, 'd6')).toBe(6)
      await alice.request('react', { conv: direct, msgId: 'r7', target: 6, emoji: '👍' })
      await alice.request('edit', { conv: direct, msgId: 'e8', target: 6, body: 'd6, edited' })

      await waitUntil(async () => (await alice.request('history', { conv: direct, after: 0 })).firstSeq === 6 &&
        (await alice.request('history', { conv: quiet, after: 0 })).firstSeq === 3, 15_000, 'the job removed the old messages', 100)

      // forward: the page starts at the first kept seq and says so; above it, pages as always
      const all = await alice.request('history', { conv: direct, after: 0 })
      expect([seqsOf(all.messages), all.firstSeq, all.lastSeq, all.hasMore]).toEqual([[6, 7, 8], 6, 8, false])
      const first = await alice.request('history', { conv: direct, after: 2, limit: 2 })
      expect([seqsOf(first.messages), first.firstSeq, first.hasMore]).toEqual([[6, 7], 6, true])
      const next = await alice.request('history', { conv: direct, after: 7, limit: 2 })
      expect([seqsOf(next.messages), next.firstSeq, next.hasMore]).toEqual([[8], undefined, false])
      expect(next.messages[0]).toMatchObject({ kind: 'edit', target: 6 })
      expect(all.messages[0]).toMatchObject({ seq: 6, body: 'd6, edited', edited: { seq: 8 }, reactions: { '👍': ['alice'] } })
      // backward: scrolling back ends at the first kept seq
      const newest = await alice.request('history', { conv: direct })
      expect([seqsOf(newest.messages), newest.firstSeq, newest.hasMore]).toEqual([[6, 7, 8], 6, false])
      const back = await alice.request('history', { conv: direct, before: 8, limit: 2 })
      expect([seqsOf(back.messages), back.firstSeq, back.hasMore]).toEqual([[6, 7], undefined, true])
      const below = await alice.request('history', { conv: direct, before: 6 })
      expect([seqsOf(below.messages), below.firstSeq, below.hasMore]).toEqual([[], 6, false])
      const gone = await alice.request('history', { conv: direct, after: 1, before: 5 })
      expect([seqsOf(gone.messages), gone.firstSeq, gone.hasMore]).toEqual([[], 6, false])
      // a quiet conversation keeps its latest message; groups keep everything (no age for groups)
      const q = await alice.request('history', { conv: quiet, after: 0 })
      expect([seqsOf(q.messages), q.firstSeq, q.lastSeq]).toEqual([[3], 3, 3])
      const g = await alice.request('history', { conv: group, after: 0 })
      expect([seqsOf(g.messages), g.firstSeq]).toEqual([[1, 2, 3], undefined])
      // changes to removed messages find nothing
      await expect(alice.request('react', { conv: direct, msgId: 'r9', target: 2, emoji: '👍' })).rejects.toMatchObject({ code: 'NOT_FOUND' })

      // list: lastSeq, the preview and unread as before (bob read up to 2: 3, 4, 5 and 6 are unread, removed or not)
      const list = await bob.request('list', {})
      const summary = (list.conversations as Array<{ conv: string, lastSeq: number, unread: number, last: { seq: number } | null }>).find(c => c.conv === direct)
      expect(summary).toMatchObject({ lastSeq: 8, unread: 4, last: { seq: 6, body: 'd6, edited' } })

      // the SDK, syncing from seq 0 (a device that has been offline all along) and from seq 2
      const run = async (deviceId: string, synced: Record<string, number>): Promise<{ got: MessageEnvelope[], errors: ImClientError[], client: ImClient }> => {
        const storage = new MemoryStorage()
        await storage.set(`mqim:bob:${deviceId}`, JSON.stringify({ v: 1, initialized: true, synced, outbox: [] }))
        const got: MessageEnvelope[] = []
        const errors: ImClientError[] = []
        const on = { message: (m: MessageEnvelope) => { got.push(m) }, error: (e: ImClientError) => { errors.push(e) } }
        const client = await ImClient.connect({ url: url(server, 'tcp'), userId: 'bob', password: 'password-bob', deviceId, storage, reconnectPeriodMs: 100, on })
        open.push({ end: async () => { await client.close() } })
        return { got, errors, client }
      }
      for (const [device, synced] of [['fresh', {}], ['behind', { [direct]: 2, [group]: 0 }]] as const) {
        const { got, errors } = await run(device, synced)
        await waitUntil(() => got.filter(m => m.conv === direct).length >= 3, 10_000, `${device}: the kept messages`)
        const ranges = messages.ranges()
        await new Promise(resolve => setTimeout(resolve, 500))
        expect(messages.ranges()).toBe(ranges) // no paging on
        expect(got.filter(m => m.conv === direct).map(m => m.seq)).toEqual([6, 7, 8])
        expect(got.filter(m => m.conv === group).map(m => m.seq)).toEqual([1, 2, 3])
        expect(errors).toEqual([])
      }
      // live messages go on above the kept range
      await send(direct, 'd9')
      await waitUntil(() => bob.messages.some(m => m.conv === direct && m.seq === 9), 10_000, 'd9 live')
    } finally {
      for (const c of open) await c.end().catch(() => {})
      await server.stop()
    }
  })
}
