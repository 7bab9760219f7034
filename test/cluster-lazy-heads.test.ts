/**
 * Head records are written lazily (MongoMessageStore: a conversation's first at once, then once it
 * lags by 16 entries or for 10 s), so in a cluster a head may lag what another node stored. `list` on another
 * node still shows the right lastSeq, unread count and preview (with the changes made to it): from
 * the tails the cluster's notices bring, the preview read by key. A node that started after the
 * messages were stored has not heard those notices: it reads the tails from the store until its
 * link to the other nodes has been up longer than a head may lag (Sequencer.tailsComplete).
 *
 * Every check first makes sure the head record really lags at that moment (read from the database
 * directly), so that what is tested is the lagging case and not a head written in time.
 *
 * The users are this file's own (Redis pub/sub is one namespace for every database number).
 * Needs MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL (npm test starts the services).
 */
import { MongoClient } from 'mongodb'
import type { MqimServer } from '../src/server.js'
import type { ConversationSummary } from '../src/protocol/schemas.js'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'

let overrides: Record<string, unknown>
let n1: MqimServer
let n2: MqimServer
let n3: MqimServer | undefined
let mongo: MongoClient
const clients: ImClient[] = []

beforeAll(async () => {
  overrides = await clusterOverrides(1)
  n1 = await startServer({ ...overrides, nodeId: 'lh1' })
  n2 = await startServer({ ...overrides, nodeId: 'lh2' })
  for (const u of ['lh.alice', 'lh.bob', 'lh.carol']) await addUser(n1, u)
  const store = overrides.messageStore as { url: string, database: string }
  mongo = new MongoClient(store.url)
  await mongo.connect()
}, 60000)

afterAll(async () => {
  await Promise.allSettled(clients.map(async c => { await c.end() }))
  await Promise.allSettled([n1.stop(), n2.stop(), n3?.stop()])
  await mongo?.close()
})

/** The seq of the conversation's head record as stored (undefined: none written yet). */
async function headSeq (conv: string): Promise<number | undefined> {
  const db = mongo.db((overrides.messageStore as { database: string }).database)
  return (await db.collection<{ _id: string, h?: { s: number } }>('messages_heads').findOne({ _id: conv }))?.h?.s
}

/** Sends a conversation's first message and waits for its head (a first head is written at once). */
async function firstHead (c: ImClient, conv: string, msgId: string, body: string): Promise<void> {
  await c.request('send', { conv, msgId, kind: 'text', body })
  await waitUntil(async () => (await headSeq(conv)) === 1, 5000, 'the first head')
}

async function listed (c: ImClient, conv: string): Promise<ConversationSummary> {
  const page = await c.request('list', {}) as unknown as { conversations: ConversationSummary[] }
  const found = page.conversations.find(s => s.conv === conv)
  if (found === undefined) throw new Error(`${conv} not in ${c.userId}'s list`)
  return found
}

test('list on the other node: lastSeq, unread and the edited preview of messages whose head is not written yet', async () => {
  const alice = await connect(n1, 'lh.alice', 'a')
  const bob = await connect(n2, 'lh.bob', 'b')
  clients.push(alice, bob)
  const { conv } = await alice.request('direct', { user: 'lh.bob' })
  await firstHead(alice, conv, 'm1', 'hello 1')
  for (const i of [2, 3]) await alice.request('send', { conv, msgId: `m${i}`, kind: 'text', body: `hello ${i}` })
  const edit = await alice.request('edit', { conv, msgId: 'e3', target: 3, body: 'hello 3, edited' })
  expect(edit.seq).toBe(4)
  // node 2 has heard of seq 4 (its tail), and the head record is behind it
  await waitUntil(() => (n2.services.sequencer.knownLastSeq(conv) ?? 0) >= 4, 10000, 'node 2 hears of seq 4')
  expect(n2.services.sequencer.tailsComplete()).toBe(false) // started less than headLagMs ago
  expect(await headSeq(conv) ?? 0).toBeLessThan(4)

  const summary = await listed(bob, conv)
  expect(summary).toMatchObject({ conv, lastSeq: 4, readSeq: 0, unread: 3 })
  expect(summary.last).toMatchObject({ seq: 3, body: 'hello 3, edited', edited: { seq: 4 } })
  expect(await headSeq(conv) ?? 0).toBeLessThan(4) // still lagging: list read around it
}, 30000)

test('a node started after the messages were stored reads the tails it has not heard of from the store', async () => {
  const alice = await connect(n1, 'lh.alice', 'a2')
  clients.push(alice)
  const { conv } = await alice.request('direct', { user: 'lh.carol' })
  await firstHead(alice, conv, 'c1', 'hi 1')
  await alice.request('send', { conv, msgId: 'c2', kind: 'text', body: 'hi 2' })
  n3 = await startServer({ ...overrides, nodeId: 'lh3' })
  expect(n3.services.sequencer.knownTail(conv)).toBeUndefined()
  expect(n3.services.sequencer.tailsComplete()).toBe(false)
  expect(await headSeq(conv)).toBe(1)

  const carol = await connect(n3, 'lh.carol', 'c')
  clients.push(carol)
  const summary = await listed(carol, conv)
  expect(summary).toMatchObject({ conv, lastSeq: 2, unread: 2 })
  expect(summary.last).toMatchObject({ seq: 2, body: 'hi 2' })
  // history there agrees (it always asks the store past what it knows)
  const h = await carol.request('history', { conv, after: 0 })
  expect(h.lastSeq).toBe(2)
}, 30000)
