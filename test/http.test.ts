/**
 * The HTTP listener against malformed and slow clients, over real sockets: malformed URLs,
 * absolute-form targets, oversized headers and bodies, idle and slow sockets, and the security
 * headers of the page. None of it may take the process down: an MQTT client connected through
 * it all stays connected and answered.
 */
import net from 'node:net'
import { MEMORY } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

/** Sends raw bytes to the HTTP port; resolves with everything the server wrote before closing (or after `waitMs`). */
async function rawHttp (port: number, request: string, waitMs = 3000): Promise<{ text: string, closed: boolean }> {
  return await new Promise((resolve, reject) => {
    const socket = net.connect(port, '127.0.0.1')
    let text = ''
    const timer = setTimeout(() => { socket.destroy(); resolve({ text, closed: false }) }, waitMs)
    socket.on('data', (d: Buffer) => { text += d.toString('latin1') })
    socket.on('error', reject)
    socket.on('close', () => { clearTimeout(timer); resolve({ text, closed: true }) })
    socket.write(request)
  })
}

function statusOf (response: string): number {
  return Number(/^HTTP\/1\.1 (\d{3})/.exec(response)?.[1] ?? 0)
}

describe('HTTP listener', () => {
  let server: MqimServer
  let alice: ImClient
  const REQUEST_TIMEOUT_MS = 1000

  beforeAll(async () => {
    server = await startServer({ http: { requestTimeoutMs: REQUEST_TIMEOUT_MS, keepAliveTimeoutMs: 500, bodyLimitBytes: 4096, maxHeaderBytes: 4096 } }, await MEMORY.make())
    await addUser(server, 'alice')
    alice = await connect(server, 'alice', 'watch', { transport: 'ws' })
  })
  afterAll(async () => {
    await alice.end()
    await server.stop()
  })
  afterEach(async () => {
    // whatever a test did, the server is up and the MQTT-over-WebSocket client is still served
    expect(alice.mqtt.connected).toBe(true)
    expect((await alice.request('list', {})).next).toBeNull()
  })

  test.each([
    ['/%'],
    ['/%E0%A4%A'],
    ['/admin/%zz'],
    ['/admin/users/%zz/disable'],
    ['/%00'],
    ['/..%2f..%2fpackage.json']
  ])('malformed URL %s: a 4xx with {code, message}', async (path) => {
    const { text } = await rawHttp(server.ports.http, `GET ${path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n`)
    const status = statusOf(text)
    expect(status).toBeGreaterThanOrEqual(400)
    expect(status).toBeLessThan(500)
    if (text.includes('\r\n\r\n{')) expect(Object.keys(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)))).toEqual(['code', 'message'])
  })

  test('an absolute-form target with a broken host: 400, not a crash', async () => {
    const { text } = await rawHttp(server.ports.http, 'GET http://[zz/ HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
    expect(statusOf(text)).toBe(400)
  })

  test('headers over maxHeaderBytes: 431 with {code, message}', async () => {
    const { text } = await rawHttp(server.ports.http, `GET / HTTP/1.1\r\nhost: x\r\nx-big: ${'a'.repeat(8000)}\r\nconnection: close\r\n\r\n`)
    expect(statusOf(text)).toBe(431)
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toEqual({ code: 'TOO_LARGE', message: expect.any(String) })
  })

  test('an admin body over bodyLimitBytes: 413 TOO_LARGE (even before the token is checked nothing breaks)', async () => {
    const res = await fetch(`http://127.0.0.1:${server.ports.http}/admin/users`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` },
      body: JSON.stringify({ id: 'x', password: 'p'.repeat(10_000) })
    })
    expect(res.status).toBe(413)
    expect(await res.json()).toEqual({ code: 'TOO_LARGE', message: expect.any(String) })
  })

  test('admin API: wrong token 403; bad JSON 400 BAD_JSON; unknown field 400 BAD_REQUEST', async () => {
    const base = `http://127.0.0.1:${server.ports.http}/admin/users`
    expect((await fetch(base, { headers: { authorization: 'Bearer nope' } })).status).toBe(403)
    const headers = { 'content-type': 'application/json', authorization: `Bearer ${server.adminToken}` }
    const badJson = await fetch(base, { method: 'POST', headers, body: '{"id":' })
    expect([badJson.status, (await badJson.json()).code]).toEqual([400, 'BAD_JSON'])
    const unknown = await fetch(base, { method: 'POST', headers, body: JSON.stringify({ id: 'zed', admin: true }) })
    expect([unknown.status, (await unknown.json()).code]).toEqual([400, 'BAD_REQUEST'])
  })

  test('a socket that sends nothing is closed after requestTimeoutMs', async () => {
    const started = Date.now()
    const { closed } = await rawHttp(server.ports.http, '', 10_000)
    expect(closed).toBe(true)
    expect(Date.now() - started).toBeLessThan(REQUEST_TIMEOUT_MS + 4000)
  })

  test('headers sent a byte at a time (slowloris) are cut off after requestTimeoutMs', async () => {
    const socket = net.connect(server.ports.http, '127.0.0.1')
    const request = 'GET / HTTP/1.1\r\nhost: x\r\n' + 'x-slow: ' + 'a'.repeat(400)
    let i = 0
    const drip = setInterval(() => { if (!socket.destroyed) socket.write(request.charAt(i++ % request.length)) }, 50)
    const closed = await new Promise<boolean>(resolve => {
      const timer = setTimeout(() => resolve(false), 10_000)
      socket.on('close', () => { clearTimeout(timer); resolve(true) })
      socket.on('error', () => {})
    })
    clearInterval(drip)
    socket.destroy()
    expect(closed).toBe(true)
  })

  test('an MQTT-over-WebSocket connection is not subject to the HTTP timeouts', async () => {
    // alice connected before the tests started, several request timeouts ago, and idles between requests
    await new Promise(resolve => setTimeout(resolve, REQUEST_TIMEOUT_MS * 2))
    expect(alice.mqtt.connected).toBe(true)
  })

  test('the page and every response carry security headers', async () => {
    for (const path of ['/', '/healthz', '/nope']) {
      const res = await fetch(`http://127.0.0.1:${server.ports.http}${path}`)
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'")
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
      expect(res.headers.get('referrer-policy')).toBe('no-referrer')
      expect(res.headers.get('x-frame-options')).toBe('DENY')
    }
  })

  test.each([
    ['a bad Sec-WebSocket-Key', 'GET', 'websocket', 'bad', '13', 400],
    ['a POST', 'POST', 'websocket', 'dGhlIHNhbXBsZSBub25jZQ==', '13', 405],
    ['Upgrade: h2c', 'GET', 'h2c', 'dGhlIHNhbXBsZSBub25jZQ==', '13', 400],
    ['version 8', 'GET', 'websocket', 'dGhlIHNhbXBsZSBub25jZQ==', '8', 400]
  ])('a malformed upgrade at /mqtt (%s): %s answered with {code, message} in JSON', async (_what, method, upgrade, key, version, status) => {
    const { text, closed } = await rawHttp(server.ports.http, `${method} /mqtt HTTP/1.1\r\nhost: x\r\nupgrade: ${upgrade}\r\nconnection: Upgrade\r\nsec-websocket-key: ${key}\r\nsec-websocket-version: ${version}\r\n\r\n`)
    expect(statusOf(text)).toBe(status)
    expect(text.toLowerCase()).toContain('content-type: application/json')
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toEqual({ code: 'BAD_REQUEST', message: expect.any(String) })
    expect(closed).toBe(true)
  })

  test('a path out of the page\'s root: 403 FORBIDDEN', async () => {
    const { text } = await rawHttp(server.ports.http, 'GET /..%2fpackage.json HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n')
    expect([statusOf(text), JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4)).code]).toEqual([403, 'FORBIDDEN'])
  })

  test('a WebSocket upgrade anywhere but /mqtt: 404', async () => {
    const { text } = await rawHttp(server.ports.http, 'GET /other HTTP/1.1\r\nhost: x\r\nupgrade: websocket\r\nconnection: Upgrade\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nsec-websocket-version: 13\r\n\r\n')
    expect(statusOf(text)).toBe(404)
    expect(JSON.parse(text.slice(text.indexOf('\r\n\r\n') + 4))).toEqual({ code: 'NOT_FOUND', message: expect.any(String) })
  })
})
