/**
 * Channels (issue 14) on one node, embedded default: create, join, subscribe rules, posting
 * policy, delivery once per post on the channel topic (never to inboxes), removal that stops
 * delivery at once, history for members only, list unread, paged members, limits, hostile values
 * for every new input, and a member's requests costing the same store calls whatever the size. The two-node test with 2,000 members is cluster-channels.test.ts.
 */
import type { MqimServer } from '../src/server.js'
import type { MessageEnvelope, Reply } from '../src/protocol/schemas.js'
import { startServer, addUser, connect, subackCodes, type ImClient } from './helpers/im.js'
import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import type { MemberRecord } from '../src/store/types.js'

interface Channel { conv: string, name: string, public: boolean, postPolicy: string, topic: string }

/** Channel messages a client received, by topic. */
function collect (client: ImClient): Map<string, MessageEnvelope[]> {
  const got = new Map<string, MessageEnvelope[]>()
  client.mqtt.on('message', (topic, payload) => {
    if (!topic.startsWith('im/c/')) return
    const list = got.get(topic) ?? []
    list.push(JSON.parse(payload.toString('utf8')) as MessageEnvelope)
    got.set(topic, list)
  })
  return got
}

function seqsOf (got: Map<string, MessageEnvelope[]>, topic: string): number[] {
  return (got.get(topic) ?? []).map(m => m.seq)
}

async function errorOf (client: ImClient, op: string, body: Record<string, unknown>): Promise<string> {
  const reply: Reply = await client.requestRaw(op, body)
  if (reply.ok) throw new Error(`${op} succeeded: ${JSON.stringify(reply.result)}`)
  return reply.error.code
}

const USERS = ['chowner', 'chadmin', 'chm1', 'chm2', 'chm3', 'chout', 'chlate']

describe('channels on one node', () => {
  let server: MqimServer
  const clients: ImClient[] = []
  const open = async (user: string, device: string): Promise<ImClient> => {
    const c = await connect(server, user, device)
    clients.push(c)
    return c
  }
  beforeAll(async () => {
    server = await startServer({ channels: { membersMax: 6, membershipCacheMax: 1000, membersPageMax: 3, subscriptionsPerConnection: 4 } })
    for (const u of USERS) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server.stop()
  })

  test('create-channel refuses hostile values and answers the settings and the topic', async () => {
    const owner = await open('chowner', 'hostile')
    const bad: Array<Record<string, unknown>> = [
      {},
      { name: '' },
      { name: '   ' },
      { name: 'x'.repeat(101) },
      { name: 'a\u0000b' },
      { name: 'evil\u202e' },
      { name: 42 },
      { name: 'ok', public: 'yes' },
      { name: 'ok', public: 1 },
      { name: 'ok', postPolicy: 'everyone' },
      { name: 'ok', postPolicy: null },
      { name: 'ok', members: ['chm1'] },
      { name: 'ok', __proto__: { public: true }, extra: 1 }
    ]
    for (const body of bad) expect(await errorOf(owner, 'create-channel', body)).toBe('BAD_REQUEST')
    const c = await owner.request('create-channel', { name: '  News  ' }) as Channel
    expect(c).toEqual({ conv: expect.stringMatching(/^[A-Za-z0-9_-]{16}$/), name: 'News', public: false, postPolicy: 'admins', topic: `im/c/${c.conv}/m` })
    const info = await owner.request('channel-info', { conv: c.conv })
    expect(info).toMatchObject({ conv: c.conv, name: 'News', public: false, postPolicy: 'admins', members: 1, lastSeq: 0, role: 'owner', canPost: true })
  })

  test('join: public by id; private, unknown and group ids are NOT_FOUND; hostile ids BAD_REQUEST', async () => {
    const owner = await open('chowner', 'join')
    const m1 = await open('chm1', 'join')
    const pub = await owner.request('create-channel', { name: 'Public', public: true }) as Channel
    const priv = await owner.request('create-channel', { name: 'Private' }) as Channel
    const group = await owner.request('create-group', { name: 'g', members: [] }) as { conv: string }
    expect(await m1.request('join', { conv: pub.conv })).toMatchObject({ conv: pub.conv, name: 'Public', joined: true, topic: pub.topic, lastSeq: 0 })
    expect(await m1.request('join', { conv: pub.conv })).toMatchObject({ joined: false })
    for (const conv of [priv.conv, group.conv, 'cNoSuchChannel00']) {
      expect(await errorOf(m1, 'join', { conv })).toBe('NOT_FOUND')
      expect(await errorOf(m1, 'channel-info', { conv })).toBe('NOT_FOUND')
    }
    for (const conv of ['', '+', '#', 'a/b', 'x'.repeat(41), 7, null, ['c']]) {
      expect(await errorOf(m1, 'join', { conv })).toBe('BAD_REQUEST')
      expect(await errorOf(m1, 'channel-info', { conv })).toBe('BAD_REQUEST')
    }
    expect(await errorOf(m1, 'channel-info', { conv: pub.conv, members: 1 })).toBe('BAD_REQUEST')
    expect(await errorOf(m1, 'join', { conv: pub.conv, extra: true })).toBe('BAD_REQUEST')
    // a non-member sees a public channel's info, not its role
    const out = await open('chout', 'join')
    expect(await out.request('channel-info', { conv: pub.conv })).toMatchObject({ members: 2, role: null, canPost: false })
    // the member sees it in list, as a channel
    const page = await m1.request('list', {}) as { conversations: Array<{ conv: string, kind: string }> }
    expect(page.conversations.find(s => s.conv === pub.conv)).toMatchObject({ kind: 'channel', role: 'member', unread: 0 })
  })

  test('subscribe: members only, exact topic only, bounded per connection; the connection stays', async () => {
    const owner = await open('chowner', 'sub')
    const c = await owner.request('create-channel', { name: 'Sub', public: true }) as Channel
    const out = await open('chout', 'sub')
    expect(await subackCodes(out, [c.topic])).toEqual([128])
    for (const f of ['im/c/+/m', 'im/c/#', `im/c/${c.conv}/#`, `im/c/${c.conv}/+`, `im/c/${c.conv}`, `im/c/${c.conv}/m/x`, 'im/c/cNoSuchChannel00/m', `im/c/${c.conv}\u0000/m`]) {
      expect(await subackCodes(out, [f])).toEqual([128])
    }
    // still connected: a request works
    expect(await out.request('channel-info', { conv: c.conv })).toMatchObject({ role: null })
    await out.request('join', { conv: c.conv })
    expect(await subackCodes(out, [c.topic])).toEqual([1])
    // at most channels.subscriptionsPerConnection (4 here) channel topics per connection
    const more: string[] = []
    for (let i = 0; i < 4; i++) {
      const x = await owner.request('create-channel', { name: `Sub${i}`, public: true }) as Channel
      await out.request('join', { conv: x.conv })
      more.push(x.topic)
    }
    // joining subscribed the connection already (server-side), up to the bound: the fifth is refused
    expect(await subackCodes(out, more)).toEqual([1, 1, 1, 128])
  })

  test('posting: admins and the owner by default, every member when postPolicy is members; no mentions, typing or receipts', async () => {
    const owner = await open('chowner', 'post')
    const admin = await open('chadmin', 'post')
    const m2 = await open('chm2', 'post')
    const c = await owner.request('create-channel', { name: 'Announcements' }) as Channel
    await owner.request('add-members', { conv: c.conv, members: ['chadmin', 'chm2'] })
    await owner.request('set-role', { conv: c.conv, user: 'chadmin', role: 'admin' })
    expect(await errorOf(m2, 'send', { conv: c.conv, msgId: 'm-1', kind: 'text', body: 'hi' })).toBe('FORBIDDEN')
    const posted = await admin.request('send', { conv: c.conv, msgId: 'a-1', kind: 'text', body: 'hello' }) as { seq: number }
    expect(posted.seq).toBe(1)
    expect(await errorOf(m2, 'react', { conv: c.conv, msgId: 'r-1', target: 1, emoji: '👍' })).toBe('FORBIDDEN')
    expect(await errorOf(admin, 'send', { conv: c.conv, msgId: 'a-2', kind: 'text', body: '@chm2', mentions: ['chm2'] })).toBe('BAD_REQUEST')
    expect(await errorOf(admin, 'typing', { conv: c.conv })).toBe('FORBIDDEN')
    expect(await errorOf(admin, 'receipts', { conv: c.conv, seq: 1 })).toBe('FORBIDDEN')
    // a member may neither add nor remove
    expect(await errorOf(m2, 'add-members', { conv: c.conv, members: ['chm3'] })).toBe('FORBIDDEN')
    expect(await errorOf(m2, 'remove-member', { conv: c.conv, user: 'chadmin' })).toBe('FORBIDDEN')
    const open2 = await owner.request('create-channel', { name: 'Talk', postPolicy: 'members' }) as Channel
    await owner.request('add-members', { conv: open2.conv, members: ['chm2'] })
    expect(await m2.request('send', { conv: open2.conv, msgId: 'm-1', kind: 'text', body: 'hi' })).toMatchObject({ seq: 1, duplicate: false })
    // the owner deletes a member's post (moderation)
    expect(await owner.request('delete', { conv: open2.conv, msgId: 'd-1', target: 1 })).toMatchObject({ seq: 2 })
  })

  test('delivery: each post once, in order, on the channel topic only; joining subscribes connected devices', async () => {
    const owner = await open('chowner', 'deliv')
    const m1 = await open('chm1', 'deliv')
    const m3 = await open('chm3', 'deliv')
    const got1 = collect(m1)
    const got3 = collect(m3)
    const c = await owner.request('create-channel', { name: 'Feed', public: true }) as Channel
    await owner.request('add-members', { conv: c.conv, members: ['chm1'] })
    // m1 was subscribed by the server when added; m3 joins by id and is subscribed too
    await m3.request('join', { conv: c.conv })
    const N = 50
    for (let i = 0; i < N; i++) await owner.request('send', { conv: c.conv, msgId: `f${i}`, kind: 'text', body: `post ${i}` })
    const all = Array.from({ length: N }, (_, i) => i + 1)
    await m1.waitFor(() => seqsOf(got1, c.topic).length >= N, 10000, 'm1 posts')
    await m3.waitFor(() => seqsOf(got3, c.topic).length >= N, 10000, 'm3 posts')
    expect(seqsOf(got1, c.topic)).toEqual(all)
    expect(seqsOf(got3, c.topic)).toEqual(all)
    expect(got1.get(c.topic)?.[0]).toMatchObject({ conv: c.conv, seq: 1, msgId: 'f0', from: 'chowner', kind: 'text', body: 'post 0' })
    // nothing in the members' inboxes
    expect(m1.messages.filter(m => m.conv === c.conv)).toEqual([])
    expect(m3.messages.filter(m => m.conv === c.conv)).toEqual([])
    // list: unread is lastSeq - readSeq; read moves the cursor without receipts to others
    const page = await m1.request('list', {}) as { conversations: Array<{ conv: string, unread: number, lastSeq: number }> }
    expect(page.conversations.find(s => s.conv === c.conv)).toMatchObject({ lastSeq: N, unread: N })
    expect(await m1.request('read', { conv: c.conv, seq: 20 })).toEqual({ conv: c.conv, readSeq: 20, unread: N - 20 })
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(owner.events.filter(e => e.type === 'receipt')).toEqual([])
  })

  test('removal and leaving stop delivery at once; history is for members only', async () => {
    const owner = await open('chowner', 'rm')
    const m1 = await open('chm1', 'rm')
    const m2 = await open('chm2', 'rm')
    const got1 = collect(m1)
    const got2 = collect(m2)
    const c = await owner.request('create-channel', { name: 'Removal' }) as Channel
    await owner.request('add-members', { conv: c.conv, members: ['chm1', 'chm2'] })
    await owner.request('send', { conv: c.conv, msgId: 'r1', kind: 'text', body: 'one' })
    await m1.waitFor(() => seqsOf(got1, c.topic).length === 1, 5000, 'm1 first')
    await m2.waitFor(() => seqsOf(got2, c.topic).length === 1, 5000, 'm2 first')
    await owner.request('remove-member', { conv: c.conv, user: 'chm1' })
    // the post right after the removal reaches m2, never m1
    await owner.request('send', { conv: c.conv, msgId: 'r2', kind: 'text', body: 'two' })
    await m2.waitFor(() => seqsOf(got2, c.topic).length === 2, 5000, 'm2 second')
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(seqsOf(got1, c.topic)).toEqual([1])
    expect(await errorOf(m1, 'history', { conv: c.conv, after: 0 })).toBe('NOT_MEMBER')
    expect(await subackCodes(m1, [c.topic])).toEqual([128])
    expect(m1.events).toContainEqual(expect.objectContaining({ type: 'member', conv: c.conv, kind: 'channel', action: 'removed', users: ['chm1'] }))
    // leaving: the same
    await m2.request('leave', { conv: c.conv })
    await owner.request('send', { conv: c.conv, msgId: 'r3', kind: 'text', body: 'three' })
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(seqsOf(got2, c.topic)).toEqual([1, 2])
    expect(await errorOf(m2, 'history', { conv: c.conv })).toBe('NOT_MEMBER')
    // the owner cannot leave a channel with other members before handing over ownership
    await owner.request('add-members', { conv: c.conv, members: ['chm2'] })
    expect(await errorOf(owner, 'leave', { conv: c.conv })).toBe('FORBIDDEN')
    await owner.request('set-role', { conv: c.conv, user: 'chm2', role: 'owner' })
    expect(await owner.request('leave', { conv: c.conv })).toEqual({ conv: c.conv })
  })

  test('offline members pull exactly the missing seqs; subscribe then history {after} sees every seq once', async () => {
    const owner = await open('chowner', 'off')
    const c = await owner.request('create-channel', { name: 'Offline', public: true }) as Channel
    const late = await open('chlate', 'off1')
    await late.request('join', { conv: c.conv })
    for (let i = 0; i < 5; i++) await owner.request('send', { conv: c.conv, msgId: `o${i}`, kind: 'text', body: `o${i}` })
    await late.end()
    for (let i = 5; i < 12; i++) await owner.request('send', { conv: c.conv, msgId: `o${i}`, kind: 'text', body: `o${i}` })
    // back: subscribe first, then pull from the last seq it had (5), while posts keep coming
    const back = await open('chlate', 'off2')
    const got = collect(back)
    const sending = (async () => {
      for (let i = 12; i < 40; i++) await owner.request('send', { conv: c.conv, msgId: `o${i}`, kind: 'text', body: `o${i}` })
    })()
    expect(await subackCodes(back, [c.topic])).toEqual([1])
    const pulled: number[] = []
    let after = 5
    for (;;) {
      const h = await back.request('history', { conv: c.conv, after, limit: 4 }) as { messages: MessageEnvelope[], hasMore: boolean }
      pulled.push(...h.messages.map(m => m.seq))
      if (!h.hasMore) break
      after = h.messages[h.messages.length - 1]?.seq ?? after
    }
    await sending
    await back.waitFor(() => seqsOf(got, c.topic).includes(40), 5000, 'the last post live')
    const seen = new Set([...pulled, ...seqsOf(got, c.topic)])
    expect([...seen].sort((a, b) => a - b)).toEqual(Array.from({ length: 35 }, (_, i) => i + 6))
    // pulled: exactly 6..k, no seq twice; live: increasing
    expect(pulled).toEqual(Array.from({ length: pulled.length }, (_, i) => i + 6))
    const live = seqsOf(got, c.topic)
    expect(live).toEqual([...live].sort((a, b) => a - b))
    expect(new Set(live).size).toBe(live.length)
  })

  test('persistent sessions: a restored channel subscription delivers to members and is refused after removal', async () => {
    const owner = await open('chowner', 'persist')
    const c = await owner.request('create-channel', { name: 'Persist', public: true }) as Channel
    const first = await connect(server, 'chm3', 'keep', { clean: false })
    const firstSub = await connect(server, 'chm2', 'keep', { clean: false })
    await first.request('join', { conv: c.conv })
    await firstSub.request('join', { conv: c.conv })
    await first.end()
    await firstSub.end()
    // chm2 is removed while away; chm3 stays
    await owner.request('remove-member', { conv: c.conv, user: 'chm2' })
    // both come back with their sessions and subscribe nothing themselves
    const back3 = await connect(server, 'chm3', 'keep', { clean: false, subscribe: false })
    const back2 = await connect(server, 'chm2', 'keep', { clean: false, subscribe: false })
    clients.push(back3, back2)
    const got3 = collect(back3)
    const got2 = collect(back2)
    await new Promise(resolve => setTimeout(resolve, 100))
    const posted = await owner.request('send', { conv: c.conv, msgId: 'p1', kind: 'text', body: 'restored' }) as { seq: number }
    await back3.waitFor(() => seqsOf(got3, c.topic).includes(posted.seq), 5000, 'the restored subscription delivers')
    await new Promise(resolve => setTimeout(resolve, 100))
    expect(seqsOf(got2, c.topic)).toEqual([])
  })

  test('members: a page at a time with the count; membersMax is enforced on add and join', async () => {
    const owner = await open('chowner', 'pages')
    const c = await owner.request('create-channel', { name: 'Pages', public: true }) as Channel
    await owner.request('add-members', { conv: c.conv, members: ['chm1', 'chm2', 'chm3', 'chadmin'] })
    const p1 = await owner.request('members', { conv: c.conv }) as { members: Array<{ user: string }>, count: number, next: string | null }
    expect(p1.count).toBe(5)
    expect(p1.members.map(m => m.user)).toEqual(['chadmin', 'chm1', 'chm2'])
    const p2 = await owner.request('members', { conv: c.conv, after: p1.next, limit: 100 }) as { members: Array<{ user: string }>, next: string | null }
    expect(p2.members.map(m => m.user)).toEqual(['chm3', 'chowner'])
    expect(p2.next).toBeNull()
    for (const body of [{ after: '' }, { after: 'A' }, { limit: 0 }, { limit: -1 }, { limit: 1.5 }, { limit: '2' }, { after: 'x'.repeat(33) }]) {
      expect(await errorOf(owner, 'members', { conv: c.conv, ...body })).toBe('BAD_REQUEST')
    }
    // groups answer all their members; paging them is refused
    const g = await owner.request('create-group', { name: 'g', members: ['chm1'] }) as { conv: string }
    expect(await errorOf(owner, 'members', { conv: g.conv, limit: 1 })).toBe('BAD_REQUEST')
    // membersMax is 6 here: one more fits, then the channel is full
    const out = await open('chout', 'pages')
    expect(await out.request('join', { conv: c.conv })).toMatchObject({ joined: true })
    const late = await open('chlate', 'pages')
    expect(await errorOf(late, 'join', { conv: c.conv })).toBe('LIMIT_REACHED')
    await owner.request('remove-member', { conv: c.conv, user: 'chout' })
    expect(await errorOf(owner, 'add-members', { conv: c.conv, members: ['chout', 'chlate'] })).toBe('LIMIT_REACHED')
    // add-members with hostile values
    for (const members of [[], ['NOPE'], [''], 'chm1', [1], null, [{ user: 'chm1' }]]) {
      expect(await errorOf(owner, 'add-members', { conv: c.conv, members })).toBe('BAD_REQUEST')
    }
    expect(await errorOf(owner, 'add-members', { conv: c.conv, members: ['nosuchuser'] })).toBe('NOT_FOUND')
  })
})

/** Logs the name of every store method called through the proxy (calls inside the store are not logged). */
function counting<T extends object> (target: T, log: string[]): T {
  return new Proxy(target, {
    get (t, prop) {
      const value: unknown = Reflect.get(t, prop, t)
      if (typeof value !== 'function' || typeof prop !== 'string') return value
      return (...args: unknown[]): unknown => {
        log.push(prop)
        return (value as (...a: unknown[]) => unknown).apply(t, args)
      }
    }
  })
}

describe('channels: what a member\'s requests cost does not depend on the member count', () => {
  let server: MqimServer
  const calls: string[] = []
  const clients: ImClient[] = []
  beforeAll(async () => {
    const meta = new MemoryMetadataStore()
    server = await startServer({}, { meta: counting(meta, calls), messages: counting(new MemoryMessageStore(), calls) })
    for (const u of ['cqowner', 'cqreader']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server.stop()
  })

  test('history, list, read and send in a channel of 3 and of 3,000 members make the same store calls, none over the member list', async () => {
    const owner = await connect(server, 'cqowner', 'o')
    const reader = await connect(server, 'cqreader', 'r')
    clients.push(owner, reader)
    const small = await owner.request('create-channel', { name: 'small', postPolicy: 'members' }) as Channel
    const big = await owner.request('create-channel', { name: 'big', postPolicy: 'members' }) as Channel
    const extra = (conv: string, n: number): MemberRecord[] => Array.from({ length: n }, (_, i) => ({ conversationId: conv, userId: `cq${i}`, role: 'member' as const, readSeq: 0, muted: false, joinedAt: 1 }))
    // members straight into the store: the users need not exist for this
    await server.services.meta.memberAdd([...extra(small.conv, 1), ...extra(big.conv, 2998)])
    await owner.request('add-members', { conv: small.conv, members: ['cqreader'] })
    await owner.request('add-members', { conv: big.conv, members: ['cqreader'] })
    expect(await owner.request('channel-info', { conv: big.conv })).toMatchObject({ members: 3000 })
    for (const c of [small, big]) {
      for (let i = 0; i < 3; i++) await owner.request('send', { conv: c.conv, msgId: `w${i}`, kind: 'text', body: 'warm' })
      // warm: memberships cached, the conversation's tail known
      await reader.request('history', { conv: c.conv, after: 0 })
      await reader.request('read', { conv: c.conv, seq: 1 })
    }
    const cost = async (conv: string): Promise<string[]> => {
      // the conversation is loaded again within what is counted (memberships stay cached)
      server.services.directory.invalidateLocal(conv)
      calls.length = 0
      await reader.request('history', { conv, after: 0 })
      await reader.request('history', { conv })
      await reader.request('read', { conv, seq: 2 })
      await reader.request('send', { conv, msgId: 'r1', kind: 'text', body: 'hi' })
      return [...calls].sort()
    }
    const smallCost = await cost(small.conv)
    const bigCost = await cost(big.conv)
    expect(bigCost).toEqual(smallCost)
    for (const method of ['memberList', 'memberListMany', 'memberCountMany', 'memberPage']) expect(bigCost).not.toContain(method)
    calls.length = 0
    const page = await reader.request('list', {})
    expect(page.conversations.map(s => s.conv).sort()).toEqual([small.conv, big.conv].sort())
    for (const method of ['memberList', 'memberListMany', 'memberCountMany', 'memberPage']) expect(calls).not.toContain(method)
  })
})
