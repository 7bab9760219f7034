/**
 * The MessageStore contract on MongoMessageStore against the real server (FerretDB in tests),
 * plus what is specific to MongoDB. Each test gets a fresh database, dropped afterwards.
 */
import net from 'node:net'
import { MongoClient, type Collection, type Db, type ObjectId } from 'mongodb'
import { isStoreUnavailable } from '../src/store/errors.js'
import type { ExpiryRule, StoredMessage } from '../src/store/types.js'
import { MongoMessageStore } from '../src/store/messages-mongo.js'
import { describeMessageStore } from './contract/message-store.contract.js'
import { freshMongo } from './helpers/db.js'

async function dropDatabase (url: string, dbName: string): Promise<void> {
  const client = new MongoClient(url)
  try {
    await client.connect()
    await client.db(dbName).dropDatabase()
  } finally {
    await client.close()
  }
}

// 'auto' reads one document per primary-key lookup on FerretDB; 'batched' (MongoDB's way: $in and
// range queries) is run here too, so that both paths meet the contract on the same server.
for (const lookups of ['auto', 'batched'] as const) {
  describeMessageStore(`mongo (${lookups} lookups)`, async () => {
    const { url, dbName } = freshMongo()
    return {
      store: new MongoMessageStore({ url, database: dbName, lookups }),
      cleanup: async () => await dropDatabase(url, dbName)
    }
  })
}

describe('MongoMessageStore specifics', () => {
  let url: string
  let dbName: string

  beforeEach(() => {
    ({ url, dbName } = freshMongo())
  })

  afterEach(async () => {
    await dropDatabase(url, dbName)
  })

  it('can run init() twice, and again after a restart: the indexes are idempotent', async () => {
    const first = new MongoMessageStore({ url, database: dbName })
    await first.init()
    await first.init()
    await first.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'a', senderId: 'u', ts: 1, kind: 'text', body: 'x', replyTo: null }])
    await first.close()

    const second = new MongoMessageStore({ url, database: dbName })
    await second.init()
    try {
      expect(await second.lastSeq('c1')).toBe(1)
      // The unique seq index survived both init() calls.
      expect(await second.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'b', senderId: 'u', ts: 2, kind: 'text', body: 'y', replyTo: null }]))
        .toEqual({ inserted: 0, conflict: { kind: 'seq' } })
    } finally {
      await second.close()
    }
  })

  it('uses the collection named in its options', async () => {
    const a = new MongoMessageStore({ url, database: dbName, collection: 'messages_a' })
    const b = new MongoMessageStore({ url, database: dbName })
    await a.init()
    await b.init()
    try {
      const msg = { conversationId: 'c1', seq: 1, clientMsgId: 'a', senderId: 'u', ts: 1, kind: 'text' as const, body: 'x', replyTo: null }
      expect(await a.insertBatch([msg])).toEqual({ inserted: 1 })
      expect(await b.insertBatch([msg])).toEqual({ inserted: 1 })
      expect(await b.lastSeq('c1')).toBe(1)
    } finally {
      await a.close()
      await b.close()
    }
  })

  it('rejects conversation ids containing ":", which would make the primary key ambiguous', async () => {
    const store = new MongoMessageStore({ url, database: dbName })
    await store.init()
    try {
      await expect(store.insertBatch([{ conversationId: 'c:1', seq: 1, clientMsgId: 'a', senderId: 'u', ts: 1, kind: 'text', body: 'x', replyTo: null }]))
        .rejects.toThrow(TypeError)
      expect(await store.lastSeq('c:1')).toBe(0)
      // ids with '/' are fine now: no key is built from them
      expect(await store.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'a/b', senderId: 'u/v', ts: 1, kind: 'text', body: 'x', replyTo: null }])).toEqual({ inserted: 1 })
      expect((await store.findByClientMsgId('c1', 'u/v', 'a/b'))?.seq).toBe(1)
    } finally {
      await store.close()
    }
  })

  it('throws on errors other than a duplicate key, e.g. when the server is unreachable', async () => {
    const store = new MongoMessageStore({ url: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300', database: dbName })
    try {
      await expect(store.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'a', senderId: 'u', ts: 1, kind: 'text', body: 'x', replyTo: null }]))
        .rejects.toThrow()
    } finally {
      await store.close()
    }
  })

  it('an operation the server takes and never answers fails after the operation timeout, as unavailable', async () => {
    // a TCP relay to the real server that stops relaying on demand (a server that hangs, as
    // FerretDB does on a large update command)
    const target = new URL(url)
    let frozen = false
    const sockets = new Set<net.Socket>()
    const relay = net.createServer(client => {
      const upstream = net.connect(Number(target.port), target.hostname)
      sockets.add(client).add(upstream)
      client.on('data', d => { if (!frozen) upstream.write(d) })
      upstream.on('data', d => { if (!frozen) client.write(d) })
      const close = (): void => { client.destroy(); upstream.destroy() }
      client.on('error', close).on('close', close)
      upstream.on('error', close).on('close', close)
    })
    await new Promise<void>(resolve => relay.listen(0, '127.0.0.1', resolve))
    const port = (relay.address() as net.AddressInfo).port
    const store = new MongoMessageStore({ url: `mongodb://127.0.0.1:${port}/?socketTimeoutMS=1500`, database: dbName })
    try {
      await store.init()
      expect(await store.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'a', senderId: 'u', ts: 1, kind: 'text', body: 'x', replyTo: null }])).toEqual({ inserted: 1 })
      frozen = true
      const started = Date.now()
      const err = await store.insertBatch([{ conversationId: 'c1', seq: 2, clientMsgId: 'b', senderId: 'u', ts: 2, kind: 'text', body: 'y', replyTo: null }]).then(() => null, (e: unknown) => e)
      expect(Date.now() - started).toBeLessThan(5000)
      expect(isStoreUnavailable(err)).toBe(true)
      // a read too, on a new connection (the pool's handshake on a server that answers nothing)
      const read = Date.now()
      await expect(store.latestMany(['c1'])).rejects.toThrow()
      expect(Date.now() - read).toBeLessThan(15_000)
    } finally {
      frozen = false
      await store.close().catch(() => {})
      for (const s of sockets) s.destroy()
      await new Promise(resolve => relay.close(resolve))
    }
  })

  it('latestMany rejects when the server is unreachable', async () => {
    const store = new MongoMessageStore({ url: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300', database: dbName })
    try {
      await expect(store.latestMany(Array.from({ length: 50 }, (_, i) => `c${i}`))).rejects.toThrow()
    } finally {
      await store.close()
    }
  })

  describe('heads', () => {
    const msg = (conversationId: string, seq: number, extra: Partial<StoredMessage> = {}): StoredMessage =>
      ({ conversationId, seq, clientMsgId: `m${seq}`, senderId: 'u', ts: 1000 + seq, kind: 'text', body: `body ${seq}`, replyTo: null, ...extra })

    async function withDb<T> (fn: (db: Db) => Promise<T>): Promise<T> {
      const client = new MongoClient(url)
      try {
        await client.connect()
        return await fn(client.db(dbName))
      } finally {
        await client.close()
      }
    }

    for (const lookups of ['single', 'batched'] as const) {
      it(`a head left behind by a crash between the two writes is repaired by lastSeq and latest (${lookups} lookups)`, async () => {
        const store = new MongoMessageStore({ url, database: dbName, lookups })
        await store.init()
        try {
          await store.insertBatch([msg('c1', 1), msg('c1', 2)])
          // messages stored without their head write: what a SIGKILL between the two leaves
          await withDb(async db => await db.collection('messages').insertMany(Array.from({ length: 40 }, (_, i) => (
            { _id: `c1:${3 + i}` as unknown as ObjectId, c: 'c1', s: 3 + i, m: `m${3 + i}`, u: 'u', t: 1003 + i, k: 'text', b: `body ${3 + i}`, r: null }))))
          expect((await store.latestMany(['c1'])).get('c1')?.latest.seq).toBe(2) // the head, as written
          expect(await store.lastSeq('c1')).toBe(42)
          expect((await store.latestMany(['c1'])).get('c1')?.latest).toStrictEqual(msg('c1', 42))
          expect(await store.latest('c1')).toStrictEqual(msg('c1', 42))
        } finally {
          await store.close() // writes the heads not written yet
        }
        const heads = await withDb(async db => await db.collection('messages_heads').find({ _id: 'c1' as unknown as ObjectId }).toArray())
        expect(heads.map(h => h.h.s)).toEqual([42])
      })
    }

    it('heads are written lazily: a conversation\'s first at once, then a quiet one\'s after headMaxWaitMs, a busy one\'s every 16 entries; this store always sees its own, another sees the written head and latestPast finds the rest', async () => {
      const writer = new MongoMessageStore({ url, database: dbName, headMaxWaitMs: 10_000 })
      const reader = new MongoMessageStore({ url, database: dbName })
      await Promise.all([writer.init(), reader.init()])
      const headSeq = async (c: string): Promise<number | undefined> =>
        await withDb(async db => (await db.collection<{ _id: string, h?: { s: number } }>('messages_heads').findOne({ _id: c }))?.h?.s)
      const until = async (what: () => Promise<boolean>, ms = 8000): Promise<void> => {
        const deadline = performance.now() + ms
        while (performance.now() < deadline && !(await what())) await new Promise(resolve => setTimeout(resolve, 10))
      }
      try {
        expect(writer.headLagMs).toBe(10_000 + 5000)
        // a new conversation: its first head is written at once (the start-up check looks past it after a crash)
        await writer.insertBatch([msg('quiet', 1)])
        await until(async () => (await headSeq('quiet')) === 1)
        expect(await headSeq('quiet')).toBe(1)
        // quiet: two more entries, not written at once
        const started = performance.now()
        await writer.insertBatch([msg('quiet', 2)])
        await writer.insertBatch([msg('quiet', 3)])
        expect(await headSeq('quiet')).toBe(1)
        expect((await writer.latestMany(['quiet'])).get('quiet')?.latest.seq).toBe(3) // its own, pending
        expect((await reader.latestMany(['quiet'])).get('quiet')?.latest.seq).toBe(1) // the head as written
        expect((await reader.latestPast('quiet', 1))?.seq).toBe(3) // past it, by primary key
        // busy: its first entry's head is written at once; the 16th entry after that head makes the
        // head due at once, long before the 10 s wait (1.5 s, then 4 s, were too close on a loaded CI
        // machine: 1.6 s and 4.1 s for the 20 entries and the head). The count starts at the head's
        // round: entries written before that round ran are in the head it wrote (CI saw entries 1-8
        // in it, and 9-20 left only 12 behind it), so the test waits for the first head before going on.
        await writer.insertBatch([msg('busy', 1)])
        await until(async () => (await headSeq('busy')) === 1)
        expect(await headSeq('busy')).toBe(1)
        for (let s = 2; s <= 17; s += 4) await writer.insertBatch([0, 1, 2, 3].map(i => msg('busy', s + i)))
        await until(async () => ((await headSeq('busy')) ?? 0) >= 17)
        expect(await headSeq('busy')).toBe(17)
        await writer.insertBatch([18, 19, 20].map(seq => msg('busy', seq)))
        expect(await headSeq('busy')).toBe(17)
        expect(performance.now() - started).toBeLessThan(10_000)
        expect(await headSeq('quiet')).toBe(1)
        // the quiet one once its wait is over, with everything stored by then
        await until(async () => (await headSeq('quiet')) === 3, 15_000)
        expect(await headSeq('quiet')).toBe(3)
        expect(performance.now() - started).toBeGreaterThanOrEqual(9500)
        expect((await reader.latestMany(['quiet'])).get('quiet')?.latest.seq).toBe(3)
      } finally {
        await Promise.all([writer.close(), reader.close()])
      }
      // close writes what is still pending (busy's last 4 entries)
      expect(await headSeq('busy')).toBe(20)
    })

    it('a head round that fails part-way writes again only what it had not written, a second later', async () => {
      const store = new MongoMessageStore({ url, database: dbName })
      await store.init()
      const calls: Array<{ ops: number, at: number, failed: boolean }> = []
      const inner = (store as unknown as { heads: Collection }).heads
      ;(store as unknown as { heads: Collection }).heads = new Proxy(inner, {
        get (target, prop, receiver) {
          if (prop !== 'bulkWrite') return Reflect.get(target, prop, receiver) as unknown
          return async (ops: unknown[], options: unknown) => {
            const failed = calls.length === 1 // the round's second command
            calls.push({ ops: ops.length, at: performance.now(), failed })
            if (failed) throw new Error('write failed (test)')
            return await target.bulkWrite(ops as Parameters<Collection['bulkWrite']>[0], options as Parameters<Collection['bulkWrite']>[1])
          }
        }
      })
      const headsWritten = async (): Promise<number> => await withDb(async db => await db.collection('messages_heads').countDocuments({ _id: { $regex: '^fail' } as unknown as ObjectId }))
      try {
        // 30 new conversations: their first heads are due at once, one round of two commands (25 + 5)
        await store.insertBatch(Array.from({ length: 30 }, (_, i) => msg(`fail${i}`, 1)))
        for (let i = 0; i < 300 && (await headsWritten()) < 30; i++) await new Promise(resolve => setTimeout(resolve, 10))
        expect(await headsWritten()).toBe(30)
        expect(calls.map(c => [c.ops, c.failed])).toEqual([[25, false], [5, true], [5, false]])
        expect((calls[2]?.at ?? 0) - (calls[1]?.at ?? 0)).toBeGreaterThanOrEqual(900)
      } finally {
        await store.close()
      }
    })

    it('a head never moves back: two stores (two nodes) writing one conversation in any order', async () => {
      const a = new MongoMessageStore({ url, database: dbName })
      const b = new MongoMessageStore({ url, database: dbName })
      await Promise.all([a.init(), b.init()])
      const written = async (ids: string[]): Promise<Array<number | undefined>> => {
        // what is in the head records, after both stores wrote theirs (close flushes them)
        const c = new MongoMessageStore({ url, database: dbName })
        await c.init()
        try {
          const latest = await c.latestMany(ids)
          return ids.map(id => latest.get(id)?.latest.seq)
        } finally {
          await c.close()
        }
      }
      try {
        // b stores 1..3 and a stores 4..6, but a's head write may land first: the head ends at 6
        await a.insertBatch([msg('c1', 4), msg('c1', 5), msg('c1', 6)])
        await b.insertBatch([msg('c1', 1), msg('c1', 2), msg('c1', 3)])
        expect((await a.latestMany(['c1'])).get('c1')?.latest.seq).toBe(6)
        // concurrent first writes of new conversations: both heads created, none lost to the upsert race
        for (let round = 0; round < 10; round++) {
          const ids = Array.from({ length: 30 }, (_, i) => `n${round}-${i}`)
          await Promise.all([
            a.insertBatch(ids.map(c => msg(c, 2))),
            b.insertBatch(ids.map(c => msg(c, 1)))
          ])
        }
      } finally {
        await Promise.all([a.close(), b.close()])
      }
      expect(await written(['c1'])).toEqual([6])
      for (let round = 0; round < 10; round++) {
        const ids = Array.from({ length: 30 }, (_, i) => `n${round}-${i}`)
        expect(await written(ids)).toEqual(ids.map(() => 2))
      }
    })

    /** Two stores (two nodes); b's `find` filters are logged (its pool made with command monitoring on). */
    /**
     * rememberMs of the tests of remembered copies: long enough for the durable writes made between
     * caching a copy and checking it is still served, on a loaded machine (300 ms left little room).
     */
    const REMEMBER_TEST_MS = 2000
    async function twoNodes (rememberMs?: number, clustered?: boolean): Promise<{ a: MongoMessageStore, b: MongoMessageStore, finds: string[] }> {
      const a = new MongoMessageStore({ url, database: dbName })
      const b = new MongoMessageStore({ url, database: dbName, ...(rememberMs === undefined ? {} : { rememberMs }), ...(clustered === undefined ? {} : { clustered }) })
      const finds: string[] = []
      const client = (b as unknown as { client: MongoClient }).client
      client.options.monitorCommands = true // before init(): the pool's connections take it from here
      client.on('commandStarted', (e: { commandName: string, command: Record<string, unknown> }) => {
        if (e.commandName === 'find') finds.push(JSON.stringify(e.command.filter))
      })
      await Promise.all([a.init(), b.init()])
      return { a, b, finds }
    }

    it('remember(): another node\'s messages are read without a query; one told changed is not kept, nor one held already', async () => {
      const { a, b, finds } = await twoNodes()
      try {
        // a stores 1-3 and tells b (its commit notice); a edits 2 and b is told (forget) before the notice of 2 came
        const stored = [msg('r1', 1), msg('r1', 2), msg('r1', 3)]
        await a.insertBatch(stored)
        await a.insertBatch([msg('r1', 4, { kind: 'edit', body: 'two, edited', target: 2, lastReal: 3, count: 3 })])
        await a.applyChange(msg('r1', 4, { kind: 'edit', body: 'two, edited', target: 2, lastReal: 3, count: 3 }))
        b.forget([{ conversationId: 'r1', seq: 2 }])
        // what b holds already stays as it is (a copy from a notice does not replace it)
        await b.getMany([{ conversationId: 'r1', seq: 3 }])
        b.remember(stored.map(m => m.seq === 3 ? { ...m, body: 'not what is stored' } : m))
        b.remember([{ ...msg('r1:x', 1) }]) // an id toDoc refuses: skipped, nothing thrown
        // a message with changes is not one as stored: not kept (its document would lose them)
        b.remember([msg('r2', 1, { changes: { version: 2, edited: { seq: 2, ts: 2, body: 'e' } } })])
        finds.length = 0
        const got = (await b.getMany([1, 2, 3].map(seq => ({ conversationId: 'r1', seq })))).sort((x, y) => x.seq - y.seq)
        expect(got.map(m => [m.seq, m.body, m.changes?.edited?.body])).toEqual([[1, 'body 1', undefined], [2, 'body 2', 'two, edited'], [3, 'body 3', undefined]])
        // only 2 was read (it changed); 1 came with the notice, 3 was held
        expect(finds.filter(f => f.includes('r1:'))).toEqual([JSON.stringify({ _id: 'r1:2' })])
        finds.length = 0
        expect(await b.getMany([{ conversationId: 'r2', seq: 1 }])).toEqual([])
        expect(finds).toEqual([JSON.stringify({ _id: 'r2:1' })])
      } finally {
        await Promise.all([a.close(), b.close()])
      }
    })

    it('remember(): a copy of another node\'s message is kept for rememberMs only (a change or removal whose notice was missed is served that long at most)', async () => {
      const { a, b, finds } = await twoNodes(REMEMBER_TEST_MS)
      try {
        const stored = [msg('t1', 1), msg('t1', 2)]
        await a.insertBatch(stored)
        b.remember(stored)
        // a deletes 1 and b misses the notice
        await a.insertBatch([msg('t1', 3, { kind: 'delete', body: null, target: 1, lastReal: 2, count: 2 })])
        await a.applyChange(msg('t1', 3, { kind: 'delete', body: null, target: 1, lastReal: 2, count: 2 }))
        finds.length = 0
        expect((await b.getMany([{ conversationId: 't1', seq: 1 }]))[0]?.changes?.deleted).toBeUndefined()
        expect(finds).toEqual([])
        await new Promise(resolve => setTimeout(resolve, REMEMBER_TEST_MS + 100))
        const later = (await b.getMany([{ conversationId: 't1', seq: 1 }]))[0]
        expect(later?.changes?.deleted?.seq).toBe(3)
        expect(finds).toEqual([JSON.stringify({ _id: 't1:1' })])
      } finally {
        await Promise.all([a.close(), b.close()])
      }
    })

    it('clustered: what this node stored or read is served for rememberMs at most too (another node\'s change whose notice was lost); one node keeps it', async () => {
      for (const clustered of [true, false]) {
        const conv = clustered ? 'k1' : 'k2'
        const { a, b, finds } = await twoNodes(REMEMBER_TEST_MS, clustered)
        try {
          // b stores 1, and reads 2, which a stored; then a edits both, and b misses the notices
          await b.insertBatch([msg(conv, 1)])
          await a.insertBatch([msg(conv, 2)])
          expect((await b.getMany([{ conversationId: conv, seq: 2 }])).map(m => m.body)).toEqual(['body 2'])
          for (const [seq, target] of [[3, 1], [4, 2]] as const) {
            const edit = msg(conv, seq, { kind: 'edit', body: `edited ${target}`, target, lastReal: 2, count: 2 })
            await a.insertBatch([edit])
            await a.applyChange(edit)
          }
          finds.length = 0
          const now = await b.getMany([1, 2].map(seq => ({ conversationId: conv, seq })))
          expect(now.map(m => m.changes?.edited?.body)).toEqual([undefined, undefined]) // served from memory
          expect(finds).toEqual([])
          await new Promise(resolve => setTimeout(resolve, REMEMBER_TEST_MS + 100))
          const later = (await b.getMany([1, 2].map(seq => ({ conversationId: conv, seq })))).sort((x, y) => x.seq - y.seq)
          expect(later.map(m => m.changes?.edited?.body)).toEqual(clustered ? ['edited 1', 'edited 2'] : [undefined, undefined])
          expect(finds.length).toBe(clustered ? 2 : 0)
        } finally {
          await Promise.all([a.close(), b.close()])
        }
      }
    })

    it('a batch over 300 conversations updates their heads (FerretDB hangs on an update command of ~100 updates: they are split)', async () => {
      let store = new MongoMessageStore({ url, database: dbName })
      await store.init()
      const ids = Array.from({ length: 300 }, (_, i) => `w${i}`)
      try {
        for (const seq of [1, 2]) {
          expect(await store.insertBatch(ids.map(c => msg(c, seq)))).toEqual({ inserted: 300 })
          await store.close() // writes the heads
          store = new MongoMessageStore({ url, database: dbName })
          await store.init()
        }
        const latest = await store.latestMany(ids)
        expect(ids.map(c => latest.get(c)?.latest.seq)).toEqual(ids.map(() => 2))
      } finally {
        await store.close()
      }
    })

    it('a head is written only for what was stored: not for the messages after a conflict', async () => {
      const store = new MongoMessageStore({ url, database: dbName })
      await store.init()
      try {
        await store.insertBatch([msg('c1', 1)])
        const result = await store.insertBatch([msg('c1', 2), msg('c1', 3, { clientMsgId: 'm1' }), msg('c1', 4)])
        expect(result).toEqual({ inserted: 1, conflict: { kind: 'clientMsgId' } })
        expect((await store.latestMany(['c1'])).get('c1')?.latest.seq).toBe(2)
        // a retried batch: the conflict comes with the stored message, no lookup by key needed
        const retried = await store.insertBatch([msg('c1', 2), msg('c1', 3)])
        expect(retried).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId', existing: msg('c1', 2) } })
      } finally {
        await store.close()
      }
    })

    it('migrates messages of layout 1 (no heads, _id conversation/sender/clientMsgId) at init, and resumes an interrupted copy', async () => {
      const old = Array.from({ length: 250 }, (_, i) => {
        const conv = `c${i % 3}`
        const seq = Math.floor(i / 3) + 1
        return { _id: `${conv}/u/m${seq}`, c: conv, s: seq, m: `m${seq}`, u: 'u', t: 1000 + seq, k: i === 4 ? 'custom' : 'text', b: i === 4 ? '{"a":1}' : `body ${seq}`, ...(i === 4 ? { bj: true } : {}), r: null }
      })
      await withDb(async db => {
        // first, two documents that are not messages: one without '/' in its _id and without a seq,
        // one with an ObjectId _id (layout 1 is still detected, and neither stops the start)
        await db.collection('messages').insertMany([{ _id: 'x', c: 'zz' }, { c: 'c0', s: 'bad' }] as unknown as Array<{ _id: ObjectId }>)
        await db.collection('messages').insertMany(old as unknown as Array<{ _id: ObjectId }>)
        await db.collection('messages').createIndex({ c: 1, s: 1 }, { unique: true, name: 'conv_seq' })
      })
      const migrated: Array<{ messages: number, conversations: number }> = []
      const store = new MongoMessageStore({ url, database: dbName, onMigrated: info => migrated.push(info) })
      await store.init()
      try {
        expect(migrated).toEqual([{ messages: 250, conversations: 3, skipped: 2 }])
        expect([await store.lastSeq('c0'), await store.lastSeq('c1'), await store.lastSeq('c2')]).toEqual([84, 83, 83])
        expect((await store.latestMany(['c0', 'c1'])).get('c1')?.latest.seq).toBe(83)
        expect((await store.range('c1', { fromSeq: 1, toSeq: 3, limit: 3, direction: 'forward' })).map(m => [m.seq, m.body])).toEqual([[1, 'body 1'], [2, { a: 1 }], [3, 'body 3']])
        expect((await store.findByClientMsgId('c2', 'u', 'm7'))?.seq).toBe(7)
        expect(await store.insertBatch([msg('c0', 85, { clientMsgId: 'm3' })])).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        const names = await withDb(async db => (await db.listCollections({}, { nameOnly: true }).toArray()).map(c => c.name).sort())
        // the skipped documents stay in the old collection for someone to look at
        expect(names).toEqual(['messages', 'messages_heads', 'messages_layout1'])
      } finally {
        await store.close()
      }

      // an interrupted migration: renamed and partly copied, no marker; the next start finishes it
      const other = `${dbName}x`
      await withDb(async db => {
        const client = db.client
        const odb = client.db(other)
        await odb.collection('messages_layout1').insertMany(old as unknown as Array<{ _id: ObjectId }>)
        await odb.collection('messages').insertMany(old.slice(0, 100).map(d => ({ ...d, _id: `${d.c}:${d.s}` })) as unknown as Array<{ _id: ObjectId }>)
      })
      const resumed = new MongoMessageStore({ url, database: other })
      try {
        await resumed.init()
        expect(await resumed.lastSeq('c0')).toBe(84)
        expect((await resumed.range('c2', { fromSeq: 80, toSeq: 83, limit: 10, direction: 'forward' })).map(m => m.seq)).toEqual([80, 81, 82, 83])
      } finally {
        await resumed.close()
        await dropDatabase(url, other)
      }
    })
  })

  describe('retention', () => {
    const msg = (conversationId: string, seq: number): StoredMessage =>
      ({ conversationId, seq, clientMsgId: `m${seq}`, senderId: 'u', ts: 1000 + seq, kind: 'text', body: `body ${seq}`, replyTo: null })
    const olderThan = (cutoff: number): ExpiryRule => ({ before: cutoff, cutoffs: async ids => new Map(ids.map(id => [id, cutoff])) })
    const wide = { maxRemoved: 10_000, maxExamined: 10_000 }

    it('FerretDB v1.24 has no TTL indexes, which is why retention sweeps (this fails when that changes)', async () => {
      const client = new MongoClient(url)
      try {
        await client.connect()
        const db = client.db(dbName)
        const info = await db.admin().command({ buildInfo: 1 })
        if (info.ferretdbVersion === undefined) return // a real MongoDB: it has them
        await expect(db.collection('ttl').createIndex({ at: 1 }, { expireAfterSeconds: 1 })).rejects.toThrow(/expireAfterSeconds.*not implemented/)
      } finally {
        await client.close()
      }
    })

    for (const lookups of ['single', 'batched'] as const) {
      it(`another store (another node) finds where a conversation starts after one removed its oldest entries, and sweeps on from there (${lookups} lookups)`, async () => {
        const a = new MongoMessageStore({ url, database: dbName, lookups })
        const b = new MongoMessageStore({ url, database: dbName, lookups })
        await Promise.all([a.init(), b.init()])
        try {
          await a.insertBatch(Array.from({ length: 300 }, (_, i) => msg('c1', i + 1)))
          // b remembers where c1 starts (seq 1) before a removes anything
          expect(await b.firstSeq('c1')).toBe(1)
          expect(await a.removeExpired(olderThan(1000 + 138), wide)).toMatchObject({ removed: 137 })
          // b's knowledge is behind: it finds the start again (a binary search by primary key on FerretDB)
          expect(await b.firstSeq('c1')).toBe(138)
          expect((await b.range('c1', { fromSeq: 1, toSeq: 300, limit: 3, direction: 'forward' })).map(m => m.seq)).toEqual([138, 139, 140])
          // a removes more; b's sweep starts from what it remembers (138, gone now) and goes on
          expect(await a.removeExpired(olderThan(1000 + 200), wide)).toMatchObject({ removed: 62 })
          let removed = 0
          for (let i = 0; i < 4; i++) removed += (await b.removeExpired(olderThan(1000 + 250), wide)).removed
          expect(removed).toBe(50)
          expect(await a.firstSeq('c1')).toBe(250)
          expect(await a.lastSeq('c1')).toBe(300)
        } finally {
          await Promise.all([a.close(), b.close()])
        }
      })
    }
  })
})
