/** Conversation admin, listing, mute and receipts over real sockets, on both store pairs. */
import { BACKENDS } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

async function code (p: Promise<unknown>): Promise<string> {
  try {
    await p
    return 'ok'
  } catch (err) {
    return (err as { code: string }).code
  }
}

describe.each(BACKENDS)('conversations on $name stores', (backend) => {
  let server: MqimServer
  let c: Record<'ann' | 'ben' | 'cat' | 'dan' | 'eli', ImClient>
  const opened: ImClient[] = []
  beforeAll(async () => {
    server = await startServer({}, await backend.make())
    const open = async (u: string): Promise<ImClient> => {
      await addUser(server, u)
      const client = await connect(server, u, 'd1', { transport: u === 'ben' ? 'ws' : 'tcp' })
      opened.push(client)
      return client
    }
    c = { ann: await open('ann'), ben: await open('ben'), cat: await open('cat'), dan: await open('dan'), eli: await open('eli') }
  })
  afterAll(async () => {
    await Promise.allSettled(opened.map(x => x.end()))
    await server.stop()
  })

  test('direct: one conversation per pair, from either side; errors for self and unknown users', async () => {
    const a = await c.ann.request('direct', { user: 'ben' })
    expect(a).toMatchObject({ peer: 'ben', created: true })
    const b = await c.ben.request('direct', { user: 'ann' })
    expect(b).toEqual({ conv: a.conv, peer: 'ann', created: false })
    await c.ben.waitFor(() => c.ben.events.some(e => e.type === 'member' && e.conv === a.conv && e.action === 'added'))
    expect(await code(c.ann.request('direct', { user: 'ann' }))).toBe('BAD_REQUEST')
    expect(await code(c.ann.request('direct', { user: 'nobody' }))).toBe('NOT_FOUND')
    expect(await code(c.ann.request('add-members', { conv: a.conv, members: ['cat'] }))).toBe('FORBIDDEN')
    const m = await c.ben.request('members', { conv: a.conv })
    expect(m.members.map((x: { user: string }) => x.user).sort()).toEqual(['ann', 'ben'])
    // concurrent opens from both sides end in one conversation
    const [x, y] = await Promise.all([c.cat.request('direct', { user: 'dan' }), c.dan.request('direct', { user: 'cat' })])
    expect(x.conv).toBe(y.conv)
  })

  test('groups: roles decide who manages members; every change is announced', async () => {
    expect(await code(c.ann.request('create-group', { name: 'Team', members: ['ben', 'cat', 'nobody-not-here'] }))).toBe('NOT_FOUND')
    const { conv } = await c.ann.request('create-group', { name: 'Team', members: ['ben', 'cat'] })
    expect((await c.ann.request('members', { conv })).members).toEqual([
      { user: 'ann', role: 'owner' }, { user: 'ben', role: 'member' }, { user: 'cat', role: 'member' }
    ])
    // a plain member cannot manage
    expect(await code(c.ben.request('add-members', { conv, members: ['dan'] }))).toBe('FORBIDDEN')
    expect(await code(c.ben.request('rename', { conv, name: 'mine' }))).toBe('FORBIDDEN')
    expect(await code(c.ben.request('set-role', { conv, user: 'cat', role: 'admin' }))).toBe('FORBIDDEN')
    // owner promotes ben; ben (admin) adds dan and removes cat
    await c.ann.request('set-role', { conv, user: 'ben', role: 'admin' })
    expect(await c.ben.request('add-members', { conv, members: ['dan', 'dan'] })).toEqual({ conv, added: ['dan'] })
    expect(await c.ben.request('add-members', { conv, members: ['dan'] })).toEqual({ conv, added: [] })
    await c.dan.waitFor(() => c.dan.events.some(e => e.conv === conv && e.action === 'added'))
    expect(await c.ben.request('remove-member', { conv, user: 'cat' })).toEqual({ conv, removed: 'cat' })
    await c.cat.waitFor(() => c.cat.events.some(e => e.conv === conv && e.action === 'removed'))
    // an admin cannot remove the owner
    expect(await code(c.ben.request('remove-member', { conv, user: 'ann' }))).toBe('FORBIDDEN')
    // cat is out: cannot send or read, and gets no more messages
    expect(await code(c.cat.request('send', { conv, msgId: 'x', kind: 'text', body: 'hi' }))).toBe('NOT_MEMBER')
    const sent = await c.dan.request('send', { conv, msgId: 'd1', kind: 'text', body: 'hello team' })
    await c.ann.waitFor(() => c.ann.messages.some(m => m.conv === conv && m.seq === sent.seq))
    expect(c.cat.messages.filter(m => m.conv === conv)).toEqual([])
    // rename is announced with the new name
    await c.ben.request('rename', { conv, name: 'Team 2' })
    await c.dan.waitFor(() => c.dan.events.some(e => e.conv === conv && e.action === 'renamed' && e.name === 'Team 2'))
    // the owner leaves: ownership passes to the admin
    expect(await c.ann.request('leave', { conv })).toEqual({ conv, newOwner: 'ben' })
    expect((await c.ben.request('members', { conv })).members).toEqual([{ user: 'ben', role: 'owner' }, { user: 'dan', role: 'member' }])
    // ownership transfer by set-role
    await c.ben.request('set-role', { conv, user: 'dan', role: 'owner' })
    expect((await c.dan.request('members', { conv })).members).toEqual([{ user: 'ben', role: 'admin' }, { user: 'dan', role: 'owner' }])
  })

  test('list: lastSeq, preview, readSeq, unread, muted; mute does not stop delivery', async () => {
    const { conv } = await c.eli.request('create-group', { name: 'news', members: ['ann'] })
    for (let i = 1; i <= 3; i++) await c.eli.request('send', { conv, msgId: `n${i}`, kind: 'text', body: `n${i}` })
    expect(await c.ann.request('mute', { conv, muted: true })).toEqual({ conv, muted: true })
    await c.eli.request('send', { conv, msgId: 'n4', kind: 'text', body: 'still delivered' })
    await c.ann.waitFor(() => c.ann.messages.some(m => m.conv === conv && m.seq === 4))
    await c.ann.request('read', { conv, seq: 2 })
    const { conversations } = await c.ann.request('list', {})
    const mine = conversations.find((x: { conv: string }) => x.conv === conv)
    expect(mine).toMatchObject({ kind: 'group', name: 'news', role: 'member', lastSeq: 4, readSeq: 2, unread: 2, muted: true })
    expect(mine?.last).toMatchObject({ seq: 4, from: 'eli', body: 'still delivered', kind: 'text' })
    // reading past the end is clamped to the last message
    expect(await c.ann.request('read', { conv, seq: 1000 })).toEqual({ conv, readSeq: 4, unread: 0 })
    // a direct conversation lists its peer
    const direct = conversations.find((x: { kind: string, peer?: string }) => x.kind === 'direct' && x.peer === 'ben')
    expect(direct).toMatchObject({ name: null, peer: 'ben' })
  })

  test('receipts: direct gets the reader\'s readSeq; groups get an aggregate', async () => {
    const d = await c.eli.request('direct', { user: 'dan' })
    await c.eli.request('send', { conv: d.conv, msgId: 'r1', kind: 'text', body: 'ping' })
    await c.dan.request('read', { conv: d.conv, seq: 1 })
    await c.eli.waitFor(() => c.eli.events.some(e => e.type === 'receipt' && e.conv === d.conv && e.user === 'dan' && e.readSeq === 1))

    const g = await c.eli.request('create-group', { name: 'rcpt', members: ['ann', 'dan'] })
    await c.eli.request('send', { conv: g.conv, msgId: 'g1', kind: 'text', body: 'one' })
    await c.eli.request('send', { conv: g.conv, msgId: 'g2', kind: 'text', body: 'two' })
    await c.ann.request('read', { conv: g.conv, seq: 2 })
    await c.dan.request('read', { conv: g.conv, seq: 1 })
    await c.eli.waitFor(() => c.eli.events.some(e => e.type === 'receipt' && e.conv === g.conv), 5000, 'group receipt')
    const agg = c.eli.events.filter(e => e.type === 'receipt' && e.conv === g.conv).pop()
    expect(agg).toEqual({ type: 'receipt', conv: g.conv, kind: 'group', lastSeq: 2, members: 3, readAll: 1, minReadSeq: 0 })
    expect(await c.eli.request('receipts', { conv: g.conv, seq: 1 })).toEqual({ conv: g.conv, seq: 1, readBy: 2, members: 3 })
    expect(await c.eli.request('receipts', { conv: g.conv, seq: 2 })).toEqual({ conv: g.conv, seq: 2, readBy: 1, members: 3 })
  })
})
