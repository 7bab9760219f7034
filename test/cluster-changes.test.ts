/**
 * Edit, delete and react across two nodes (Redis + MongoDB + MySQL): members on both nodes change
 * one group's messages at once; every change reaches every device once in seq order, each node's
 * history and list show the messages as they are now (a node drops what it cached of a message
 * another node changed), and unread counts real messages only on both nodes.
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { ConversationSummary, MessageEnvelope } from '../src/protocol/schemas.js'

interface Page { messages: MessageEnvelope[], lastSeq: number }

describe('message changes on two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    const overrides = await clusterOverrides(10)
    n1 = await startServer({ ...overrides, nodeId: 'c1' })
    n2 = await startServer({ ...overrides, nodeId: 'c2' })
    for (const u of ['cc.alice', 'cc.bob', 'cc.carol']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  test('reactions and edits from both nodes at once: one state, every device gets every change once in order, both nodes page the same', async () => {
    const alice = await connect(n1, 'cc.alice', 'a')
    const bob = await connect(n2, 'cc.bob', 'b', { transport: 'ws' })
    const carol1 = await connect(n1, 'cc.carol', 'c1')
    const carol2 = await connect(n2, 'cc.carol', 'c2')
    clients.push(alice, bob, carol1, carol2)
    const { conv } = await alice.request('create-group', { name: 'two nodes', members: ['cc.bob', 'cc.carol'] })
    const targets: number[] = []
    for (let i = 0; i < 5; i++) targets.push((await alice.request('send', { conv, msgId: `m${i}`, kind: 'text', body: `message ${i}` })).seq)
    // both nodes read the messages now, so both have them cached before they change
    const before = await bob.request('history', { conv, after: 0 }) as unknown as Page
    expect(before.messages.map(m => m.seq)).toEqual(targets)
    expect((await alice.request('history', { conv, after: 0 }) as unknown as Page).messages.map(m => m.seq)).toEqual(targets)

    // at once: alice (n1) edits every message, bob (n2) and carol (n1, n2) react to each
    const emojis = ['👍', '🎉', '❤️']
    await Promise.all([
      ...targets.map(async (t, i) => await alice.request('edit', { conv, msgId: `e${i}`, target: t, body: `message ${i}, edited` })),
      ...targets.map(async (t, i) => await bob.request('react', { conv, msgId: `rb${i}`, target: t, emoji: emojis[i % 3] })),
      ...targets.map(async (t, i) => await carol1.request('react', { conv, msgId: `rc${i}`, target: t, emoji: '👍' })),
      ...targets.map(async (t, i) => await carol2.request('react', { conv, msgId: `rd${i}`, target: t, emoji: '🚀' }))
    ])
    // bob takes back his reaction to the first message through n1's... no: through his own node
    await bob.request('react', { conv, msgId: 'rb-undo', target: targets[0], emoji: '👍', remove: true })
    const last = 5 + 4 * 5 + 1
    for (const c of [alice, bob, carol1, carol2]) {
      await c.waitFor(() => c.messages.filter(m => m.conv === conv).length >= last, 20000, `${c.userId}:${c.deviceId} gets ${last} entries`)
      expect(c.messages.filter(m => m.conv === conv).map(m => m.seq)).toEqual(Array.from({ length: last }, (_, i) => i + 1))
    }
    // what each message must show: bob's emoji (his 👍 on the first taken back), carol's 👍 and 🚀
    const expected = targets.map((_, i) => {
      const r: Record<string, string[]> = { '👍': ['cc.carol'], '🚀': ['cc.carol'] }
      const bobs = emojis[i % 3] as string
      if (i !== 0) r[bobs] = bobs === '👍' ? ['cc.bob', 'cc.carol'] : ['cc.bob']
      return r
    })
    const sorted = (r: Record<string, string[]> | undefined): Record<string, string[]> =>
      Object.fromEntries(Object.entries(r ?? {}).map(([e, users]) => [e, [...users].sort()]))
    const current = (p: Page): boolean => p.messages.every((m, i) => m.body === `message ${i}, edited` && JSON.stringify(sorted(m.reactions)) === JSON.stringify(sorted(expected[i])))
    // both nodes answer the same current state (each dropped its cached copies). On FerretDB a
    // change lost to a concurrent update of the same message is applied again within ~1.5 s
    const page = async (c: ImClient): Promise<Page> => await c.request('history', { conv, after: 0, limit: 5 })
    let p1 = await page(alice)
    for (const deadline = Date.now() + 5000; Date.now() < deadline && !current(p1);) {
      await new Promise(resolve => setTimeout(resolve, 100))
      p1 = await page(alice)
    }
    const p2 = await page(bob)
    expect(p2).toStrictEqual(p1)
    for (const [i, m] of p1.messages.entries()) {
      expect(m.body).toBe(`message ${i}, edited`)
      expect(sorted(m.reactions)).toStrictEqual(sorted(expected[i]))
    }
    // unread counts real messages only, on both nodes
    const unreadOn = async (c: ImClient): Promise<number> => {
      const page = await c.request('list', {}) as unknown as { conversations: ConversationSummary[] }
      return page.conversations.find(s => s.conv === conv)?.unread ?? -1
    }
    expect(await unreadOn(carol1)).toBe(5)
    expect(await unreadOn(carol2)).toBe(5)
    await carol2.request('read', { conv, seq: 3 })
    expect(await unreadOn(carol1)).toBe(2)
    expect(await unreadOn(carol2)).toBe(2)
  })
})
