/**
 * The ObjectStore contract on the local-disk store, served by its routes on a real HTTP listener
 * (fastify on port 0), and what is specific to it: uploads streamed with the size bound enforced
 * while streaming, nothing half-written left behind, paths never outside its directory.
 */
import { mkdtempSync, readdirSync, rmSync, writeFileSync, existsSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import http from 'node:http'
import { createHash, randomBytes } from 'node:crypto'
import { fastify, type FastifyInstance } from 'fastify'
import { LocalObjectStore } from '../../src/files/local-store.js'
import { fileRoutes, parseRange } from '../../src/files/routes.js'
import { describeObjectStore } from '../contract/object-store.contract.js'

const SECRET = randomBytes(32)

async function serve (store: LocalObjectStore, uploadsInFlight = 8): Promise<{ app: FastifyInstance, origin: string }> {
  const app = fastify()
  await app.register(fileRoutes, { store, uploadsInFlight })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('no port')
  return { app, origin: `http://127.0.0.1:${address.port}` }
}

describeObjectStore('local disk', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-files-'))
  const store = new LocalObjectStore({ dir, secret: SECRET, publicUrl: '' })
  const { app, origin } = await serve(store)
  return { store, origin, cleanup: async () => { await app.close(); rmSync(dir, { recursive: true, force: true }) } }
})

/** A raw PUT: `chunks` written one by one (chunked, no content-length unless given); the answer's status and body. */
async function rawPut (origin: string, url: string, headers: Record<string, string>, chunks: Buffer[]): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const req = http.request(new URL(url, origin), { method: 'PUT', headers }, (res) => {
      let body = ''
      res.setEncoding('utf8')
      res.on('data', (c: string) => { body += c })
      res.on('end', () => { resolve({ status: res.statusCode ?? 0, body }) })
    })
    req.on('error', reject)
    let i = 0
    const next = (): void => {
      if (i >= chunks.length) { req.end(); return }
      const ok = req.write(chunks[i++])
      if (ok) setImmediate(next)
      else req.once('drain', next)
    }
    next()
  })
}

describe('local object store specifics', () => {
  let dir: string
  let store: LocalObjectStore
  let app: FastifyInstance
  let origin: string

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mqim-files-'))
    store = new LocalObjectStore({ dir, secret: SECRET, publicUrl: '' })
    await store.init();
    ({ app, origin } = await serve(store, 2))
  })

  afterEach(async () => {
    await app.close()
    rmSync(dir, { recursive: true, force: true })
  })

  const tmpFiles = (): string[] => readdirSync(path.join(dir, 'tmp'))
  /** tmp/ once the server has noticed an abort and removed its file (a socket event, then an async rm), or after 5 s. */
  const tmpFilesSettled = async (): Promise<string[]> => {
    for (const until = Date.now() + 5000; tmpFiles().length > 0 && Date.now() < until;) await new Promise(resolve => setTimeout(resolve, 20))
    return tmpFiles()
  }

  test('an oversize body without content-length is refused while streaming (413), and nothing is left in tmp/ or in place', async () => {
    const key = 'f/oversizeoversize01'
    const up = await store.uploadUrl(key, { size: 100_000, mime: 'application/pdf', meta: {}, expiresAt: Date.now() + 60_000 })
    // 64 chunks of 64 KiB (4 MiB) are offered; the server stops reading after the first 100,000 bytes
    const chunks = Array.from({ length: 64 }, () => randomBytes(65536))
    const res = await rawPut(origin, up.url, { 'content-type': 'application/pdf', 'transfer-encoding': 'chunked' }, chunks).catch((err: Error) => ({ status: -1, body: err.message }))
    // either the 413 arrived, or the server closed the socket on the rest of the body first
    if (res.status !== -1) {
      expect(res.status).toBe(413)
      expect(JSON.parse(res.body)).toMatchObject({ code: 'TOO_LARGE' })
    }
    expect(await store.head(key)).toBeNull()
    expect(await tmpFilesSettled()).toEqual([])
    expect(existsSync(store.pathOf(key))).toBe(false)
  })

  test('a content-length above the signed size is refused before the body is read', async () => {
    const key = 'f/declaredtoolarge01'
    const up = await store.uploadUrl(key, { size: 10, mime: 'text/plain', meta: {}, expiresAt: Date.now() + 60_000 })
    const res = await fetch(new URL(up.url, origin), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: new Uint8Array(11) })
    expect(res.status).toBe(413)
    expect(await store.head(key)).toBeNull()
  })

  test('an upload cut off half-way leaves nothing (no object, no temporary file)', async () => {
    const key = 'f/cutoffcutoffcut01'
    const up = await store.uploadUrl(key, { size: 1_000_000, mime: 'text/plain', meta: {}, expiresAt: Date.now() + 60_000 })
    await new Promise<void>((resolve) => {
      const req = http.request(new URL(up.url, origin), { method: 'PUT', headers: { 'content-type': 'text/plain', 'content-length': '1000000' } })
      req.on('error', () => { resolve() })
      req.write(randomBytes(300_000), () => { setTimeout(() => { req.destroy(); resolve() }, 50) })
    })
    expect(await tmpFilesSettled()).toEqual([])
    expect(await store.head(key)).toBeNull()
  })

  test('the announced sha256 is checked; a second upload to the same key is refused (409)', async () => {
    const key = 'f/checksumchecksum01'
    const bytes = randomBytes(5000)
    const wrong = await store.uploadUrl(key, { size: bytes.length, mime: 'text/plain', meta: {}, sha256: createHash('sha256').update('other').digest('hex'), expiresAt: Date.now() + 60_000 })
    const r1 = await fetch(new URL(wrong.url, origin), { method: 'PUT', headers: wrong.headers, body: new Uint8Array(bytes) })
    expect(r1.status).toBe(400)
    expect(await store.head(key)).toBeNull()
    const right = await store.uploadUrl(key, { size: bytes.length, mime: 'text/plain', meta: {}, sha256: createHash('sha256').update(bytes).digest('hex').toUpperCase(), expiresAt: Date.now() + 60_000 })
    expect((await fetch(new URL(right.url, origin), { method: 'PUT', headers: right.headers, body: new Uint8Array(bytes) })).status).toBe(201)
    const again = await fetch(new URL(right.url, origin), { method: 'PUT', headers: right.headers, body: new Uint8Array(randomBytes(bytes.length)) })
    expect(again.status).toBe(409)
    expect((await store.read(key, 10_000))?.equals(bytes)).toBe(true)
  })

  test('path traversal in the URL never reaches outside the directory', async () => {
    writeFileSync(path.join(dir, 'secret.txt'), 'top secret')
    const key = 'f/traversaltravers01'
    await store.put(key, Buffer.from('ok'), { mime: 'text/plain', meta: {} })
    const good = await store.downloadUrl(key, { expiresAt: Date.now() + 60_000, mime: 'text/plain', name: 'x', disposition: 'attachment' })
    const query = good.slice(good.indexOf('?'))
    for (const p of ['/files/../secret.txt', '/files/f/..%2F..%2Fsecret.txt', '/files/f/%2e%2e%2fsecret.txt', '/files/..%2F/secret.txt', '/files/f/traversaltravers01%2F..%2F..%2Fsecret.txt', '/files/tmp/..', '/files/f/traversaltravers01.json']) {
      const res = await fetch(origin + p + query)
      expect([400, 403, 404]).toContain(res.status)
      expect(await res.text()).not.toContain('top secret')
    }
    // a grant signed for a hostile key cannot even be made
    await expect(store.downloadUrl('f/../../secret.txt', { expiresAt: Date.now() + 60_000, mime: 'text/plain', name: 'x', disposition: 'attachment' })).rejects.toThrow()
  })

  test('served files are sandboxed: attachment or inline as granted, nosniff, CSP sandbox', async () => {
    const key = 'f/sandboxsandbox001'
    await store.put(key, Buffer.from('<script>alert(1)</script>'), { mime: 'text/html', meta: {} })
    const url = await store.downloadUrl(key, { expiresAt: Date.now() + 60_000, mime: 'text/html', name: 'x.html', disposition: 'attachment' })
    const res = await fetch(new URL(url, origin))
    expect(res.status).toBe(200)
    expect(res.headers.get('content-security-policy')).toContain('sandbox')
    expect(res.headers.get('x-content-type-options')).toBe('nosniff')
    expect(res.headers.get('content-disposition')).toMatch(/^attachment/)
  })

  test('uploads at once are bounded (503 beyond); a URL without a signature is 403', async () => {
    const ups = await Promise.all([0, 1, 2].map(async i => await store.uploadUrl(`f/inflightinflight0${i}`, { size: 200_000, mime: 'text/plain', meta: { owner: `u${i}` }, expiresAt: Date.now() + 60_000 })))
    const held: http.ClientRequest[] = []
    for (const up of ups.slice(0, 2)) {
      const req = http.request(new URL(up.url, origin), { method: 'PUT', headers: { 'content-type': 'text/plain', 'content-length': '200000' } })
      req.on('error', () => {})
      req.write(Buffer.alloc(1000))
      held.push(req)
    }
    await new Promise(resolve => setTimeout(resolve, 200))
    const third = await fetch(new URL(ups[2]?.url ?? '', origin), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: new Uint8Array(200_000) })
    expect(third.status).toBe(503)
    for (const r of held) r.destroy()
    expect((await fetch(`${origin}/files/f/inflightinflight00`)).status).toBe(403)
  })

  test('one body per upload at a time (409), a share of the places per user (429), nothing left in tmp/', async () => {
    const up = async (key: string, owner: string, size = 100_000): Promise<string> => (await store.uploadUrl(key, { size, mime: 'text/plain', meta: { owner }, expiresAt: Date.now() + 60_000 })).url
    const hold = (url: string, size = 100_000): http.ClientRequest => {
      const req = http.request(new URL(url, origin), { method: 'PUT', headers: { 'content-type': 'text/plain', 'content-length': String(size) } })
      req.on('error', () => {})
      req.write(Buffer.alloc(10))
      return req
    }
    const same = await up('f/samekeysamekey01', 'eve')
    const first = hold(same)
    await new Promise(resolve => setTimeout(resolve, 200))
    // a second body for the same URL while the first streams
    const second = await fetch(new URL(same, origin), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: new Uint8Array(100_000) })
    expect(second.status).toBe(409)
    // eve's share of the places (8 / 16, at least 1) is taken; bob's upload goes through
    const eveAgain = await fetch(new URL(await up('f/samekeysamekey02', 'eve'), origin), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: new Uint8Array(100_000) })
    expect(eveAgain.status).toBe(429)
    expect(await eveAgain.json()).toMatchObject({ code: 'RATE_LIMITED' })
    const bobs = await fetch(new URL(await up('f/samekeysamekey03', 'bob'), origin), { method: 'PUT', headers: { 'content-type': 'text/plain' }, body: new Uint8Array(100_000) })
    expect(bobs.status).toBe(201)
    first.destroy()
    expect(await tmpFilesSettled()).toEqual([])
  })

  test('a body that trickles is cut after its window', async () => {
    const url = (await store.uploadUrl('f/tricklertrickler1', { size: 100_000, mime: 'text/plain', meta: { owner: 'slow' }, expiresAt: Date.now() + 60_000 })).url
    const status = await new Promise<number>((resolve) => {
      const req = http.request(new URL(url, origin), { method: 'PUT', headers: { 'content-type': 'text/plain', 'content-length': '100000' } }, res => { resolve(res.statusCode ?? 0); res.resume() })
      req.on('error', () => { resolve(-1) })
      const timer = setInterval(() => { req.write(Buffer.alloc(1)) }, 1000)
      req.on('close', () => { clearInterval(timer) })
      setTimeout(() => { clearInterval(timer) }, 15_000)
    })
    // cut: an answer (400) or the connection closed
    expect([400, -1]).toContain(status)
    expect(tmpFiles()).toEqual([])
  }, 20_000)

  test('init() removes what a crash left in tmp/', async () => {
    writeFileSync(path.join(dir, 'tmp', 'leftover'), 'half')
    await store.init()
    expect(tmpFiles()).toEqual([])
  })

  test('parseRange', () => {
    expect(parseRange(undefined, 100)).toBeNull()
    expect(parseRange('bytes=0-9', 100)).toEqual([0, 9])
    expect(parseRange('bytes=90-', 100)).toEqual([90, 99])
    expect(parseRange('bytes=-5', 100)).toEqual([95, 99])
    expect(parseRange('bytes=50-1000', 100)).toEqual([50, 99])
    expect(parseRange('bytes=100-', 100)).toBe('unsatisfiable')
    expect(parseRange('bytes=5-2', 100)).toBe('unsatisfiable')
    expect(parseRange('bytes=0-1,5-6', 100)).toBeNull()
    expect(parseRange('items=0-1', 100)).toBeNull()
  })
})
