/**
 * Invite codes of channels (issue 14: "private ones by invite or add"), over real sockets, on the
 * embedded stores and on MongoDB + MySQL: an admin makes a code, another user joins a private
 * channel with it (subscribed, member event with lastSeq, posts live); a member already takes no
 * use; two joiners racing for the last use: exactly one gets in; expired, revoked, used-up and
 * guessed codes, and codes whose creator lost the admin role, all answer the same NOT_FOUND; who
 * may create, list and revoke; hostile values; the bound per channel; a full channel and a full
 * user. Then two nodes sharing MySQL: a code made on one works on the other, and a revoke on one
 * counts on the other at once (nothing caches invites). Last, topics.md's mosquitto_pub example of
 * invite codes runs as written.
 */
import { execFile } from 'node:child_process'
import { createHash, randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import type { MqimServer } from '../src/server.js'
import type { Reply } from '../src/protocol/schemas.js'
import type { CreateInviteResult } from '../src/client/types.js'
import { BACKENDS } from './helpers/backends.js'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import { tempDir } from './helpers/tmp.js'

async function failure (client: ImClient, op: string, body: Record<string, unknown>): Promise<{ code: string, message: string }> {
  const reply: Reply = await client.requestRaw(op, body)
  if (reply.ok) throw new Error(`${op} ${JSON.stringify(body).slice(0, 200)} succeeded: ${JSON.stringify(reply.result)}`)
  return reply.error
}

async function errorOf (client: ImClient, op: string, body: Record<string, unknown>): Promise<string> {
  return (await failure(client, op, body)).code
}

/** A code nobody made: well-formed, random. */
function guessedCode (): string {
  return randomBytes(18).toString('base64url')
}

const DAY = 24 * 3600 * 1000
/** The one message of every code that does not admit. */
const NO_INVITE = 'no such invite (or it expired, was revoked or was used up)'

describe.each(BACKENDS)('channel invites on $name stores', (backend) => {
  let server: MqimServer
  const clients: ImClient[] = []
  const open = async (user: string, device = 'd1'): Promise<ImClient> => {
    const c = await connect(server, user, device)
    clients.push(c)
    return c
  }
  let users = 0
  /** A fresh user, connected. */
  const newcomer = async (): Promise<ImClient> => {
    const id = `ivu${++users}`
    await addUser(server, id)
    return await open(id)
  }
  let owner: ImClient
  const channel = async (isPublic = false): Promise<string> =>
    (await owner.request('create-channel', { name: 'Invites', public: isPublic })).conv
  const invite = async (by: ImClient, conv: string, extra: Record<string, unknown> = {}): Promise<CreateInviteResult> =>
    await by.request('create-invite', { conv, ...extra })

  beforeAll(async () => {
    server = await startServer({
      channels: { membersMax: 5, invitesPerChannel: 3 },
      limits: { groupsCreatedPerHour: 1000 }
    }, await backend.make())
    await addUser(server, 'ivowner')
    owner = await open('ivowner')
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server.stop()
  })

  test('an admin makes a code; a user joins the private channel with it, is subscribed and gets posts live', async () => {
    const conv = await channel()
    const admin = await newcomer()
    await owner.request('add-members', { conv, members: [admin.userId] })
    await owner.request('set-role', { conv, user: admin.userId, role: 'admin' })
    await owner.request('send', { conv, msgId: 'before', kind: 'text', body: 'before the join' })

    const before = Date.now()
    const made = await invite(admin, conv)
    expect(made).toStrictEqual({ code: expect.stringMatching(/^[A-Za-z0-9_-]{24}$/), codeId: expect.stringMatching(/^[0-9a-f]{8}$/), conv, createdBy: admin.userId, createdAt: expect.any(Number), expiresAt: expect.any(Number), maxUses: null, uses: 0 })
    // the default lifetime: 7 days
    expect(made.expiresAt - made.createdAt).toBe(7 * DAY)
    expect(made.createdAt).toBeGreaterThanOrEqual(before)
    // the codeId is the start of the code's SHA-256; the store keeps the hash, not the code
    const hash = createHash('sha256').update(made.code).digest('hex')
    expect(hash.slice(0, 8)).toBe(made.codeId)
    expect(await server.services.meta.inviteGet(hash)).toMatchObject({ conversationId: conv, uses: 0 })
    expect(JSON.stringify(await server.services.meta.inviteList(conv, Date.now()))).not.toContain(made.code)

    const joiner = await newcomer()
    const topic = `im/c/${conv}/m`
    const posts: string[] = []
    joiner.mqtt.on('message', (t, payload) => { if (t === topic) posts.push(String(JSON.parse(payload.toString('utf8')).body)) })
    // by id, a private channel stays closed
    expect(await errorOf(joiner, 'join', { conv })).toBe('NOT_FOUND')
    const joined = await joiner.request('join', { invite: made.code })
    expect(joined).toStrictEqual({ conv, name: 'Invites', joined: true, topic, lastSeq: 1 })
    await joiner.waitFor(() => joiner.events.some(e => e.type === 'member' && e.conv === conv && e.action === 'added'), 10000, 'the member event')
    expect(joiner.events.find(e => e.type === 'member' && e.conv === conv)).toMatchObject({ kind: 'channel', users: [joiner.userId], lastSeq: 1 })
    // the server subscribed the connected device: the next post arrives on the channel topic, once
    await owner.request('send', { conv, msgId: 'after', kind: 'text', body: 'after the join' })
    await joiner.waitFor(() => posts.length > 0, 10000, 'the post')
    expect(posts).toStrictEqual(['after the join'])
    expect((await joiner.request('history', { conv, after: 0 })).messages.map(m => m.body)).toStrictEqual(['before the join', 'after the join'])
    expect(await joiner.request('channel-info', { conv })).toMatchObject({ role: 'member', members: 3, canPost: false })

    const listed = await admin.request('invites', { conv })
    expect(listed).toStrictEqual({ conv, invites: [{ codeId: made.codeId, createdBy: admin.userId, createdAt: made.createdAt, expiresAt: made.expiresAt, maxUses: null, uses: 1 }] })
    // the list never shows a code
    expect(JSON.stringify(listed)).not.toContain(made.code)
  })

  test('a member already is answered joined: false and takes no use; the last use then goes to a newcomer, once', async () => {
    const conv = await channel(true)
    const made = await invite(owner, conv, { maxUses: 1 })
    const member = await newcomer()
    await member.request('join', { conv })
    expect(await member.request('join', { invite: made.code })).toMatchObject({ conv, joined: false })
    expect(await owner.request('join', { invite: made.code })).toMatchObject({ conv, joined: false })
    expect((await owner.request('invites', { conv })).invites).toMatchObject([{ codeId: made.codeId, uses: 0, maxUses: 1 }])
    const first = await newcomer()
    expect(await first.request('join', { invite: made.code })).toMatchObject({ conv, joined: true })
    // used up: gone from the list, and the next one is refused
    expect((await owner.request('invites', { conv })).invites).toStrictEqual([])
    expect(await failure(await newcomer(), 'join', { invite: made.code })).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
    // a dead code answers NOT_FOUND to everyone, members too
    expect(await errorOf(first, 'join', { invite: made.code })).toBe('NOT_FOUND')
  })

  test('two joiners racing for the last use: exactly one gets in, the other NOT_FOUND', async () => {
    for (let round = 0; round < 4; round++) {
      const conv = await channel()
      const made = await invite(owner, conv, { maxUses: 2 })
      const early = await newcomer()
      await early.request('join', { invite: made.code })
      const [a, b] = [await newcomer(), await newcomer()]
      const replies = await Promise.all([a.requestRaw('join', { invite: made.code }), b.requestRaw('join', { invite: made.code })])
      expect(replies.filter(r => r.ok)).toHaveLength(1)
      const lost = replies.find(r => !r.ok)
      expect(lost?.ok === false ? lost.error : null).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
      expect(await owner.request('channel-info', { conv })).toMatchObject({ members: 3 })
      expect((await server.services.meta.inviteGet(createHash('sha256').update(made.code).digest('hex')))?.uses).toBe(2)
    }
  })

  test('an expired code admits nobody and is no longer listed', async () => {
    const conv = await channel()
    const made = await invite(owner, conv, { expiresInMs: 150 })
    expect(made.expiresAt - made.createdAt).toBe(150)
    await new Promise(resolve => setTimeout(resolve, 300))
    expect(await failure(await newcomer(), 'join', { invite: made.code })).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
    expect((await owner.request('invites', { conv })).invites).toStrictEqual([])
  })

  test('a revoked code fails at once; revoking it again is NOT_FOUND; other codes keep working', async () => {
    const conv = await channel()
    const [one, two] = [await invite(owner, conv), await invite(owner, conv)]
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId).sort()).toStrictEqual([one.codeId, two.codeId].sort())
    expect(await owner.request('revoke-invite', { conv, codeId: one.codeId })).toStrictEqual({ conv, codeId: one.codeId })
    expect(await failure(await newcomer(), 'join', { invite: one.code })).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
    expect(await errorOf(owner, 'revoke-invite', { conv, codeId: one.codeId })).toBe('NOT_FOUND')
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId)).toStrictEqual([two.codeId])
    expect(await (await newcomer()).request('join', { invite: two.code })).toMatchObject({ joined: true })
    // a codeId of another channel revokes nothing here
    const other = await channel()
    const elsewhere = await invite(owner, other)
    expect(await errorOf(owner, 'revoke-invite', { conv, codeId: elsewhere.codeId })).toBe('NOT_FOUND')
  })

  test('members may not create, list or revoke; outsiders and other kinds of conversation are refused', async () => {
    const conv = await channel(true)
    const made = await invite(owner, conv)
    const member = await newcomer()
    await member.request('join', { conv })
    for (const [op, body] of [['create-invite', { conv }], ['invites', { conv }], ['revoke-invite', { conv, codeId: made.codeId }]] as const) {
      expect(await errorOf(member, op, body)).toBe('FORBIDDEN')
    }
    const outsider = await newcomer()
    for (const [op, body] of [['create-invite', { conv }], ['invites', { conv }], ['revoke-invite', { conv, codeId: made.codeId }], ['create-invite', { conv: 'cNoSuchChannel00' }], ['invites', { conv: 'cNoSuchChannel00' }]] as const) {
      expect(await errorOf(outsider, op, body)).toBe('NOT_MEMBER')
    }
    // the code still works: nothing was revoked
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId)).toStrictEqual([made.codeId])
    const group = await owner.request('create-group', { name: 'G', members: [member.userId] })
    const direct = await owner.request('direct', { user: member.userId })
    for (const c of [group.conv, direct.conv]) {
      expect(await errorOf(owner, 'create-invite', { conv: c })).toBe('FORBIDDEN')
      expect(await errorOf(owner, 'invites', { conv: c })).toBe('FORBIDDEN')
      expect(await errorOf(owner, 'revoke-invite', { conv: c, codeId: made.codeId })).toBe('FORBIDDEN')
    }
  })

  test('a code stops working when its creator is no longer an admin: demoted, removed, or gone', async () => {
    const conv = await channel()
    const [a1, a2] = [await newcomer(), await newcomer()]
    await owner.request('add-members', { conv, members: [a1.userId, a2.userId] })
    await owner.request('set-role', { conv, user: a1.userId, role: 'admin' })
    await owner.request('set-role', { conv, user: a2.userId, role: 'admin' })
    const [byA1, byA2, byOwner] = [await invite(a1, conv), await invite(a2, conv), await invite(owner, conv)]
    await owner.request('set-role', { conv, user: a1.userId, role: 'member' })
    await owner.request('remove-member', { conv, user: a2.userId })
    const joiner = await newcomer()
    for (const dead of [byA1, byA2]) expect(await failure(joiner, 'join', { invite: dead.code })).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId)).toStrictEqual([byOwner.codeId])
    // made an admin again: the old codes stay dead (they were removed)
    await owner.request('set-role', { conv, user: a1.userId, role: 'admin' })
    expect(await errorOf(joiner, 'join', { invite: byA1.code })).toBe('NOT_FOUND')

    // the owner who leaves as the last member takes the channel's last working codes along
    const lonely = await channel()
    const last = await invite(owner, lonely)
    await owner.request('leave', { conv: lonely })
    expect(await errorOf(joiner, 'join', { invite: last.code })).toBe('NOT_FOUND')

    // a change that raced with the creation: the join checks the creator's role itself
    const raced = await invite(a1, conv)
    await server.services.meta.memberSetRole(conv, a1.userId, 'member')
    expect(await errorOf(joiner, 'join', { invite: raced.code })).toBe('NOT_FOUND')
  })

  test('removed by an admin: kept out by code and by id until an admin adds them again (leaving is no removal)', async () => {
    const conv = await channel(true)
    const made = await invite(owner, conv)
    const [bob, carol] = [await newcomer(), await newcomer()]
    expect((await bob.request('join', { invite: made.code })).joined).toBe(true)
    expect((await carol.request('join', { conv })).joined).toBe(true)
    await owner.request('remove-member', { conv, user: bob.userId })
    const kept = { code: 'FORBIDDEN', message: 'an admin removed you from this channel: only an admin can add you again' }
    expect(await failure(bob, 'join', { invite: made.code })).toStrictEqual(kept)
    expect(await failure(bob, 'join', { conv })).toStrictEqual(kept)
    // no use was taken by the refused joins
    expect((await owner.request('invites', { conv })).invites[0]?.uses).toBe(1)
    // carol left by herself: she may come back
    await carol.request('leave', { conv })
    expect((await carol.request('join', { invite: made.code })).joined).toBe(true)
    // added again by an admin, bob is a member; after leaving he may join again with the code
    expect((await owner.request('add-members', { conv, members: [bob.userId] })).added).toStrictEqual([bob.userId])
    await bob.request('leave', { conv })
    expect((await bob.request('join', { invite: made.code })).joined).toBe(true)
  })

  test('a disabled creator\'s codes admit nobody; enabled again, they work', async () => {
    const conv = await channel()
    const admin = await newcomer()
    await owner.request('add-members', { conv, members: [admin.userId] })
    await owner.request('set-role', { conv, user: admin.userId, role: 'admin' })
    const made = await invite(admin, conv)
    await server.services.meta.userSetDisabled(admin.userId, true)
    const joiner = await newcomer()
    expect(await failure(joiner, 'join', { invite: made.code })).toStrictEqual({ code: 'NOT_FOUND', message: NO_INVITE })
    await server.services.meta.userSetDisabled(admin.userId, false)
    expect((await joiner.request('join', { invite: made.code })).joined).toBe(true)
  })

  test('a public channel whose last member left cannot be joined again (nobody could ever run it)', async () => {
    const conv = await channel(true)
    const helper = await newcomer()
    await helper.request('join', { conv })
    await owner.request('set-role', { conv, user: helper.userId, role: 'owner' })
    await owner.request('leave', { conv })
    await helper.request('leave', { conv })
    const late = await newcomer()
    expect(await failure(late, 'join', { conv })).toStrictEqual({ code: 'NOT_FOUND', message: 'no such channel' })
    expect(await failure(late, 'channel-info', { conv })).toStrictEqual({ code: 'NOT_FOUND', message: 'no such channel' })
  })

  test('a member asking for invites is told what the roles are', async () => {
    const conv = await channel(true)
    const member = await newcomer()
    await member.request('join', { conv })
    expect(await failure(member, 'create-invite', { conv })).toStrictEqual({ code: 'FORBIDDEN', message: 'only the admins and the owner of a channel manage its invite codes' })
  })

  test('hostile values are BAD_REQUEST', async () => {
    const conv = await channel()
    const bad: Array<[string, Record<string, unknown>]> = [
      ['create-invite', { conv, maxUses: 0 }],
      ['create-invite', { conv, maxUses: -1 }],
      ['create-invite', { conv, maxUses: 1.5 }],
      ['create-invite', { conv, maxUses: 100_001 }],
      ['create-invite', { conv, maxUses: Number.MAX_SAFE_INTEGER }],
      ['create-invite', { conv, maxUses: '3' }],
      ['create-invite', { conv, maxUses: null }],
      ['create-invite', { conv, expiresInMs: 0 }],
      ['create-invite', { conv, expiresInMs: -1000 }],
      ['create-invite', { conv, expiresInMs: 1000.5 }],
      ['create-invite', { conv, expiresInMs: '1000' }],
      ['create-invite', { conv, expiresInMs: 1e300 }],
      // beyond channels.inviteTtlMaxMs (30 days)
      ['create-invite', { conv, expiresInMs: 30 * DAY + 1 }],
      ['create-invite', { conv, code: 'mine' }],
      ['create-invite', { conv, uses: 0 }],
      ['create-invite', {}],
      ['join', {}],
      ['join', { conv, invite: guessedCode() }],
      ['join', { invite: guessedCode().slice(1) }],
      ['join', { invite: guessedCode() + 'A' }],
      ['join', { invite: guessedCode().slice(1) + '+' }],
      ['join', { invite: guessedCode().slice(1) + '/' }],
      ['join', { invite: guessedCode().slice(1) + '=' }],
      ['join', { invite: 'x'.repeat(10 * 1024) }],
      ['join', { invite: '' }],
      ['join', { invite: 12345 }],
      ['join', { invite: null }],
      ['join', { invite: [guessedCode()] }],
      ['join', { invite: guessedCode(), extra: 1 }],
      ['invites', { conv, all: true }],
      ['revoke-invite', { conv }],
      ['revoke-invite', { conv, codeId: 'ABCDEF12' }],
      ['revoke-invite', { conv, codeId: 'abcdef1' }],
      ['revoke-invite', { conv, codeId: 'abcdef123' }],
      ['revoke-invite', { conv, codeId: guessedCode() }],
      ['revoke-invite', { conv, codeId: 'a'.repeat(10 * 1024) }]
    ]
    for (const [op, body] of bad) {
      const error = await failure(owner, op, body)
      expect([op, body, error.code]).toStrictEqual([op, body, 'BAD_REQUEST'])
    }
    expect((await failure(owner, 'create-invite', { conv, expiresInMs: 30 * DAY + 1 })).message).toContain('channels.inviteTtlMaxMs')
    // the longest and the largest allowed are fine
    expect(await invite(owner, conv, { expiresInMs: 30 * DAY, maxUses: 100_000 })).toMatchObject({ maxUses: 100_000 })
  })

  test('guessing: a wrong code is NOT_FOUND with one message that names nothing', async () => {
    const conv = await channel()
    const real = await invite(owner, conv)
    const guesser = await newcomer()
    const messages = new Set<string>()
    for (let i = 0; i < 40; i++) {
      const guess = guessedCode()
      const error = await failure(guesser, 'join', { invite: guess })
      expect(error.code).toBe('NOT_FOUND')
      expect(error.message).not.toContain(guess)
      messages.add(error.message)
    }
    // the real code with one character changed
    const near = real.code.slice(0, -1) + (real.code.endsWith('A') ? 'B' : 'A')
    messages.add((await failure(guesser, 'join', { invite: near })).message)
    expect([...messages]).toStrictEqual([NO_INVITE])
    expect(NO_INVITE).not.toContain(conv)
    // the guesses took nothing from the real code
    expect((await owner.request('invites', { conv })).invites).toMatchObject([{ codeId: real.codeId, uses: 0 }])
  })

  test('a channel holds at most channels.invitesPerChannel live codes; expired ones make room', async () => {
    const conv = await channel()
    // long enough to still count while the channel fills up on a loaded machine (a 100 ms code
    // expired before the LIMIT_REACHED check on CI), short enough to wait for
    const short = await invite(owner, conv, { expiresInMs: 2000 })
    await invite(owner, conv)
    const third = await invite(owner, conv)
    const full = await failure(owner, 'create-invite', { conv })
    expect(full.code).toBe('LIMIT_REACHED')
    expect(Date.now()).toBeLessThan(short.expiresAt) // the short code counted: it was live
    await new Promise(resolve => setTimeout(resolve, Math.max(0, short.expiresAt - Date.now()) + 50))
    // the expired one no longer counts (and is removed)
    const next = await invite(owner, conv)
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId)).not.toContain(short.codeId)
    expect((await owner.request('invites', { conv })).invites.map(i => i.codeId)).toContain(next.codeId)
    expect(await server.services.meta.inviteGet(createHash('sha256').update(short.code).digest('hex'))).toBeNull()
    // full again; a revoked code makes room too
    expect(await errorOf(owner, 'create-invite', { conv })).toBe('LIMIT_REACHED')
    await owner.request('revoke-invite', { conv, codeId: third.codeId })
    await invite(owner, conv)
    expect(await errorOf(owner, 'create-invite', { conv })).toBe('LIMIT_REACHED')
  })

  test('a full channel is LIMIT_REACHED and takes no use', async () => {
    const conv = await channel()
    const made = await invite(owner, conv, { maxUses: 10 })
    const others = [await newcomer(), await newcomer(), await newcomer(), await newcomer()]
    await owner.request('add-members', { conv, members: others.map(c => c.userId) })
    expect(await errorOf(await newcomer(), 'join', { invite: made.code })).toBe('LIMIT_REACHED')
    expect((await owner.request('invites', { conv })).invites).toMatchObject([{ uses: 0 }])
    await others[0]?.request('leave', { conv })
    expect(await (await newcomer()).request('join', { invite: made.code })).toMatchObject({ joined: true })
  })
})

describe('create-invite racing a demotion', () => {
  let server: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    // metrics off: the store is then the store itself, and this test may wrap one of its methods
    server = await startServer({ metrics: { enabled: false } })
    for (const u of ['rcowner', 'rcadmin', 'rcjoiner']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server.stop()
  })

  test('a demotion that lands while the code is being stored leaves no code behind', async () => {
    const [owner, admin] = [await connect(server, 'rcowner', 'd1'), await connect(server, 'rcadmin', 'd1')]
    clients.push(owner, admin)
    const { conv } = await owner.request('create-channel', { name: 'Race' })
    await owner.request('add-members', { conv, members: ['rcadmin'] })
    await owner.request('set-role', { conv, user: 'rcadmin', role: 'admin' })
    const meta = server.services.meta
    const store = meta.inviteCreate.bind(meta)
    // the demotion (its role change and the removal of the creator's codes) runs after create-invite
    // checked the role and before the code is stored
    meta.inviteCreate = async (...args) => {
      await meta.memberSetRole(conv, 'rcadmin', 'member')
      await meta.inviteRemoveByCreator(conv, 'rcadmin')
      return await store(...args)
    }
    try {
      expect(await errorOf(admin, 'create-invite', { conv })).toBe('FORBIDDEN')
    } finally {
      meta.inviteCreate = store
    }
    expect(await meta.inviteList(conv, Date.now())).toStrictEqual([])
  })
})

describe('a user in limits.conversationsPerUser conversations', () => {
  let server: MqimServer
  const clients: ImClient[] = []
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await server?.stop()
  })

  test('is LIMIT_REACHED with a code too, and takes no use', async () => {
    server = await startServer({ limits: { conversationsPerUser: 2 } })
    for (const u of ['cpuowner', 'cpufull']) await addUser(server, u)
    const owner = await connect(server, 'cpuowner', 'd1')
    const full = await connect(server, 'cpufull', 'd1')
    clients.push(owner, full)
    const { conv } = await owner.request('create-channel', { name: 'C' })
    const made = await owner.request('create-invite', { conv })
    await full.request('create-channel', { name: 'one' })
    await full.request('create-channel', { name: 'two' })
    expect(await errorOf(full, 'join', { invite: made.code })).toBe('LIMIT_REACHED')
    expect((await owner.request('invites', { conv })).invites).toMatchObject([{ uses: 0 }])
  })
})

describe('invites on two nodes sharing MySQL', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    const overrides = await clusterOverrides(14)
    n1 = await startServer({ ...overrides, nodeId: 'inv1' })
    n2 = await startServer({ ...overrides, nodeId: 'inv2' })
    for (const u of ['nvowner', 'nvadmin', 'nvj1', 'nvj2', 'nvj3']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(c => c.end()))
    await n1?.stop()
    await n2?.stop()
  })

  test('a code made on one node admits on the other; a revoke or a demotion on one counts on the other at once', async () => {
    const open = async (node: MqimServer, user: string): Promise<ImClient> => {
      const c = await connect(node, user, 'd1')
      clients.push(c)
      return c
    }
    const owner = await open(n1, 'nvowner')
    const admin = await open(n2, 'nvadmin')
    const { conv } = await owner.request('create-channel', { name: 'Two nodes' })
    await owner.request('add-members', { conv, members: ['nvadmin'] })
    await owner.request('set-role', { conv, user: 'nvadmin', role: 'admin' })
    const mine = await owner.request('create-invite', { conv })
    const theirs = await admin.request('create-invite', { conv })

    const j1 = await open(n2, 'nvj1')
    expect(await j1.request('join', { invite: mine.code })).toMatchObject({ conv, joined: true })
    expect(await owner.request('channel-info', { conv })).toMatchObject({ members: 3 })

    // revoked through node 1, refused on node 2 at once
    await owner.request('revoke-invite', { conv, codeId: mine.codeId })
    const j2 = await open(n2, 'nvj2')
    expect(await errorOf(j2, 'join', { invite: mine.code })).toBe('NOT_FOUND')
    // the admin's code, made on node 2, works on node 1 until node 1 demotes the admin
    const j3 = await open(n1, 'nvj3')
    expect(await j3.request('join', { invite: theirs.code })).toMatchObject({ joined: true })
    await owner.request('set-role', { conv, user: 'nvadmin', role: 'member' })
    expect(await errorOf(j2, 'join', { invite: theirs.code })).toBe('NOT_FOUND')
    expect(await errorOf(admin, 'invites', { conv })).toBe('FORBIDDEN')
  })
})

describe("topics.md's invite example", () => {
  let server: MqimServer
  afterAll(async () => { await server?.stop() })

  test('runs as written: bob joins alice\'s private channel with the code, which is then revoked', async () => {
    const topics = readFileSync(fileURLToPath(new URL('../topics.md', import.meta.url)), 'utf8')
    const start = topics.indexOf('### Example: an invite code with mosquitto_pub')
    expect(start).toBeGreaterThan(0)
    const block = /^```sh\n([\s\S]*?)^```$/m.exec(topics.slice(start))?.[1] ?? ''
    server = await startServer()
    await addUser(server, 'alice', 'alice-secret')
    await addUser(server, 'bob', 'bob-secret')
    const script = block.replaceAll('-h localhost -p 1883', `-h 127.0.0.1 -p ${server.ports.mqtt}`)
    expect(script).not.toContain('1883')
    const dir = tempDir('mqim-invite-example-')
    await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeout: 60_000 })
    const read = (file: string): { ok: boolean, result: Record<string, unknown> } => JSON.parse(readFileSync(path.join(dir, file), 'utf8'))
    const conv = read('channel.json').result.conv
    const code = read('invite.json').result.code
    expect(read('joined.json')).toMatchObject({ ok: true, result: { conv, joined: true } })
    expect(read('invites.json')).toMatchObject({ ok: true, result: { conv, invites: [{ uses: 1, maxUses: 10 }] } })
    expect(read('revoked.json')).toMatchObject({ ok: true, result: { conv } })
    await addUser(server, 'carol')
    const carol = await connect(server, 'carol', 'd1')
    expect(await errorOf(carol, 'join', { invite: code })).toBe('NOT_FOUND')
    await carol.end()
  })
})
