/**
 * The admin HTTP API (src/admin/http.ts) over real sockets: tokens and scopes, every route with
 * good and hostile input, a message sent through it reaching a member's mqtt.js client, paging,
 * and the OpenAPI document against the routes fastify registered.
 */
import { execFile, spawnSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import { networkInterfaces } from 'node:os'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import { fastify, type RouteOptions } from 'fastify'
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod'
import { ConfigError, loadConfig } from '../src/config.js'
import { newAdminToken } from '../src/admin/auth.js'
import { adminRoutes } from '../src/admin/http.js'
import type { MqimServer } from '../src/server.js'
import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { counted } from './helpers/counted-store.js'
import { addUser, connackCode, connect, startServer, type ImClient } from './helpers/im.js'

type Json = Record<string, unknown>
interface Answer { status: number, json: Json, headers: Headers }

const ALL_SCOPES = ['users:read', 'users:write', 'conversations:read', 'conversations:write', 'messages:send']
const ops = newAdminToken()
const reader = newAdminToken()
const sender = newAdminToken()
const PAGE_MAX = 10

function adminConfig (systemUser: string | null): Json {
  return {
    tokens: [
      { name: 'ops', tokenSha256: ops.tokenSha256, scopes: ALL_SCOPES },
      // hex digits in either case
      { name: 'reader', tokenSha256: reader.tokenSha256.toUpperCase(), scopes: ['users:read', 'conversations:read'] },
      { name: 'sender', tokenSha256: sender.tokenSha256, scopes: ['messages:send'] }
    ],
    systemUser,
    pageMax: PAGE_MAX
  }
}

/** An address of this host other than loopback (requests from it are not loopback requests), if any. */
function externalAddress (): string | undefined {
  return Object.values(networkInterfaces()).flat().find(a => a !== undefined && a.family === 'IPv4' && !a.internal)?.address
}

async function call (base: string, method: string, path: string, options: { token?: string | null, body?: unknown, raw?: string, headers?: Record<string, string> } = {}): Promise<Answer> {
  const headers: Record<string, string> = { ...options.headers }
  if (options.token !== null) headers.authorization = `Bearer ${options.token ?? ops.token}`
  let body: string | undefined
  if (options.raw !== undefined) body = options.raw
  else if (options.body !== undefined) body = JSON.stringify(options.body)
  if (body !== undefined) headers['content-type'] ??= 'application/json'
  const res = await fetch(base + path, { method, headers, body })
  const text = await res.text()
  return { status: res.status, json: text === '' ? {} : JSON.parse(text) as Json, headers: res.headers }
}

describe('admin HTTP API', () => {
  let server: MqimServer
  let base: string
  const api = async (method: string, path: string, options?: Parameters<typeof call>[3]): Promise<Answer> => await call(base, method, path, options)
  const expectError = (answer: Answer, status: number, code: string, message?: RegExp): void => {
    expect({ status: answer.status, keys: Object.keys(answer.json), code: answer.json.code }).toEqual({ status, keys: ['code', 'message'], code })
    if (message !== undefined) expect(answer.json.message).toMatch(message)
  }
  /** A user with a known password, made through the API. */
  const user = async (id: string): Promise<string> => {
    const created = await api('POST', '/users', { body: { id, password: `password-${id}` } })
    expect(created.status).toBe(201)
    return `password-${id}`
  }
  const group = async (owner: string, members: string[], name = 'a group'): Promise<string> => {
    const created = await api('POST', '/conversations', { body: { name, owner, members } })
    expect(created.status).toBe(201)
    return created.json.conv as string
  }

  beforeAll(async () => {
    server = await startServer({ admin: adminConfig('system'), limits: { maxPayloadBytes: 4096 } })
    base = `http://127.0.0.1:${server.ports.http}/admin`
    expect((await api('POST', '/bots', { body: { id: 'system', displayName: 'Announcements' } })).status).toBe(201)
  })
  afterAll(async () => { await server.stop() })

  describe('tokens and scopes', () => {
    test('no token: 401 with a Bearer challenge and {code, message}', async () => {
      const res = await api('GET', '/users', { token: null })
      expectError(res, 401, 'FORBIDDEN', /Authorization: Bearer/)
      expect(res.headers.get('www-authenticate')).toBe('Bearer realm="mqim-admin"')
      // before the body is read: a write without a token is refused the same way
      expectError(await api('POST', '/users', { token: null, body: { id: 'mallory' } }), 401, 'FORBIDDEN')
      expectError(await api('GET', '/users', { token: null, headers: { authorization: '' } }), 401, 'FORBIDDEN')
    })

    test('a wrong token, a token whose hash is not configured, another scheme: 403', async () => {
      const unknown = newAdminToken()
      for (const authorization of ['Bearer wrong', `Bearer ${unknown.token}`, `Bearer ${ops.token}x`, `Bearer ${ops.token.slice(0, -1)}`, `Basic ${Buffer.from('ops:' + ops.token).toString('base64')}`, `Bearer ${ops.tokenSha256}`, `Bearer  ${ops.token}`, `bearer${ops.token}`]) {
        const res = await api('GET', '/users', { token: null, headers: { authorization } })
        expectError(res, 403, 'FORBIDDEN', /unknown token/)
        expect(res.headers.get('www-authenticate')).toContain('error="invalid_token"')
      }
      expect((await api('POST', '/users', { token: 'nope', body: { id: 'mallory' } })).status).toBe(403)
      expectError(await api('GET', '/users/mallory'), 404, 'NOT_FOUND')
    })

    test('a token without the scope: 403 naming the scope; with it: allowed', async () => {
      expect((await api('GET', '/users', { token: reader.token })).status).toBe(200)
      const write = await api('POST', '/users', { token: reader.token, body: { id: 'by-reader' } })
      expectError(write, 403, 'FORBIDDEN', /"reader" lacks the scope users:write/)
      expect(write.headers.get('www-authenticate')).toBe('Bearer realm="mqim-admin", error="insufficient_scope", scope="users:write"')
      expectError(await api('GET', '/users', { token: sender.token }), 403, 'FORBIDDEN', /scope users:read/)
      expectError(await api('POST', '/conversations', { token: reader.token, body: { name: 'x', members: [] } }), 403, 'FORBIDDEN', /conversations:write/)
      expectError(await api('POST', '/conversations/c1/messages', { token: reader.token, body: {} }), 403, 'FORBIDDEN', /messages:send/)
      // refused before anything is validated or done
      expectError(await api('GET', '/users/mallory', { token: sender.token }), 403, 'FORBIDDEN')
    })

    test('the loopback token (<dataDir>/admin-token) has every scope from loopback', async () => {
      const token = server.adminToken
      expect((await api('GET', '/users', { token })).status).toBe(200)
      expect((await api('POST', '/users', { token, body: { id: 'by-loopback' } })).status).toBe(201)
      expect((await api('GET', '/openapi.json', { token })).status).toBe(200)
    })

    test('config: tokenSha256 must be 64 hex digits, names and tokens unique, scopes known', () => {
      const load = (tokens: unknown[]): unknown => loadConfig({ env: {}, overrides: { admin: { tokens } } })
      const good = { name: 'a', tokenSha256: ops.tokenSha256, scopes: ['users:read'] }
      expect(() => load([{ ...good, tokenSha256: ops.token }])).toThrow(/admin\.tokens\.0\.tokenSha256: 64 hex digits/)
      expect(() => load([good, { ...good, tokenSha256: reader.tokenSha256 }])).toThrow(/each token name at most once/)
      expect(() => load([good, { ...good, name: 'b' }])).toThrow(/each token at most once/)
      expect(() => load([{ ...good, scopes: ['users:delete'] }])).toThrow(ConfigError)
      expect(() => load([{ ...good, scopes: [] }])).toThrow(ConfigError)
      expect(() => load([{ ...good, token: 'plain' }])).toThrow(/token/)
      expect(() => loadConfig({ env: {}, overrides: { admin: { systemUser: 'Not An Id' } } })).toThrow(/admin\.systemUser/)
    })
  })

  describe('users and bots', () => {
    test('create a user: 201 with the password, which logs in; a bot: its API key logs in', async () => {
      const created = await api('POST', '/users', { body: { id: 'u.alice', displayName: 'Alice' } })
      expect(created.status).toBe(201)
      expect(created.json).toEqual({ user: { id: 'u.alice', kind: 'user', displayName: 'Alice', disabled: false, createdAt: expect.any(Number) }, password: expect.any(String) })
      expect(await connackCode(server.ports.mqtt, 'u.alice', created.json.password as string)).toBe(0)
      const bot = await api('POST', '/bots', { body: { id: 'u.bot' } })
      expect(bot.status).toBe(201)
      expect(bot.json.apiKey).toMatch(/^mqk_/)
      expect(await connackCode(server.ports.mqtt, 'u.bot', bot.json.apiKey as string)).toBe(0)
      expect((await api('GET', '/users/u.alice')).json).toEqual(created.json.user)
      expect((await api('GET', '/users/u.bot', { token: reader.token })).json).toMatchObject({ id: 'u.bot', kind: 'bot' })
    })

    test('hostile or bad input: 400 BAD_REQUEST/BAD_JSON, 409 CONFLICT, 404, 413', async () => {
      expectError(await api('POST', '/users', { body: { id: 'u.alice' } }), 409, 'CONFLICT', /already exists/)
      expectError(await api('POST', '/users', { body: { id: 'u.zed', admin: true } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/users', { body: { id: 'Bad Id' } }), 400, 'BAD_REQUEST', /a user id/)
      expectError(await api('POST', '/users', { body: { id: 'u.zed', password: 'short' } }), 400, 'BAD_REQUEST', /at least 8/)
      expectError(await api('POST', '/users', { body: { id: 'u.zed', displayName: 'evil\u202ename' } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/users', { body: ['u.zed'] }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/users', { raw: '{"id":' }), 400, 'BAD_JSON')
      expectError(await api('POST', '/users', { raw: 'id=u.zed', headers: { 'content-type': 'application/x-www-form-urlencoded' } }), 400, 'BAD_REQUEST', /send JSON/)
      expectError(await api('POST', '/users', { raw: '"u.zed"', headers: { 'content-type': 'text/plain' } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/users', { raw: '['.repeat(40) + ']'.repeat(40) }), 400, 'BAD_REQUEST', /nest deeper than 32/)
      expectError(await api('POST', '/users', { body: { id: 'u.zed', displayName: 'x'.repeat(70_000) } }), 413, 'TOO_LARGE')
      expectError(await api('GET', '/users/u.nobody'), 404, 'NOT_FOUND', /no such user: u.nobody/)
      expectError(await api('GET', '/users/BAD!'), 400, 'BAD_REQUEST')
      expectError(await api('GET', `/users/${'a'.repeat(33)}`), 400, 'BAD_REQUEST')
      expectError(await api('GET', '/users/a%2Fb'), 400, 'BAD_REQUEST')
      expectError(await api('GET', '/users/%C3%A9'), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/users/u.nobody/disable'), 404, 'NOT_FOUND')
      expectError(await api('POST', '/users/u.alice/reset', { body: { password: 'pw', extra: 1 } }), 400, 'BAD_REQUEST')
      expectError(await api('DELETE', '/users/u.alice'), 404, 'NOT_FOUND')
      // nothing was created by any of it
      expectError(await api('GET', '/users/u.zed'), 404, 'NOT_FOUND')
    })

    test('__proto__, constructor and prototype keys are unknown fields: 400 BAD_REQUEST naming the key, at any level of a request; nothing is polluted', async () => {
      const bodies: Array<[string, string, RegExp]> = [
        ['/users', '{"id":"u.zed","__proto__":{"admin":true}}', /Unrecognized key: "__proto__"/],
        ['/users', '{"id":"u.zed","constructor":{"prototype":{"admin":true}}}', /Unrecognized key: "constructor"/],
        ['/users', '{"id":"u.zed","prototype":{"admin":true}}', /Unrecognized key: "prototype"/],
        ['/users', '{"__proto__":{"id":"u.zed"}}', /__proto__/],
        ['/bots', '{"id":"u.zed","__proto__":{"kind":"user"}}', /Unrecognized key: "__proto__"/],
        ['/users/u.alice/reset', '{"__proto__":{"password":"polluted-pw"}}', /Unrecognized key: "__proto__"/],
        ['/conversations', '{"name":"x","members":[],"__proto__":{"owner":"u.alice"}}', /Unrecognized key: "__proto__"/],
        // the same key twice: JSON.parse keeps the last, the schema still refuses it
        ['/users', '{"id":"u.zed","__proto__":1,"__proto__":{"admin":true}}', /Unrecognized key: "__proto__"/]
      ]
      for (const [path, raw, message] of bodies) expectError(await api('POST', path, { raw }), 400, 'BAD_REQUEST', message)
      expectError(await api('GET', '/users?__proto__=x'), 400, 'BAD_REQUEST', /__proto__/)
      expectError(await api('GET', '/users?constructor=x'), 400, 'BAD_REQUEST', /constructor/)
      expectError(await api('GET', '/users/u.zed'), 404, 'NOT_FOUND')
      expect(await connackCode(server.ports.mqtt, 'u.alice', 'polluted-pw')).toBe(4)
      const probe: Record<string, unknown> = {}
      expect([probe.admin, probe.kind, probe.owner, probe.password, Object.getPrototypeOf(probe)]).toEqual([undefined, undefined, undefined, undefined, Object.prototype])
    })

    test('disable ends the open session and refuses logins (CONNACK 5); enable lets them in again', async () => {
      const password = await user('u.carol')
      const live = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.ports.mqtt}`, { clientId: 'u.carol:live', username: 'u.carol', password, protocolVersion: 4, reconnectPeriod: 0 })
      const closed = new Promise<void>(resolve => live.once('close', () => resolve()))
      const disabled = await api('POST', '/users/u.carol/disable')
      expect([disabled.status, disabled.json]).toEqual([200, { id: 'u.carol', disabled: true }])
      await closed
      await live.endAsync(true)
      expect(await connackCode(server.ports.mqtt, 'u.carol', password)).toBe(5)
      expect((await api('GET', '/users/u.carol')).json.disabled).toBe(true)
      expect((await api('POST', '/users/u.carol/enable', { body: {} })).json).toEqual({ id: 'u.carol', disabled: false })
      expect(await connackCode(server.ports.mqtt, 'u.carol', password)).toBe(0)
    })

    test('reset: a new password (given or generated) for a user, a new API key for a bot; the old one stops', async () => {
      const old = await user('u.dave')
      const given = await api('POST', '/users/u.dave/reset', { body: { password: 'a-new-password' } })
      expect(given.json).toEqual({ id: 'u.dave', password: 'a-new-password' })
      expect(await connackCode(server.ports.mqtt, 'u.dave', old)).toBe(4)
      const generated = await api('POST', '/users/u.dave/reset')
      expect(await connackCode(server.ports.mqtt, 'u.dave', generated.json.password as string)).toBe(0)
      const key = await api('POST', '/users/u.bot/reset', { body: {} })
      expect(key.json).toEqual({ id: 'u.bot', apiKey: expect.stringMatching(/^mqk_/) })
      expect(await connackCode(server.ports.mqtt, 'u.bot', key.json.apiKey as string)).toBe(0)
      // a bot's secret is a generated API key: a password for it is refused, and nothing changes
      expectError(await api('POST', '/users/u.bot/reset', { body: { password: 'chosen-by-caller' } }), 400, 'BAD_REQUEST', /u\.bot is a bot.*API key/)
      expect(await connackCode(server.ports.mqtt, 'u.bot', key.json.apiKey as string)).toBe(0)
      expect(await connackCode(server.ports.mqtt, 'u.bot', 'chosen-by-caller')).toBe(4)
      // a user's password is held to the rules of user creation
      expectError(await api('POST', '/users/u.dave/reset', { body: { password: 'short' } }), 400, 'BAD_REQUEST', /at least 8/)
      expectError(await api('POST', '/users/u.dave/reset', { body: { password: 'x'.repeat(257) } }), 400, 'BAD_REQUEST')
      expect(await connackCode(server.ports.mqtt, 'u.dave', generated.json.password as string)).toBe(0)
    })

    test('paging: every account exactly once, by id; limit clamped to admin.pageMax; kind filter; bad paging input', async () => {
      for (let i = 0; i < 23; i++) await api('POST', '/users', { body: { id: `p.${String(i).padStart(2, '0')}` } })
      await api('POST', '/bots', { body: { id: 'p.bot' } })
      const walk = async (query: string): Promise<string[][]> => {
        const pages: string[][] = []
        let cursor: string | null = null
        do {
          const res = await api('GET', `/users?${query}${cursor === null ? '' : `&cursor=${cursor}`}`, { token: reader.token })
          expect(res.status).toBe(200)
          pages.push((res.json.users as Json[]).map(u => u.id as string))
          cursor = res.json.next as string | null
        } while (cursor !== null)
        return pages
      }
      const pages = await walk('limit=7')
      const ids = pages.flat()
      expect(new Set(ids).size).toBe(ids.length)
      expect(ids).toEqual([...ids].sort())
      expect(pages.slice(0, -1).every(p => p.length === 7)).toBe(true)
      const all = (await api('GET', '/users?limit=10000')).json
      expect((all.users as Json[]).length).toBe(PAGE_MAX)
      const everyone = (await walk('limit=100')).flat()
      expect(everyone).toEqual(ids)
      expect(everyone).toEqual(expect.arrayContaining(['system', 'u.alice', 'u.bot', 'p.bot', ...Array.from({ length: 23 }, (_, i) => `p.${String(i).padStart(2, '0')}`)]))
      expect((await walk('kind=bot')).flat()).toEqual(['p.bot', 'system', 'u.bot'])
      // a cursor is a position, not an account that must exist
      expect(((await api('GET', '/users?cursor=p.10zz&limit=2')).json.users as Json[]).map(u => u.id)).toEqual(['p.11', 'p.12'])
      for (const query of ['limit=0', 'limit=-1', 'limit=abc', 'limit=1.5', 'cursor=BAD!', 'kind=admin', 'offset=3', 'limit=1&limit=2']) {
        expectError(await api('GET', `/users?${query}`), 400, 'BAD_REQUEST')
      }
    })
  })

  describe('conversations', () => {
    let bob: ImClient
    beforeAll(async () => {
      for (const id of ['c.ann', 'c.bob', 'c.cy', 'c.dee']) await user(id)
      bob = await connect(server, 'c.bob', 'phone', { password: 'password-c.bob' })
    })
    afterAll(async () => { await bob.end() })

    test('create a group with members (as admin.systemUser by default): 201; members get the member event', async () => {
      const created = await api('POST', '/conversations', { body: { name: 'Team', members: ['c.ann', 'c.bob'] } })
      expect(created.status).toBe(201)
      expect(created.json).toEqual({ conv: expect.any(String), name: 'Team', members: ['system', 'c.ann', 'c.bob'] })
      const conv = created.json.conv as string
      await bob.waitFor(() => bob.events.some(e => e.conv === conv && e.action === 'added'), 10_000, 'the member event')
      expect(bob.events.find(e => e.conv === conv)).toMatchObject({ type: 'member', by: 'system', users: ['system', 'c.ann', 'c.bob'], name: 'Team' })
      const got = await api('GET', `/conversations/${conv}`, { token: reader.token })
      expect(got.json).toEqual({ id: conv, kind: 'group', name: 'Team', createdBy: 'system', createdAt: expect.any(Number), memberCount: 3, lastSeq: 0 })
      // as another owner
      const own = await api('POST', '/conversations', { body: { name: 'Ann’s', owner: 'c.ann', members: [] } })
      expect([own.status, own.json.members]).toEqual([201, ['c.ann']])
    })

    test('create: unknown or disabled owner or members, bad input', async () => {
      expectError(await api('POST', '/conversations', { body: { name: 'x', owner: 'c.nobody', members: [] } }), 404, 'NOT_FOUND', /c\.nobody/)
      expectError(await api('POST', '/conversations', { body: { name: 'x', members: ['c.ann', 'c.ghost'] } }), 404, 'NOT_FOUND', /c\.ghost/)
      await user('c.off')
      await api('POST', '/users/c.off/disable')
      expectError(await api('POST', '/conversations', { body: { name: 'x', owner: 'c.off', members: [] } }), 403, 'FORBIDDEN', /disabled/)
      expectError(await api('POST', '/conversations', { body: { name: '', members: [] } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/conversations', { body: { name: 'x', members: 'c.ann' } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/conversations', { body: { name: 'x', members: [], kind: 'direct' } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/conversations', { body: { name: 'x', members: ['BAD'] } }), 400, 'BAD_REQUEST')
    })

    test('get: unknown 404, bad ids 400', async () => {
      expectError(await api('GET', '/conversations/cNoSuchConv'), 404, 'NOT_FOUND', /no such conversation/)
      for (const id of ['a%20b', 'x'.repeat(41), '..%2F..', '%00']) expectError(await api('GET', `/conversations/${id}`), 400, 'BAD_REQUEST')
      expectError(await api('GET', '/conversations/cX/members?limit=0'), 400, 'BAD_REQUEST')
    })

    test('members: paged by user id, each exactly once; add (as the owner by default) and remove', async () => {
      const ids = Array.from({ length: 13 }, (_, i) => `m.${String(i).padStart(2, '0')}`)
      for (const id of ids) await api('POST', '/users', { body: { id } })
      const conv = await group('c.ann', ids.slice(0, 6))
      const added = await api('POST', `/conversations/${conv}/members`, { body: { users: [...ids.slice(4), 'c.bob'] } })
      expect([added.status, added.json]).toEqual([200, { conv, added: [...ids.slice(6), 'c.bob'] }])
      await bob.waitFor(() => bob.events.some(e => e.conv === conv && e.action === 'added' && e.by === 'c.ann'), 10_000, 'the member event')
      const pages: Json[][] = []
      let cursor: string | null = null
      do {
        const res = await api('GET', `/conversations/${conv}/members?limit=4${cursor === null ? '' : `&cursor=${cursor}`}`, { token: reader.token })
        expect(res.status).toBe(200)
        pages.push(res.json.members as Json[])
        cursor = res.json.next as string | null
      } while (cursor !== null)
      expect(pages.map(p => p.length)).toEqual([4, 4, 4, 3])
      expect(pages.flat().map(m => m.user)).toEqual(['c.ann', 'c.bob', ...ids])
      expect(pages.flat()[0]).toEqual({ user: 'c.ann', role: 'owner', joinedAt: expect.any(Number) })

      const removed = await api('DELETE', `/conversations/${conv}/members/m.03`)
      expect([removed.status, removed.json]).toEqual([200, { conv, removed: 'm.03' }])
      expect((await api('GET', `/conversations/${conv}`)).json.memberCount).toBe(14)
      // as a member without the role; the owner; someone not in it; someone unknown
      expectError(await api('DELETE', `/conversations/${conv}/members/m.04?by=m.05`), 403, 'FORBIDDEN')
      expectError(await api('POST', `/conversations/${conv}/members`, { body: { users: ['c.cy'], by: 'm.05' } }), 403, 'FORBIDDEN')
      expectError(await api('DELETE', `/conversations/${conv}/members/c.ann?by=c.ann`), 400, 'BAD_REQUEST')
      expectError(await api('DELETE', `/conversations/${conv}/members/m.03`), 404, 'NOT_FOUND', /not a member/)
      expectError(await api('POST', `/conversations/${conv}/members`, { body: { users: ['c.ghost'] } }), 404, 'NOT_FOUND')
      expectError(await api('POST', `/conversations/${conv}/members`, { body: { users: [] } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', `/conversations/${conv}/members`, { body: { users: ['c.cy'], as: 'c.ann' } }), 400, 'BAD_REQUEST')
      expectError(await api('DELETE', `/conversations/${conv}/members/m.04?force=1`), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/conversations/cNoSuchConv/members', { body: { users: ['c.cy'] } }), 404, 'NOT_FOUND')
      expectError(await api('GET', '/conversations/cNoSuchConv/members'), 404, 'NOT_FOUND')
    })

    test('direct: opened as a bot (201), then found (200); it cannot be changed', async () => {
      const opened = await api('POST', '/conversations/direct', { body: { user: 'system', peer: 'c.cy' } })
      expect([opened.status, opened.json]).toEqual([201, { conv: expect.any(String), peer: 'c.cy', created: true }])
      const again = await api('POST', '/conversations/direct', { body: { user: 'system', peer: 'c.cy' } })
      expect([again.status, again.json.conv, again.json.created]).toEqual([200, opened.json.conv, false])
      expect((await api('GET', `/conversations/${opened.json.conv as string}`)).json).toMatchObject({ kind: 'direct', name: null, memberCount: 2 })
      expectError(await api('POST', `/conversations/${opened.json.conv as string}/members`, { body: { users: ['c.dee'] } }), 403, 'FORBIDDEN', /direct/)
      expectError(await api('POST', '/conversations/direct', { body: { user: 'system', peer: 'system' } }), 400, 'BAD_REQUEST')
      expectError(await api('POST', '/conversations/direct', { body: { user: 'system', peer: 'c.ghost' } }), 404, 'NOT_FOUND')
    })
  })

  describe('sending', () => {
    let dee: ImClient
    let conv: string
    beforeAll(async () => {
      for (const id of ['s.dee', 's.eve', 's.out']) await user(id)
      await api('POST', '/bots', { body: { id: 's.bot' } })
      conv = await group('system', ['s.dee', 's.eve', 's.bot'])
      dee = await connect(server, 's.dee', 'phone', { password: 'password-s.dee' })
    })
    afterAll(async () => { await dee.end() })

    test('an announcement as the system user is stored, delivered to a member over MQTT, and idempotent by msgId', async () => {
      const sent = await api('POST', `/conversations/${conv}/messages`, { token: sender.token, body: { msgId: 'news-1', kind: 'text', body: 'Maintenance at 22:00' } })
      expect([sent.status, sent.json]).toEqual([201, { conv, seq: 1, msgId: 'news-1', ts: expect.any(Number), duplicate: false }])
      await dee.waitFor(() => dee.messages.some(m => m.conv === conv && m.seq === 1), 10_000, 'the announcement')
      expect(dee.messages.find(m => m.conv === conv)).toMatchObject({ conv, seq: 1, msgId: 'news-1', from: 'system', kind: 'text', body: 'Maintenance at 22:00' })

      const again = await api('POST', `/conversations/${conv}/messages`, { token: sender.token, body: { msgId: 'news-1', kind: 'text', body: 'Maintenance at 22:00' } })
      expect([again.status, again.json]).toEqual([200, { conv, seq: 1, msgId: 'news-1', ts: sent.json.ts, duplicate: true }])
      // as a bot and as a user, with a custom body, a reply and a mention
      const bot = await api('POST', `/conversations/${conv}/messages`, { token: sender.token, body: { from: 's.bot', msgId: 'b1', kind: 'custom', body: { card: { title: 'Deploy', ok: true, n: [1, 2] } } } })
      expect([bot.status, bot.json.seq]).toEqual([201, 2])
      const eve = await api('POST', `/conversations/${conv}/messages`, { token: sender.token, body: { from: 's.eve', msgId: 'e1', kind: 'text', body: 'thanks @s.dee', replyTo: 1, mentions: ['s.dee'] } })
      expect([eve.status, eve.json.seq]).toEqual([201, 3])
      await dee.waitFor(() => dee.messages.filter(m => m.conv === conv).length >= 3, 10_000, 'three messages')
      expect(dee.messages.filter(m => m.conv === conv).map(m => [m.seq, m.from, m.msgId])).toEqual([[1, 'system', 'news-1'], [2, 's.bot', 'b1'], [3, 's.eve', 'e1']])
      expect(dee.messages.find(m => m.msgId === 'b1')?.body).toEqual({ card: { title: 'Deploy', ok: true, n: [1, 2] } })
      expect(dee.messages.find(m => m.msgId === 'e1')).toMatchObject({ replyTo: 1, mentions: ['s.dee'] })
      // the history a client pages holds them too
      expect((await dee.request('history', { conv, after: 0 })).messages.map(m => m.msgId)).toEqual(['news-1', 'b1', 'e1'])
      expect((await api('GET', `/conversations/${conv}`)).json.lastSeq).toBe(3)
    })

    test('the sender must be a member, exist and not be disabled; the conversation must exist', async () => {
      expectError(await api('POST', `/conversations/${conv}/messages`, { body: { from: 's.out', msgId: 'x1', kind: 'text', body: 'hi' } }), 403, 'NOT_MEMBER')
      expectError(await api('POST', `/conversations/${conv}/messages`, { body: { from: 's.ghost', msgId: 'x1', kind: 'text', body: 'hi' } }), 404, 'NOT_FOUND', /s\.ghost/)
      expectError(await api('POST', '/conversations/cNoSuchConv/messages', { body: { msgId: 'x1', kind: 'text', body: 'hi' } }), 404, 'NOT_FOUND', /no such conversation/)
      await api('POST', '/users/s.eve/disable')
      expectError(await api('POST', `/conversations/${conv}/messages`, { body: { from: 's.eve', msgId: 'x2', kind: 'text', body: 'hi' } }), 403, 'FORBIDDEN', /disabled/)
      await api('POST', '/users/s.eve/enable')
    })

    test('bad and hostile messages: 400 or 413, nothing stored', async () => {
      const send = async (body: unknown): Promise<Answer> => await api('POST', `/conversations/${conv}/messages`, { token: sender.token, body })
      const before = (await api('GET', `/conversations/${conv}`)).json.lastSeq
      expectError(await send({ msgId: 'h1', kind: 'text', body: '' }), 400, 'BAD_REQUEST', /non-empty string/)
      expectError(await send({ msgId: 'h1', kind: 'text', body: { not: 'text' } }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'h1', kind: 'edit', body: 'x', target: 1 }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'h1', kind: 'text', body: 'x', id: 'req-1' }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'bad id!', kind: 'text', body: 'x' }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'x'.repeat(65), kind: 'text', body: 'x' }), 400, 'BAD_REQUEST')
      expectError(await send({ kind: 'text', body: 'x' }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'h1', kind: 'text', body: 'x', from: 'NOT VALID' }), 400, 'BAD_REQUEST')
      expectError(await send({ msgId: 'h1', kind: 'text', body: 'x', replyTo: 99 }), 400, 'BAD_REQUEST', /beyond the last message/)
      expectError(await send({ msgId: 'h1', kind: 'text', body: 'x', mentions: ['s.out'] }), 400, 'BAD_REQUEST', /not members/)
      expectError(await send({ msgId: 'h1', kind: 'text', body: 'x'.repeat(5000) }), 413, 'TOO_LARGE', /limits\.maxPayloadBytes/)
      expectError(await send({ msgId: 'h1', kind: 'custom', body: 'x'.repeat(70_000) }), 413, 'TOO_LARGE')
      let deep: unknown = 1
      for (let i = 0; i < 40; i++) deep = { d: deep }
      expectError(await send({ msgId: 'h1', kind: 'custom', body: deep }), 400, 'BAD_REQUEST', /nest deeper/)
      expectError(await api('POST', `/conversations/${conv}/messages`, { token: sender.token, raw: '{"msgId":"h1","kind":"custom","body":{},"__proto__":{"from":"s.eve"}}' }), 400, 'BAD_REQUEST', /Unrecognized key: "__proto__"/)
      expectError(await api('POST', `/conversations/${conv}/messages`, { token: sender.token }), 400, 'BAD_REQUEST')
      expect((await api('GET', `/conversations/${conv}`)).json.lastSeq).toBe(before)
    })

    test('in a custom body, constructor and prototype are data and __proto__ is dropped, as over MQTT; nothing is polluted', async () => {
      const raw = '{"keep":1,"constructor":{"prototype":{"x":1}},"prototype":2,"__proto__":{"polluted":true},"nested":{"__proto__":{"polluted":true},"y":2}}'
      const viaApi = await api('POST', `/conversations/${conv}/messages`, { token: sender.token, raw: `{"msgId":"proto-api","kind":"custom","body":${raw}}` })
      expect(viaApi.status).toBe(201)
      const viaMqtt = await dee.request('send', { conv, msgId: 'proto-mqtt', kind: 'custom', body: JSON.parse(raw) as unknown })
      const stored = (await dee.request('history', { conv, after: 0 })).messages
      const bodyOf = (msgId: string): unknown => stored.find(m => m.msgId === msgId)?.body
      const expected = { keep: 1, constructor: { prototype: { x: 1 } }, prototype: 2, nested: { y: 2 } }
      expect([bodyOf('proto-api'), bodyOf('proto-mqtt'), viaMqtt.seq]).toEqual([expected, expected, viaApi.json.seq as number + 1])
      const probe: Record<string, unknown> = {}
      expect([probe.polluted, probe.x]).toEqual([undefined, undefined])
    })

    test('no sender and no admin.systemUser: 400 naming the field (a server without one, reached from a non-loopback address)', async () => {
      const address = externalAddress()
      if (address === undefined) {
        console.warn('no non-loopback IPv4 address on this host: the non-loopback checks are skipped')
        return
      }
      const other = await startServer({ host: address, admin: adminConfig(null) })
      const remote = async (method: string, path: string, options?: Parameters<typeof call>[3]): Promise<Answer> => await call(`http://${address}:${other.ports.http}/admin`, method, path, options)
      try {
        // config tokens work from anywhere; the loopback token does not
        expect((await remote('GET', '/users', { token: reader.token })).status).toBe(200)
        expectError(await remote('GET', '/users', { token: other.adminToken }), 403, 'FORBIDDEN', /loopback only/)
        expectError(await remote('POST', '/users', { token: reader.token, body: { id: 'x1' } }), 403, 'FORBIDDEN', /users:write/)
        expect((await remote('POST', '/users', { body: { id: 'n.one' } })).status).toBe(201)
        const created = await remote('POST', '/conversations', { body: { name: 'no system', owner: 'n.one', members: [] } })
        expect(created.status).toBe(201)
        expectError(await remote('POST', '/conversations', { body: { name: 'x', members: [] } }), 400, 'BAD_REQUEST', /owner: required \(no admin\.systemUser/)
        expectError(await remote('POST', `/conversations/${created.json.conv as string}/messages`, { body: { msgId: 'm1', kind: 'text', body: 'hi' } }), 400, 'BAD_REQUEST', /from: required/)
        expect((await remote('POST', `/conversations/${created.json.conv as string}/messages`, { token: sender.token, body: { from: 'n.one', msgId: 'm1', kind: 'text', body: 'hi' } })).status).toBe(201)
      } finally {
        await other.stop()
      }
    })
  })

  describe('OpenAPI document', () => {
    let doc: Json
    beforeAll(async () => {
      const res = await api('GET', '/openapi.json', { token: sender.token })
      expect(res.status).toBe(200)
      expect(res.headers.get('content-type')).toMatch(/^application\/json/)
      doc = res.json
    })

    test('needs a valid token (any scope)', async () => {
      expectError(await api('GET', '/openapi.json', { token: null }), 401, 'FORBIDDEN')
      expectError(await api('GET', '/openapi.json', { token: 'nope' }), 403, 'FORBIDDEN')
    })

    test('every route registered under /admin is in the document, with its scope, and nothing else is', async () => {
      const app = fastify()
      app.setValidatorCompiler(validatorCompiler)
      app.setSerializerCompiler(serializerCompiler)
      const routes: RouteOptions[] = []
      app.addHook('onRoute', r => { routes.push(r) })
      await app.register(adminRoutes, { prefix: '/admin', services: server.services, token: 'test', revoke: () => {} })
      await app.ready()
      const registered = routes.flatMap(r => [r.method].flat().map(m => `${m} ${r.url.replace(/:([A-Za-z0-9_]+)/g, '{$1}')}`)).sort()
      const paths = doc.paths as Record<string, Record<string, Json>>
      const documented = Object.entries(paths).flatMap(([p, methods]) => Object.keys(methods).map(m => `${m.toUpperCase()} ${p}`)).sort()
      expect(registered.length).toBeGreaterThanOrEqual(14)
      expect(documented).toEqual(registered)
      await app.close()

      expect(doc).toMatchObject({ openapi: '3.1.0', info: { title: 'mqim admin API' }, security: [{ bearer: [] }] })
      expect((doc.components as Json).securitySchemes).toEqual({ bearer: expect.objectContaining({ type: 'http', scheme: 'bearer' }) })
      expect(paths['/admin/users']?.get?.security).toEqual([{ bearer: ['users:read'] }])
      expect(paths['/admin/conversations/{conv}/messages']?.post?.security).toEqual([{ bearer: ['messages:send'] }])
      expect(paths['/admin/openapi.json']?.get?.security).toEqual([{ bearer: [] }])
      for (const [p, methods] of Object.entries(paths)) {
        for (const [m, op] of Object.entries(methods)) {
          const where = `${m} ${p}`
          expect({ where, id: typeof op.operationId }).toEqual({ where, id: 'string' })
          const responses = op.responses as Record<string, Json>
          expect({ where, codes: Object.keys(responses) }).toEqual({ where, codes: expect.arrayContaining(['400', '401', '403', '429', 'default']) })
          expect({ where, retryAfter: (responses['429']?.headers as Json | undefined)?.['Retry-After'] }).toEqual({ where, retryAfter: expect.objectContaining({ schema: { type: 'integer', minimum: 1 } }) })
          const params = (op.parameters ?? []) as Json[]
          for (const name of [...p.matchAll(/\{(\w+)\}/g)].map(x => x[1])) expect({ where, path: params.some(x => x.name === name && x.in === 'path' && x.required === true) }).toEqual({ where, path: true })
        }
      }
    })

    test('request and response schemas come from the zod schemas; every $ref resolves', () => {
      const schemas = (doc.components as { schemas: Record<string, Json> }).schemas
      const paths = doc.paths as Record<string, Record<string, Json>>
      const send = paths['/admin/conversations/{conv}/messages']?.post as Json
      const input = schemas[((send.requestBody as Json).content as Record<string, { schema: { $ref: string } }>)['application/json']?.schema.$ref.split('/').pop() ?? ''] as Json
      expect(input).toMatchObject({ type: 'object', additionalProperties: false, required: ['msgId', 'kind', 'body'] })
      expect((input.properties as Json).kind).toEqual({ type: 'string', enum: ['text', 'custom'] })
      expect(schemas.Error).toMatchObject({ type: 'object', required: ['code', 'message'] })
      expect(schemas.JsonValue).toMatchObject({ anyOf: expect.any(Array) })
      const refs = JSON.stringify(doc).match(/"\$ref":"[^"]*"/g) ?? []
      expect(refs.length).toBeGreaterThan(20)
      for (const r of new Set(refs)) {
        const target = /^"\$ref":"#\/components\/schemas\/([^"]+)"$/.exec(r)?.[1]
        expect({ r, resolves: target !== undefined && schemas[target] !== undefined }).toEqual({ r, resolves: true })
      }
      expect(JSON.stringify(doc)).not.toContain('"$schema"')
    })

    test('real answers carry what the document says they do', async () => {
      const schemas = (doc.components as { schemas: Record<string, Json> }).schemas
      const paths = doc.paths as Record<string, Record<string, Json>>
      const resultSchema = (path: string, method: string, status: string): Json => {
        const ref = ((((paths[path]?.[method]?.responses as Record<string, Json>)[status])?.content as Record<string, { schema: { $ref: string } }>)['application/json']?.schema.$ref ?? '').split('/').pop() ?? ''
        return schemas[ref] as Json
      }
      const check = (schema: Json, value: Json): void => {
        expect(Object.keys(value).sort()).toEqual(expect.arrayContaining((schema.required as string[] | undefined) ?? []))
        for (const key of Object.keys(value)) expect(Object.keys(schema.properties as Json)).toContain(key)
      }
      check(resultSchema('/admin/users', 'get', '200'), (await api('GET', '/users?limit=2')).json)
      check(resultSchema('/admin/users/{id}', 'get', '200'), (await api('GET', '/users/system')).json)
      const error = await api('GET', '/users/nobody')
      check(schemas.Error as Json, error.json)
      expect(((schemas.Error as Json).properties as { code: { enum: string[] } }).code.enum).toContain(error.json.code)
    })
  })
})

/** What the flooding process reports: requests made, seconds taken, answers by status, a few 429s. */
interface Flood { n: number, elapsed: number, statuses: Record<string, number>, refusals: Array<{ json: Json, retryAfter: string | null }> }

/** Sends text messages to URL with TOKEN, CONCURRENCY at a time, for FLOOD_MS; prints a Flood. */
const FLOODER = `
const { URL: url, TOKEN, FLOOD_MS, CONCURRENCY } = process.env
const statuses = {}
const refusals = []
let n = 0
const started = Date.now()
async function loop () {
  while (Date.now() - started < Number(FLOOD_MS)) {
    const res = await fetch(url, { method: 'POST', headers: { authorization: 'Bearer ' + TOKEN, 'content-type': 'application/json' }, body: JSON.stringify({ msgId: 'f' + n++, kind: 'text', body: 'flood' }) })
    const json = await res.json()
    statuses[res.status] = (statuses[res.status] ?? 0) + 1
    if (res.status === 429 && refusals.length < 5) refusals.push({ json, retryAfter: res.headers.get('retry-after') })
  }
}
await Promise.all(Array.from({ length: Number(CONCURRENCY) }, loop))
process.stdout.write(JSON.stringify({ n, elapsed: (Date.now() - started) / 1000, statuses, refusals }))
`

describe('admin HTTP API: per-token rate limit', () => {
  // low enough that the flooder outruns it on a busy machine too (one CI run's flooder made 98
  // requests in 1.5 s: under a bucket of 100/s + 50, so nothing was refused)
  const RATE = 20
  const BURST = 10
  const flooder = newAdminToken()
  const quiet = newAdminToken()
  let server: MqimServer
  let base: string
  let conv: string

  beforeAll(async () => {
    server = await startServer({
      admin: {
        tokens: [
          { name: 'flooder', tokenSha256: flooder.tokenSha256, scopes: ALL_SCOPES },
          { name: 'quiet', tokenSha256: quiet.tokenSha256, scopes: ['users:read'] }
        ],
        systemUser: 'system',
        pageMax: PAGE_MAX,
        requestsPerSecond: RATE,
        requestBurst: BURST
      }
    })
    base = `http://127.0.0.1:${server.ports.http}/admin`
    const loopback = { token: server.adminToken }
    expect((await call(base, 'POST', '/bots', { ...loopback, body: { id: 'system' } })).status).toBe(201)
    conv = (await call(base, 'POST', '/conversations', { ...loopback, body: { name: 'flood', members: [] } })).json.conv as string
  })
  afterAll(async () => { await server.stop() })

  test("one token's flood of sends gets 429 RATE_LIMITED with Retry-After beyond its bucket; another token's requests go through at their usual speed", async () => {
    const quietGet = async (): Promise<{ status: number, ms: number }> => {
      const started = performance.now()
      const res = await call(base, 'GET', '/users/system', { token: quiet.token })
      return { status: res.status, ms: performance.now() - started }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] ?? NaN
    // the quiet token keeps under the same rate (its own bucket): one GET every 60 ms at most
    const pace = async (): Promise<void> => { await new Promise(resolve => setTimeout(resolve, 60)) }
    const baseline: number[] = []
    for (let i = 0; i < 20; i++) {
      baseline.push((await quietGet()).ms)
      await pace()
    }

    // the flood comes from another process (16 requests in flight), as another service's would
    const FLOOD_MS = 1500
    const flood = new Promise<Flood>((resolve, reject) => {
      execFile(process.execPath, ['--input-type=module', '-e', FLOODER], {
        env: { ...process.env, NODE_OPTIONS: '', URL: `${base}/conversations/${conv}/messages`, TOKEN: flooder.token, FLOOD_MS: String(FLOOD_MS), CONCURRENCY: '16' },
        timeout: 30_000
      }, (err, stdout) => { if (err !== null) reject(err); else resolve(JSON.parse(stdout) as Flood) })
    })
    const state = { flooding: true }
    flood.then(() => { state.flooding = false }, () => { state.flooding = false })
    const during: Array<{ status: number, ms: number }> = []
    while (state.flooding) {
      during.push(await quietGet())
      await pace()
    }
    const { n, elapsed, statuses, refusals } = await flood

    const stored = statuses['201'] ?? 0
    const limited = statuses['429'] ?? 0
    console.log(`admin rate limit (${RATE}/s, burst ${BURST}): one token sent ${n} requests in ${elapsed.toFixed(2)} s: ${stored} stored, ${limited} refused 429; ` +
      `another token's GET: median ${median(baseline).toFixed(1)} ms before, ${median(during.map(d => d.ms)).toFixed(1)} ms (max ${Math.max(...during.map(d => d.ms)).toFixed(1)} ms) during the flood, ${during.length} requests`)
    expect(Object.keys(statuses).sort()).toEqual(['201', '429'])
    expect(stored).toBeGreaterThanOrEqual(BURST)
    expect(stored).toBeLessThanOrEqual(BURST + Math.ceil(RATE * elapsed) + 5)
    expect(refusals.length).toBeGreaterThan(0)
    for (const r of refusals) {
      expect(r.json).toEqual({ code: 'RATE_LIMITED', message: expect.stringMatching(/"flooder".*admin\.requestsPerSecond/) })
      expect(r.retryAfter).toMatch(/^[1-9]\d*$/)
    }
    // the other token is never refused, and not slowed beyond noise
    expect(during.length).toBeGreaterThan(10)
    expect(during.every(d => d.status === 200)).toBe(true)
    expect(median(during.map(d => d.ms))).toBeLessThan(Math.max(50, 5 * median(baseline)))
    // the messages that were let through are stored once each, with no gap
    expect((await call(base, 'GET', `/conversations/${conv}`, { token: quiet.token })).status).toBe(403)
    expect((await call(base, 'GET', `/conversations/${conv}`, { token: server.adminToken })).json.lastSeq).toBe(stored)
  })

  test('the bucket refills: after Retry-After the token is let through again', async () => {
    let res: Answer
    let tries = 0
    do res = await call(base, 'GET', '/users/system', { token: flooder.token })
    while (res.status === 200 && ++tries < 4 * BURST)
    expect(res.status).toBe(429)
    const wait = Number(res.headers.get('retry-after'))
    await new Promise(resolve => setTimeout(resolve, wait * 1000))
    expect((await call(base, 'GET', '/users/system', { token: flooder.token })).status).toBe(200)
  })

  test('config: requestsPerSecond and requestBurst are positive integers; defaults 200 and 400', () => {
    expect(loadConfig({ env: {} }).admin).toMatchObject({ requestsPerSecond: 200, requestBurst: 400 })
    expect(() => loadConfig({ env: {}, overrides: { admin: { requestsPerSecond: 0 } } })).toThrow(/admin\.requestsPerSecond/)
    expect(() => loadConfig({ env: {}, overrides: { admin: { requestBurst: 0.5 } } })).toThrow(/admin\.requestBurst/)
  })
})

describe('admin HTTP API: users paging reads the store a page at a time', () => {
  test('each page is one keyset read of limit + 1 users (MetadataStore.userPage); the whole list is never read', async () => {
    const { store, calls } = counted(new MemoryMetadataStore(), 'userPage')
    for (let i = 0; i < 30; i++) await store.userCreate({ id: `k.${String(i).padStart(2, '0')}`, kind: i % 10 === 0 ? 'bot' : 'user', displayName: 'k', secretHash: 'x', disabled: false, createdAt: 1, groupInvites: 'anyone' })
    const server = await startServer({ admin: adminConfig(null) }, { meta: store, messages: new MemoryMessageStore() })
    try {
      calls.clear()
      const base = `http://127.0.0.1:${server.ports.http}/admin`
      const pages: string[][] = []
      let cursor: string | null = null
      do {
        const res = await call(base, 'GET', `/users?limit=7${cursor === null ? '' : `&cursor=${cursor}`}`, { token: reader.token })
        pages.push((res.json.users as Json[]).map(u => u.id as string))
        cursor = res.json.next as string | null
      } while (cursor !== null)
      expect(pages.map(p => p.length)).toEqual([7, 7, 7, 7, 2])
      const bots = await call(base, 'GET', '/users?kind=bot&limit=2', { token: reader.token })
      expect([(bots.json.users as Json[]).map(u => u.id), bots.json.next]).toEqual([['k.00', 'k.10'], 'k.10'])
      expect(Object.fromEntries(calls)).toEqual({ userPage: 6 })
    } finally {
      await server.stop()
    }
  })
})

describe("README's admin API example", () => {
  test('the curl commands create the system bot and a group, and announce into it: a member gets the message', async () => {
    if (spawnSync('curl', ['--version']).status !== 0) {
      console.warn('curl is not installed: the README example is not run')
      return
    }
    const readme = readFileSync(fileURLToPath(new URL('../README.md', import.meta.url)), 'utf8')
    const block = /<!-- admin-api:curl -->\n```sh\n([\s\S]*?)^```$/m.exec(readme)?.[1]
    expect(block).toContain('ADMIN=http://localhost:8080/admin')
    const token = newAdminToken()
    const server = await startServer({ admin: { tokens: [{ name: 'announcer', tokenSha256: token.tokenSha256, scopes: ['users:write', 'conversations:write', 'messages:send'] }], systemUser: 'news' } })
    try {
      await addUser(server, 'alice')
      await addUser(server, 'bob')
      const alice = await connect(server, 'alice', 'laptop')
      const script = (block ?? '').replace('http://localhost:8080/admin', `http://127.0.0.1:${server.ports.http}/admin`)
      const { stdout, stderr } = await new Promise<{ stdout: string, stderr: string }>((resolve, reject) => {
        execFile('bash', ['-euo', 'pipefail', '-c', script], { env: { ...process.env, TOKEN: token.token }, timeout: 30_000 }, (err, out, errOut) => {
          if (err !== null) reject(Object.assign(err, { stdout: out, stderr: errOut }))
          else resolve({ stdout: out, stderr: errOut })
        })
      })
      expect(stderr).toBe('')
      expect(stdout).toMatch(/"user":\{"id":"news","kind":"bot"/)
      expect(stdout).toMatch(/\{"conv":"[A-Za-z0-9_-]+","seq":1,"msgId":"maint-1","ts":\d+,"duplicate":false\}$/)
      await alice.waitFor(() => alice.messages.length > 0, 10_000, 'the announcement')
      expect(alice.messages[0]).toMatchObject({ from: 'news', kind: 'text', body: 'Maintenance tonight at 22:00', seq: 1 })
      await alice.end()
    } finally {
      await server.stop()
    }
  })
})
