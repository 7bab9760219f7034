/**
 * The client SDK with channels against a real server: create, join, receive every post once and
 * in order as `message` events (from the channel topic, not the inbox), a member added while
 * connected, a device that was away catching up exactly once on reconnect (subscribe, then
 * history), a channel left or removed from that stops producing events, and a private channel
 * joined with an invite code (createInvite, joinByInvite, invites, revokeInvite).
 */
import { startServer, addUser, url, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, ImClientError, MemoryStorage, type ImClientOptions, type MessageEnvelope } from '../src/client/index.js'

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

describe('client SDK with channels', () => {
  let server: MqimServer
  const open: ImClient[] = []
  async function client (userId: string, deviceId: string, extra: Partial<ImClientOptions> = {}): Promise<ImClient> {
    const c = await ImClient.connect({ url: url(server, 'tcp'), userId, password: 'password-' + userId, deviceId, reconnectPeriodMs: 100, ...extra })
    open.push(c)
    return c
  }
  function collect (c: ImClient, conv: string): number[] {
    const got: number[] = []
    c.on('message', (m: MessageEnvelope) => { if (m.conv === conv) got.push(m.seq) })
    return got
  }

  beforeAll(async () => {
    server = await startServer({ channels: { membersMax: 100, membershipCacheMax: 1000, membersPageMax: 2, subscriptionsPerConnection: 3 } })
    for (const u of ['sdkowner', 'sdkfan', 'sdkadded', 'sdkmany', 'sdkinvited', 'sdklate']) await addUser(server, u)
  })
  afterEach(async () => {
    await Promise.allSettled(open.splice(0).map(async c => { await c.close() }))
  })
  afterAll(async () => {
    await server.stop()
  })

  test('join, posts as message events once in order, catch-up after being away, leave', async () => {
    const owner = await client('sdkowner', 'o')
    const c = await owner.createChannel('SDK news', { public: true })
    expect(c).toMatchObject({ name: 'SDK news', public: true, postPolicy: 'admins', topic: `im/c/${c.conv}/m` })
    await owner.send(c.conv, 'before the fan joined')
    const storage = new MemoryStorage()
    const fan = await client('sdkfan', 'phone', { storage })
    const got = collect(fan, c.conv)
    expect(await fan.join(c.conv)).toMatchObject({ joined: true, lastSeq: 1 })
    for (let i = 0; i < 10; i++) await owner.send(c.conv, `post ${i}`)
    await waitUntil(() => got.length >= 10, 5000, 'ten posts')
    expect(got).toEqual(range(2, 11))
    expect(await fan.channelInfo(c.conv)).toMatchObject({ members: 2, role: 'member', canPost: false, lastSeq: 11 })
    await expect(fan.send(c.conv, 'may I?')).rejects.toMatchObject({ code: 'FORBIDDEN' })
    // away: posts 12..21 are missed live and caught up on reconnect, each once
    await fan.close()
    for (let i = 10; i < 20; i++) await owner.send(c.conv, `post ${i}`)
    // (the catch-up runs before connect resolves: a listener given with the options sees it)
    const backGot: number[] = []
    const back = await client('sdkfan', 'phone', { storage, on: { message: (m: MessageEnvelope) => { if (m.conv === c.conv) backGot.push(m.seq) } } })
    await owner.send(c.conv, 'live again')
    await waitUntil(() => backGot.includes(22), 5000, 'the live post after the reconnect')
    expect(backGot).toEqual(range(12, 22))
    // leaving: no more events
    await back.leave(c.conv)
    await owner.send(c.conv, 'after leaving')
    const marker = await owner.send(c.conv, 'marker')
    await new Promise(resolve => setTimeout(resolve, 150))
    expect(backGot.filter(s => s > 22)).toEqual([])
    expect(marker.seq).toBe(24)
  })

  test('a member added while connected receives from the next post on; channels beyond the server limit are reported', async () => {
    const owner = await client('sdkowner', 'o2')
    const added = await client('sdkadded', 'a')
    const c = await owner.createChannel('Private')
    const got = collect(added, c.conv)
    const members = await owner.addMembers(c.conv, ['sdkadded', 'sdkfan', 'sdkmany'])
    expect(members.added.sort()).toEqual(['sdkadded', 'sdkfan', 'sdkmany'])
    // a post right after the add (maybe before the subscription takes effect) is not missed:
    // the member event carries the last seq at the add, and the SDK pulls after subscribing
    await owner.send(c.conv, 'welcome')
    await waitUntil(() => got.length === 1, 5000, 'the welcome post')
    await owner.send(c.conv, 'second')
    await waitUntil(() => got.length === 2, 5000, 'the second post')
    expect(got).toEqual([1, 2])
    // paged members through the SDK
    const p1 = await owner.members(c.conv)
    expect(p1).toMatchObject({ count: 4, next: 'sdkfan' })
    expect(p1.members.map(m => m.user)).toEqual(['sdkadded', 'sdkfan'])
    expect((await owner.members(c.conv, { after: p1.next ?? undefined })).members.map(m => m.user)).toEqual(['sdkmany', 'sdkowner'])
    // four channels, three subscriptions per connection here: the fourth is reported on connect
    for (let i = 0; i < 3; i++) {
      const x = await owner.createChannel(`More ${i}`)
      await owner.addMembers(x.conv, ['sdkmany'])
    }
    const errors: ImClientError[] = []
    const many = await client('sdkmany', 'm', { on: { error: (e) => { errors.push(e) } } })
    expect(many.state).toBe('online')
    expect(errors.map(e => e.code)).toEqual(['LIMIT_REACHED'])
  })

  test('an invite code: made, joined with (posts from the join on), listed, revoked', async () => {
    const owner = await client('sdkowner', 'o3')
    const c = await owner.createChannel('By invitation')
    await owner.send(c.conv, 'before')
    const made = await owner.createInvite(c.conv, { maxUses: 5, expiresInMs: 60_000 })
    expect(made).toMatchObject({ conv: c.conv, maxUses: 5, uses: 0, createdBy: 'sdkowner' })
    expect(made.expiresAt - made.createdAt).toBe(60_000)
    const invited = await client('sdkinvited', 'i')
    const got = collect(invited, c.conv)
    expect(await invited.joinByInvite(made.code)).toMatchObject({ conv: c.conv, joined: true, lastSeq: 1 })
    await owner.send(c.conv, 'after')
    await waitUntil(() => got.includes(2), 5000, 'the post after the join')
    expect(await owner.invites(c.conv)).toEqual({ conv: c.conv, invites: [{ codeId: made.codeId, createdBy: 'sdkowner', createdAt: made.createdAt, expiresAt: made.expiresAt, maxUses: 5, uses: 1 }] })
    await expect(invited.invites(c.conv)).rejects.toMatchObject({ code: 'FORBIDDEN' })
    expect(await owner.revokeInvite(c.conv, made.codeId)).toEqual({ conv: c.conv, codeId: made.codeId })
    const late = await client('sdklate', 'l')
    await expect(late.joinByInvite(made.code)).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })
})
