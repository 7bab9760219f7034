/**
 * The ObjectStore contract: every adapter runs this one suite (test/files-local-store.test.ts,
 * test/files-s3-store.test.ts), through the ObjectStore interface and real HTTP requests to the
 * URLs it hands out, never by looking at the disk or bucket behind it.
 *
 * The factory returns a new, empty store that has not been initialized yet, and the origin that
 * relative URLs are resolved against.
 */
import { randomBytes } from 'node:crypto'
import { BadObjectKeyError, ObjectTooLargeError, type ObjectStore } from '../../src/files/object-store.js'

export type ObjectStoreFactory = () => Promise<{ store: ObjectStore, origin: string, cleanup?: () => Promise<void> }>

function newKey (prefix = 'f'): string {
  return `${prefix}/${randomBytes(12).toString('base64url')}`
}

const HOSTILE_KEYS = ['../etc/passwd', 'f/../../../etc/passwd', 'f/..%2F..%2Fetc', '/etc/passwd', 'f/short', '', 'f/' + 'a'.repeat(65), 'F/abcdefghijklmnopqrst', 'f/abcdefghijklmnop/x', 'f/abcdefghijklmnop\u0000', 'f\\abcdefghijklmnopqrst']

export function describeObjectStore (name: string, factory: ObjectStoreFactory): void {
  describe(`ObjectStore contract: ${name}`, () => {
    let store: ObjectStore
    let origin: string
    let cleanup: (() => Promise<void>) | undefined

    beforeEach(async () => {
      const made = await factory()
      store = made.store
      origin = made.origin
      cleanup = made.cleanup
      await store.init()
    })

    afterEach(async () => {
      await store.close()
      await cleanup?.()
    })

    const abs = (url: string): string => new URL(url, origin).toString()

    async function upload (key: string, bytes: Buffer, opts: { size?: number, mime?: string, sendMime?: string, meta?: Record<string, string>, expiresAt?: number, headers?: Record<string, string>, mangle?: (url: string) => string } = {}): Promise<Response> {
      const mime = opts.mime ?? 'application/octet-stream'
      const up = await store.uploadUrl(key, { size: opts.size ?? bytes.length, mime, meta: opts.meta ?? { owner: 'alice' }, expiresAt: opts.expiresAt ?? Date.now() + 60_000 })
      expect(up.method).toBe('PUT')
      const headers = { ...up.headers, ...opts.headers }
      if (opts.sendMime !== undefined) headers['content-type'] = opts.sendMime
      return await fetch(abs((opts.mangle ?? (u => u))(up.url)), { method: 'PUT', headers, body: new Uint8Array(bytes) })
    }

    async function download (key: string, opts: { expiresAt?: number, range?: string, mangle?: (url: string) => string } = {}): Promise<Response> {
      const url = await store.downloadUrl(key, { expiresAt: opts.expiresAt ?? Date.now() + 60_000, mime: 'image/png', name: 'naïve photo "1".png', disposition: 'inline' })
      return await fetch(abs((opts.mangle ?? (u => u))(url)), opts.range === undefined ? {} : { headers: { range: opts.range } })
    }

    test('a PUT to the upload URL stores the object with its type and metadata; the download URL serves it, whole and by range', async () => {
      const key = newKey()
      const bytes = randomBytes(70_000)
      const res = await upload(key, bytes, { mime: 'image/png', meta: { owner: 'alice', conv: 'c1', name: 'a%20b.png' } })
      expect(res.status).toBeLessThan(300)
      const info = await store.head(key)
      expect(info).toMatchObject({ key, size: bytes.length, mime: 'image/png', meta: { owner: 'alice', conv: 'c1', name: 'a%20b.png' } })
      expect(info?.modified).toBeGreaterThan(Date.now() - 120_000)
      const got = await download(key)
      expect(got.status).toBe(200)
      expect(got.headers.get('content-type')).toBe('image/png')
      expect(got.headers.get('content-disposition')).toContain('inline')
      expect(Buffer.from(await got.arrayBuffer()).equals(bytes)).toBe(true)
      const part = await download(key, { range: 'bytes=100-199' })
      expect(part.status).toBe(206)
      expect(part.headers.get('content-range')).toBe(`bytes 100-199/${bytes.length}`)
      expect(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(100, 200))).toBe(true)
      const tail = await download(key, { range: 'bytes=-10' })
      expect(tail.status).toBe(206)
      expect(Buffer.from(await tail.arrayBuffer()).equals(bytes.subarray(bytes.length - 10))).toBe(true)
      expect((await store.read(key, bytes.length))?.equals(bytes)).toBe(true)
    })

    test('a body longer than the signed size, shorter, or of another type is refused and leaves no object', async () => {
      const longer = newKey()
      const r1 = await upload(longer, randomBytes(2000), { size: 1000 })
      expect(r1.status).toBeGreaterThanOrEqual(400)
      expect(await store.head(longer)).toBeNull()
      const shorter = newKey()
      const r2 = await upload(shorter, randomBytes(500), { size: 1000 }).catch(() => null)
      expect(r2 === null || r2.status >= 400).toBe(true)
      expect(await store.head(shorter)).toBeNull()
      const typed = newKey()
      const r3 = await upload(typed, randomBytes(100), { mime: 'image/png', sendMime: 'text/html' })
      expect(r3.status).toBeGreaterThanOrEqual(400)
      expect(await store.head(typed)).toBeNull()
    })

    test('a tampered upload URL, one of another key, or an expired one is refused', async () => {
      const key = newKey()
      const bytes = randomBytes(100)
      // one character of the signature changed
      const tampered = await upload(key, bytes, { mangle: u => u.replace(/(Signature=|[?&]s=)([0-9a-f])/, (_m, a: string, c: string) => a + (c === '0' ? '1' : '0')) })
      expect(tampered.status).toBe(403)
      // the same signed query on another key
      const other = newKey()
      const up = await store.uploadUrl(key, { size: 100, mime: 'application/octet-stream', meta: { owner: 'alice' }, expiresAt: Date.now() + 60_000 })
      const moved = await fetch(abs(up.url.replace(key, other)), { method: 'PUT', headers: up.headers, body: new Uint8Array(bytes) })
      expect(moved.status).toBe(403)
      expect(await store.head(other)).toBeNull()
      // expired (a presigned URL lives whole seconds)
      const expiring = await store.uploadUrl(key, { size: 100, mime: 'application/octet-stream', meta: { owner: 'alice' }, expiresAt: Date.now() + 1000 })
      await new Promise(resolve => setTimeout(resolve, 2500))
      const late = await fetch(abs(expiring.url), { method: 'PUT', headers: expiring.headers, body: new Uint8Array(bytes) })
      expect(late.status).toBe(403)
      expect(await store.head(key)).toBeNull()
    })

    test('metadata other than what was signed is refused', async () => {
      const key = newKey()
      const up = await store.uploadUrl(key, { size: 10, mime: 'text/plain', meta: { owner: 'alice' }, expiresAt: Date.now() + 60_000 })
      const headers: Record<string, string> = { ...up.headers }
      for (const h of Object.keys(headers)) if (h.startsWith('x-amz-meta-')) headers[h] = 'mallory'
      const res = await fetch(abs(up.url), { method: 'PUT', headers, body: new Uint8Array(10) })
      // where metadata is a header it must match the signature; where it is in the signed URL, headers change nothing
      if (res.status < 300) expect((await store.head(key))?.meta.owner).toBe('alice')
      else expect(await store.head(key)).toBeNull()
    })

    test('a download URL that is tampered with, expired, or for a missing object is refused', async () => {
      const key = newKey()
      await store.put(key, Buffer.from('hello'), { mime: 'text/plain', meta: {} })
      expect((await download(key, { mangle: u => u.replace(/(Signature=|[?&]s=)([0-9a-f])/, (_m, a: string, c: string) => a + (c === '0' ? '1' : '0')) })).status).toBe(403)
      const url = await store.downloadUrl(key, { expiresAt: Date.now() + 1000, mime: 'text/plain', name: 'x.txt', disposition: 'attachment' })
      await new Promise(resolve => setTimeout(resolve, 2500))
      expect((await fetch(abs(url))).status).toBe(403)
      const missing = newKey()
      expect((await download(missing)).status).toBe(404)
    })

    test('put, head, read, stream, delete and list through the interface', async () => {
      const keys = [newKey(), newKey(), newKey()].sort()
      for (const [i, key] of keys.entries()) await store.put(key, Buffer.from(`object ${i}`), { mime: 'text/plain', meta: { n: String(i) } })
      await store.put(newKey('t'), Buffer.from('thumb'), { mime: 'image/webp', meta: {} })
      expect(await store.head(keys[0] as string)).toMatchObject({ size: 8, mime: 'text/plain', meta: { n: '0' } })
      expect((await store.read(keys[1] as string, 100))?.toString()).toBe('object 1')
      await expect(store.read(keys[1] as string, 3)).rejects.toBeInstanceOf(ObjectTooLargeError)
      const s = await store.stream(keys[2] as string)
      const chunks: Buffer[] = []
      for await (const c of s ?? []) chunks.push(c as Buffer)
      expect(Buffer.concat(chunks).toString()).toBe('object 2')
      const first = await store.list('f/', null, 2)
      expect(first.items.map(i => i.key)).toEqual(keys.slice(0, 2))
      expect(first.next).not.toBeNull()
      const second = await store.list('f/', first.next, 2)
      expect(second.items.map(i => i.key)).toEqual(keys.slice(2))
      expect(second.next).toBeNull()
      expect(second.items[0]?.size).toBe(8)
      await store.delete([keys[0] as string, newKey()])
      expect(await store.head(keys[0] as string)).toBeNull()
      expect(await store.read(keys[0] as string, 100)).toBeNull()
      expect(await store.stream(keys[0] as string)).toBeNull()
      expect((await store.list('f/', null, 10)).items.map(i => i.key)).toEqual(keys.slice(1))
    })

    test('keys that are not the server\'s own form are refused by every method', async () => {
      for (const key of HOSTILE_KEYS) {
        await expect(store.head(key)).rejects.toBeInstanceOf(BadObjectKeyError)
        await expect(store.put(key, Buffer.from('x'), { mime: 'text/plain', meta: {} })).rejects.toBeInstanceOf(BadObjectKeyError)
        await expect(store.read(key, 10)).rejects.toBeInstanceOf(BadObjectKeyError)
        await expect(store.delete([key])).rejects.toBeInstanceOf(BadObjectKeyError)
        await expect(store.uploadUrl(key, { size: 1, mime: 'text/plain', meta: {}, expiresAt: Date.now() + 1000 })).rejects.toBeInstanceOf(BadObjectKeyError)
        await expect(store.downloadUrl(key, { mime: 'text/plain', name: 'x', disposition: 'attachment', expiresAt: Date.now() + 1000 })).rejects.toBeInstanceOf(BadObjectKeyError)
      }
      await expect(store.list('../', null, 10)).rejects.toThrow()
    })
  })
}
