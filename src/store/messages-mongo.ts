/**
 * MessageStore on MongoDB 6+ (FerretDB v1.24 in tests).
 *
 * Correctness rests on unique keys and insert-or-conflict, never on transactions or atomic
 * counters (FerretDB has neither):
 *   - `_id` = `${conversationId}:${seq}` (conversation ids never contain ':'): at most one message
 *     per (conversation, seq), and every message is reachable by its primary key. FerretDB v1.24
 *     pushes exactly one filter down to SQLite: `{_id: <string>}` alone
 *     (internal/backends/sqlite/collection.go); any other query, `$in` of ids included, decodes
 *     every document of the collection. So everything on the hot paths is a primary-key lookup.
 *   - the unique index `conv_key` on {c, u, m}: a clientMsgId is stored once per (conversation,
 *     sender). Only a resend whose earlier copy the sequencer no longer remembers looks it up
 *     by this key (findByClientMsgId): an index lookup on MongoDB, a scan on FerretDB.
 *   - the unique index `conv_seq` on {c, s} (also the range index of history pages on MongoDB).
 *
 * Heads. A second collection (`<collection>_heads`) holds one document per conversation,
 * `{_id: conversationId, h: {s, ...the message}}`: its latest message, so that lastSeq, latest
 * and list previews cost a primary-key read rather than a sort over the messages. A head is
 * written after its messages are stored, with `$max` on `h` (documents compare field by field,
 * and `s` comes first, on MongoDB and on FerretDB alike): concurrent writers of one conversation
 * on several nodes only ever move it forward, and it is never ahead of the messages. Heads are
 * written off the send path and lazily: a conversation's once it lags by HEAD_MAX_LAG entries or
 * for HEAD_MAX_WAIT_MS (see noteHeads). The process that stored the messages answers from the
 * heads it has not written yet; another process may see a head that lags by up to that much
 * (`headLagMs`): it knows those conversations' tails from the cluster's notices (see
 * Sequencer.tailsComplete), and lastSeq and latestPast look past the head by primary key (seqs are
 * gapless, see the sequencer), a few lookups at most. A head lags its messages for longer only when
 * the process dies before the round (or the write fails): lastSeq then looks past it the same way,
 * and writes the head it finds. The sequencer loads lastSeq that way before it writes a
 * conversation again.
 *
 * Lookups. On MongoDB several ids are read with one `$in` and a range of seqs with one query on
 * conv_seq; on FerretDB (detected at init from buildInfo) each id is read by itself, a bounded
 * number at a time, which stays a primary-key lookup.
 *
 * Layout version. The heads collection holds `{_id: '$layout', v: 2}`. Layout 1 (before heads;
 * `_id` = conversation/sender/clientMsgId) is migrated at init: the collection is renamed to
 * `<collection>_layout1`, copied into a new one, heads are built, the marker is written, and the
 * old collection is dropped. A crash during the copy resumes it at the next start.
 *
 * Retention (removeExpired). FerretDB v1.24 has no TTL indexes (createIndex with
 * expireAfterSeconds answers "not implemented yet", code 238), and a TTL index would remove a
 * conversation's latest entry too, leaving its seq to the head record alone (a head that a crash
 * left behind would then let a seq be handed out twice). So on MongoDB and FerretDB alike a sweep
 * removes expired entries: it pages through the heads by `_id` (an index range on MongoDB, a scan
 * of the heads on FerretDB, which pushes nothing but `_id` equality down), `maxExamined` at a time,
 * and for each conversation whose first stored entry is old enough removes the run of expired
 * entries from the first one up, never reaching the latest real message (the head's, so a head
 * that lags only keeps more). Removing: MongoDB one deleteMany on conv_seq per run of seqs,
 * FerretDB ordered deletes by primary key, UPDATES_PER_COMMAND per command; either way the oldest
 * first, so that what a conversation keeps stays one run of seqs. The first stored entry of each
 * conversation is remembered (`floors`, a lower bound: another node may have removed more), and
 * found on MongoDB by one query on conv_seq, on FerretDB by primary-key reads (the remembered
 * floor, else seq 1, else a binary search up to the latest seq: stored seqs are one run).
 *
 * Document fields: c conversationId, s seq, m clientMsgId, u senderId, t ts, k kind, b body,
 * bj "b holds JSON text", r replyTo, n count (real messages up to this seq; absent: the seq), mn
 * mentions,
 * and on changes g target and lr lastReal. What changes did to a message (see store/changes.ts)
 * is kept on it: e the latest edit {s, t, b: the body as JSON text}, d the first deletion {s, t, u},
 * x reactions {emoji: {user: state}} (a '.' in a user id is stored as ':', which user ids never
 * hold, because '.' separates the levels of an update path), w how many changes were applied.
 * Each part is written with `$max` (`d`: `$min`) by primary key (findOneAndUpdate), so nodes
 * applying changes at once, or a change applied twice, all end with the same state.
 *
 * Previews. A head also holds `p`, the conversation's latest real message (not a change) with
 * what changes did to it, `{s, w, ...}`: `$max` keeps the highest seq and, of one message, the
 * version with the most changes applied. A change to the latest real message moves `p` too.
 *
 * Bodies. A text body (a string) is stored as is in `b`. Every other body is stored in `b` as
 * its JSON text, with `bj: true`. Storing custom bodies as BSON would not round-trip every JSON
 * value: FerretDB rejects field names that start with '$' or contain '.' ("invalid key"), and
 * MongoDB restricts such names in queries and updates. As a string, any JSON value (objects with
 * any keys, arrays, strings, numbers, booleans, null) round-trips exactly. Custom bodies are
 * opaque to the server, so nothing queries inside them.
 */
import { MongoBulkWriteError, MongoClient, MongoServerError } from 'mongodb'
import type { AnyBulkWriteOperation, Collection, Db, Filter, WriteError } from 'mongodb'
import { isChangeKind, keptFrom, lastRealOf, type ConversationHead, type ExpiryBounds, type ExpiryRule, type ExpirySweep, type InsertBatchResult, type MessageChanges, type MessageKind, type MessageStore, type RangeQuery, type StoredMessage } from './types.js'
import { reactionState, type ReactionBody } from './changes.js'
import { LRUCache } from 'lru-cache'
import { lruCache } from '../lru.js'
import { forEachLimited } from './limited.js'
import { isStoreUnavailable } from './errors.js'

export interface MongoMessageStoreOptions {
  /** mongodb:// connection string. */
  url: string
  database: string
  /** Collection name. Default: 'messages'. Heads live in `<collection>_heads`. */
  collection?: string
  /**
   * How several documents are read: 'batched' (one `$in` or range query: MongoDB), 'single' (one
   * primary-key lookup per document, LOOKUP_CONCURRENCY at a time: FerretDB, which pushes nothing
   * else down), 'auto' (default: 'single' when buildInfo names FerretDB).
   */
  lookups?: 'auto' | 'batched' | 'single'
  /** Called when the watchdog replaces a MongoClient that stopped reaching a reachable server. */
  onClientReplaced?: (failingForMs: number) => void
  /** A change that could not be verified on FerretDB (see verifyLater): logged by the caller. */
  onChangeUnverified?: (change: StoredMessage, err: unknown) => void
  /** Called after init() migrated messages of layout 1 (see the header). */
  onMigrated?: (info: { messages: number, conversations: number, skipped: number }) => void
  /** How long a copy of another node's message (remember) is kept. Default REMEMBER_MS. */
  rememberMs?: number
  /**
   * Other processes write this database (a cluster): every cached message document is served for
   * rememberMs at most, not only those remembered from notices. Another node's change to a message
   * reaches this cache only through its notice (`forget`); one that is lost (the notice could not
   * be published) leaves a stale copy that long at most, in `history` pages and `list` previews.
   */
  clustered?: boolean
  /** How long a conversation's head may wait to be written (see noteHeads). Default HEAD_MAX_WAIT_MS. */
  headMaxWaitMs?: number
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
  n?: number
  mn?: string[]
  g?: number
  lr?: number
  e?: { s: number, t: number, b: string }
  d?: { s: number, t: number, u: string }
  x?: Record<string, Record<string, number>>
  w?: number
}

/** The latest real message of a conversation, with changes: `s`, then `w` (what `$max` compares). */
type PreviewFields = { s: number, w: number } & Omit<MessageDoc, '_id' | 'c' | 's' | 'w'>

/** A conversation's latest message, without `_id` and `c`; `s` first, which is what `$max` compares first. */
type HeadFields = Omit<MessageDoc, '_id' | 'c'>

/** A head (`_id` a conversation id, `h` set) or the layout marker (`_id` LAYOUT_ID, `v` set). */
interface HeadDoc {
  _id: string
  h?: HeadFields
  p?: PreviewFields
  v?: number
}

/** What a process knows of a conversation's head and has not written yet. */
interface PendingHead {
  /** The latest entry. */
  h: MessageDoc
  /** The latest real message, as it is now (when this process knows it). */
  p?: MessageDoc
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
 * A connection on which the server sends nothing for this long is closed and its operation fails
 * (unavailable), unless the URL sets socketTimeoutMS: a server that takes a command and never
 * answers it (FerretDB does, see UPDATES_PER_COMMAND) must not hold a send, a history page or a list
 * forever. The sequencer then retries until writeRetryMs and answers UNAVAILABLE. (The driver's
 * timeoutMS would be the per-operation bound, but mongodb 7 ignores it.) Nothing on mqim's paths
 * runs this long; the layout migration, which may, uses a client of its own without it.
 */
const SOCKET_TIMEOUT_MS = 5000
/**
 * A new connection's handshake fails after this long unless the URL sets connectTimeoutMS (the
 * driver's default, 30 s, is how long an operation waits on a server that accepts connections and
 * answers nothing: the pool opens a new connection for it after the socket timeout).
 */
const CONNECT_TIMEOUT_MS = 3000
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
const KEY_INDEX = 'conv_key'
const LAYOUT_ID = '$layout'
const LAYOUT_VERSION = 2
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
/**
 * At most this many updates per update command. FerretDB v1.24 keeps the query of every update of a
 * command open until the command ends (internal/handler/msg_update.go: `defer closer.Close()` inside
 * the loop over the updates), each holding one of the database's 100 SQLite connections: a command
 * of ~100 updates of existing documents then waits for a connection forever, and with it every later
 * write to that database (measured: 90 updates pass, 100 hang). Well below that, also with a
 * second node's command running at the same time.
 */
const UPDATES_PER_COMMAND = 25
/** A head flush round starts this long after a head became due (more heads join it). */
const HEAD_FLUSH_DELAY_MS = 20
/**
 * A conversation's head is written once it lags its messages by this many entries, or has lagged
 * for HEAD_MAX_WAIT_MS, whichever comes first (see noteHeads). Each head update costs FerretDB a
 * transaction of its own (a read, a JSON rewrite and an fsync): in the cluster soak, head updates
 * written every 20 ms were 45 % of FerretDB's CPU, more than the messages' inserts.
 */
const HEAD_MAX_LAG = 16
const HEAD_MAX_WAIT_MS = 10_000
/** headLagMs: the head's wait and time for the round that writes it. */
const HEAD_WRITE_MARGIN_MS = 5_000
/** After a failed head flush, the next round waits this long. */
const HEAD_RETRY_MS = 1000
/** At most this many conversations wait for their heads to be written (beyond, the oldest go unwritten: lastSeq repairs them). */
const PENDING_HEADS_MAX = 100_000
/** From this many pending heads on, every round writes all of them (not only those due). */
const PENDING_HEADS_FLUSH_ALL = 20_000
/** Rounds of a head update command that meet duplicate keys (see updateHeads) before it fails. */
const HEAD_WRITE_ATTEMPTS = 5
/** Primary-key lookups kept in flight by one call in 'single' mode. */
const LOOKUP_CONCURRENCY = 16
/** Looking past a head: at most this many seqs per round trip. */
const PROBE_MAX = 32
/**
 * The documents this process wrote or read by primary key are kept, up to this many bytes (a few minutes of a busy server's messages): history pages of
 * recent messages, the common case of a device that syncs after a reconnect, are then read from
 * memory. Small on purpose: a bigger cache would take longer to fill, its growth looking like a leak.
 */
const RECENT_DOC_BYTES = 8 * 1024 * 1024
/**
 * A copy of a message another node stored (remember) is kept this long at most: it is the sync
 * after a short absence that reads it, and a change or removal whose notice this node missed (Redis
 * reconnecting, a notice overtaken and its forget record evicted) is then served for a minute at
 * most. Retention removes only messages older than its period (hours or days).
 */
const REMEMBER_MS = 60_000
/** Forgotten ids remembered, so that a read that started before cannot cache the stale copy. */
const FORGOTTEN_MAX = 100_000
/** FerretDB: a change is read back this long after it was applied (then twice as long), see verifyLater. */
const VERIFY_AFTER_MS = 100
const VERIFY_ATTEMPTS = 4
/** Verifications waiting at most; beyond, changes are not verified (a burst of reactions). */
const VERIFY_PENDING_MAX = 10_000
/** Start-up check of the heads: probes per round, and heads checked at most (the rest: lazily). */
const HEAL_BATCH = 200
const HEAL_MAX = 200_000
/** Pause between two rounds of the start-up check. */
const HEAL_PAUSE_MS = 50
/** Migration: documents per insert. */
const COPY_BATCH = 1000
/** Retention: conversations whose first stored entry is remembered (see floorOf). */
const FLOORS_MAX = 200_000
/** Retention: seqs read (and removed) per round trip while removing a conversation's expired run. */
const REMOVE_CHUNK = 500

function idOf (conversationId: string, seq: number): string {
  return `${conversationId}:${seq}`
}

function toDoc (message: StoredMessage): MessageDoc {
  const { conversationId, senderId, clientMsgId } = message
  if (conversationId.includes(':')) throw new TypeError(`conversation ids must not contain ':': ${conversationId}`)
  const doc: MessageDoc = {
    _id: idOf(conversationId, message.seq),
    c: conversationId,
    s: message.seq,
    m: clientMsgId,
    u: senderId,
    t: message.ts,
    k: message.kind,
    b: message.body,
    r: message.replyTo
  }
  if (message.count !== undefined) doc.n = message.count
  if (message.mentions !== undefined) doc.mn = message.mentions
  if (message.target !== undefined) doc.g = message.target
  if (message.lastReal !== undefined) doc.lr = message.lastReal
  if (message.kind !== 'text' || typeof message.body !== 'string') {
    const json = JSON.stringify(message.body) as string | undefined
    if (json === undefined) throw new TypeError(`message body is not a JSON value: ${conversationId}/${senderId}/${clientMsgId}`)
    doc.b = json
    doc.bj = true
  }
  return doc
}

function fromDoc (doc: Omit<MessageDoc, '_id'>): StoredMessage {
  const message: StoredMessage = {
    conversationId: doc.c,
    seq: doc.s,
    clientMsgId: doc.m,
    senderId: doc.u,
    ts: doc.t,
    kind: doc.k,
    body: doc.bj === true ? JSON.parse(doc.b as string) : doc.b,
    replyTo: doc.r ?? null
  }
  if (doc.n !== undefined) message.count = doc.n
  if (doc.mn !== undefined) message.mentions = doc.mn
  if (doc.g !== undefined) message.target = doc.g
  if (doc.lr !== undefined) message.lastReal = doc.lr
  const changes = changesOf(doc)
  if (changes !== undefined) message.changes = changes
  return message
}

/** A user id as a key of `x` (see the header). */
function userKey (userId: string): string {
  return userId.replaceAll('.', ':')
}

function changesOf (doc: Omit<MessageDoc, '_id'>): MessageChanges | undefined {
  if (doc.w === undefined) return undefined
  const changes: MessageChanges = { version: doc.w }
  if (doc.e !== undefined) changes.edited = { seq: doc.e.s, ts: doc.e.t, body: JSON.parse(doc.e.b) }
  if (doc.d !== undefined) changes.deleted = { seq: doc.d.s, ts: doc.d.t, by: doc.d.u }
  if (doc.x !== undefined) {
    changes.reactions = {}
    for (const [emoji, users] of Object.entries(doc.x)) {
      changes.reactions[emoji] = Object.fromEntries(Object.entries(users).map(([key, state]) => [key.replaceAll(':', '.'), state]))
    }
  }
  return changes
}

/** The update that applies a change to its target (see store/changes.ts): `$max` (`$min`) of one part. */
function changeUpdate (change: StoredMessage): Record<string, unknown> {
  let part: Record<string, unknown>
  let keep: '$max' | '$min' = '$max'
  if (change.kind === 'edit') {
    const json = JSON.stringify(change.body) as string | undefined
    if (json === undefined) throw new TypeError(`edit body is not a JSON value: ${change.conversationId}:${change.seq}`)
    part = { e: { s: change.seq, t: change.ts, b: json } }
  } else if (change.kind === 'delete') {
    part = { d: { s: change.seq, t: change.ts, u: change.senderId } }
    keep = '$min' // the first deletion counts
  } else if (change.kind === 'react') {
    const { emoji, remove } = change.body as ReactionBody
    if (emoji.includes('.') || emoji.startsWith('$')) throw new TypeError(`not a reaction: ${emoji}`)
    part = { [`x.${emoji}.${userKey(change.senderId)}`]: reactionState(change.seq, !remove) }
  } else {
    throw new TypeError(`not a change: ${change.kind}`)
  }
  return { [keep]: part, $inc: { w: 1 } }
}

function headFields (doc: MessageDoc): HeadFields {
  const h: HeadFields = { s: doc.s, t: doc.t, u: doc.u, m: doc.m, k: doc.k, b: doc.b, r: doc.r }
  if (doc.bj === true) h.bj = true
  if (doc.n !== undefined) h.n = doc.n
  if (doc.g !== undefined) h.g = doc.g
  if (doc.lr !== undefined) h.lr = doc.lr
  return h
}

function previewFields (doc: MessageDoc): PreviewFields {
  const { _id, c, s, w, ...rest } = doc
  return { s, w: w ?? 0, ...rest }
}

function fromPreview (c: string, p: PreviewFields): MessageDoc {
  const { s, w, ...rest } = p
  const doc: MessageDoc = { _id: idOf(c, s), c, s, ...rest }
  if (w > 0) doc.w = w
  return doc
}

/** Of two versions of a conversation's preview, the later: higher seq, then more changes. */
function laterPreview (a: MessageDoc | undefined, b: MessageDoc | undefined): MessageDoc | undefined {
  if (a === undefined) return b
  if (b === undefined) return a
  if (a.s !== b.s) return a.s > b.s ? a : b
  return (a.w ?? 0) >= (b.w ?? 0) ? a : b
}

/** Whether the document shows what `change` did (or something later of the same kind, user and emoji). */
function hasChange (doc: MessageDoc, change: StoredMessage): boolean {
  if (change.kind === 'edit') return (doc.e?.s ?? 0) >= change.seq
  if (change.kind === 'delete') return doc.d !== undefined
  const { emoji, remove } = change.body as ReactionBody
  return (doc.x?.[emoji]?.[userKey(change.senderId)] ?? 0) >= reactionState(change.seq, !remove)
}

/** The head one stored document makes: the latest entry, and the preview when it is a real message. */
function headOf (doc: MessageDoc): PendingHead {
  return isChangeKind(doc.k) ? { h: doc } : { h: doc, p: doc }
}

/** Two things known of one conversation's head, together. */
function mergeHeads (a: PendingHead | undefined, b: PendingHead | undefined): PendingHead {
  if (a === undefined) return b as PendingHead
  if (b === undefined) return a
  const head: PendingHead = { h: a.h.s >= b.h.s ? a.h : b.h }
  const p = laterPreview(a.p, b.p)
  if (p !== undefined) head.p = p
  return head
}

/**
 * The duplicate-key error that stopped an ordered insert, or undefined if the error is anything
 * else (which the caller rethrows). A write-concern error alongside it also counts as "anything
 * else": the inserted prefix may then not be durable.
 */
function firstDuplicateKey (err: unknown): WriteError | undefined {
  const errors = writeErrorsOf(err)
  if (errors === undefined || errors.length === 0) return undefined
  const first = errors.reduce((a, b) => (b.index < a.index ? b : a))
  return first.code === DUPLICATE_KEY ? first : undefined
}

/** The write errors of a bulk write that failed only on documents (no write-concern error). */
function writeErrorsOf (err: unknown): readonly WriteError[] | undefined {
  if (!(err instanceof MongoBulkWriteError)) return undefined
  if (err.result.getWriteConcernError() !== undefined) return undefined
  const errors = err.writeErrors
  return Array.isArray(errors) ? errors : [errors as WriteError]
}

/** A write that failed only on a duplicate key, as MongoDB (a write error) or FerretDB (the command) reports it. */
function isDuplicateKey (err: unknown): boolean {
  const errors = writeErrorsOf(err)
  if (errors !== undefined && errors.length > 0) return errors.every(e => e.code === DUPLICATE_KEY)
  return err instanceof MongoServerError && err.code === DUPLICATE_KEY
}

/** Index name from a MongoDB duplicate-key message ("... index: conv_seq dup key: {...}"). */
function indexNameOf (errmsg: string | undefined): string | undefined {
  return errmsg === undefined ? undefined : /\bindex: (\S+)/.exec(errmsg)?.[1]
}

function seqsFrom (first: number, count: number): number[] {
  return Array.from({ length: Math.max(0, count) }, (_, i) => first + i)
}

export class MongoMessageStore implements MessageStore {
  private client!: MongoClient
  private messages!: Collection<MessageDoc>
  private heads!: Collection<HeadDoc>
  /** One query for several ids or a seq range (MongoDB), or one lookup per id (FerretDB). */
  private batched = true
  /** Since when every operation has failed for want of a server; null once one works. */
  private failingSince: number | null = null
  private lastProbe = 0
  private probing = false
  private closed = false
  /**
   * conversation -> its latest stored message whose head is not written yet (see noteHeads). Read
   * by latestMany and lastSeq, so this process never sees its own heads lag.
   */
  private readonly pendingHeads = new Map<string, PendingHead>()
  /**
   * conversation -> when its pending head is due and how many entries it lags by, in the order
   * the heads became pending (so in due order but for heads put back after a failed write).
   */
  private readonly headWaits = new Map<string, { due: number, entries: number }>()
  /** Conversations whose pending head lags by HEAD_MAX_LAG entries or more: due now. */
  private readonly laggingHeads = new Set<string>()
  /** The heads being written by the flush in progress (still read as pending). */
  private flushingHeads = new Map<string, PendingHead>()
  /** See MessageStore.headLagMs. */
  readonly headLagMs: number
  private readonly headMaxWaitMs: number
  private headTimer: NodeJS.Timeout | null = null
  /** When headTimer fires (performance.now() clock). */
  private headTimerAt = 0
  /** After a failed round, no round before this (performance.now() clock). */
  private headRetryAt = 0
  /** Whether the start-up check of the heads has ended (see headsChecked). */
  private healed = false
  /** The start-up check of the heads (healHeads), while it runs. */
  private healing: Promise<void> | null = null
  /** Options of recentDocs.set for documents stored or read here (see MongoMessageStoreOptions.clustered). */
  private readonly cachedDoc: { ttl?: number }
  /** `_id` -> a stored message document (see RECENT_DOC_BYTES). */
  private readonly recentDocs = new LRUCache<string, MessageDoc>({
    maxSize: RECENT_DOC_BYTES,
    // the strings at two bytes a character (the body dominates), plus the object, its numbers and
    // the cache entry (~400 bytes, measured roughly: the earlier 200 undercounted by 2-3x)
    sizeCalculation: doc => 400 + 2 * ((typeof doc.b === 'string' ? doc.b.length : 0) + doc._id.length + doc.c.length + doc.m.length + doc.u.length) +
      (doc.mn === undefined ? 0 : doc.mn.reduce((n, u) => n + 24 + 2 * u.length, 0)) +
      (doc.w === undefined ? 0 : 2 * JSON.stringify([doc.e, doc.d, doc.x]).length)
  })

  private headFlush: Promise<void> | null = null
  /** Counts forget() calls; `forgotten` holds the count at which each id was last forgotten. */
  private forgetClock = 0
  private readonly forgotten = lruCache<string, number>(FORGOTTEN_MAX, {
    dispose: (n, _id, reason) => { if (reason === 'evict') this.forgottenUpTo = Math.max(this.forgottenUpTo, n) }
  })

  /** The highest count forgotten by `forgotten` (evicted): reads that started before it cache nothing. */
  private forgottenUpTo = 0

  /**
   * Retention: conversation -> its first stored entry as this process last saw it (`t` unknown when
   * it was not read): a lower bound, since another process may have removed more since.
   */
  private readonly floors = lruCache<string, { s: number, t?: number }>(FLOORS_MAX)
  /** Retention: the sweep goes on after this head `_id` ('' : from the first). */
  private sweepAfter = ''

  constructor (private readonly options: MongoMessageStoreOptions) {
    this.headMaxWaitMs = options.headMaxWaitMs ?? HEAD_MAX_WAIT_MS
    this.cachedDoc = options.clustered === true ? { ttl: options.rememberMs ?? REMEMBER_MS } : {}
    this.headLagMs = this.headMaxWaitMs + HEAD_WRITE_MARGIN_MS
    this.newClient()
  }

  private get collectionName (): string {
    return this.options.collection ?? 'messages'
  }

  private newClient (): void {
    const { url } = this.options
    this.client = new MongoClient(url, {
      ...(/[?&]serverSelectionTimeoutMS=/i.test(url) ? {} : { serverSelectionTimeoutMS: SERVER_SELECTION_TIMEOUT_MS }),
      ...(/[?&]socketTimeoutMS=/i.test(url) ? {} : { socketTimeoutMS: SOCKET_TIMEOUT_MS }),
      ...(/[?&]connectTimeoutMS=/i.test(url) ? {} : { connectTimeoutMS: CONNECT_TIMEOUT_MS })
    })
    this.messages = this.db().collection<MessageDoc>(this.collectionName)
    this.heads = this.db().collection<HeadDoc>(`${this.collectionName}_heads`)
  }

  private db (): Db {
    return this.client.db(this.options.database)
  }

  /** Runs one operation and tells the watchdog whether the server was reached. */
  private async run<T> (op: () => Promise<T>): Promise<T> {
    try {
      const result = await op()
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
    const lookups = this.options.lookups ?? 'auto'
    if (lookups === 'auto') {
      const info = await this.db().admin().command({ buildInfo: 1 })
      this.batched = info.ferretdbVersion === undefined
    } else {
      this.batched = lookups === 'batched'
    }
    if (await this.heads.findOne({ _id: LAYOUT_ID }) === null) await this.upgradeLayout()
    await this.createIndexes()
    this.healing = this.healHeads().catch(() => {}).finally(() => { this.healed = true }) // in the background; lastSeq repairs lazily too
  }

  /**
   * False while the start-up check of the heads runs (healHeads): until then a head record may lag
   * what a process that died had stored (heads are written lazily), and readers that need the exact
   * latest entry ask lastSeq or latest (see Sequencer.tailsComplete). True for good once it ended.
   */
  get headsChecked (): boolean {
    return this.healed
  }

  /**
   * At start-up, in the background: every head is checked against the messages past it (one
   * primary-key probe each, HEAL_BATCH at a time) and repaired where a crash left it behind, so
   * that `list` is right after a restart without waiting for each conversation to be touched. A
   * conversation whose first messages were stored but whose head was never written has no head to
   * check: it is repaired when it is next written or read.
   */
  private async healHeads (): Promise<void> {
    let batch: Array<{ c: string, s: number }> = []
    let checked = 0
    const probe = async (): Promise<void> => {
      const ids = batch.map(h => idOf(h.c, h.s + 1))
      const past = new Set((await this.byIds(ids)).map(d => d.c))
      for (const h of batch) if (past.has(h.c) && !this.closed) await this.latestDoc(h.c)
      batch = []
      // background work: leave the store to the requests between two rounds
      await new Promise(resolve => setTimeout(resolve, HEAL_PAUSE_MS))
    }
    for await (const head of this.heads.find({}, { projection: { 'h.s': 1 } })) {
      if (this.closed || checked >= HEAL_MAX) return
      if (head._id === LAYOUT_ID || head.h === undefined) continue
      batch.push({ c: head._id, s: head.h.s })
      checked++
      if (batch.length >= HEAL_BATCH) await probe()
    }
    if (!this.closed) await probe()
  }

  /** createIndex is a no-op when an identical index exists, so init() may run on every start. */
  private async createIndexes (): Promise<void> {
    await this.messages.createIndex({ c: 1, s: 1 }, { unique: true, name: SEQ_INDEX })
    await this.messages.createIndex({ c: 1, u: 1, m: 1 }, { unique: true, name: KEY_INDEX })
  }

  /** First start of this layout: migrate layout-1 messages, if any, then write the marker. */
  private async upgradeLayout (): Promise<void> {
    const oldName = `${this.collectionName}_layout1`
    let old = (await this.db().listCollections({ name: oldName }, { nameOnly: true }).toArray()).length > 0
    if (!old) {
      // any layout-1 document (its _id holds '/'; layout 2's never does), not just the first one
      const any = await this.messages.findOne({ _id: { $regex: '/' } }, { projection: { _id: 1 } })
      if (any !== null) {
        await this.messages.rename(oldName)
        old = true
      }
    }
    await this.createIndexes()
    let skipped = 0
    if (old) {
      // scans and large writes: a client without the socket timeout
      const client = new MongoClient(this.options.url, { serverSelectionTimeoutMS: SERVER_SELECTION_TIMEOUT_MS, socketTimeoutMS: 0 })
      try {
        const db = client.db(this.options.database)
        skipped = await this.copyLayout1(db.collection<MessageDoc>(oldName), db.collection<MessageDoc>(this.collectionName), db.collection<HeadDoc>(`${this.collectionName}_heads`))
      } finally {
        await client.close()
      }
    }
    try {
      await this.heads.insertOne({ _id: LAYOUT_ID, v: LAYOUT_VERSION }, { writeConcern: DURABLE })
    } catch (err) {
      if (!(err instanceof MongoServerError && err.code === DUPLICATE_KEY)) throw err // another node wrote it
    }
    // documents that were skipped stay in the old collection for someone to look at
    if (old && skipped === 0) await this.db().collection(oldName).drop()
  }

  /** Copies layout-1 documents (idempotent: a resumed copy skips what is there) and builds heads. */
  /** Returns how many documents it skipped (not messages: no string conversation id and seq >= 1). */
  private async copyLayout1 (old: Collection<MessageDoc>, messages: Collection<MessageDoc>, heads: Collection<HeadDoc>): Promise<number> {
    const latest = new Map<string, MessageDoc>()
    let copied = 0
    let batch: MessageDoc[] = []
    const flush = async (): Promise<void> => {
      if (batch.length === 0) return
      try {
        await messages.insertMany(batch, { ordered: false, writeConcern: DURABLE })
      } catch (err) {
        const errors = writeErrorsOf(err)
        if (errors === undefined || errors.some(e => e.code !== DUPLICATE_KEY)) throw err
      }
      copied += batch.length
      batch = []
    }
    let skipped = 0
    for await (const doc of old.find({})) {
      // not a message this store wrote (hand-made, or damaged): counted and reported, not copied;
      // the old collection is then kept (see upgradeLayout)
      if (typeof doc.c !== 'string' || doc.c.includes(':') || !Number.isSafeInteger(doc.s) || doc.s < 1) {
        skipped++
        continue
      }
      const moved = { ...doc, _id: idOf(doc.c, doc.s) }
      batch.push(moved)
      const known = latest.get(doc.c)
      if (known === undefined || known.s < doc.s) latest.set(doc.c, moved)
      if (batch.length >= COPY_BATCH) await flush()
    }
    await flush()
    const latestDocs = [...latest.values()]
    for (let i = 0; i < latestDocs.length; i += COPY_BATCH) await this.writeHeads(latestDocs.slice(i, i + COPY_BATCH).map(headOf), heads)
    const [before, after] = await Promise.all([old.countDocuments({}), messages.countDocuments({})])
    if (after < before - skipped) throw new Error(`migration of ${old.collectionName} left ${after} of ${before - skipped} messages; it resumes at the next start`)
    this.options.onMigrated?.({ messages: copied, conversations: latest.size, skipped })
    return skipped
  }

  async close (): Promise<void> {
    this.closed = true
    await this.healing
    if (this.headTimer !== null) clearTimeout(this.headTimer)
    this.headTimer = null
    for (const timer of this.verifying) clearTimeout(timer)
    this.verifying.clear()
    await this.headFlush
    // the last heads, best effort: lastSeq repairs what is lost
    await this.flushHeads(true).catch(() => {})
    await this.client.close()
  }

  /**
   * Heads are written after their messages, off the send path, and lazily: a conversation's head
   * is written once it lags its messages by HEAD_MAX_LAG entries or has lagged for
   * HEAD_MAX_WAIT_MS (a quiet conversation's soon after its last message, a busy one's every
   * HEAD_MAX_LAG entries), in flush rounds that write every head due (HEAD_FLUSH_DELAY_MS after the
   * first one). Until then this process answers from pendingHeads; another process may see a head
   * that lags, by at most that much, and looks past it by primary key (a few lookups: probePast)
   * where it needs the exact latest entry, as it does after a crash (see the header).
   */
  private noteHeads (docs: readonly MessageDoc[]): void {
    let lagging = false
    for (const doc of docs) {
      this.pendingHeads.set(doc.c, mergeHeads(this.pendingHeads.get(doc.c), headOf(doc)))
      const wait = this.headWaits.get(doc.c)
      if (wait === undefined) this.headWaits.set(doc.c, { due: performance.now() + this.headMaxWaitMs, entries: 1 })
      else wait.entries++
      // a conversation's first entry: its head is written at once, so that every conversation has
      // a head record for the start-up check to look past after a crash (healHeads)
      if (((wait?.entries ?? 1) >= HEAD_MAX_LAG || doc.s === 1) && !this.laggingHeads.has(doc.c)) {
        this.laggingHeads.add(doc.c)
        lagging = true
      }
    }
    // bounded: the oldest go unwritten (lastSeq repairs them from the messages); rounds write all
    // of them long before that (PENDING_HEADS_FLUSH_ALL), so this happens only while writes fail
    for (const c of this.pendingHeads.keys()) {
      if (this.pendingHeads.size <= PENDING_HEADS_MAX) break
      this.forgetPendingHead(c)
    }
    this.scheduleHeads(lagging || this.pendingHeads.size >= PENDING_HEADS_FLUSH_ALL ? HEAD_FLUSH_DELAY_MS : this.nextHeadDueIn())
  }

  private forgetPendingHead (conversationId: string): void {
    this.pendingHeads.delete(conversationId)
    this.headWaits.delete(conversationId)
    this.laggingHeads.delete(conversationId)
  }

  /** Milliseconds until the first pending head is due (at least HEAD_FLUSH_DELAY_MS); Infinity if none is pending. */
  private nextHeadDueIn (): number {
    if (this.laggingHeads.size > 0 || this.pendingHeads.size >= PENDING_HEADS_FLUSH_ALL) return HEAD_FLUSH_DELAY_MS
    const first = this.headWaits.values().next()
    return first.done === true ? Number.POSITIVE_INFINITY : Math.max(HEAD_FLUSH_DELAY_MS, first.value.due - performance.now())
  }

  /** A round in `delayMs` (not before headRetryAt), unless one is running or set to start sooner. */
  private scheduleHeads (delayMs: number): void {
    if (this.closed || this.headFlush !== null || this.pendingHeads.size === 0 || !Number.isFinite(delayMs)) return
    const at = Math.max(performance.now() + delayMs, this.headRetryAt)
    delayMs = at - performance.now()
    if (this.headTimer !== null) {
      if (this.headTimerAt <= at) return
      clearTimeout(this.headTimer)
    }
    this.headTimerAt = at
    this.headTimer = setTimeout(() => {
      this.headTimer = null
      this.startHeadFlush(false)
    }, delayMs)
    this.headTimer.unref()
  }

  /** A flush round now (of the heads due, or of all); the next is scheduled when it ends. */
  private startHeadFlush (all: boolean): void {
    let failed = false
    this.headFlush = this.flushHeads(all)
      .catch(() => { failed = true })
      .finally(() => {
        this.headFlush = null
        if (failed) this.headRetryAt = performance.now() + HEAD_RETRY_MS
        this.scheduleHeads(this.nextHeadDueIn())
      })
  }

  /** Writes the heads pending now without waiting for their round (a retention step sees every conversation this process wrote). */
  private async writePendingHeads (): Promise<void> {
    await this.headFlush
    if (this.closed || this.pendingHeads.size === 0) return
    if (this.headTimer !== null) clearTimeout(this.headTimer)
    this.headTimer = null
    if (this.headFlush === null) this.startHeadFlush(true)
    await this.headFlush
  }

  /** Writes the pending heads that are due (lagging too far or too long), or all of them. */
  private async flushHeads (all: boolean): Promise<void> {
    if (this.pendingHeads.size === 0) return
    const now = performance.now()
    all ||= this.pendingHeads.size >= PENDING_HEADS_FLUSH_ALL
    const due: string[] = all ? [...this.pendingHeads.keys()] : [...this.laggingHeads]
    if (!all) {
      for (const [c, wait] of this.headWaits) {
        if (wait.due > now) break
        if (!this.laggingHeads.has(c)) due.push(c)
      }
    }
    if (due.length === 0) return
    const waits = new Map<string, { due: number, entries: number }>()
    for (const c of due) {
      const head = this.pendingHeads.get(c)
      if (head !== undefined) this.flushingHeads.set(c, head)
      waits.set(c, this.headWaits.get(c) ?? { due: now, entries: 1 })
      this.forgetPendingHead(c)
    }
    try {
      // a command at a time; each one written is done with, whatever happens to the next
      const list = [...this.flushingHeads]
      for (let start = 0; start < list.length; start += UPDATES_PER_COMMAND) {
        const chunk = list.slice(start, start + UPDATES_PER_COMMAND)
        await this.writeHeads(chunk.map(([, head]) => head))
        for (const [c] of chunk) this.flushingHeads.delete(c)
      }
    } catch (err) {
      // what was not written goes again in the next round (HEAD_RETRY_MS on), with what came meanwhile
      for (const [c, head] of this.flushingHeads) {
        this.pendingHeads.set(c, mergeHeads(head, this.pendingHeads.get(c)))
        const entries = (waits.get(c)?.entries ?? 1) + (this.headWaits.get(c)?.entries ?? 0)
        this.headWaits.delete(c)
        this.headWaits.set(c, { due: now, entries })
        this.laggingHeads.add(c)
      }
      throw err
    } finally {
      this.flushingHeads = new Map()
    }
  }

  /** The head this process has stored messages (or changes) for and not written yet, if any. */
  private pendingHead (conversationId: string): PendingHead | undefined {
    const pending = this.pendingHeads.get(conversationId)
    const flushing = this.flushingHeads.get(conversationId)
    if (pending === undefined) return flushing
    return flushing === undefined ? pending : mergeHeads(flushing, pending)
  }

  async insertBatch (messages: StoredMessage[]): Promise<InsertBatchResult> {
    if (messages.length === 0) return { inserted: 0 }
    const docs = messages.map(toDoc)
    for (let start = 0; start < docs.length; start += INSERT_CHUNK) {
      try {
        await this.run(async () => await this.messages.insertMany(docs.slice(start, start + INSERT_CHUNK), { ordered: true, writeConcern: DURABLE }))
      } catch (err) {
        const duplicate = firstDuplicateKey(err)
        if (duplicate === undefined) throw err
        // Ordered insert: documents [0, index) of this chunk are stored and nothing after
        // `index` was attempted.
        const inserted = start + duplicate.index
        const doc = docs[inserted]
        const conflict = doc === undefined ? undefined : await this.conflictOf(doc, duplicate.errmsg)
        if (conflict === undefined) throw err
        this.noteStored(docs.slice(0, inserted))
        return { inserted, conflict }
      }
    }
    this.noteStored(docs)
    return { inserted: docs.length }
  }

  async findByClientMsgId (conversationId: string, senderId: string, clientMsgId: string): Promise<StoredMessage | null> {
    const doc = await this.run(async () => await this.messages.findOne({ c: conversationId, u: senderId, m: clientMsgId }))
    return doc === null ? null : fromDoc(doc)
  }

  async lastSeq (conversationId: string): Promise<number> {
    return (await this.latestDoc(conversationId))?.s ?? 0
  }

  async latest (conversationId: string): Promise<StoredMessage | null> {
    const doc = await this.latestDoc(conversationId)
    return doc === null ? null : fromDoc(doc)
  }

  /**
   * From the head records: a head that lags its messages (see the header) is answered as it is;
   * lastSeq of that conversation heals it. MongoDB: one `$in` query on `_id`. FerretDB: one
   * primary-key read per head, LOOKUP_CONCURRENCY at a time, because its `$in` reads every head in
   * the database, previews included (measured: 0.5-1.9 s with 10,000 conversations, over 5 s with
   * 50,000), where a page of heads by key costs the page (listPageMax bounds it).
   */
  async latestMany (conversationIds: readonly string[]): Promise<Map<string, ConversationHead>> {
    const ids = [...new Set(conversationIds)]
    if (ids.length === 0) return new Map()
    // before the reads: a head still pending now is written after them at the earliest, and one
    // that is not pending now was written before them
    const pendingNow = new Map<string, PendingHead>()
    for (const c of ids) {
      const pending = this.pendingHead(c)
      if (pending !== undefined) pendingNow.set(c, pending)
    }
    const found = await this.findByKeys(this.heads, ids)
    const heads = new Map<string, PendingHead>()
    for (const head of found) {
      if (head.h === undefined) continue
      const h: MessageDoc = { ...head.h, _id: idOf(head._id, head.h.s), c: head._id }
      // a head written before previews existed holds only `h`, a real message then
      heads.set(head._id, mergeHeads(headOf(h), head.p === undefined ? undefined : { h, p: fromPreview(head._id, head.p) }))
    }
    for (const [c, pending] of pendingNow) heads.set(c, mergeHeads(heads.get(c), pending))
    // a preview older than the latest entry says (a head written late): read it by key
    const stale = [...heads.values()].filter(head => (head.p?.s ?? 0) < lastRealOf(fromDoc(head.h)))
    if (stale.length > 0) {
      const read = await this.byIds(stale.map(head => idOf(head.h.c, lastRealOf(fromDoc(head.h)))))
      for (const doc of read) {
        const head = heads.get(doc.c)
        if (head !== undefined) head.p = laterPreview(head.p, doc)
      }
    }
    return new Map([...heads].map(([c, head]) => [c, { latest: fromDoc(head.h), preview: head.p === undefined ? null : fromDoc(head.p) }]))
  }

  async applyChange (change: StoredMessage): Promise<StoredMessage | null> {
    const doc = await this.applyOnce(change)
    if (doc === null) return null
    // FerretDB: see verifyChange
    if (!this.batched) this.verifyLater(change, VERIFY_AFTER_MS, 1)
    return fromDoc(doc)
  }

  private async applyOnce (change: StoredMessage): Promise<MessageDoc | null> {
    if (change.target === undefined) return null
    const id = idOf(change.conversationId, change.target)
    const update = changeUpdate(change)
    const doc = await this.run(async () => await this.messages.findOneAndUpdate({ _id: id }, update, { returnDocument: 'after', writeConcern: DURABLE }))
    // not cached: a copy read meanwhile (here, or by a page read that started before) is stale
    this.forgetIds([id])
    if (doc === null) return null
    // a change to the latest real message (or one whose place is not known) changes the preview
    if (change.lastReal === undefined || change.target === change.lastReal) this.noteHeads([doc])
    return doc
  }

  /**
   * FerretDB v1.24 (SQLite) applies an update as read, modify, write without isolation: two
   * updates of one document at once (two nodes reacting to one message) can lose one of them
   * (measured: 40 concurrent `$max` of different fields kept 3). On FerretDB each applied change is
   * read back VERIFY_AFTER_MS later (after the updates running at the same time have ended) and
   * applied again if it was lost, up to VERIFY_ATTEMPTS times. MongoDB updates one document
   * atomically and needs none of this.
   */
  private verifyLater (change: StoredMessage, delayMs: number, attempt: number): void {
    if (this.closed || this.verifying.size >= VERIFY_PENDING_MAX) return
    const timer = setTimeout(() => {
      this.verifying.delete(timer)
      if (this.closed) return
      void (async () => {
        const id = idOf(change.conversationId, change.target ?? 0)
        const doc = await this.run(async () => await this.messages.findOne({ _id: id }))
        if (doc === null || hasChange(doc, change)) return
        if (attempt >= VERIFY_ATTEMPTS) throw new Error(`change ${change.conversationId}:${change.seq} lost ${attempt} times`)
        await this.applyOnce(change)
        this.onChangeLost?.(change)
        this.verifyLater(change, delayMs * 2, attempt + 1)
      })().catch(err => this.options.onChangeUnverified?.(change, err))
    }, delayMs)
    timer.unref()
    this.verifying.add(timer)
  }

  /** Verifications waiting for their time (FerretDB, see verifyLater). */
  private readonly verifying = new Set<NodeJS.Timeout>()

  /** A change was lost by the store and applied again (FerretDB, see verifyLater): MessageStore.onChangeLost. */
  onChangeLost: ((change: StoredMessage) => void) | null = null

  async getMany (keys: ReadonlyArray<{ conversationId: string, seq: number }>): Promise<StoredMessage[]> {
    if (keys.length === 0) return []
    return (await this.byIds([...new Set(keys.map(k => idOf(k.conversationId, k.seq)))])).map(fromDoc)
  }

  forget (keys: ReadonlyArray<{ conversationId: string, seq: number }>): void {
    this.forgetIds(keys.map(k => idOf(k.conversationId, k.seq)))
  }

  /** Drops cached copies, and keeps reads that started before from caching what they get. */
  private forgetIds (ids: readonly string[]): void {
    for (const id of ids) {
      this.recentDocs.delete(id)
      this.forgotten.set(id, ++this.forgetClock)
    }
  }

  /**
   * Documents another node stored (its commit notice): kept like this process's own, but for
   * REMEMBER_MS only, and not one this process was told changed (a notice of the change can
   * overtake the one of the message) or holds already.
   */
  remember (messages: readonly StoredMessage[]): void {
    for (const message of messages) {
      // as stored, before any change (a document here holds its changes in fields toDoc does not write)
      if (message.changes !== undefined) continue
      let doc: MessageDoc
      try {
        doc = toDoc(message)
      } catch {
        continue
      }
      if (this.forgotten.has(doc._id) || this.recentDocs.has(doc._id)) continue
      this.recentDocs.set(doc._id, doc, { ttl: this.options.rememberMs ?? REMEMBER_MS })
    }
  }

  /** True if `id` was forgotten after `clock` (or may have been: its record was evicted). */
  private forgottenSince (id: string, clock: number): boolean {
    return Math.max(this.forgotten.get(id) ?? 0, this.forgottenUpTo) > clock
  }

  /**
   * On MongoDB one query on conv_seq. On FerretDB the seqs of the window are read by primary key:
   * a conversation's seqs are gapless (the sequencer's invariant), so the window
   * [fromSeq, fromSeq + limit) (forward) or (toSeq - limit, toSeq] (backward) holds the page. A
   * forward window whose first seq is missing may start below what retention kept: it is read
   * again from the first stored seq.
   */
  async range (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    // limit(0) means "no limit" to MongoDB, so an empty request never reaches the server.
    if (query.limit <= 0 || query.fromSeq > query.toSeq) return []
    const forward = query.direction === 'forward'
    if (!this.batched) {
      const page = await this.rangeByKeys(conversationId, query)
      if (!forward || page[0]?.seq === query.fromSeq) return page
      const floor = await this.floorOf(conversationId)
      if (floor === null || floor.s <= query.fromSeq || floor.s > query.toSeq) return page
      return await this.rangeByKeys(conversationId, { ...query, fromSeq: floor.s })
    }
    const docs = await this.run(async () => await this.messages
      .find({ c: conversationId, s: { $gte: query.fromSeq, $lte: query.toSeq } })
      .sort({ s: forward ? 1 : -1 })
      .limit(query.limit)
      .toArray())
    if (!forward) docs.reverse()
    return docs.map(fromDoc)
  }

  async firstSeq (conversationId: string): Promise<number> {
    return (await this.floorOf(conversationId))?.s ?? 0
  }

  /**
   * The conversation's first stored entry (seq and ts), null if none. MongoDB: one query on
   * conv_seq. FerretDB: the remembered floor (or seq 1) by primary key; when that is gone, a binary
   * search by primary key between it and the latest seq (what is stored is one run of seqs, and the
   * latest entry is never removed). Read past the recent-documents cache: a copy there may have been
   * removed by another process.
   */
  private async floorOf (conversationId: string): Promise<{ s: number, t: number } | null> {
    let floor: { s: number, t: number } | null
    if (this.batched) {
      const doc = await this.run(async () => await this.messages.findOne({ c: conversationId }, { sort: { s: 1 }, projection: { s: 1, t: 1 } }))
      floor = doc === null ? null : { s: doc.s, t: doc.t }
    } else {
      const read = async (seq: number): Promise<MessageDoc | null> => await this.run(async () => await this.messages.findOne({ _id: idOf(conversationId, seq) }))
      const hint = this.floors.get(conversationId)?.s ?? 1
      const atHint = await read(hint)
      if (atHint !== null) {
        floor = { s: atHint.s, t: atHint.t }
      } else {
        const latest = await this.latestDoc(conversationId)
        if (latest === null || latest.s <= hint) {
          floor = latest === null ? null : { s: latest.s, t: latest.t }
        } else {
          // stored(hi) holds; nothing below lo is stored
          let lo = hint + 1
          let hi = latest.s
          let found = { s: latest.s, t: latest.t }
          while (lo < hi) {
            const mid = Math.floor((lo + hi) / 2)
            const doc = await read(mid)
            if (doc === null) {
              lo = mid + 1
            } else {
              hi = mid
              found = { s: doc.s, t: doc.t }
            }
          }
          floor = found
        }
      }
    }
    if (floor === null) this.floors.delete(conversationId)
    else this.floors.set(conversationId, floor)
    return floor
  }

  /**
   * One step of the retention sweep (see the header): the next `maxExamined` heads by `_id`; of
   * those whose first stored entry is older than `rule.before` and below what retention keeps, the
   * cutoffs; then each conversation's expired run, oldest first, until `maxRemoved`.
   */
  async removeExpired (rule: ExpiryRule, bounds: ExpiryBounds): Promise<ExpirySweep> {
    const limit = Math.max(1, bounds.maxExamined)
    await this.writePendingHeads()
    const start = this.sweepAfter
    const heads = await this.run(async () => await this.heads
      .find({ _id: { $gt: start } }, { projection: { 'h.s': 1, 'h.k': 1, 'h.lr': 1 } })
      .sort({ _id: 1 })
      .limit(limit)
      .toArray())
    const atEnd = heads.length < limit
    const keep = new Map<string, number>()
    const unknown: string[] = []
    for (const head of heads) {
      if (head._id === LAYOUT_ID || head.h === undefined) continue
      // the head may lag its messages: it then keeps more, never less
      const keepFrom = keptFrom({ seq: head.h.s, kind: head.h.k, lastReal: head.h.lr })
      keep.set(head._id, keepFrom)
      // where it starts, unless nothing can be removed anyway
      const known = this.floors.get(head._id)
      if (keepFrom > 1 && (known?.s ?? 1) < keepFrom && known?.t === undefined) unknown.push(head._id)
    }
    await forEachLimited(unknown, LOOKUP_CONCURRENCY, async (c) => { await this.floorOf(c) })
    const expiring: string[] = []
    for (const [c, keepFrom] of keep) {
      const floor = this.floors.get(c)
      if (floor?.t !== undefined && floor.s < keepFrom && floor.t < rule.before) expiring.push(c)
    }
    const cutoffs = expiring.length === 0 ? new Map<string, number>() : await rule.cutoffs(expiring)
    let removed = 0
    let after = start // the last head passed: every expired entry of it is gone
    for (const head of heads) {
      const c = head._id
      const cutoff = cutoffs.get(c)
      const keepFrom = keep.get(c)
      if (cutoff !== undefined && keepFrom !== undefined) {
        const until = Math.min(cutoff, rule.before)
        removed += await this.removeRun(c, keepFrom, until, bounds.maxRemoved - removed)
        if (removed >= bounds.maxRemoved) {
          const floor = this.floors.get(c)
          const more = floor === undefined || floor.t === undefined || (floor.s < keepFrom && floor.t < until)
          this.sweepAfter = more ? after : c
          return { removed, examined: heads.findIndex(h => h._id === c) + (more ? 0 : 1), done: false }
        }
      }
      after = c
    }
    this.sweepAfter = atEnd ? '' : after
    return { removed, examined: heads.length, done: atEnd }
  }

  /**
   * Removes the conversation's entries from its first stored one up while each is older than
   * `until`, below `keepFrom`, at most `max`, oldest first; the floor is remembered as it moves.
   */
  private async removeRun (conversationId: string, keepFrom: number, until: number, max: number): Promise<number> {
    let removed = 0
    let floor = this.floors.get(conversationId) ?? await this.floorOf(conversationId)
    while (floor !== null && removed < max) {
      const from = floor.s
      const to = Math.min(keepFrom - 1, from + Math.min(REMOVE_CHUNK, max - removed) - 1)
      if (to < from) break
      const docs = this.batched
        ? await this.run(async () => await this.messages.find({ c: conversationId, s: { $gte: from, $lte: to } }, { projection: { s: 1, t: 1 } }).sort({ s: 1 }).toArray())
        : (await this.findByKeys(this.messages, seqsFrom(from, to - from + 1).map(seq => idOf(conversationId, seq)))).sort((a, b) => a.s - b.s)
      let n = 0
      for (const doc of docs) {
        if (doc.s !== from + n || doc.t >= until) break
        n++
      }
      if (n === 0) {
        // the remembered floor is gone (another process removed it): found again next time
        if (docs[0]?.s !== from) this.floors.delete(conversationId)
        break
      }
      const last = from + n - 1
      const ids = seqsFrom(from, n).map(seq => idOf(conversationId, seq))
      if (this.batched) {
        await this.run(async () => await this.messages.deleteMany({ c: conversationId, s: { $gte: from, $lte: last } }))
      } else {
        for (let i = 0; i < ids.length; i += UPDATES_PER_COMMAND) {
          const ops = ids.slice(i, i + UPDATES_PER_COMMAND).map(id => ({ deleteOne: { filter: { _id: id } } }))
          await this.run(async () => await this.messages.bulkWrite(ops, { ordered: true }))
        }
      }
      this.forgetIds(ids)
      removed += n
      const next = docs[n]
      floor = next?.s === last + 1 ? { s: next.s, t: next.t } : { s: last + 1 }
      this.floors.set(conversationId, floor)
      if (last < to) break // an entry that is not expired (or a hole) ends the run
      if (floor.t === undefined) floor = await this.floorOf(conversationId)
    }
    return removed
  }

  /** The seqs of the window by primary key (FerretDB's range). */
  private async rangeByKeys (conversationId: string, query: RangeQuery): Promise<StoredMessage[]> {
    const count = Math.min(query.limit, query.toSeq - query.fromSeq + 1)
    const first = query.direction === 'forward' ? query.fromSeq : query.toSeq - count + 1
    const docs = await this.byIds(seqsFrom(first, count).map(seq => idOf(conversationId, seq)))
    return docs.sort((a, b) => a.s - b.s).map(fromDoc)
  }

  /** Stored documents: kept (recentDocs) and their heads noted. */
  private noteStored (docs: readonly MessageDoc[]): void {
    for (const doc of docs) this.recentDocs.set(doc._id, doc, this.cachedDoc)
    this.noteHeads(docs)
  }

  /** Documents by primary key, in no order; absent ids are left out. */
  private async byIds (ids: readonly string[]): Promise<MessageDoc[]> {
    const started = this.forgetClock
    const found: MessageDoc[] = []
    const missing: string[] = []
    for (const id of ids) {
      const doc = this.recentDocs.get(id)
      if (doc !== undefined) found.push(doc)
      else missing.push(id)
    }
    if (missing.length === 0) return found
    const read = await this.findByKeys(this.messages, missing)
    for (const doc of read) if (!this.forgottenSince(doc._id, started)) this.recentDocs.set(doc._id, doc, this.cachedDoc)
    return found.concat(read)
  }

  /**
   * Documents of `collection` by `_id`, in no order, absent ones left out: one `$in` (MongoDB), or
   * one primary-key read each, LOOKUP_CONCURRENCY at a time (FerretDB pushes nothing else down).
   */
  private async findByKeys<T extends { _id: string }> (collection: Collection<T>, ids: string[]): Promise<T[]> {
    if (this.batched) return await this.run(async () => await collection.find({ _id: { $in: ids } } as Filter<T>).toArray() as T[])
    const found: T[] = []
    await forEachLimited(ids, LOOKUP_CONCURRENCY, async (id) => {
      const doc = await this.run(async () => await collection.findOne({ _id: id } as Filter<T>) as T | null)
      if (doc !== null) found.push(doc)
    })
    return found
  }

  /**
   * The conversation's latest message: its head, and whatever is stored past the head (a head
   * written late, or not at all when the process died between the two writes), which is then
   * written to the head. Seqs are gapless, so looking past the head stops at the first hole.
   */
  private async latestDoc (conversationId: string): Promise<MessageDoc | null> {
    const pending = this.pendingHead(conversationId) // before the read (see latestMany)
    const head = await this.run(async () => await this.heads.findOne({ _id: conversationId }))
    let latest: MessageDoc | null = head?.h === undefined ? null : { ...head.h, _id: idOf(conversationId, head.h.s), c: conversationId }
    if (pending !== undefined && pending.h.s > (latest?.s ?? 0)) latest = pending.h
    return (await this.probePast(conversationId, latest?.s ?? 0)) ?? latest
  }

  /**
   * The latest document past `from` (a stored seq, or 0), null if none: seqs are gapless, so looking
   * past it stops at the first hole. What it finds is written to the head.
   */
  private async probePast (conversationId: string, from: number): Promise<MessageDoc | null> {
    let latest: MessageDoc | null = null
    const past: MessageDoc[] = []
    // FerretDB: one lookup first (almost always a miss), then wider steps; MongoDB: one $in per step
    for (let step = this.batched ? PROBE_MAX : 1; ; step = Math.min(step * 4, PROBE_MAX)) {
      const next: number = (latest?.s ?? from) + 1
      const docs: MessageDoc[] = (await this.byIds(seqsFrom(next, step).map(seq => idOf(conversationId, seq)))).sort((a, b) => a.s - b.s)
      let contiguous = 0
      for (const doc of docs) {
        if (doc.s !== next + contiguous) break
        latest = doc
        past.push(doc)
        contiguous++
      }
      if (contiguous < step) break
    }
    if (past.length > 0) this.noteHeads(past)
    return latest
  }

  async latestPast (conversationId: string, seq: number): Promise<StoredMessage | null> {
    // what this process stored and has not written to the head yet is stored (see noteHeads)
    const pending = this.pendingHead(conversationId)?.h
    const from = Math.max(seq, pending?.s ?? 0)
    const doc = (await this.probePast(conversationId, from)) ?? (pending !== undefined && pending.s > seq ? pending : null)
    return doc === null ? null : fromDoc(doc)
  }

  /**
   * Moves each conversation's head (latest entry and preview) up to what `list` holds (stored).
   * `$max` never moves a head back; two nodes upserting a new head at once may see a duplicate
   * key, after which the other's head exists and the update is tried once more.
   */
  private async writeHeads (list: readonly PendingHead[], heads = this.heads): Promise<void> {
    const merged = new Map<string, PendingHead>()
    for (const head of list) merged.set(head.h.c, mergeHeads(merged.get(head.h.c), head))
    const ops: Array<AnyBulkWriteOperation<HeadDoc>> = [...merged.values()].map(head => ({
      updateOne: {
        filter: { _id: head.h.c },
        update: { $max: head.p === undefined ? { h: headFields(head.h) } : { h: headFields(head.h), p: previewFields(head.p) } },
        upsert: true
      }
    }))
    for (let start = 0; start < ops.length; start += UPDATES_PER_COMMAND) {
      await this.updateHeads(ops.slice(start, start + UPDATES_PER_COMMAND), heads)
    }
  }

  /**
   * One command. After a duplicate key (another node created one of these heads between this
   * upsert's query and its insert) the whole command is run again: FerretDB stops an update command
   * at its first failing update even when unordered, without saying which later ones it skipped,
   * and every update here may run twice ($max). Each round creates at least the head that conflicted.
   */
  private async updateHeads (ops: Array<AnyBulkWriteOperation<HeadDoc>>, heads: Collection<HeadDoc>): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.run(async () => await heads.bulkWrite(ops, { ordered: false, writeConcern: DURABLE }))
        return
      } catch (err) {
        if (attempt >= HEAD_WRITE_ATTEMPTS || !isDuplicateKey(err)) throw err
      }
    }
  }

  /**
   * Which unique key the rejected document hit, and the stored message when it is the same one.
   *
   * MongoDB names the index in the message ("index: _id_ dup key: ..." or "index: conv_key ...");
   * the driver passes only `errmsg` through for bulk writes (no keyPattern/keyValue). FerretDB
   * v1.24 names no index at all ("E11000 duplicate key error collection: db.messages"). So unless
   * the message names conv_key, the answer comes from a primary-key lookup of the seq: a message
   * there with this key is this message, stored before (a retried batch): a clientMsgId conflict,
   * answered with it. Another message there: a seq conflict. Nothing there (retention removes only
   * old entries, never one at a seq being written): the key index conflicted. When both keys collide the answer is 'clientMsgId' on every
   * server, which is what lets a retried batch report it. Undefined for an index this store does
   * not know.
   */
  private async conflictOf (doc: MessageDoc, errmsg: string | undefined): Promise<InsertBatchResult['conflict']> {
    const index = indexNameOf(errmsg)
    if (index === KEY_INDEX) return { kind: 'clientMsgId' }
    if (index !== undefined && index !== '_id_' && index !== SEQ_INDEX) return undefined
    const atSeq = await this.run(async () => await this.messages.findOne({ _id: doc._id }))
    if (atSeq === null) return index === undefined ? { kind: 'clientMsgId' } : undefined
    if (atSeq.u === doc.u && atSeq.m === doc.m) return { kind: 'clientMsgId', existing: fromDoc(atSeq) }
    return { kind: 'seq' }
  }
}
