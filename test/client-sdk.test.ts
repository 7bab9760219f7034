/**
 * The client SDK against a real server over real sockets (TCP and WebSocket): chat in a direct and a
 * group conversation, typed errors, gap filling after missed messages, batched read acks, and sends
 * retried through rate limiting.
 */
import { startServer, addUser, url, waitUntil, connect as rawConnect } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, ImClientError, MemoryStorage, type ImClientOptions, type MessageEnvelope, type MemberEvent, type ReceiptEvent, type ConnectionState } from '../src/client/index.js'

function seqs (messages: MessageEnvelope[], conv: string): number[] {
  return messages.filter(m => m.conv === conv).map(m => m.seq)
}
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('client SDK', () => {
  let server: MqimServer
  const open: ImClient[] = []

  async function client (userId: string, deviceId: string, transport: 'tcp' | 'ws', extra: Partial<ImClientOptions> = {}): Promise<ImClient> {
    const c = await ImClient.connect({ url: url(server, transport), userId, password: 'password-' + userId, deviceId, reconnectPeriodMs: 100, ...extra })
    open.push(c)
    return c
  }

  /** Collects `message` events from the moment of the call. */
  function collect (c: ImClient): MessageEnvelope[] {
    const got: MessageEnvelope[] = []
    c.on('message', m => { got.push(m) })
    return got
  }

  beforeAll(async () => {
    server = await startServer()
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin']) await addUser(server, u)
  })
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map(async c => { await c.close() }))
  })
  afterAll(async () => {
    await server.stop()
  })

  test('alice over TCP and bob over WebSocket chat in a direct and a group conversation', async () => {
    const alice = await client('alice', 'laptop', 'tcp')
    const bob = await client('bob', 'web', 'ws')
    expect(alice.state).toBe('online')
    const aGot = collect(alice)
    const bGot = collect(bob)
    const bMember: MemberEvent[] = []
    bob.on('member', e => { bMember.push(e) })
    const aReceipts: ReceiptEvent[] = []
    alice.on('receipt', e => { aReceipts.push(e) })

    const direct = await alice.direct('bob')
    expect(direct).toMatchObject({ peer: 'bob', created: true })
    await waitUntil(() => bMember.some(e => e.conv === direct.conv && e.action === 'added'), 5000, 'member event')

    const r1 = await alice.send(direct.conv, 'hello bob')
    expect(r1).toMatchObject({ conv: direct.conv, seq: 1, duplicate: false })
    const r2 = await bob.send(direct.conv, 'hi alice', { replyTo: 1 })
    expect(r2.seq).toBe(2)
    const card = await alice.sendCustom(direct.conv, { card: { title: 'build passed' } })
    expect(card.seq).toBe(3)
    await waitUntil(() => seqs(bGot, direct.conv).length === 3 && seqs(aGot, direct.conv).length === 3, 5000, 'direct messages')
    expect(bGot.map(m => [m.seq, m.from, m.body])).toEqual([[1, 'alice', 'hello bob'], [2, 'bob', 'hi alice'], [3, 'alice', { card: { title: 'build passed' } }]])
    expect(bGot[1]?.replyTo).toBe(1)
    expect(bob.messages(direct.conv).map(m => m.seq)).toEqual([1, 2, 3])

    // bob reads: alice gets the direct receipt
    bob.markRead(direct.conv, 3)
    await bob.flushReads()
    await waitUntil(() => aReceipts.some(e => e.kind === 'direct' && e.readSeq === 3), 5000, 'receipt')
    expect((await alice.receipts(direct.conv, 3))).toEqual({ conv: direct.conv, seq: 3, readBy: 1, members: 2 })

    // a group with carol joining later over WebSocket
    const group = await alice.createGroup('team', ['bob'])
    expect(group.members).toEqual(['alice', 'bob'])
    await alice.send(group.conv, 'welcome')
    const carol = await client('carol', 'phone', 'ws')
    const cGot = collect(carol)
    const cMember: MemberEvent[] = []
    carol.on('member', e => { cMember.push(e) })
    expect(await alice.addMembers(group.conv, ['carol'])).toEqual({ conv: group.conv, added: ['carol'] })
    await waitUntil(() => cMember.some(e => e.conv === group.conv && e.action === 'added'), 5000, 'carol added')
    await bob.send(group.conv, 'hi carol')
    await alice.rename(group.conv, 'team 2')
    await waitUntil(() => seqs(cGot, group.conv).length === 1 && seqs(aGot, group.conv).length === 2, 5000, 'group messages')
    // carol joined after seq 1: her events start at the join, seq 1 is history
    expect(cGot.map(m => [m.seq, m.body])).toEqual([[2, 'hi carol']])
    expect((await carol.history(group.conv, { after: 0 })).messages.map(m => m.body)).toEqual(['welcome', 'hi carol'])
    expect(carol.messages(group.conv).map(m => m.seq)).toEqual([1, 2])
    await waitUntil(() => cMember.some(e => e.action === 'renamed' && e.name === 'team 2'), 5000, 'renamed')

    const members = await carol.members(group.conv)
    expect(members.members).toEqual([{ user: 'alice', role: 'owner' }, { user: 'bob', role: 'member' }, { user: 'carol', role: 'member' }])
    expect(await alice.setRole(group.conv, 'bob', 'admin')).toEqual({ conv: group.conv, user: 'bob', role: 'admin' })
    expect(await alice.mute(group.conv, true)).toEqual({ conv: group.conv, muted: true })
    const list = await alice.list()
    expect(list.map(c => c.conv).sort()).toEqual([direct.conv, group.conv].sort())
    expect(list.find(c => c.conv === group.conv)).toMatchObject({ name: 'team 2', lastSeq: 2, muted: true, role: 'owner' })

    // carol leaves: no more messages for her, NOT_MEMBER from now on
    await carol.leave(group.conv)
    await expect(carol.send(group.conv, 'still here?')).rejects.toMatchObject({ code: 'NOT_MEMBER' })
    expect(bGot.filter(m => m.conv === group.conv).map(m => m.seq)).toEqual([1, 2])
  })

  test('edit, delete and react: the local copy changes at once and follows the server; a refusal rolls it back; typing events', async () => {
    const alice = await client('alice', 'changes', 'tcp')
    const bob = await client('bob', 'changes', 'ws')
    const { conv } = await alice.createGroup('changes', ['bob'])
    await waitUntil(() => bob.messages(conv).length === 0 && bob.state === 'online', 5000, 'bob online')
    const m1 = await alice.send(conv, 'first')
    const m2 = await bob.send(conv, 'second')
    await waitUntil(() => bob.messages(conv).length === 2 && alice.messages(conv).length === 2, 5000, 'both copies hold 2')
    const aliceUpdates: MessageEnvelope[] = []
    alice.on('updated', m => { aliceUpdates.push(m) })

    // optimistic: the copy shows the edit before the reply
    const editing = alice.edit(conv, m1.seq, 'first, edited')
    expect(alice.messages(conv)[0]).toMatchObject({ seq: 1, body: 'first, edited' })
    const edited = await editing
    expect(edited).toMatchObject({ conv, seq: 3, duplicate: false })
    await bob.react(conv, m1.seq, '🎉')
    await waitUntil(() => bob.messages(conv)[0]?.reactions?.['🎉']?.[0] === 'bob' && alice.messages(conv)[0]?.reactions?.['🎉']?.[0] === 'bob', 5000, 'the reaction on both copies')
    expect(bob.messages(conv)[0]).toMatchObject({ body: 'first, edited', edited: { seq: 3 } })

    // refused (not her message): the copy goes back, and the promise rejects with the code
    const before = alice.messages(conv)[1]
    const refused = alice.edit(conv, m2.seq, 'not mine')
    expect(alice.messages(conv)[1]?.body).toBe('not mine')
    await expect(refused).rejects.toMatchObject({ code: 'FORBIDDEN' })
    expect(alice.messages(conv)[1]).toStrictEqual(before)
    expect(aliceUpdates.map(m => m.body)).toEqual(expect.arrayContaining(['not mine', 'second']))

    // delete: both copies show it deleted; a later reaction is refused and rolled back
    await bob.deleteMessage(conv, m2.seq)
    await waitUntil(() => alice.messages(conv)[1]?.deleted?.by === 'bob', 5000, 'alice sees the deletion')
    await expect(alice.react(conv, m2.seq, '👍')).rejects.toMatchObject({ code: 'NOT_EDITABLE' })
    expect(alice.messages(conv)[1]).toMatchObject({ body: null, deleted: { by: 'bob' } })
    expect(alice.messages(conv)[1]).not.toHaveProperty('reactions')
    await expect(alice.react(conv, m1.seq, 'not an emoji')).rejects.toMatchObject({ code: 'BAD_REQUEST' })
    await expect(alice.edit(conv, m1.seq, 'x', { msgId: 'bad id' })).rejects.toMatchObject({ code: 'BAD_REQUEST' })

    // the server's history equals the copies
    const page = await alice.history(conv, { after: 0 })
    expect(alice.messages(conv)).toStrictEqual(page.messages)
    expect(bob.messages(conv)).toStrictEqual(page.messages)

    // typing
    const typing: unknown[] = []
    bob.on('typing', e => { typing.push(e) })
    expect(await alice.typing(conv)).toStrictEqual({ conv, sent: true })
    await waitUntil(() => typing.length === 1, 5000, 'bob sees alice typing')
    expect(typing[0]).toStrictEqual({ type: 'typing', conv, user: 'alice', typing: true, ttlMs: 5000 })
  })

  test('errors reject with ImClientError and a code', async () => {
    const alice = await client('alice', 'laptop', 'tcp')
    const dave = await client('dave', 'phone', 'ws')
    const { conv } = await alice.direct('bob')
    const errs = await Promise.all([
      dave.send(conv, 'let me in').catch(e => e),
      dave.history(conv).catch(e => e),
      alice.direct('nobody').catch(e => e),
      alice.direct('alice').catch(e => e),
      alice.addMembers(conv, ['dave']).catch(e => e),
      alice.send(conv, '').catch(e => e),
      alice.send(conv, 'x', { msgId: 'not valid!' }).catch(e => e),
      alice.createGroup('', []).catch(e => e)
    ])
    for (const e of errs) expect(e).toBeInstanceOf(ImClientError)
    expect(errs.map(e => (e as ImClientError).code)).toEqual(['NOT_MEMBER', 'NOT_MEMBER', 'NOT_FOUND', 'BAD_REQUEST', 'FORBIDDEN', 'BAD_REQUEST', 'BAD_REQUEST', 'BAD_REQUEST'])
    // the NOT_MEMBER send is not left in the outbox
    expect(dave.unacked).toBe(0)

    await expect(ImClient.connect({ url: url(server, 'tcp'), userId: 'alice', password: 'wrong-password', deviceId: 'x', reconnectPeriodMs: 100 }))
      .rejects.toMatchObject({ code: 'AUTH' })
    await expect(ImClient.connect({ url: url(server, 'tcp'), userId: 'alice', password: 'p', deviceId: 'bad device' }))
      .rejects.toMatchObject({ code: 'BAD_REQUEST' })

    await alice.close()
    expect(alice.state).toBe('closed')
    await expect(alice.list()).rejects.toMatchObject({ code: 'CLOSED' })
  })

  test('a device that missed 50 messages emits exactly those, in order, once (queued session and wiped session)', async () => {
    const storage = new MemoryStorage()
    const alice = await client('alice', 'laptop', 'tcp')
    const { conv } = await alice.direct('erin')
    for (let i = 0; i < 5; i++) await alice.send(conv, `before ${i}`)

    let erin = await client('erin', 'phone', 'ws', { storage })
    // a fresh storage starts at the conversation's lastSeq: old messages are history, not events
    let got = collect(erin)
    await alice.send(conv, 'live 6')
    await waitUntil(() => got.length === 1, 5000, 'live message')
    expect(seqs(got, conv)).toEqual([6])
    await erin.close()

    // 1) offline with a persistent session: the broker queues, the SDK also syncs by history; no duplicates
    for (let i = 0; i < 50; i++) await alice.send(conv, `offline ${i}`)
    got = []
    const synced: number[] = []
    erin = await client('erin', 'phone', 'ws', {
      storage,
      on: { message: m => { got.push(m) }, synced: (c, seq) => { if (c === conv) synced.push(seq) } }
    })
    // the initial sync is done when connect() resolves
    expect(seqs(got, conv)).toEqual(range(7, 56))
    expect(synced).toEqual([56])
    // a queued copy arriving late would come before a marker sent now
    await alice.send(conv, 'marker')
    await waitUntil(() => got.length >= 51, 5000, 'marker')
    expect(seqs(got, conv)).toEqual(range(7, 57))
    await erin.close()

    // 2) offline and the session is gone (a clean connect with the same clientId wipes it): only history can fill the gap
    for (let i = 0; i < 50; i++) await alice.send(conv, `gone ${i}`)
    const wipe = await rawConnect(server, 'erin', 'phone', { clean: true, subscribe: false })
    await wipe.end()
    got = []
    erin = await client('erin', 'phone', 'tcp', { storage, on: { message: m => { got.push(m) } } })
    expect(seqs(got, conv)).toEqual(range(58, 107))
    expect(got.map(m => m.body)).toEqual(range(0, 49).map(i => `gone ${i}`))
    await alice.send(conv, 'after')
    await waitUntil(() => got.length === 51, 5000, 'after')
    expect(seqs(got, conv)).toEqual(range(58, 108))
    expect(erin.messages(conv).map(m => m.seq)).toEqual(range(58, 108))
  })

  test('a device kicked off reconnects by itself and fills what it missed before emitting newer messages', async () => {
    const storage = new MemoryStorage()
    const alice = await client('alice', 'laptop', 'tcp')
    const { conv } = await alice.direct('carol')
    const carol = await client('carol', 'tablet', 'tcp', { storage })
    const got: MessageEnvelope[] = []
    carol.on('message', m => { if (m.conv === conv) got.push(m) })
    const start = (await carol.list()).find(c => c.conv === conv)?.lastSeq ?? 0

    // Carol's session is taken over by a raw connection (same clientId, clean) while 20 messages go
    // out, then her SDK reconnects by itself (reconnectPeriodMs) to an empty session: only the
    // reconnect sync (list + history) can bring the 20 back.
    const states: ConnectionState[] = []
    carol.on('state', s => { states.push(s) })
    const thief = await rawConnect(server, 'carol', 'tablet', { clean: true, subscribe: false })
    await waitUntil(() => carol.state !== 'online', 5000, 'carol kicked off')
    for (let i = 0; i < 20; i++) await alice.send(conv, `missed ${i}`)
    await thief.end()
    await waitUntil(() => carol.state === 'online', 10000, 'carol back')
    for (let i = 0; i < 10; i++) await alice.send(conv, `later ${i}`)
    await waitUntil(() => got.length >= 30, 10000, '30 messages')
    expect(got.map(m => m.seq)).toEqual(range(start + 1, start + 30))
    expect(states).toContain('offline')
  })

  test('20 markRead calls send one read request', async () => {
    const alice = await client('alice', 'laptop', 'tcp')
    const { conv } = await alice.direct('dave')
    for (let i = 0; i < 20; i++) await alice.send(conv, `m ${i}`)
    const dave = await client('dave', 'laptop', 'ws', { readDebounceMs: 200 })
    // a third device of dave's watches his events: one `read` event per request that moved the cursor
    const spy = await rawConnect(server, 'dave', 'spy', { transport: 'tcp' })
    try {
      for (let seq = 1; seq <= 20; seq++) dave.markRead(conv, seq)
      dave.markRead(conv, 5) // lower: ignored
      await waitUntil(() => spy.events.some(e => e.type === 'read'), 5000, 'read event')
      // marking what the server already has sends nothing
      dave.markRead(conv, 20)
      await dave.flushReads()
      // the marker: one more message read; any read request sent before it (a cursor moved to an
      // intermediate seq) would have produced its event first
      await alice.send(conv, 'm 20')
      dave.markRead(conv, 21)
      await dave.flushReads()
      await waitUntil(() => spy.events.some(e => e.type === 'read' && e.readSeq === 21), 5000, 'marker read event')
      expect(spy.events.filter(e => e.type === 'read')).toEqual([
        { type: 'read', conv, readSeq: 20, unread: 0 },
        { type: 'read', conv, readSeq: 21, unread: 0 }
      ])
    } finally {
      await spy.end()
    }
  })

  test('mqtt.js keepalive runs on the keepaliveTimer given (a page passes a worker of its own origin)', async () => {
    const intervals = new Map<number, number>()
    let next = 1
    const keepaliveTimer = {
      set: (_fn: () => void, ms: number): number => { intervals.set(next, ms); return next++ },
      clear: (id: number): void => { intervals.delete(id) }
    }
    const alice = await client('alice', 'timed', 'tcp', { keepaliveTimer })
    // half the 60 s keepalive: mqtt.js pings on the second tick
    expect([...intervals.values()]).toEqual([30000])
    await alice.close()
    expect(intervals.size).toBe(0)
  })

  test('sends are retried through RATE_LIMITED and each is stored once, in order', async () => {
    const limited = await startServer({ limits: { requestsPerSecond: 20, requestBurst: 5 } })
    try {
      await addUser(limited, 'alice')
      await addUser(limited, 'bob')
      const opts = { password: 'password-alice', reconnectPeriodMs: 100 }
      const alice = await ImClient.connect({ url: url(limited, 'tcp'), userId: 'alice', deviceId: 'bot', ...opts })
      open.push(alice)
      const errors: string[] = []
      alice.on('error', e => { errors.push(e.code) })
      const { conv } = await alice.direct('bob')
      const results = await Promise.all(range(0, 29).map(async i => await alice.send(conv, `n ${i}`)))
      expect(results.map(r => r.seq)).toEqual(range(1, 30))
      expect(results.every(r => !r.duplicate)).toBe(true)
      const h = await alice.history(conv, { after: 0 })
      expect(h.messages.map(m => m.body)).toEqual(range(0, 29).map(i => `n ${i}`))
      expect(errors).toEqual([])
    } finally {
      await Promise.allSettled(open.splice(0).map(async c => { await c.close() }))
      await limited.stop()
    }
  })
})
