/**
 * GET /metrics (Prometheus text format) on a real server: the series move with real traffic over
 * TCP and WebSocket (requests by operation and code, deliveries, commit latency and batch sizes,
 * store operations, connections by transport, process metrics); who may scrape (loopback, or the
 * bearer token from elsewhere: 127.0.0.2 is another address to the server); metrics switched off.
 */
import http from 'node:http'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import { valueOf } from './helpers/metrics.js'

const TOKEN = 'scrape-token-0123456789'
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')

/** GET /metrics from `localAddress`, with an optional Authorization header. */
async function scrape (server: MqimServer, options: { localAddress?: string, auth?: string } = {}): Promise<{ status: number, type: string, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = http.get({ host: '127.0.0.1', port: server.ports.http, path: '/metrics', localAddress: options.localAddress, headers: options.auth === undefined ? {} : { authorization: options.auth } }, res => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { body += chunk })
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }))
    })
    req.on('error', reject)
  })
}

describe('metrics', () => {
  let server: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    server = await startServer({ metrics: { enabled: true, token: TOKEN } })
    for (const u of ['alice', 'bob']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await server.stop()
  })

  test('the series move with traffic: requests by op and code, deliveries, commits, store operations, connections', async () => {
    const before = await scrape(server)
    expect(before.status).toBe(200)
    expect(before.type).toMatch(/^text\/plain; version=0\.0\.4/)
    const alice = await connect(server, 'alice', 'tcp', { transport: 'tcp' })
    const bob = await connect(server, 'bob', 'ws', { transport: 'ws' })
    clients.push(alice, bob)
    const { conv } = await alice.request('direct', { user: 'bob' })
    for (let i = 0; i < 10; i++) await alice.request('send', { conv, msgId: `m${i}`, kind: 'text', body: `hi ${i}` })
    await bob.waitFor(() => bob.messages.length === 10, 5000, 'bob gets 10')
    expect((await bob.requestRaw('send', { conv: 'c-nope', msgId: 'x', kind: 'text', body: 'x' })).ok).toBe(false)
    expect((await bob.requestRaw('no-such-op', {})).ok).toBe(false)

    const { body } = await scrape(server)
    const requests = (op: string, code: string): number | undefined => valueOf(body, `mqim_requests_total{op="${op}",code="${code}"}`)
    expect(requests('send', 'ok')).toBe(10)
    expect(requests('direct', 'ok')).toBe(1)
    expect(requests('send', 'NOT_MEMBER')).toBe(1)
    // an unknown operation name is not a label value of its own
    expect(requests('unknown', 'UNKNOWN_OP')).toBe(1)
    expect(body).not.toContain('no-such-op')
    // one node: no Redis, no subscription repairs (those series are a cluster's)
    expect(body).not.toContain('mqim_subscription_repair')
    expect(body).not.toContain('mqim_clock_offset_seconds')
    // 10 messages to both members of a direct conversation
    expect(valueOf(body, 'mqim_deliveries_total')).toBe(20)
    expect(valueOf(body, 'mqim_send_commit_seconds_count')).toBe(10)
    // counts are added to the counters when scraped: a second scrape with no traffic adds nothing,
    // one after more traffic adds exactly that
    const again = (await scrape(server)).body
    expect(valueOf(again, 'mqim_requests_total{op="send",code="ok"}')).toBe(10)
    expect(valueOf(again, 'mqim_deliveries_total')).toBe(20)
    for (let i = 10; i < 13; i++) await alice.request('send', { conv, msgId: `m${i}`, kind: 'text', body: `hi ${i}` })
    await bob.waitFor(() => bob.messages.length === 13, 5000, 'bob gets 13')
    const later = (await scrape(server)).body
    expect(valueOf(later, 'mqim_requests_total{op="send",code="ok"}')).toBe(13)
    expect(valueOf(later, 'mqim_deliveries_total')).toBe(26)
    expect(valueOf(body, 'mqim_commit_batch_entries_sum')).toBe(10)
    expect(valueOf(body, 'mqim_store_operation_seconds_count{store="messages",op="insertBatch"}')).toBeGreaterThanOrEqual(1)
    expect(valueOf(body, 'mqim_store_operation_seconds_count{store="meta",op="conversationCreate"}')).toBe(1)
    expect(valueOf(body, 'mqim_connections{transport="tcp"}')).toBe(1)
    expect(valueOf(body, 'mqim_connections{transport="ws"}')).toBe(1)
    expect(valueOf(body, 'mqim_sessions')).toBe(2)
    expect(valueOf(body, 'mqim_slow_consumers_cut_total')).toBe(0)
    // Node's own, prefixed
    expect(valueOf(body, 'mqim_process_resident_memory_bytes')).toBeGreaterThan(0)
    expect(body).toContain('mqim_nodejs_eventloop_lag_seconds')

    await bob.end()
    clients.splice(clients.indexOf(bob), 1)
    const after = await scrape(server)
    for (let i = 0; i < 50 && valueOf(after.body, 'mqim_connections{transport="ws"}') !== 0; i++) {
      await new Promise(resolve => setTimeout(resolve, 50))
      after.body = (await scrape(server)).body
    }
    expect(valueOf(after.body, 'mqim_connections{transport="ws"}')).toBe(0)
  })

  test('every series the Grafana dashboard (deploy/grafana-dashboard.json) queries is served', async () => {
    const dashboard = JSON.parse(readFileSync(path.join(ROOT, 'deploy', 'grafana-dashboard.json'), 'utf8')) as { panels: Array<{ targets: Array<{ expr: string }> }> }
    const used = new Set(dashboard.panels.flatMap(p => p.targets.flatMap(t => t.expr.match(/mqim_[a-z0-9_]+/g) ?? [])))
    expect(used.size).toBeGreaterThanOrEqual(10)
    const { body } = await scrape(server)
    const served = new Set(body.split('\n').filter(l => l.startsWith('# TYPE ')).map(l => l.split(' ')[2]))
    const missing = [...used].filter(name => !served.has(name) && !served.has(name.replace(/_(bucket|sum|count)$/, '')))
    expect(missing).toEqual([])
  })

  test('who may scrape: loopback; elsewhere only with the bearer token', async () => {
    expect((await scrape(server, { localAddress: '127.0.0.2' })).status).toBe(403)
    const wrong = await scrape(server, { localAddress: '127.0.0.2', auth: `Bearer ${TOKEN}x` })
    expect(wrong.status).toBe(403)
    expect(JSON.parse(wrong.body)).toMatchObject({ code: 'FORBIDDEN' })
    expect((await scrape(server, { localAddress: '127.0.0.2', auth: TOKEN })).status).toBe(403)
    const ok = await scrape(server, { localAddress: '127.0.0.2', auth: `Bearer ${TOKEN}` })
    expect(ok.status).toBe(200)
    expect(ok.body).toContain('mqim_requests_total')
  })

  test('a token shorter than 16 characters fails at start-up naming the field', async () => {
    await expect(startServer({ metrics: { enabled: true, token: 'short' } })).rejects.toThrow(/metrics\.token/)
  })

  test('switched off: /metrics answers 404 and the stores are not wrapped', async () => {
    const stores = { meta: new MemoryMetadataStore(), messages: new MemoryMessageStore() }
    const off = await startServer({ metrics: { enabled: false, token: null } }, stores)
    try {
      const r = await scrape(off)
      expect(r.status).toBe(404)
      expect(off.services.messages).toBe(stores.messages)
      expect(off.services.meta).toBe(stores.meta)
    } finally {
      await off.stop()
    }
  })
})
