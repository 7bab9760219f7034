/**
 * `list` costs a constant number of store queries per page, whatever the number of conversations:
 * on FerretDB + MariaDB, one user in 1,000 direct conversations and one in 100 (half of each
 * user's conversations hold 1-3 messages, some of them partly read) list all their pages over
 * MQTT, and every page makes exactly four store calls: memberPageByUser (MySQL),
 * conversationGetMany (MySQL), mentionCountMany (MySQL) and, while the server that stored every
 * message knows every tail, getMany (the previews by key, from the message store's memory: no
 * MongoDB command). After a restart (a new sequencer that knows no lastSeq) latestMany takes its
 * place (list answers from the head records: one query on MongoDB, one primary-key read per
 * conversation of the page on FerretDB); no conversation here had a change, so no unread count
 * needs a read of the message at a cursor. The count per page is the same for both users, and the
 * summaries carry the right lastSeq, last message, readSeq and unread count.
 *
 * How queries are counted, without a hook in src/: the server gets the real stores
 * (MongoMessageStore, MySqlMetadataStore) wrapped in a Proxy that logs every method call made
 * through it (the stores' calls to their own methods go to the target and are not counted: they
 * are part of one store call). MongoDB commands are counted too, with the driver's command
 * monitoring on the store's own MongoClient (a private field, reached through a cast and switched
 * on before init(), so every connection of its pool reports): a separate MongoClient would not see
 * the store's commands. MySQL statements are not counted separately: each MySqlMetadataStore
 * method used here is one query.
 *
 * Needs MQIM_MONGO_URL and MQIM_MYSQL_URL (npm test starts the services).
 */
import { isDeepStrictEqual } from 'node:util'
import { MongoClient, type CommandStartedEvent } from 'mongodb'
import { MongoMessageStore } from '../src/store/messages-mongo.js'
import { MySqlMetadataStore } from '../src/store/metadata-mysql.js'
import type { MessageStore, MetadataStore } from '../src/store/types.js'
import type { ConversationSummary } from '../src/protocol/schemas.js'
import type { MqimServer } from '../src/server.js'
import { createBot } from '../src/admin/accounts.js'
import { sleep } from '../scripts/lib/procs.js'
import { dropMongo, dropMysql, freshMongo, freshMysqlUrl } from './helpers/db.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'

const BIG = 'lqbig'
const SMALL = 'lqsmall'
const BIG_CONVS = 1000
const SMALL_CONVS = 100
/** listPageMax in config/default.json. */
const PAGE_MAX = 200
/** Requests (directs, sends, reads) in flight per user during the setup. */
const WINDOW = 32
const TIMEOUT_MS = 240_000
/** The store calls of one list page, sorted. */
const PER_PAGE = ['messages.latestMany', 'meta.conversationGetMany', 'meta.memberPageByUser', 'meta.mentionCountMany']
/** ...and while the server knows every tail: the previews by key (from the store's memory). */
const PER_PAGE_KNOWN = ['messages.getMany', 'meta.conversationGetMany', 'meta.memberPageByUser', 'meta.mentionCountMany']

const peer = (i: number): string => `lqp${String(i).padStart(4, '0')}`
/** Peer i's conversation holds messages when i is even: 1 + i % 3 of them. */
const messagesOf = (i: number): number => (i % 2 === 0 ? 1 + (i % 3) : 0)
/** ...and the big user has read seq 1 of it when i % 4 === 0. */
const readOf = (user: string, i: number): number => (user === BIG && i % 4 === 0 ? 1 : 0)
const msgId = (i: number, seq: number): string => `m${i}-${seq}`
const bodyOf = (user: string, i: number, seq: number): string => `${user} to ${peer(i)}, #${seq}`

interface Call { store: 'meta' | 'messages', method: string }
interface Command { name: string, collection: string }

/** Logs every method called through the proxy (calls inside the store go to the target, unlogged). */
function counting<T extends object> (target: T, store: Call['store'], log: Call[]): T {
  return new Proxy(target, {
    get (t, prop) {
      const value: unknown = Reflect.get(t, prop, t)
      if (typeof value !== 'function' || typeof prop !== 'string') return value
      return (...args: unknown[]): unknown => {
        log.push({ store, method: prop })
        return (value as (...a: unknown[]) => unknown).apply(t, args)
      }
    }
  })
}

/** Runs `task` over `items` with at most `window` in flight. */
async function pipelined<T> (items: readonly T[], window: number, task: (item: T) => Promise<void>): Promise<void> {
  const queue = items.values() // shared by the workers
  await Promise.all(Array.from({ length: window }, async () => {
    for (const item of queue) await task(item)
  }))
}

function range (n: number): number[] {
  return Array.from({ length: n }, (_, i) => i)
}

function tally (names: string[]): Record<string, number> {
  const out: Record<string, number> = {}
  for (const n of names) out[n] = (out[n] ?? 0) + 1
  return out
}

interface PageCost {
  size: number
  calls: string[]
  commands: Command[]
}

describe('list: store queries per page do not grow with the number of conversations (FerretDB + MariaDB)', () => {
  let mongo: { url: string, dbName: string }
  let mysqlUrl: string
  let server: MqimServer | undefined
  const calls: Call[] = []
  const commands: Command[] = []
  const clients: ImClient[] = []
  /** user -> conversation id of peer i, by i */
  const convOf = new Map<string, string[]>()

  const overrides = {
    limits: { requestsPerSecond: 100_000, requestBurst: 100_000 },
    // no background metadata queries while pages are counted (the revocation poll; offline push,
    // whose flushes read push targets after the setup's messages, later when the machine is busy)
    auth: { revocationPollMs: 3_600_000 },
    push: { enabled: false }
  }

  /** Fresh store instances on the test's databases, wrapped in counting proxies. */
  async function makeStores (lookups: 'batched' | 'single'): Promise<{ meta: MetadataStore, messages: MessageStore }> {
    const meta = new MySqlMetadataStore({ url: mysqlUrl })
    // heads written 100 ms after their last message (default 10 s): the setup's are all written
    // by the time quiet() sees no store traffic for 400 ms, not while pages are counted
    const messages = new MongoMessageStore({ url: mongo.url, database: mongo.dbName, lookups, headMaxWaitMs: 100 })
    const client = (messages as unknown as { client: MongoClient }).client
    client.options.monitorCommands = true // before init(): the pool's connections take it from here
    client.on('commandStarted', (e: CommandStartedEvent) => {
      const collection = e.command[e.commandName]
      commands.push({ name: e.commandName, collection: typeof collection === 'string' ? collection : String(e.command.collection ?? '') })
    })
    await meta.init()
    await messages.init()
    return { meta: counting<MetadataStore>(meta, 'meta', calls), messages: counting<MessageStore>(messages, 'messages', calls) }
  }

  /** Waits until no store call and no MongoDB command has come for `ms` (presence on connect, head flushes). */
  async function quiet (ms = 400): Promise<void> {
    for (;;) {
      const before = calls.length + commands.length
      await sleep(ms)
      if (calls.length + commands.length === before) return
    }
  }

  /** Every page of the user's list, following `next`, with what each page cost. */
  async function listAll (client: ImClient, limit?: number): Promise<{ conversations: ConversationSummary[], pages: PageCost[] }> {
    const conversations: ConversationSummary[] = []
    const pages: PageCost[] = []
    let cursor: string | undefined
    for (;;) {
      const [c0, m0] = [calls.length, commands.length]
      const page = await client.request('list', { ...(cursor === undefined ? {} : { cursor }), ...(limit === undefined ? {} : { limit }) })
      pages.push({
        size: page.conversations.length,
        calls: calls.slice(c0).map(c => `${c.store}.${c.method}`).sort(),
        commands: commands.slice(m0)
      })
      conversations.push(...page.conversations)
      if (page.next === null) return { conversations, pages }
      expect(pages.length).toBeLessThan(100)
      cursor = page.next
    }
  }

  function expectSummaries (user: string, count: number, conversations: ConversationSummary[]): void {
    const ids = convOf.get(user) as string[]
    // every conversation once, in conversation-id (byte) order
    expect(conversations.map(c => c.conv)).toEqual([...ids].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0)))
    const byConv = new Map(conversations.map(c => [c.conv, c]))
    const wrong: string[] = []
    for (let i = 0; i < count; i++) {
      const got = byConv.get(ids[i] as string)
      const k = messagesOf(i)
      const read = readOf(user, i)
      const want = {
        conv: ids[i],
        kind: 'direct',
        name: null,
        peer: peer(i),
        role: 'member',
        lastSeq: k,
        last: k === 0 ? null : { conv: ids[i], seq: k, msgId: msgId(i, k), from: user, kind: 'text', body: bodyOf(user, i, k) },
        readSeq: read,
        unread: k - read,
        mentions: 0,
        muted: false
      }
      const { ts, ...last } = got?.last ?? { ts: 0 }
      const comparable = got === undefined ? undefined : { ...got, last: got.last === null ? null : last }
      if (!isDeepStrictEqual(comparable, want)) wrong.push(`${peer(i)}: got ${JSON.stringify(got)}, want ${JSON.stringify(want)}`)
      if (got?.last != null && (typeof ts !== 'number' || ts <= 0)) wrong.push(`${peer(i)}: last.ts ${String(ts)}`)
    }
    expect(wrong.slice(0, 5)).toEqual([])
  }

  /**
   * Both users list every page (default size, then 100 a page); checks contents and costs. `how`:
   * the way the server reads what a page needs from the messages store: 'known' (this process
   * stored every message and knows every tail: no head record read, the previews by key from the
   * store's memory, no MongoDB command), or the head records read as on MongoDB ('batched': one
   * find, and a getMore when a page holds more than the first batch's 101 heads) or as on FerretDB
   * ('single': one find by primary key per conversation of the page: the page's cost, not the
   * database's, whose `$in` would read every head there is).
   */
  async function checkLists (big: ImClient, small: ImClient, how: 'known' | 'batched' | 'single'): Promise<void> {
    await quiet()
    const bigPages = await listAll(big)
    const smallPages = await listAll(small)
    expectSummaries(BIG, BIG_CONVS, bigPages.conversations)
    expectSummaries(SMALL, SMALL_CONVS, smallPages.conversations)
    expect(bigPages.pages.map(p => p.size)).toEqual([PAGE_MAX, PAGE_MAX, PAGE_MAX, PAGE_MAX, PAGE_MAX])
    expect(smallPages.pages.map(p => p.size)).toEqual([SMALL_CONVS])
    // the same four store calls for every page of either user: 5 pages cost 5 x 4, 1 page 4
    const perPage = how === 'known' ? PER_PAGE_KNOWN : PER_PAGE
    for (const p of [...bigPages.pages, ...smallPages.pages]) expect(p.calls).toEqual(perPage)
    // the heads only, never the messages collection
    for (const p of [...bigPages.pages, ...smallPages.pages]) {
      expect(p.commands.every(c => (c.name === 'find' || c.name === 'getMore') && c.collection === 'messages_heads')).toBe(true)
      if (how === 'known') {
        expect(p.commands).toEqual([])
      } else if (how === 'batched') {
        expect(p.commands.filter(c => c.name === 'find')).toHaveLength(1)
        expect(p.commands.length).toBeLessThanOrEqual(2)
      } else {
        expect(p.commands.filter(c => c.name === 'find')).toHaveLength(p.size)
      }
    }

    // 100 a page: 10 pages for the big user, 1 for the small one, at exactly the same cost each
    // (at most 100 conversations, so at most 100 heads: one find, no getMore)
    const big100 = await listAll(big, 100)
    const small100 = await listAll(small, 100)
    expect(big100.conversations).toEqual(bigPages.conversations)
    expect(small100.conversations).toEqual(smallPages.conversations)
    expect(big100.pages.map(p => p.size)).toEqual(range(10).map(() => 100))
    expect(small100.pages.map(p => p.size)).toEqual([100])
    const costs = [...big100.pages, ...small100.pages].map(p => ({ calls: p.calls, commands: tally(p.commands.map(c => `${c.name} ${c.collection}`)) }))
    const finds = (size: number): Record<string, number> => how === 'known' ? {} : { 'find messages_heads': how === 'batched' ? 1 : size }
    for (const [i, cost] of costs.entries()) expect(cost).toEqual({ calls: perPage, commands: finds([...big100.pages, ...small100.pages][i]?.size ?? -1) })
    console.log(`list (${how}): ${bigPages.pages.length} pages of ${PAGE_MAX} (${BIG_CONVS} conversations) and ${smallPages.pages.length} of ${SMALL_CONVS}: ` +
      `${perPage.length} store calls per page; MongoDB commands per page ${JSON.stringify(bigPages.pages.map(p => p.commands.length))} / ${JSON.stringify(smallPages.pages.map(p => p.commands.length))}`)
  }

  beforeAll(async () => {
    mongo = freshMongo()
    mysqlUrl = await freshMysqlUrl()
  })

  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await server?.stop()
    if (mongo !== undefined) await dropMongo(mongo)
    if (mysqlUrl !== undefined) await dropMysql(mysqlUrl)
  }, TIMEOUT_MS)

  test(`${BIG_CONVS} and ${SMALL_CONVS} conversations: ${PER_PAGE.length} store calls per page for both, before and after a restart`, async () => {
    const started = Date.now()
    server = await startServer(overrides, await makeStores('batched'))
    const s = server
    await addUser(s, BIG)
    await addUser(s, SMALL)
    // the peers never log in: bots (an API-key hash, no scrypt) are the quickest accounts to make
    await pipelined(range(BIG_CONVS), 16, async (i) => { await createBot(s.services.meta, { id: peer(i) }) })
    const big = await connect(s, BIG, 'a')
    const small = await connect(s, SMALL, 'a')
    clients.push(big, small)

    // direct conversations with peers 0..count-1, then the messages and the reads
    await Promise.all(([[big, BIG_CONVS], [small, SMALL_CONVS]] as const).map(async ([client, count]) => {
      const ids: string[] = []
      await pipelined(range(count), WINDOW, async (i) => {
        const r = await client.request('direct', { user: peer(i) })
        expect(r.created).toBe(true)
        ids[i] = r.conv
      })
      convOf.set(client.userId, ids)
      await pipelined(range(count).filter(i => messagesOf(i) > 0), WINDOW, async (i) => {
        for (let seq = 1; seq <= messagesOf(i); seq++) {
          const r = await client.request('send', { conv: ids[i], msgId: msgId(i, seq), kind: 'text', body: bodyOf(client.userId, i, seq) })
          expect(r.seq).toBe(seq)
        }
        if (readOf(client.userId, i) > 0) await client.request('read', { conv: ids[i], seq: readOf(client.userId, i) })
      })
    }))
    const setupMs = Date.now() - started

    await checkLists(big, small, 'known')

    // restarts on the same databases, new store instances (reading by primary key as on FerretDB,
    // then with `$in` as on MongoDB) and a new sequencer that knows no tail: list answers from
    // the head records
    for (const [lookups, device] of [['single', 'b'], ['batched', 'c']] as const) {
      await Promise.all(clients.splice(0).map(async c => await c.end()))
      await server.stop()
      server = await startServer(overrides, await makeStores(lookups))
      const big2 = await connect(server, BIG, device)
      const small2 = await connect(server, SMALL, device)
      clients.push(big2, small2)
      await checkLists(big2, small2, lookups)
    }
    console.log(`list-queries: setup (${BIG_CONVS + SMALL_CONVS} conversations, messages, reads) ${setupMs} ms, total ${Date.now() - started} ms`)
  }, TIMEOUT_MS)
})
