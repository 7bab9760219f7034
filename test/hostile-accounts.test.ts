/**
 * Hostile users against accounts and conversations, over real sockets, on every store pair:
 * password guessing (backoff per user id and per address, bounded hashes in flight, unknown users
 * cost the same work), revocation racing a login, per-user request rate limits across
 * connections, strangers adding people to groups, group and membership quotas, and `list` paging.
 */
import mqtt from 'mqtt'
import { BACKENDS } from './helpers/backends.js'
import { freshMysqlUrl } from './helpers/db.js'
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { startServer, addUser, connect, url, waitUntil, type ImClient, type ResultOf } from './helpers/im.js'
import mqttPacket from 'mqtt-packet'
import { RawClient } from '../scripts/lib/raw-mqtt.js'
import { setDisabled } from '../src/admin/accounts.js'
import { MySqlMetadataStore } from '../src/store/metadata-mysql.js'
import type { MqimServer } from '../src/server.js'
import { checkSessionCap } from './helpers/session-cap.js'

const AUTH = { failuresBeforeBackoff: 3, backoffBaseMs: 60_000, backoffMaxMs: 60_000, maxConcurrentHashes: 1, maxQueuedLogins: 2, revocationPollMs: 200, tarpitMs: 1000, tarpitPerAddress: 2 }

/** The CONNACK return code, or 'closed' when the server closed the connection without one. */
async function loginCode (server: MqimServer, user: string, device: string, password: string, localAddress: string): Promise<number | 'closed'> {
  try {
    const { client, code } = await RawClient.login(server.ports.mqtt, user, device, password, { localAddress })
    client.end()
    return code
  } catch (err) {
    if (String(err).includes('connection closed before a connack arrived')) return 'closed'
    throw err
  }
}

describe.each(BACKENDS)('hostile users ($name)', (backend) => {
  let server: MqimServer
  const clients: ImClient[] = []
  const track = (c: ImClient): ImClient => { clients.push(c); return c }

  beforeAll(async () => {
    server = await startServer({
      auth: AUTH,
      limits: { requestsPerSecond: 5, requestBurst: 10, requestBytesPerToken: 65536, groupsCreatedPerHour: 3, conversationsPerUser: 6, listPageMax: 4, connectionsPerUser: 8, persistentSessionsPerUser: 3 }
    }, await backend.make())
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank', 'ivan', 'judy', 'kate', 'stranger']) await addUser(server, u)
  })
  afterEach(async () => { await Promise.allSettled(clients.splice(0).map(async c => await c.end())) })
  afterAll(async () => { await server.stop() })

  test('password guessing: backoff per address and per user id; the owner on a known address still gets in', async () => {
    // alice has logged in from 127.0.0.1 before
    expect(await loginCode(server, 'alice', 'home', 'password-alice', '127.0.0.1')).toBe(0)
    for (let i = 0; i < AUTH.failuresBeforeBackoff; i++) expect(await loginCode(server, 'alice', 'x', 'wrong-guess', '127.0.0.20')).toBe(4)
    // now that address is refused at once, even with the right password: closed before CONNECT is read
    expect(await loginCode(server, 'alice', 'x', 'password-alice', '127.0.0.20')).toBe('closed')
    expect(await loginCode(server, 'bob', 'x', 'password-bob', '127.0.0.20')).toBe('closed')
    // alice's id is in backoff for addresses she never used...
    expect(await loginCode(server, 'alice', 'x', 'password-alice', '127.0.0.21')).toBe(3)
    // ...but not where she logged in before, and other users elsewhere are not affected
    expect(await loginCode(server, 'alice', 'home', 'password-alice', '127.0.0.1')).toBe(0)
    expect(await loginCode(server, 'bob', 'x', 'password-bob', '127.0.0.21')).toBe(0)
  })

  test('an address in backoff: its connections are held unread for auth.tarpitMs and then closed, at most tarpitPerAddress of them; the rest are closed at once', async () => {
    const from = '127.0.0.31'
    for (let i = 0; i < AUTH.failuresBeforeBackoff; i++) expect(await loginCode(server, 'ghost-tarpit', 'x', 'wrong-guess', from)).toBe(4)
    const started = performance.now()
    const outcomes = await Promise.all(Array.from({ length: AUTH.tarpitPerAddress + 1 }, async () => {
      const conn = new RawClient(server.ports.mqtt, { localAddress: from })
      // the right password: it is never read
      const code = await conn.connect('bob', 'x', 'password-bob', 10_000).then(rc => `CONNACK ${rc}`, () => 'closed')
      await conn.whenClosed
      return { code, ms: performance.now() - started }
    }))
    expect(outcomes.map(o => o.code)).toEqual(outcomes.map(() => 'closed'))
    const times = outcomes.map(o => o.ms).sort((a, b) => a - b)
    // one beyond the per-address bound is closed at once; the held ones only after tarpitMs
    expect(times[0]).toBeLessThan(AUTH.tarpitMs)
    expect(times.slice(1).every(t => t >= AUTH.tarpitMs - 5)).toBe(true)
    // nothing is left counted as held once they are closed
    await waitUntil(() => server.internals.listeners.tarpitted === 0, 2000, 'no connection held')
    // a bystander address is not affected
    expect(await loginCode(server, 'bob', 'x', 'password-bob', '127.0.0.32')).toBe(0)
  })

  test('bounded password hashes in flight: a burst of logins beyond the line is refused at once (CONNACK 3), unknown users included', async () => {
    const attempts = Array.from({ length: 12 }, async (_, i) => await loginCode(server, i % 2 === 0 ? `ghost${i}` : 'carol', 'x', `wrong-${i}`, `127.0.1.${i + 1}`))
    const codes = await Promise.all(attempts)
    expect(codes.filter(c => c === 3).length).toBeGreaterThan(0)
    expect(codes.every(c => c === 3 || c === 4)).toBe(true)
    // unknown users go through the same limited hashing as wrong passwords: they were refused as busy too
    expect(codes.some((c, i) => c === 3 && i % 2 === 0)).toBe(true)
  })

  test('revocation wins every race with a login in flight', async () => {
    for (let round = 0; round < 10; round++) {
      await setDisabled(server.services.meta, 'dave', false)
      const attempt = mqtt.connectAsync(url(server, 'tcp'), { clientId: `dave:r${round}`, username: 'dave', password: 'password-dave', protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 5000 })
      await new Promise(resolve => setTimeout(resolve, 5 + (round % 4) * 5))
      // what the admin API does: disable, then end every session
      await setDisabled(server.services.meta, 'dave', true)
      server.internals.revocations.revoke('dave', 'test')
      const client = await attempt.catch(() => null)
      if (client !== null) {
        await new Promise<void>(resolve => { if (!client.connected) resolve(); else client.once('close', () => resolve()) })
        client.end(true)
      }
      // the server closed it (or never opened it): its socket's end reaches the session table at once
      await waitUntil(() => server.internals.sessions.countOf('dave') === 0, 2000, 'no session of dave')
    }
    await setDisabled(server.services.meta, 'dave', false)
  })

  test('the request rate limit is per user, across all of the user\'s connections', async () => {
    const devices = [track(await connect(server, 'erin', 'a')), track(await connect(server, 'erin', 'b')), track(await connect(server, 'erin', 'c'))]
    // let the bucket refill after the logins' own requests
    await new Promise(resolve => setTimeout(resolve, 2500))
    const replies = await Promise.all(devices.flatMap(d => Array.from({ length: 10 }, async () => await d.requestRaw('presence', { users: ['erin'] }))))
    const ok = replies.filter(r => r.ok).length
    const limited = replies.filter(r => !r.ok && r.error.code === 'RATE_LIMITED').length
    expect(ok + limited).toBe(30)
    // a burst of 10, plus what refills (5/s) while 30 requests are handled
    expect(ok).toBeLessThanOrEqual(13)
    expect(limited).toBeGreaterThanOrEqual(17)
  })

  test('a large reply costs more of the rate: right after a 1 MiB history page the user is RATE_LIMITED; pages at once are charged up front', async () => {
    await addUser(server, 'pager')
    const [a, b] = [track(await connect(server, 'pager', 'a')), track(await connect(server, 'pager', 'b'))]
    const { conv } = await a.request('direct', { user: 'alice' })
    const body = 'x'.repeat(60_000)
    for (let i = 0; i < 20; i++) {
      for (;;) { // 5 per second: resend what is refused
        const r = await a.requestRaw('send', { conv, msgId: `big${i}`, kind: 'text', body })
        if (r.ok) break
        expect(r.error.code).toBe('RATE_LIMITED')
        await new Promise(resolve => setTimeout(resolve, 200))
      }
    }
    // a full bucket (10): two small requests in a row pass
    await new Promise(resolve => setTimeout(resolve, 2500))
    expect((await a.requestRaw('presence', { users: ['alice'] })).ok).toBe(true)
    expect((await b.requestRaw('presence', { users: ['alice'] })).ok).toBe(true)
    // a full bucket again: a page of ~1 MiB costs 1 + 16 tokens, so the next request is refused
    await new Promise(resolve => setTimeout(resolve, 2500))
    const page = await a.request('history', { conv, after: 0, limit: 200 })
    expect(page.messages.length).toBeGreaterThanOrEqual(15)
    const next = await b.requestRaw('presence', { users: ['alice'] })
    expect(next.ok ? 'ok' : next.error.code).toBe('RATE_LIMITED')
    // a full bucket (10) again; pages asked for all at once are charged their largest cost (16)
    // before they run, so one passes and the rest are refused (on one token each, all would pass)
    await new Promise(resolve => setTimeout(resolve, 4000))
    const pages = await Promise.all(Array.from({ length: 5 }, async () => await a.requestRaw('history', { conv, after: 0, limit: 200 })))
    expect(pages.map(r => r.ok ? 'ok' : r.error.code).sort()).toEqual(['RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED', 'RATE_LIMITED', 'ok'])
  }, 30_000)

  test('a request flood: every refusal answered until the connection is closed at 2,000 in a second; then the user is refused for a while (nobody else)', async () => {
    await addUser(server, 'flooder')
    const { client: raw, code } = await RawClient.login(server.ports.mqtt, 'flooder', 'f1', 'password-flooder', { localAddress: '127.0.0.40' })
    expect(code).toBe(0)
    // refusals are answered at once; an accepted request is answered when it is done, which may be
    // after the cut (the connection is gone then: such an answer is lost, and nothing waits for it)
    let refusals = 0
    let accepted = 0
    raw.onPacket = p => {
      if (p.cmd !== 'publish') return
      if ((JSON.parse(p.payload.toString()) as { ok: boolean }).ok) accepted++
      else refusals++
    }
    const one = mqttPacket.generate({ cmd: 'publish', topic: 'im/req/presence', payload: Buffer.from('{"id":"x","users":["flooder"]}'), qos: 0, retain: false, dup: false, messageId: 0 })
    const chunk = Buffer.concat(Array.from({ length: 500 }, () => one))
    const cutBefore = server.internals.sessions.floodsCut
    // the flooder reads nothing while it floods: the answers wait in the server's buffer, and the
    // cut must let them go out before the connection ends (destroying it would drop them)
    raw.stopReading()
    for (let i = 0; i < 20 && await raw.writeRaw(chunk); i++);
    await new Promise(resolve => setTimeout(resolve, 500))
    raw.resumeReading()
    await raw.whenClosed
    expect(server.internals.sessions.floodsCut).toBe(cutBefore + 1)
    // the burst (10) and refill, then every refusal answered up to the one that makes 2,000 within a
    // second (which closes the connection), and nothing after the cut
    expect(refusals).toBeGreaterThanOrEqual(1999)
    expect(refusals + accepted).toBeLessThan(2100)
    // refused for a while even from the address it used, with the right password; others are not
    expect(await loginCode(server, 'flooder', 'f2', 'password-flooder', '127.0.0.40')).toBe(3)
    expect(await loginCode(server, 'bob', 'fx', 'password-bob', '127.0.0.40')).toBe(0)
  })

  test('publishes to topics that are not requests count against the rate: beyond it they get no answer', async () => {
    await addUser(server, 'noisy')
    const c = track(await connect(server, 'noisy', 'a'))
    await new Promise(resolve => setTimeout(resolve, 2500))
    await Promise.all(Array.from({ length: 40 }, async (_, i) => await c.mqtt.publishAsync(`foo/${i}`, 'x', { qos: 1 })))
    // the marker: a request after them, answered once the bucket has refilled
    await new Promise(resolve => setTimeout(resolve, 400))
    await c.request('presence', { users: ['noisy'] })
    const answered = c.replies.filter(r => r.op.startsWith('foo/'))
    expect(answered.every(r => !r.ok && r.error.code === 'UNKNOWN_OP')).toBe(true)
    // a burst of 10, plus what refills (5/s) while 40 publishes are handled
    expect(answered.length).toBeGreaterThanOrEqual(10)
    expect(answered.length).toBeLessThanOrEqual(13)
  })

  test('group invitations: "contacts" refuses strangers with REFUSED, also after they opened a direct conversation; one the user opened lets them in', async () => {
    const frank = track(await connect(server, 'frank', 'f'))
    const stranger = track(await connect(server, 'stranger', 's'))
    expect(await frank.request('settings', {})).toEqual({ groupInvites: 'anyone' })
    expect(await frank.request('settings', { groupInvites: 'contacts' })).toEqual({ groupInvites: 'contacts' })
    const bad = await frank.requestRaw('settings', { groupInvites: 'everyone' })
    expect(bad.ok ? 'ok' : bad.error.code).toBe('BAD_REQUEST')
    const refused = await stranger.requestRaw('create-group', { name: 'spam', members: ['frank'] })
    expect(refused.ok ? 'ok' : refused.error.code).toBe('REFUSED')
    const g = await stranger.request('create-group', { name: 'mine', members: [] })
    const refusedAdd = await stranger.requestRaw('add-members', { conv: g.conv, members: ['frank'] })
    expect(refusedAdd.ok ? 'ok' : refusedAdd.error.code).toBe('REFUSED')
    // nothing half-written: frank is in neither group
    expect((await frank.request('list', {})).conversations).toEqual([])
    // opening a direct conversation with frank does not make the stranger frank's contact
    await stranger.request('direct', { user: 'frank' })
    const stillRefused = await stranger.requestRaw('add-members', { conv: g.conv, members: ['frank'] })
    expect(stillRefused.ok ? 'ok' : stillRefused.error.code).toBe('REFUSED')
    // a direct conversation frank opens himself does
    const gina = track(await connect(server, 'gina', 'contacts'))
    expect(await gina.request('settings', { groupInvites: 'contacts' })).toEqual({ groupInvites: 'contacts' })
    await gina.request('direct', { user: 'stranger' })
    expect((await stranger.request('add-members', { conv: g.conv, members: ['gina'] })).added).toEqual(['gina'])
  })

  test('groups created per hour are capped (RATE_LIMITED); conversations per user too (LIMIT_REACHED)', async () => {
    const gina = track(await connect(server, 'gina', 'g'))
    const hank = track(await connect(server, 'hank', 'h'))
    for (let i = 0; i < 3; i++) await gina.request('create-group', { name: `g${i}`, members: ['hank'] })
    const fourth = await gina.requestRaw('create-group', { name: 'g3', members: [] })
    expect(fourth.ok ? 'ok' : fourth.error.code).toBe('RATE_LIMITED')
    // hank is in 3 groups; 3 direct conversations fill his 6
    for (const peer of ['ivan', 'judy', 'kate']) await hank.request('direct', { user: peer })
    const full = await gina.requestRaw('direct', { user: 'hank' })
    expect(full.ok ? 'ok' : full.error.code).toBe('LIMIT_REACHED')
    expect(full.ok ? '' : full.error.message).toContain('hank')
  })

  test('persistent sessions per user are bounded: a device beyond the bound gets a clean session', async () => {
    await addUser(server, 'pers')
    await checkSessionCap([server], 'pers', 3)
  })

  test('list comes in pages of listPageMax with a cursor, in conversation-id order; all pages together are everything', async () => {
    const hank = track(await connect(server, 'hank', 'list'))
    const seen: string[] = []
    let cursor: string | null = null
    let pages = 0
    do {
      const page: ResultOf<'list'> = await hank.request('list', cursor === null ? {} : { cursor })
      expect(page.conversations.length).toBeLessThanOrEqual(4)
      seen.push(...page.conversations.map(c => c.conv))
      cursor = page.next ?? null
      pages++
    } while (cursor !== null && pages < 10)
    expect(pages).toBe(2)
    expect(seen.length).toBe(6)
    expect([...seen].sort()).toEqual(seen)
    expect(new Set(seen).size).toBe(6)
    const bad = await hank.requestRaw('list', { cursor: 'not a conversation id!' })
    expect(bad.ok ? 'ok' : bad.error.code).toBe('BAD_REQUEST')
  })
})

describe('revocation through MySQL directly (another process changes the database)', () => {
  let server: MqimServer | undefined
  let other: MySqlMetadataStore | undefined
  afterAll(async () => {
    await other?.close()
    await server?.stop()
  })

  test('a disable or a secret reset written by someone else ends the sessions within a few polls', async () => {
    const mysqlUrl = await freshMysqlUrl()
    const meta = new MySqlMetadataStore({ url: mysqlUrl })
    const messages = new MemoryMessageStore()
    await meta.init()
    server = await startServer({ auth: { revocationPollMs: 200 } }, { meta, messages })
    await addUser(server, 'lena')
    await addUser(server, 'mike')
    // the admin tool on MySQL: its own connection pool, no server involved
    other = new MySqlMetadataStore({ url: mysqlUrl })
    await other.init()
    const lena = await connect(server, 'lena', 'l')
    const mike = await connect(server, 'mike', 'm')
    const closed = (c: ImClient): Promise<void> => new Promise(resolve => { if (!c.mqtt.connected) resolve(); else c.mqtt.once('close', () => resolve()) })
    const lenaGone = closed(lena)
    await other.userSetDisabled('lena', true)
    await lenaGone
    const mikeGone = closed(mike)
    await other.userSetSecret('mike', 'scrypt$16384$8$1$AAAA$BBBB')
    await mikeGone
    expect(server.internals.sessions.countOf('lena')).toBe(0)
    expect(server.internals.sessions.countOf('mike')).toBe(0)
    await lena.end()
    await mike.end()
  })
})

describe('large requests cost the rate by their size (limits.requestBytesPerToken, 4 KiB by default)', () => {
  let server: MqimServer
  beforeAll(async () => {
    // the default requestBytesPerToken; a bucket of 20 refilled at 5/s
    server = await startServer({ limits: { requestsPerSecond: 5, requestBurst: 20 } })
    for (const u of ['big.a', 'big.b']) await addUser(server, u)
  })
  afterAll(async () => { await server.stop() })

  test('two 60 KB messages from a full bucket overdraw it (1 + 14 tokens each): the next small request is RATE_LIMITED', async () => {
    const a = await connect(server, 'big.a', 'a')
    try {
      const { conv } = await a.request('direct', { user: 'big.b' })
      await new Promise(resolve => setTimeout(resolve, 1000)) // full again
      const body = 'x'.repeat(60_000)
      expect((await a.requestRaw('send', { conv, msgId: 'big1', kind: 'text', body })).ok).toBe(true)
      expect((await a.requestRaw('send', { conv, msgId: 'big2', kind: 'text', body })).ok).toBe(true)
      const next = await a.requestRaw('presence', { users: ['big.b'] })
      expect(next.ok ? 'ok' : next.error.code).toBe('RATE_LIMITED')
      // small requests cost one each: after the debt is paid back (about 2 s) they pass again
      await new Promise(resolve => setTimeout(resolve, 2500))
      expect((await a.requestRaw('presence', { users: ['big.b'] })).ok).toBe(true)
    } finally {
      await a.end()
    }
  })
  test('the size is charged before the request runs: four 60 KB messages sent at once from a full bucket, the third and fourth refused', async () => {
    const a = await connect(server, 'big.a', 'b')
    try {
      const { conv } = await a.request('direct', { user: 'big.b' })
      await new Promise(resolve => setTimeout(resolve, 5000)) // the debt of the test before paid, the bucket full
      const body = 'y'.repeat(60_000)
      const replies = await Promise.all([1, 2, 3, 4].map(async i => await a.requestRaw('send', { conv, msgId: `at-once-${i}`, kind: 'text', body })))
      expect(replies.map(r => r.ok ? 'ok' : r.error.code)).toEqual(['ok', 'ok', 'RATE_LIMITED', 'RATE_LIMITED'])
    } finally {
      await a.end()
    }
  }, 20000)
})
