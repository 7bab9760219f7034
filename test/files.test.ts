/**
 * Attachments end to end (issue 12): real mqtt.js clients over TCP, real HTTP uploads and
 * downloads, on both stores: local disk with the in-memory message and metadata stores (the
 * embedded default), and SeaweedFS S3 with FerretDB + MariaDB.
 */
import { randomBytes, createHash } from 'node:crypto'
import sharp from 'sharp'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'
import { MEMORY, DATABASES, type Backend } from './helpers/backends.js'
import { s3Options } from './helpers/s3.js'
import type { MqimServer } from '../src/server.js'
import type { FileDescriptor, UploadGrant } from '../src/files/service.js'
import type { MessageEnvelope } from '../src/protocol/schemas.js'

interface Setup { name: string, backend: Backend, files: () => Record<string, unknown>, /** mqim serves /files/ itself */ filesRoute: boolean }

const SETUPS: Setup[] = [
  { name: 'local disk, embedded stores', backend: MEMORY, files: () => ({ store: { adapter: 'local' } }), filesRoute: true },
  {
    name: 'SeaweedFS S3, FerretDB + MariaDB',
    backend: DATABASES,
    filesRoute: false,
    files: () => {
      const o = s3Options(`mqimt-${randomBytes(6).toString('hex')}`)
      return { store: { adapter: 's3', bucket: o.bucket, region: o.region, endpoint: o.endpoint, forcePathStyle: true, accessKeyId: o.accessKeyId, secretAccessKey: o.secretAccessKey, createBucket: true } }
    }
  }
]

/** A PNG of w × h carrying EXIF with GPS coordinates. */
async function pngWithGps (w: number, h: number): Promise<Buffer> {
  return await sharp({ create: { width: w, height: h, channels: 3, background: { r: 200, g: 40, b: 90 } } })
    .withExif({ IFD0: { Make: 'TestCam', Model: 'Secret Model' }, IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '48/1 51/1 2400/100', GPSLongitudeRef: 'E', GPSLongitude: '2/1 21/1 300/100' } })
    .png().toBuffer()
}

describe.each(SETUPS)('attachments on $name', ({ backend, files, filesRoute }) => {
  let server: MqimServer
  let alice: ImClient
  let bob: ImClient
  let carol: ImClient
  let conv: string
  let carolConv: string
  let origin: string

  beforeAll(async () => {
    server = await startServer({ files: { ...files(), maxFileBytes: 3_000_000, bytesPerUserPerDay: 20_000_000, urlTtlMs: 60_000, unreferencedTtlMs: 1500, sweepIntervalMs: 3_600_000, allowedTypes: ['image/*', 'application/pdf', 'text/plain'] } }, await backend.make())
    for (const u of ['alice', 'bob', 'carol', 'dave']) await addUser(server, u)
    origin = `http://127.0.0.1:${server.ports.http}`
    alice = await connect(server, 'alice', 'a')
    bob = await connect(server, 'bob', 'b')
    carol = await connect(server, 'carol', 'c')
    conv = (await alice.request('create-group', { name: 'files', members: ['bob'] })).conv
    carolConv = (await carol.request('direct', { user: 'alice' })).conv
  })

  afterAll(async () => {
    for (const c of [alice, bob, carol]) await c?.end()
    await server?.stop()
  })

  async function put (grant: { url: string, headers: Record<string, string> }, bytes: Buffer, headers: Record<string, string> = {}): Promise<Response> {
    return await fetch(new URL(grant.url, origin), { method: 'PUT', headers: { ...grant.headers, ...headers }, body: new Uint8Array(bytes) })
  }

  async function uploadAndSend (c: ImClient, bytes: Buffer, opts: { name?: string, mime?: string, msgId?: string, inConv?: string } = {}): Promise<{ grant: UploadGrant, seq: number }> {
    const grant = await c.request('upload', { conv: opts.inConv ?? conv, name: opts.name ?? 'notes.txt', size: bytes.length, mime: opts.mime ?? 'text/plain' })
    expect((await put(grant, bytes)).status).toBeLessThan(300)
    const sent = await c.request('send', { conv: opts.inConv ?? conv, msgId: opts.msgId ?? `f${randomBytes(6).toString('hex')}`, kind: 'file', body: { id: grant.id } })
    return { grant, seq: sent.seq }
  }

  async function download (c: ImClient, file: string, variant?: 'thumb', inConv = conv): Promise<Response> {
    const got = await c.request('file-url', { conv: inConv, file, ...(variant === undefined ? {} : { variant }) })
    return await fetch(new URL(got.url, origin))
  }

  test('a member uploads and sends a file; the other member gets the message and downloads the bytes', async () => {
    const bytes = randomBytes(150_000)
    const { grant, seq } = await uploadAndSend(alice, bytes, { name: 'Relevé de notes – été.pdf', mime: 'application/pdf' })
    expect(grant).toMatchObject({ method: 'PUT', headers: { 'content-type': 'application/pdf' } })
    expect(grant.expiresAt).toBeGreaterThan(Date.now())
    await bob.waitFor(() => bob.messages.some(m => m.seq === seq && m.conv === conv))
    const m = bob.messages.find(x => x.seq === seq && x.conv === conv) as MessageEnvelope
    expect(m.kind).toBe('file')
    expect(m.body).toEqual({ id: grant.id, name: 'Relevé de notes – été.pdf', size: bytes.length, mime: 'application/pdf' })
    const res = await download(bob, grant.id)
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/pdf')
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true)
    const history = await bob.request('history', { conv, after: seq - 1 })
    expect(history.messages[0]).toMatchObject({ kind: 'file', body: { id: grant.id } })
  })

  test("the page's content security policy allows the store's origin for images, media and uploads (S3), and nothing more for local disk", async () => {
    const csp = (await fetch(`${origin}/healthz`)).headers.get('content-security-policy') ?? ''
    const store = server.services.config.files.store
    if (store.adapter === 's3') {
      const s3 = new URL(store.endpoint ?? '').origin
      for (const d of ['img-src', 'media-src', 'connect-src']) expect(csp).toContain(`${d} 'self'${d === 'img-src' ? ' data:' : ''} ${s3}`)
      expect(csp).toContain("script-src 'self';")
    } else {
      expect(csp).toContain("img-src 'self' data:;")
      expect(csp).toContain("connect-src 'self';")
    }
  })

  test('a non-member gets no upload URL, no download URL and no object', async () => {
    const { grant } = await uploadAndSend(alice, randomBytes(1000))
    for (const op of ['upload', 'file-url'] as const) {
      const body = op === 'upload' ? { conv, name: 'x.txt', size: 10, mime: 'text/plain' } : { conv, file: grant.id }
      const r = await carol.requestRaw(op, body)
      expect(r).toMatchObject({ ok: false, error: { code: 'NOT_MEMBER' } })
    }
    // carol's own conversation does not open alice's file of another one
    const r = await carol.requestRaw('file-url', { conv: carolConv, file: grant.id })
    expect(r).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    // and carol cannot send it in her conversation
    const s = await carol.requestRaw('send', { conv: carolConv, msgId: 'steal1', kind: 'file', body: { id: grant.id } })
    expect(s).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    // alice cannot move her own upload of one conversation to another one either
    const moved = await alice.requestRaw('send', { conv: carolConv, msgId: 'move1', kind: 'file', body: { id: grant.id } })
    expect(moved).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })

  test('tampered and expired download URLs are refused', async () => {
    const { grant } = await uploadAndSend(alice, randomBytes(2000))
    const got = await bob.request('file-url', { conv, file: grant.id })
    const tampered = got.url.replace(/(Signature=|[?&]s=)([0-9a-f])/, (_m, a: string, c: string) => a + (c === '0' ? '1' : '0'))
    expect(tampered).not.toBe(got.url)
    expect((await fetch(new URL(tampered, origin))).status).toBe(403)
    // another object's id in a valid URL
    const other = await uploadAndSend(alice, randomBytes(10))
    expect((await fetch(new URL(got.url.replace(grant.id, other.grant.id), origin))).status).toBe(403)
    // expired: a server whose URLs live one second (same store)
    const short = await startServer({ files: { ...server.services.config.files, urlTtlMs: 1000 }, dataDir: server.services.config.dataDir }, await backend.make())
    try {
      await addUser(short, 'erin')
      await addUser(short, 'finn')
      const erin = await connect(short, 'erin', 'e')
      const c = (await erin.request('direct', { user: 'finn' })).conv
      const g = await erin.request('upload', { conv: c, name: 'e.txt', size: 5, mime: 'text/plain' })
      await new Promise(resolve => setTimeout(resolve, 2500))
      expect((await fetch(new URL(g.url, `http://127.0.0.1:${short.ports.http}`), { method: 'PUT', headers: g.headers, body: 'hello' })).status).toBe(403)
      expect(await erin.requestRaw('send', { conv: c, msgId: 'e1', kind: 'file', body: { id: g.id } })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
      await erin.end()
    } finally {
      await short.stop()
    }
  })

  test('wrong size, wrong type and oversize uploads are refused and leave no file to send', async () => {
    // the PUT differs from what was announced
    const g1 = await alice.request('upload', { conv, name: 'a.txt', size: 1000, mime: 'text/plain' })
    expect((await put(g1, randomBytes(500))).status).toBeGreaterThanOrEqual(400)
    expect((await put(g1, randomBytes(1500))).status).toBeGreaterThanOrEqual(400)
    expect((await put(g1, randomBytes(1000), { 'content-type': 'text/html' })).status).toBeGreaterThanOrEqual(400)
    expect(await alice.requestRaw('send', { conv, msgId: 'bad1', kind: 'file', body: { id: g1.id } })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    // announced beyond the limits
    expect(await alice.requestRaw('upload', { conv, name: 'big.pdf', size: 3_000_001, mime: 'application/pdf' })).toMatchObject({ ok: false, error: { code: 'TOO_LARGE' } })
    expect(await alice.requestRaw('upload', { conv, name: 'page.html', size: 10, mime: 'text/html' })).toMatchObject({ ok: false, error: { code: 'UNSUPPORTED_TYPE' } })
    expect(await alice.requestRaw('upload', { conv, name: 'x.exe', size: 10, mime: 'application/x-msdownload' })).toMatchObject({ ok: false, error: { code: 'UNSUPPORTED_TYPE' } })
  })

  test('an upload whose content-type is not a media type: a 4xx with {code, message}, never a 500 (npm run fuzz found one)', async () => {
    const g = await alice.request('upload', { conv, name: 'a.txt', size: 2, mime: 'text/plain' })
    const path = filesRoute ? new URL(g.url, origin).pathname + new URL(g.url, origin).search : '/files/ab/x'
    for (const type of ['', ';;;', '/', 'text/']) {
      const res = await fetch(`${origin}${path}`, { method: 'PUT', headers: { 'content-type': type }, body: 'hi' })
      // (without a route of mqim's own, /files/ is nothing here: the body is refused before that is found)
      expect([type, res.status]).toEqual([type, filesRoute ? 415 : 400])
      expect(await res.json()).toEqual({ code: filesRoute ? 'UNSUPPORTED_TYPE' : 'BAD_REQUEST', message: expect.any(String) })
    }
  })

  test('hostile values are refused with BAD_REQUEST and the connection stays', async () => {
    const bad: Array<Record<string, unknown>> = [
      { conv, name: 'a.txt', size: -1, mime: 'text/plain' },
      { conv, name: 'a.txt', size: 0, mime: 'text/plain' },
      { conv, name: 'a.txt', size: 1.5, mime: 'text/plain' },
      { conv, name: 'a.txt', size: 1e300, mime: 'text/plain' },
      { conv, name: 'a.txt', size: '10', mime: 'text/plain' },
      { conv, name: '../../etc/passwd', size: 10, mime: 'text/plain' },
      { conv, name: '..\\..\\boot.ini', size: 10, mime: 'text/plain' },
      { conv, name: '..', size: 10, mime: 'text/plain' },
      { conv, name: 'a\u0000.txt', size: 10, mime: 'text/plain' },
      { conv, name: 'evil\u202etxt.exe', size: 10, mime: 'text/plain' },
      { conv, name: 'x'.repeat(256), size: 10, mime: 'text/plain' },
      { conv, name: '', size: 10, mime: 'text/plain' },
      { conv, name: 'a.txt', size: 10, mime: 'TEXT/PLAIN' },
      { conv, name: 'a.txt', size: 10, mime: 'text/plain; charset=utf-8' },
      { conv, name: 'a.txt', size: 10, mime: 'text/plain\r\nx-evil: 1' },
      { conv, name: 'a.txt', size: 10, mime: 'text/plain', sha256: 'abc' },
      { conv, name: 'a.txt', size: 10, mime: 'text/plain', owner: 'bob' },
      { conv: '../x', name: 'a.txt', size: 10, mime: 'text/plain' }
    ]
    for (const body of bad) expect(await alice.requestRaw('upload', body)).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    for (const file of ['../../etc/passwd', 'f/abc', 'a'.repeat(21), 'a'.repeat(23), '']) {
      expect(await alice.requestRaw('file-url', { conv, file })).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
      expect(await alice.requestRaw('send', { conv, msgId: 'h1', kind: 'file', body: { id: file } })).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    }
    for (const body of [null, 'abc', {}, { id: 'a'.repeat(22), name: 'x' }, [1]]) {
      expect(await alice.requestRaw('send', { conv, msgId: 'h2', kind: 'file', body })).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    }
    expect(await alice.requestRaw('file-url', { conv, file: 'a'.repeat(22), variant: 'raw' })).toMatchObject({ ok: false, error: { code: 'BAD_REQUEST' } })
    // a well-formed id that was never uploaded
    expect(await alice.requestRaw('send', { conv, msgId: 'h3', kind: 'file', body: { id: 'A'.repeat(22) } })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect(await alice.requestRaw('file-url', { conv, file: 'A'.repeat(22) })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    // still connected and served
    expect(alice.mqtt.connected).toBe(true)
    await alice.request('read', { conv, seq: 1 })
  })

  test("someone else's upload cannot be sent; one upload goes with one message, a resend is a duplicate", async () => {
    const g = await alice.request('upload', { conv, name: 'mine.txt', size: 4, mime: 'text/plain' })
    expect((await put(g, Buffer.from('mine'))).status).toBeLessThan(300)
    expect(await bob.requestRaw('send', { conv, msgId: 'bobsteal', kind: 'file', body: { id: g.id } })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    const first = await alice.request('send', { conv, msgId: 'once1', kind: 'file', body: { id: g.id } })
    const again = await alice.request('send', { conv, msgId: 'once1', kind: 'file', body: { id: g.id } })
    expect(again).toMatchObject({ seq: first.seq, duplicate: true })
    expect(await alice.requestRaw('send', { conv, msgId: 'once2', kind: 'file', body: { id: g.id } })).toMatchObject({ ok: false, error: { code: 'CONFLICT' } })
    // a file message is not edited
    expect(await alice.requestRaw('edit', { conv, msgId: 'once-edit', target: first.seq, body: { id: g.id } })).toMatchObject({ ok: false, error: { code: 'NOT_EDITABLE' } })
  })

  test('the announced sha256 is kept with the upload; the bytes per user per day are bounded', async () => {
    const bytes = randomBytes(100)
    const g = await alice.request('upload', { conv, name: 'h.txt', size: bytes.length, mime: 'text/plain', sha256: createHash('sha256').update(bytes).digest('hex') })
    expect((await put(g, bytes)).status).toBeLessThan(300)
    // dave uses up his day in two large announcements
    const dave = await connect(server, 'dave', 'd')
    try {
      const dc = (await dave.request('direct', { user: 'alice' })).conv
      await dave.request('upload', { conv: dc, name: 'a.pdf', size: 3_000_000, mime: 'application/pdf' })
      for (let i = 0; i < 5; i++) await dave.request('upload', { conv: dc, name: 'a.pdf', size: 3_000_000, mime: 'application/pdf' })
      expect(await dave.requestRaw('upload', { conv: dc, name: 'a.pdf', size: 3_000_000, mime: 'application/pdf' })).toMatchObject({ ok: false, error: { code: 'LIMIT_REACHED' } })
    } finally {
      await dave.end()
    }
  })

  test('images get width, height and a thumbnail of the right size without EXIF; the original is served as uploaded', async () => {
    const png = await pngWithGps(800, 600)
    expect((await sharp(png).metadata()).exif).toBeDefined()
    const { grant, seq } = await uploadAndSend(alice, png, { name: 'beach.png', mime: 'image/png' })
    await bob.waitFor(() => bob.messages.some(m => m.seq === seq && m.conv === conv))
    const body = bob.messages.find(m => m.seq === seq && m.conv === conv)?.body as FileDescriptor
    expect(body).toEqual({ id: grant.id, name: 'beach.png', size: png.length, mime: 'image/png', w: 800, h: 600, thumb: { w: 320, h: 240 } })
    const thumb = await download(bob, grant.id, 'thumb')
    expect(thumb.status).toBe(200)
    expect(thumb.headers.get('content-type')).toBe('image/webp')
    const meta = await sharp(Buffer.from(await thumb.arrayBuffer())).metadata()
    expect(meta).toMatchObject({ format: 'webp', width: 320, height: 240 })
    expect(meta.exif).toBeUndefined()
    expect(meta.xmp).toBeUndefined()
    const original = await download(bob, grant.id)
    expect(Buffer.from(await original.arrayBuffer()).equals(png)).toBe(true)
    // a file that is not an image has no thumbnail
    const text = await uploadAndSend(alice, Buffer.from('not an image'), { name: 'x.png', mime: 'image/png' })
    expect(await bob.requestRaw('file-url', { conv, file: text.grant.id, variant: 'thumb' })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
  })

  test('uploads no message refers to are removed by the sweep; sent ones stay', async () => {
    const sent = await uploadAndSend(alice, randomBytes(300))
    const g = await alice.request('upload', { conv, name: 'orphan.txt', size: 10, mime: 'text/plain' })
    expect((await put(g, randomBytes(10))).status).toBeLessThan(300)
    expect((await download(bob, g.id)).status).toBe(200)
    await new Promise(resolve => setTimeout(resolve, 2000))
    let removed = 0
    // the sweep goes through every upload in steps (a page of sweepMaxPerRun)
    for (let i = 0; i < 5; i++) removed += await server.internals.fileSweeper.runOnce()
    expect(removed).toBeGreaterThanOrEqual(1)
    expect(await bob.requestRaw('file-url', { conv, file: g.id })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect(await alice.requestRaw('send', { conv, msgId: 'late1', kind: 'file', body: { id: g.id } })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect((await download(bob, sent.grant.id)).status).toBe(200)
  })

  test('deleting a file message removes its objects', async () => {
    const png = await pngWithGps(100, 50)
    const { grant, seq } = await uploadAndSend(alice, png, { name: 'del.png', mime: 'image/png' })
    const url = (await bob.request('file-url', { conv, file: grant.id })).url
    const thumbUrl = (await bob.request('file-url', { conv, file: grant.id, variant: 'thumb' })).url
    await alice.request('delete', { conv, msgId: `del-${seq}`, target: seq })
    expect(await bob.requestRaw('file-url', { conv, file: grant.id })).toMatchObject({ ok: false, error: { code: 'NOT_FOUND' } })
    expect((await fetch(new URL(url, origin))).status).toBe(404)
    expect((await fetch(new URL(thumbUrl, origin))).status).toBe(404)
    await waitUntil(() => bob.messages.some(m => m.kind === 'delete' && m.target === seq), 10_000, 'the deletion')
  })
})
