/**
 * The MessageStore contract on MongoMessageStore against the real server (FerretDB in tests),
 * plus what is specific to MongoDB. Each test gets a fresh database, dropped afterwards.
 */
import { MongoClient } from 'mongodb'
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

describeMessageStore('mongo', async () => {
  const { url, dbName } = freshMongo()
  return {
    store: new MongoMessageStore({ url, database: dbName }),
    cleanup: async () => await dropDatabase(url, dbName)
  }
})

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

  it('rejects ids containing "/", which would make the primary key ambiguous', async () => {
    const store = new MongoMessageStore({ url, database: dbName })
    await store.init()
    try {
      await expect(store.insertBatch([{ conversationId: 'c1', seq: 1, clientMsgId: 'a/b', senderId: 'u', ts: 1, kind: 'text', body: 'x', replyTo: null }]))
        .rejects.toThrow(TypeError)
      expect(await store.lastSeq('c1')).toBe(0)
      expect(await store.findByClientMsgId('c1', 'u', 'a/b')).toBeNull()
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

  it('latestMany rejects when the server is unreachable (its per-conversation queries stop at the first failure)', async () => {
    const store = new MongoMessageStore({ url: 'mongodb://127.0.0.1:1/?serverSelectionTimeoutMS=300', database: dbName })
    try {
      await expect(store.latestMany(Array.from({ length: 50 }, (_, i) => `c${i}`))).rejects.toThrow()
    } finally {
      await store.close()
    }
  })
})
