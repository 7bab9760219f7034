/**
 * MessageStore on MongoDB 6+ (FerretDB v1.24 in tests).
 *
 * Correctness rests on two unique keys and insert-or-conflict, never on transactions or atomic
 * counters (FerretDB has neither):
 *   - `_id` = `${conversationId}/${senderId}/${clientMsgId}` (ids never contain '/'), so the
 *     dedupe key IS the primary key. FerretDB only pushes `_id` equality down to storage, which
 *     makes findByClientMsgId a primary-key lookup there too.
 *   - the unique index `conv_seq` on {c: 1, s: 1}: at most one message per (conversation, seq).
 *
 * Document fields: c conversationId, s seq, m clientMsgId, u senderId, t ts, k kind, b body,
 * bj "b holds JSON text", r replyTo.
 *
 * Bodies. A text body (a string) is stored as is in `b`. Every other body is stored in `b` as
 * its JSON text, with `bj: true`. Storing custom bodies as BSON would not round-trip every JSON
 * value: FerretDB rejects field names that start with '$' or contain '.' ("invalid key"), and
 * MongoDB restricts such names in queries and updates. As a string, any JSON value (objects with
 * any keys, arrays, strings, numbers, booleans, null) round-trips exactly. Custom bodies are
 * opaque to the server, so nothing queries inside them.
 */
import { MongoBulkWriteError, MongoClient } from 'mongodb'
import type { Collection, WriteError } from 'mongodb'
import type { InsertBatchResult, MessageKind, MessageStore, RangeQuery, StoredMessage } from './types.js'
import { isStoreUnavailable } from './errors.js'

export interface MongoMessageStoreOptions {
  /** mongodb:// connection string. */
  url: string
  database: string
  /** Collection name. Default: 'messages'. */
  collection?: string
  /** Called when the watchdog replaces a MongoClient that stopped reaching a reachable server. */
  onClientReplaced?: (failingForMs: number) => void
}

interface MessageDoc {
  _id: string
  c: string
  s: number
  m: string
  u: string
  t: number
  k: MessageKind
  b: unknown
  bj?: true
  r: number | null
}

const DUPLICATE_KEY = 11000
/**
 * How long an operation waits for a reachable server before it fails (unless the URL sets
 * serverSelectionTimeoutMS). The driver's default, 30 s, makes a send hang through an outage,
 * past the sequencer's writeRetryMs; failing fast lets the sequencer retry until writeRetryMs
 * and then answer UNAVAILABLE.
 */
const SERVER_SELECTION_TIMEOUT_MS = 2000
/**
 * Watchdog. After the server restarts, the driver (mongodb 7.9) sometimes never reconnects: its
 * monitor stays in a check that never ends, the server stays "Unknown", and every operation
 * fails server selection until the process restarts, although the server answers new
 * connections. When every operation has failed for WEDGED_AFTER_MS, a fresh connection is
 * tried (at most every PROBE_EVERY_MS); if the server answers it, the client is replaced.
 */
const WEDGED_AFTER_MS = 10_000
const PROBE_EVERY_MS = 5_000
const SEQ_INDEX = 'conv_seq'
/**
 * Acknowledged by a majority and journaled: a message is durable before the sequencer acks it.
 * MongoDB accepts this on standalone servers and replica sets; FerretDB accepts and ignores it
 * (each SQLite write is already durable when it returns).
 */
const DURABLE = { w: 'majority', journal: true } as const
/**
 * At most this many documents per insert command. FerretDB v1.24 inserts a command's documents
 * in chunks of 100 (its --test-batch-size) and, after a duplicate key in one chunk, still inserts
 * the next chunk even when the insert is ordered (internal/handler/msg_insert.go: the `break`
 * leaves only the per-document loop). Documents after the conflict would then be stored, at seqs
 * the sequencer hands out again: a gap. One chunk per command keeps the ordered semantics.
 */
const INSERT_CHUNK = 100
/** How many `latest` queries latestMany keeps in flight (see latestMany). */
const LATEST_MANY_CONCURRENCY = 8

function messageId (conversationId: string, senderId: string, clientMsgId: string): string {
  return `${conversationId}/${senderId}/${clientMsgId}`
}

function hasSlash (...ids: string[]): boolean {
  return ids.some(id => id.includes('/'))
}

function toDoc (message: StoredMessage): MessageDoc {
  const { conversationId, senderId, clientMsgId } = message
  if (hasSlash(conversationId, senderId, clientMsgId)) {
    throw new TypeError(`message ids must not contain '/': ${messageId(conversationId, senderId, clientMsgId)}`)
  }
  const doc: MessageDoc = {
    _id: messageId(conversationId, senderId, clientMsgId),
    c: conversationId,
    s: message.seq,
    m: clientMsgId,
    u: senderId,
    t: message.ts,
    k: message.kind,
    b: message.body,
    r: message.replyTo
  }
  if (message.kind !== 'text' || typeof message.body !== 'string') {
    const json = JSON.stringify(message.body) as string | undefined
    if (json === undefined) throw new TypeError(`message body is not a JSON value: ${doc._id}`)
    doc.b = json
    doc.bj = true
  }
  return doc
}

function fromDoc (doc: MessageDoc): StoredMessage {
  return {
    conversationId: doc.c,
    seq: doc.s,
    clientMsgId: doc.m,
    senderId: doc.u,
    ts: doc.t,
    kind: doc.k,
    body: doc.bj === true ? JSON.parse(doc.b as string) : doc.b,
    replyTo: doc.r ?? null
  }
}

/**
 * The duplicate-key error that stopped an ordered insert, or undefined if the error is anything
 * else (which the caller rethrows). A write-concern error alongside it also counts as "anything
 * else": the inserted prefix may then not be durable.
 */
function firstDuplicateKey (err: unknown): WriteError | undefined {
  if (!(err instanceof MongoBulkWriteError)) return undefined
  if (err.result.getWriteConcernError() !== undefined) return undefined
  const writeErrors: readonly WriteError[] = Array.isArray(err.writeErrors) ? err.writeErrors : [err.writeErrors]
  if (writeErrors.length === 0) return undefined
  const first = writeErrors.reduce((a, b) => (b.index < a.index ? b : a))
  return first.code === DUPLICATE_KEY ? first : undefined
}

/**
 * Runs `work` on every item, at most `limit` at a time; stops starting new items after the
 * first failure, which it rethrows.
 */
async function forEachLimited<T> (items: readonly T[], limit: number, work: (item: T) => Promise<void>): Promise<void> {
  const queue = items.values() // shared by the workers: each item is taken by one of them
  let failed = false
  const worker = async (): Promise<void> => {
    for (const item of queue) {
      if (failed) return
      try {
        await work(item)
      } catch (err) {
        failed = true
        throw err
      }
    }
  }
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker))
}

/** Index name from a MongoDB duplicate-key message ("... index: conv_seq dup key: {...}"). */
function indexNameOf (errmsg: string | undefined): string | undefined {
  return errmsg === undefined ? undefined : /\bindex: (\S+)/.exec(errmsg)?.[1]
}

export class MongoMessageStore implements MessageStore {
  private client!: MongoClient
  private messages!: Collection<MessageDoc>
  /** Since when every operation has failed for want of a server; null once one works. */
  private failingSince: number | null = null
  private lastProbe = 0
  private probing = false
  private closed = false

  constructor (private readonly options: MongoMessageStoreOptions) {
    this.newClient()
  }

  private newClient (): void {
    const { url, database, collection } = this.options
    const given = /[?&]serverSelectionTimeoutMS=/i.test(url)
    this.client = new MongoClient(url, given ? {} : { serverSelectionTimeoutMS: SERVER_SELECTION_TIMEOUT_MS })
    this.messages = this.client.db(database).collection<MessageDoc>(collection ?? 'messages')
  }

  /** Runs one operation and tells the watchdog whether the server was reached. */
  private async run<T> (op: (messages: Collection<MessageDoc>) => Promise<T>): Promise<T> {
    try {
      const result = await op(this.messages)
      this.failingSince = null
      return result
    } catch (err) {
      if (isStoreUnavailable(err)) this.unreachable()
      else this.failingSince = null // the server answered (a duplicate key, say)
      throw err
    }
  }

  private unreachable (): void {
    const now = Date.now()
    this.failingSince ??= now
    if (this.closed || this.probing || now - this.failingSince < WEDGED_AFTER_MS || now - this.lastProbe < PROBE_EVERY_MS) return
    this.lastProbe = now
    this.probing = true
    void this.replaceIfWedged().finally(() => { this.probing = false })
  }

  private async replaceIfWedged (): Promise<void> {
    const probe = new MongoClient(this.options.url, { serverSelectionTimeoutMS: SERVER_SELECTION_TIMEOUT_MS })
    try {
      await probe.connect()
      await probe.db('admin').command({ ping: 1 })
    } catch {
      return // the server is down indeed: keep waiting for it
    } finally {
      await probe.close().catch(() => {})
    }
    if (this.closed || this.failingSince === null) return // recovered meanwhile
    const failingFor = Date.now() - this.failingSince
    const old = this.client
    this.newClient()
    this.failingSince = null
    this.options.onClientReplaced?.(failingFor)
    // operations still waiting on the old client fail (unavailable) and are retried by their callers
    await old.close(true).catch(() => {})
  }

  async init (): Promise<void> {
    await this.client.connect()
    // createIndex is a no-op when an identical index exists, so init() may run on every start.
    await this.messages.createIndex({ c: 1, s: 1 }, { unique: true, name: SEQ_INDEX })
  }

  async close (): Promise<void> {
    this.closed = true
    await this.client.close()
  }

  async insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult> {
    if (messages.length === 0) return { inserted: 0 }
    const docs = messages.map(toDoc)
    for (let start = 0; start < docs.length; start += INSERT_CHUNK) {
      try {
        await this.run(async m => await m.insertMany(docs.slice(start, start + INSERT_CHUNK), { ordered: true, writeConcern: DURABLE }))
      } catch (err) {
        const duplicate = firstDuplicateKey(err)
        if (duplicate === undefined) throw err
        // Ordered insert: documents [0, index) of this chunk are stored and nothing after
        // `index` was attempted.
        const inserted = start + duplicate.index
        const doc = docs[inserted]
        const kind = doc === undefined ? undefined : await this.conflictKind(doc, duplicate.errmsg)
        if (kind === undefined) throw err
        return { inserted, conflict: { kind } }
      }
    }
    return { inserted: docs.length }
  }

  async findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    if (hasSlash(conversationId, senderId, clientMsgId)) return null
    const doc = await this.run(async m => await m.findOne({ _id: messageId(conversationId, senderId, clientMsgId) }))
    return doc === null ? null : fromDoc(doc)
  }

  async lastSeq (conversationId: string): Promise<number> {
    const [doc] = await this.run(async m => await m.find({ c: conversationId }, { projection: { s: 1 } }).sort({ s: -1 }).limit(1).toArray())
    return doc === undefined ? 0 : doc.s
  }

  async latest (conversationId: string): Promise<StoredMessage | null> {
    const [doc] = await this.run(async m => await m.find({ c: conversationId }).sort({ s: -1 }).limit(1).toArray())
    return doc === undefined ? null : fromDoc(doc)
  }

  /**
   * One `latest` query per distinct conversation, LATEST_MANY_CONCURRENCY at a time: not one
   * round trip, because no single query does this on both servers.
   *   - The aggregation $match {c: {$in}}, $sort {c, s: -1}, $group {_id: '$c', $first: '$$ROOT'}
   *     fails on FerretDB v1.24: its $group implements only the $count and $sum accumulators
   *     ('$group accumulator "$first" is not implemented yet'; $max, $last and $top neither).
   *   - find({c: {$in}}) returns every message of those conversations, not one of each.
   * On MongoDB each `latest` is a short walk down the conv_seq index, so the cost is one small
   * indexed query per conversation (the aggregation would feed $group every message of the
   * conversations unless the planner turned it into a DISTINCT_SCAN). On FerretDB every query
   * on `c` scans the collection (it pushes only _id equality down), as `latest` does. The
   * concurrency bound, not chunking, is what keeps a list of thousands of ids in check.
   */
  async latestMany (conversationIds: readonly string[]): Promise<Map<string, StoredMessage>> {
    const result = new Map<string, StoredMessage>()
    await forEachLimited([...new Set(conversationIds)], LATEST_MANY_CONCURRENCY, async (conversationId) => {
      const message = await this.latest(conversationId)
      if (message !== null) result.set(conversationId, message)
    })
    return result
  }

  async range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    // limit(0) means "no limit" to MongoDB, so an empty request never reaches the server.
    if (query.limit <= 0 || query.fromSeq > query.toSeq) return []
    const forward = query.direction === 'forward'
    const docs = await this.run(async m => await m
      .find({ c: conversationId, s: { $gte: query.fromSeq, $lte: query.toSeq } })
      .sort({ s: forward ? 1 : -1 })
      .limit(query.limit)
      .toArray())
    if (!forward) docs.reverse()
    return docs.map(fromDoc)
  }

  /**
   * Which unique key the rejected document hit.
   *
   * MongoDB names the index in the message ("index: _id_ dup key: ..." or "index: conv_seq ...");
   * the driver passes only `errmsg` through for bulk writes (no keyPattern/keyValue). FerretDB
   * v1.24 names no index at all ("E11000 duplicate key error collection: db.messages"). So unless
   * the message names `_id_`, the answer comes from a primary-key lookup: the document was not
   * inserted, so if its `_id` exists, that key conflicted. Messages are never deleted, so the
   * lookup cannot miss a conflict that happened. When both keys collide (a retried message), the
   * answer is 'clientMsgId' on every server, which is what lets a retried batch report it.
   * Returns undefined for a duplicate on an index this store does not know.
   */
  private async conflictKind (doc: MessageDoc, errmsg: string | undefined): Promise<'clientMsgId' | 'seq' | undefined> {
    const index = indexNameOf(errmsg)
    if (index === '_id_') return 'clientMsgId'
    if (index !== undefined && index !== SEQ_INDEX) return undefined
    const existing = await this.run(async m => await m.findOne({ _id: doc._id }, { projection: { _id: 1 } }))
    return existing !== null ? 'clientMsgId' : 'seq'
  }
}
