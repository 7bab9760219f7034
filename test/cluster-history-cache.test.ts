/**
 * In a cluster, a node keeps copies of the messages another node stored: they come with that
 * node's commit notice, small bodies only. `history` there then reads none of them from the store
 * (on FerretDB each would be one primary-key read). A copy is dropped when the message changes,
 * whether the change was made on the node that stored it (an edit) or on this one (a reaction); a
 * large message is read from the store as before; a copy is kept a minute at most (tested on the
 * store, test/messages-mongo.test.ts).
 *
 * Node 2's message store is made here with the driver's command monitoring on (as in
 * test/list-queries.test.ts), so that every `find` it sends is seen with its filter.
 *
 * The users are this file's own: Redis pub/sub is one namespace for every database number, so a
 * cluster test running beside this one would see these nodes' session take-overs of its clientIds.
 *
 * Needs MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL (npm test starts the services).
 */
import type { CommandStartedEvent, MongoClient } from 'mongodb'
import { MongoMessageStore } from '../src/store/messages-mongo.js'
import { MySqlMetadataStore } from '../src/store/metadata-mysql.js'
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope } from '../src/protocol/schemas.js'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'

/** The `_id`s node 2 asked the messages collection for, in order. */
const asked: string[] = []

let n1: MqimServer
let n2: MqimServer
const clients: ImClient[] = []

beforeAll(async () => {
  const overrides = await clusterOverrides(4)
  const messageStore = overrides.messageStore as { url: string, database: string }
  const metadataStore = overrides.metadataStore as { url: string }
  n1 = await startServer({ ...overrides, nodeId: 'hc1' })
  const meta = new MySqlMetadataStore({ url: metadataStore.url })
  const messages = new MongoMessageStore({ url: messageStore.url, database: messageStore.database })
  const client = (messages as unknown as { client: MongoClient }).client
  client.options.monitorCommands = true // before init(): the pool's connections take it from here
  client.on('commandStarted', (e: CommandStartedEvent) => {
    if (e.commandName !== 'find' || e.command.find !== 'messages') return
    const id = (e.command.filter as { _id?: unknown } | undefined)?._id
    asked.push(typeof id === 'string' ? id : JSON.stringify(e.command.filter))
  })
  await meta.init()
  await messages.init()
  n2 = await startServer({ ...overrides, nodeId: 'hc2' }, { meta, messages })
  for (const u of ['hc.alice', 'hc.bob']) await addUser(n1, u)
}, 60000)

afterAll(async () => {
  await Promise.allSettled(clients.map(async c => { await c.end() }))
  await Promise.allSettled([n1.stop(), n2.stop()])
})

/** Waits until node 2 knows seq `seq` of the conversation is stored (node 1's notice came). */
async function noticed (conv: string, seq: number): Promise<void> {
  for (let i = 0; i < 200 && (n2.services.sequencer.knownLastSeq(conv) ?? 0) < seq; i++) await new Promise(resolve => setTimeout(resolve, 25))
  expect(n2.services.sequencer.knownLastSeq(conv)).toBeGreaterThanOrEqual(seq)
}

test('history on the other node reads none of the messages node 1 stored; an edit made on node 1 is seen there at once; a large message is read from the store', async () => {
  const alice = await connect(n1, 'hc.alice', 'a')
  const bob = await connect(n2, 'hc.bob', 'b')
  clients.push(alice, bob)
  const { conv } = await alice.request('direct', { user: 'hc.bob' })
  // node 2 reads the conversation's tail once; node 1's notices move it on from there
  expect((await bob.request('history', { conv, after: 0 })).messages).toEqual([])
  for (let i = 1; i <= 5; i++) await alice.request('send', { conv, msgId: `s${i}`, kind: 'text', body: `small ${i}` })
  await noticed(conv, 5)

  asked.length = 0
  const page = await bob.request('history', { conv, after: 0 })
  expect(page.messages.map((m: MessageEnvelope) => [m.seq, m.body])).toEqual([1, 2, 3, 4, 5].map(i => [i, `small ${i}`]))
  expect(page.lastSeq).toBe(5)
  // only the look past the tail node 2 knows (is anything stored after 5?): never a message it has
  expect(asked).toEqual([`${conv}:6`])

  // an edit on node 1: node 2 drops its copy when told, and reads the message as it is now
  const edit = await alice.request('edit', { conv, msgId: 'e1', target: 2, body: 'small 2, edited' })
  await noticed(conv, edit.seq)
  const after = await bob.request('history', { conv, after: 0 })
  const second = after.messages.find((m: MessageEnvelope) => m.seq === 2) as MessageEnvelope & { edited?: { seq: number } }
  expect([second.body, second.edited?.seq]).toEqual(['small 2, edited', edit.seq])
  expect(asked).toContain(`${conv}:2`)

  // a reaction on node 2 itself, to a message it holds a copy of
  await bob.request('react', { conv, msgId: 'r3', target: 3, emoji: '👍' })
  const reacted = (await bob.request('history', { conv, after: 2 })).messages.find((m: MessageEnvelope) => m.seq === 3) as MessageEnvelope & { reactions?: Record<string, string[]> }
  expect(reacted.reactions).toEqual({ '👍': ['hc.bob'] })
  // node 2 reads message 3 back once, VERIFY_AFTER_MS (100 ms) after applying the reaction (FerretDB
  // can lose a concurrent update, see the message store): let that read pass before counting reads
  await new Promise(resolve => setTimeout(resolve, 500))

  // a body over the notice's bound (2,048 characters) is not carried: node 2 reads that one
  const big = 'x'.repeat(3000)
  const sent = await alice.request('send', { conv, msgId: 'big', kind: 'text', body: big })
  await noticed(conv, sent.seq)
  asked.length = 0
  const last = await bob.request('history', { conv, after: sent.seq - 1 })
  expect(last.messages.map((m: MessageEnvelope) => [m.seq, (m.body as string).length])).toEqual([[sent.seq, 3000]])
  expect([...asked].sort()).toEqual([`${conv}:${sent.seq + 1}`, `${conv}:${sent.seq}`].sort())
})
