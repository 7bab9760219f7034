/**
 * Blocking over real sockets, on both store pairs and across two nodes: block / unblock / blocks,
 * hostile input, the bound, and what a block refuses (`direct` both ways, adding the blocker to a
 * group, presence) and what it leaves alone (groups and their messages). topics.md, "Blocking".
 */
import { BACKENDS } from './helpers/backends.js'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { Reply } from '../src/protocol/schemas.js'
import type { BlockResult, BlocksResult } from '../src/im/ops/blocks.js'

const BLOCKS_PER_USER = 3

/** The error of a failed reply ({code, message} and nothing else), or 'ok'. */
function failure (reply: Reply): { code: string, message: string } | 'ok' {
  if (reply.ok) return 'ok'
  expect(Object.keys(reply.error).sort()).toEqual(['code', 'message'])
  expect(typeof reply.error.message).toBe('string')
  return reply.error
}

async function code (client: ImClient, op: string, body: Record<string, unknown>): Promise<string> {
  const f = failure(await client.requestRaw(op, body))
  return f === 'ok' ? 'ok' : f.code
}

async function block (client: ImClient, user: string): Promise<BlockResult> {
  return await client.request('block', { user })
}
async function unblock (client: ImClient, user: string): Promise<BlockResult> {
  return await client.request('unblock', { user })
}
async function blocks (client: ImClient): Promise<BlocksResult['blocks']> {
  return (await client.request('blocks', {})).blocks
}

function presenceEvents (client: ImClient, of: string): Array<Record<string, unknown>> {
  return client.events.filter(e => e.type === 'presence' && e.user === of)
}

const settle = async (ms = 150): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

describe.each(BACKENDS)('blocking on $name stores', (backend) => {
  let server: MqimServer
  const c: Record<string, ImClient> = {}
  const extra: ImClient[] = []
  const USERS = ['ann', 'ben', 'cat', 'dan', 'eve', 'fay', 'gus', 'hal', 'ivy', 'jon', 'kim', 'lea', 'max', 'pia', 'quin', 'ray', 'sue']

  beforeAll(async () => {
    server = await startServer({ limits: { blocksPerUser: BLOCKS_PER_USER }, presence: { ttlMs: 90000, notifyIntervalMs: 20, offlineGraceMs: 0, maxAudience: 500 } }, await backend.make())
    for (const u of USERS) {
      await addUser(server, u)
      c[u] = await connect(server, u, 'd1', { transport: u === 'ben' ? 'ws' : 'tcp' })
    }
  })
  afterAll(async () => {
    await Promise.allSettled([...Object.values(c), ...extra].map(async x => await x.end()))
    await server.stop()
  })
  const u = (id: string): ImClient => {
    const client = c[id]
    if (client === undefined) throw new Error(`no client ${id}`)
    return client
  }

  test('block, unblock and blocks: a round trip, idempotent both ways, listed oldest first, one-way', async () => {
    const ann = u('ann')
    const t0 = Date.now()
    expect(await blocks(ann)).toEqual([])
    expect(await block(ann, 'ben')).toEqual({ user: 'ben', blocked: true })
    await settle(5)
    expect(await block(ann, 'cat')).toEqual({ user: 'cat', blocked: true })
    await settle(5)
    // blocking again changes nothing: ben keeps his place (the first time)
    expect(await block(ann, 'ben')).toEqual({ user: 'ben', blocked: true })
    const listed = await blocks(ann)
    expect(listed.map(b => b.user)).toEqual(['ben', 'cat'])
    for (const b of listed) {
      expect(b.at).toBeGreaterThanOrEqual(t0)
      expect(b.at).toBeLessThanOrEqual(Date.now())
    }
    expect(listed[0]?.at).toBeLessThan(listed[1]?.at ?? 0)
    expect(await blocks(u('ben'))).toEqual([])
    expect(await unblock(ann, 'ben')).toEqual({ user: 'ben', blocked: false })
    expect(await unblock(ann, 'ben')).toEqual({ user: 'ben', blocked: false })
    expect((await blocks(ann)).map(b => b.user)).toEqual(['cat'])
    expect(await unblock(ann, 'cat')).toEqual({ user: 'cat', blocked: false })
    expect(await blocks(ann)).toEqual([])
  })

  test('bad and hostile input: BAD_REQUEST or NOT_FOUND as {code, message}, and nothing changes', async () => {
    const ann = u('ann')
    for (const op of ['block', 'unblock']) {
      expect(await code(ann, op, { user: 'nobody' })).toBe('NOT_FOUND')
      expect(await code(ann, op, { user: 'ann' })).toBe('BAD_REQUEST')
      for (const bad of ['Ben', '', 'b'.repeat(33), 'ben ', ' ben', '../ben', 'ben\u0000', '-ben', 'bén', 12, null, true, ['ben'], { user: 'ben' }]) {
        expect([op, bad, await code(ann, op, { user: bad })]).toEqual([op, bad, 'BAD_REQUEST'])
      }
      expect(await code(ann, op, {})).toBe('BAD_REQUEST')
      expect(await code(ann, op, { user: 'ben', until: 5 })).toBe('BAD_REQUEST')
      expect(await code(ann, op, { user: 'ben', users: ['cat'] })).toBe('BAD_REQUEST')
    }
    expect(await code(ann, 'blocks', { user: 'ben' })).toBe('BAD_REQUEST')
    expect(await code(ann, 'blocks', { limit: 10 })).toBe('BAD_REQUEST')
    // payloads without a usable id, and a publish to the nodes' own notice topic
    const before = ann.replies.length
    for (const payload of ['[]', '"ben"', '{"user":"ben"}', '{"id":"","user":"ben"}']) await ann.mqtt.publishAsync('im/req/block', payload, { qos: 1 })
    await ann.mqtt.publishAsync('$mqim/blocks', JSON.stringify({ user: 'ann' }), { qos: 1 })
    await ann.waitFor(() => ann.replies.length >= before + 5, 5000, 'five replies')
    expect(ann.replies.slice(before).map(r => [r.id, r.op, r.ok ? 'ok' : r.error.code])).toEqual([
      [null, 'block', 'BAD_REQUEST'], [null, 'block', 'BAD_REQUEST'], [null, 'block', 'BAD_REQUEST'], [null, 'block', 'BAD_REQUEST'],
      [null, '$mqim/blocks', 'FORBIDDEN']
    ])
    expect(await blocks(ann)).toEqual([])
    expect(await blocks(u('ben'))).toEqual([])
  })

  test(`the bound: LIMIT_REACHED past limits.blocksPerUser (${BLOCKS_PER_USER}); blocking again at it is fine; unblocking frees a place`, async () => {
    const dan = u('dan')
    for (const other of ['ann', 'ben', 'cat']) await block(dan, other)
    const refused = failure(await dan.requestRaw('block', { user: 'eve' }))
    expect(refused).toEqual({ code: 'LIMIT_REACHED', message: expect.stringContaining(String(BLOCKS_PER_USER)) })
    expect(await block(dan, 'ben')).toEqual({ user: 'ben', blocked: true })
    expect((await blocks(dan)).map(b => b.user)).toEqual(['ann', 'ben', 'cat'])
    // one place free, three blocks at once: one gets it
    await unblock(dan, 'cat')
    const burst = await Promise.all(['eve', 'fay', 'gus'].map(async other => await code(dan, 'block', { user: other })))
    expect(burst.filter(x => x === 'ok')).toHaveLength(1)
    expect(burst.filter(x => x === 'LIMIT_REACHED')).toHaveLength(2)
    const after = (await blocks(dan)).map(b => b.user)
    expect(after).toHaveLength(BLOCKS_PER_USER)
    for (const other of after) await unblock(dan, other)
    expect(await blocks(dan)).toEqual([])
  })

  test('direct: refused both ways with BLOCKED, new or existing; the conversation stays listed and readable; unblock restores', async () => {
    const fay = u('fay')
    const gus = u('gus')
    await block(gus, 'fay')
    expect(failure(await fay.requestRaw('direct', { user: 'gus' }))).toEqual({ code: 'BLOCKED', message: 'gus has blocked you' })
    expect(failure(await gus.requestRaw('direct', { user: 'fay' }))).toEqual({ code: 'BLOCKED', message: 'you have blocked fay; unblock them first' })
    // nothing was created
    const listOf = async (client: ImClient, peer: string): Promise<unknown[]> =>
      (await client.request('list', {})).conversations.filter((x: { peer?: string }) => x.peer === peer)
    expect(await listOf(fay, 'gus')).toEqual([])
    // an unknown user is still NOT_FOUND, yourself still BAD_REQUEST
    expect(await code(fay, 'direct', { user: 'nobody' })).toBe('NOT_FOUND')
    expect(await code(fay, 'direct', { user: 'fay' })).toBe('BAD_REQUEST')

    await unblock(gus, 'fay')
    const opened = await fay.request('direct', { user: 'gus' })
    expect(opened).toMatchObject({ peer: 'gus', created: true })
    const sent = await fay.request('send', { conv: opened.conv, msgId: 'before-block', kind: 'text', body: 'hi gus' })

    await block(gus, 'fay')
    expect(await code(fay, 'direct', { user: 'gus' })).toBe('BLOCKED')
    expect(await code(gus, 'direct', { user: 'fay' })).toBe('BLOCKED')
    // both still have it, and read what was written
    expect(await listOf(fay, 'gus')).toHaveLength(1)
    expect(await listOf(gus, 'fay')).toHaveLength(1)
    const history = await gus.request('history', { conv: opened.conv, after: 0 })
    expect(history.messages.map((m: { msgId: string }) => m.msgId)).toEqual(['before-block'])
    expect(await gus.request('read', { conv: opened.conv, seq: sent.seq })).toEqual({ conv: opened.conv, readSeq: sent.seq, unread: 0 })

    await unblock(gus, 'fay')
    expect(await fay.request('direct', { user: 'gus' })).toEqual({ conv: opened.conv, peer: 'gus', created: false })
  })

  test('groups: nobody adds someone who blocks them (BLOCKED naming them, nothing changes); the blocker may; messages flow both ways', async () => {
    const hal = u('hal')
    const ivy = u('ivy')
    const jon = u('jon')
    await block(hal, 'ivy')
    await block(jon, 'ivy')
    const groupsOf = async (client: ImClient): Promise<number> =>
      (await client.request('list', {})).conversations.filter((x: { kind: string }) => x.kind === 'group').length
    const ivyGroups = await groupsOf(ivy)
    expect(failure(await ivy.requestRaw('create-group', { name: 'no', members: ['kim', 'jon', 'hal'] })))
      .toEqual({ code: 'BLOCKED', message: 'they have blocked you: hal, jon' })
    expect(await groupsOf(ivy)).toBe(ivyGroups)
    expect(await groupsOf(u('kim'))).toBe(0)

    const mine = await ivy.request('create-group', { name: 'ivy and kim', members: ['kim'] })
    expect(failure(await ivy.requestRaw('add-members', { conv: mine.conv, members: ['lea', 'hal'] })))
      .toEqual({ code: 'BLOCKED', message: 'they have blocked you: hal' })
    expect((await ivy.request('members', { conv: mine.conv })).members.map((m: { user: string }) => m.user)).toEqual(['ivy', 'kim'])
    // someone else (not blocked) may add the blocker to ivy's group
    await ivy.request('set-role', { conv: mine.conv, user: 'kim', role: 'admin' })
    expect(await u('kim').request('add-members', { conv: mine.conv, members: ['hal'] })).toEqual({ conv: mine.conv, added: ['hal'] })

    // the blocker may add the one they block, and group messages are unaffected either way
    const theirs = await hal.request('create-group', { name: 'hal and ivy', members: ['ivy'] })
    const fromIvy = await ivy.request('send', { conv: theirs.conv, msgId: 'i1', kind: 'text', body: 'from ivy' })
    const fromHal = await hal.request('send', { conv: theirs.conv, msgId: 'h1', kind: 'text', body: 'from hal' })
    await hal.waitFor(() => hal.messages.some(m => m.conv === theirs.conv && m.seq === fromIvy.seq), 5000, 'ivy\'s message at hal')
    await ivy.waitFor(() => ivy.messages.some(m => m.conv === theirs.conv && m.seq === fromHal.seq), 5000, 'hal\'s message at ivy')
    const inMine = await ivy.request('send', { conv: mine.conv, msgId: 'm1', kind: 'text', body: 'hello' })
    await hal.waitFor(() => hal.messages.some(m => m.conv === mine.conv && m.seq === inMine.seq), 5000, 'ivy\'s message in her group at hal')

    await unblock(hal, 'ivy')
    await unblock(jon, 'ivy')
    expect(await ivy.request('add-members', { conv: mine.conv, members: ['jon'] })).toEqual({ conv: mine.conv, added: ['jon'] })
  })

  test('presence: hidden from the blocked user (request and events), told at once; unblocking shows it again', async () => {
    const ben = u('ben')
    const cat = u('cat')
    let pia = u('pia')
    await cat.request('create-group', { name: 'presence', members: ['pia', 'ben'] })
    const status = async (viewer: ImClient): Promise<unknown> => (await viewer.request('presence', { users: ['pia'] })).users[0]
    expect(await status(ben)).toMatchObject({ user: 'pia', online: true })

    const told = presenceEvents(ben, 'pia').length
    await block(pia, 'ben')
    // ben is told at once that pia is offline and never seen; a request says the same
    await ben.waitFor(() => presenceEvents(ben, 'pia').length > told, 5000, 'presence after the block')
    expect(presenceEvents(ben, 'pia').at(-1)).toEqual({ type: 'presence', user: 'pia', online: false, lastSeen: null })
    expect(await status(ben)).toEqual({ user: 'pia', online: false, lastSeen: null })
    expect(await status(cat)).toEqual({ user: 'pia', online: true, lastSeen: null })
    // ben still sees the others (and the others still see ben)
    expect(await ben.request('presence', { users: ['cat'] })).toEqual({ users: [{ user: 'cat', online: true, lastSeen: null }] })
    expect(await pia.request('presence', { users: ['ben'] })).toEqual({ users: [{ user: 'ben', online: true, lastSeen: null }] })

    // pia goes offline and comes back: cat is told both, ben nothing
    const benBefore = presenceEvents(ben, 'pia').length
    const catBefore = presenceEvents(cat, 'pia').length
    await pia.end()
    await cat.waitFor(() => presenceEvents(cat, 'pia').some(e => e.online === false), 5000, 'offline at cat')
    pia = c.pia = await connect(server, 'pia', 'd2')
    await cat.waitFor(() => presenceEvents(cat, 'pia').slice(catBefore).some(e => e.online === true), 5000, 'online at cat')
    await settle()
    expect(presenceEvents(ben, 'pia').length).toBe(benBefore)
    expect(await status(ben)).toEqual({ user: 'pia', online: false, lastSeen: null })
    expect(await status(cat)).toMatchObject({ user: 'pia', online: true, lastSeen: expect.any(Number) })

    // unblocked: ben is told her real state at once, and gets her events again
    await unblock(pia, 'ben')
    await ben.waitFor(() => presenceEvents(ben, 'pia').length > benBefore, 5000, 'presence after the unblock')
    expect(presenceEvents(ben, 'pia').at(-1)).toEqual({ type: 'presence', user: 'pia', online: true, lastSeen: expect.any(Number) })
    expect(await status(ben)).toMatchObject({ user: 'pia', online: true })
    await pia.end()
    await ben.waitFor(() => presenceEvents(ben, 'pia').at(-1)?.online === false, 5000, 'offline at ben')
    c.pia = await connect(server, 'pia', 'd3')
  })

  test('a block of a stranger tells them nothing, and hides nothing from anyone else', async () => {
    const max = u('max')
    const quin = u('quin')
    const before = quin.events.length
    await block(max, 'quin')
    await settle()
    expect(quin.events.slice(before)).toEqual([])
    expect(await quin.request('presence', { users: ['max'] })).toEqual({ users: [{ user: 'max', online: false, lastSeen: null }] })
    await unblock(max, 'quin')
  })

  // Needs the send op to call requireNotBlocked (src/im/blocks.ts).
  test('send: refused both ways with BLOCKED in a direct conversation; groups unaffected; unblock restores', async () => {
    const ray = u('ray')
    const sue = u('sue')
    const { conv } = await ray.request('direct', { user: 'sue' })
    const group = await ray.request('create-group', { name: 'ray and sue', members: ['sue'] })
    await block(sue, 'ray')
    expect(failure(await ray.requestRaw('send', { conv, msgId: 'r1', kind: 'text', body: 'hello?' }))).toEqual({ code: 'BLOCKED', message: 'sue has blocked you' })
    expect(failure(await sue.requestRaw('send', { conv, msgId: 's1', kind: 'text', body: 'hello?' }))).toEqual({ code: 'BLOCKED', message: 'you have blocked ray; unblock them first' })
    const inGroup = await ray.request('send', { conv: group.conv, msgId: 'g1', kind: 'text', body: 'in the group' })
    await sue.waitFor(() => sue.messages.some(m => m.conv === group.conv && m.seq === inGroup.seq), 5000, 'group message at sue')
    expect(sue.messages.filter(m => m.conv === conv)).toEqual([])
    await unblock(sue, 'ray')
    const sent = await ray.request('send', { conv, msgId: 'r2', kind: 'text', body: 'hello again' })
    expect(sent.seq).toBe(1)
    await sue.waitFor(() => sue.messages.some(m => m.conv === conv && m.seq === 1), 5000, 'direct message at sue')
  })
})

describe('blocking across two nodes (Redis + MongoDB + MySQL)', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  // Redis pub/sub is shared by every database number, so clusters of test files running at once
  // hear each other: users (and so clientIds and topics) of their own keep them apart.
  const [A, B, C] = ['blk.ann', 'blk.ben', 'blk.cat'] as const
  beforeAll(async () => {
    const overrides = await clusterOverrides(8)
    n1 = await startServer({ ...overrides, nodeId: 'b1' })
    n2 = await startServer({ ...overrides, nodeId: 'b2' })
    for (const user of [A, B, C]) await addUser(n1, user)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(x => x.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  /** How long until `direct` on ben's node answers `want`, polling every 20 ms (at most 3 s). */
  async function until (ben: ImClient, want: string): Promise<number> {
    const started = Date.now()
    for (;;) {
      const got = await code(ben, 'direct', { user: A })
      if (got === want) return Date.now() - started
      if (Date.now() - started > 3000) throw new Error(`direct still answers ${got}, not ${want}, after 3 s`)
      await new Promise(resolve => setTimeout(resolve, 20))
    }
  }

  test('a block or unblock on one node holds on the other at once (the cached lists are dropped there)', async () => {
    const ann = await connect(n1, A, 'n1')
    const ben = await connect(n2, B, 'n2')
    const cat = await connect(n2, C, 'n2')
    clients.push(ann, ben, cat)
    // node 2 reads and caches both lists
    expect(await code(ben, 'direct', { user: A })).toBe('ok')
    await ann.request('block', { user: B })
    expect(await until(ben, 'BLOCKED')).toBeLessThan(1000)
    // presence on node 2 follows too; cat (not blocked) still sees ann
    await cat.request('create-group', { name: 'three', members: [A, B] })
    expect(await ben.request('presence', { users: [A] })).toEqual({ users: [{ user: A, online: false, lastSeen: null }] })
    expect(await cat.request('presence', { users: [A] })).toEqual({ users: [{ user: A, online: true, lastSeen: null }] })
    // ben cannot add ann to a group on node 2
    expect(await code(ben, 'create-group', { name: 'x', members: [A] })).toBe('BLOCKED')
    await ann.request('unblock', { user: B })
    expect(await until(ben, 'ok')).toBeLessThan(1000)
  })
})
