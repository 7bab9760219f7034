/**
 * Attachments from the clients: the SDK's sendFile in Node (nodeUploader with progress per chunk,
 * and the fetch fallback) and the terminal client's /file, against a real server (local disk
 * store) over MQTT on TCP and WebSocket.
 */
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import sharp from 'sharp'
import { startServer, addUser, url, waitUntil, spawnChatCli } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, nodeUploader, type MessageEnvelope, type UploadProgress, type FileDescriptor } from '../src/client/node.js'
import { tempDir } from './helpers/tmp.js'

describe('sendFile in the SDK and /file in the terminal client', () => {
  let server: MqimServer
  let alice: ImClient
  let bob: ImClient
  let conv: string
  const got: MessageEnvelope[] = []

  beforeAll(async () => {
    server = await startServer({ files: { store: { adapter: 'local' }, maxFileBytes: 5_000_000, allowedTypes: ['image/*', 'application/octet-stream', 'text/plain'] } })
    for (const u of ['alice', 'bob']) await addUser(server, u)
    alice = await ImClient.connect({ url: url(server, 'tcp'), userId: 'alice', password: 'password-alice', deviceId: 'node', httpUrl: `http://127.0.0.1:${server.ports.http}`, uploader: nodeUploader })
    bob = await ImClient.connect({ url: url(server, 'ws'), userId: 'bob', password: 'password-bob', deviceId: 'web' })
    bob.on('message', m => { got.push(m) })
    conv = (await alice.direct('bob')).conv
  })

  afterAll(async () => {
    await alice?.close()
    await bob?.close()
    await server?.stop()
  })

  test('bytes with progress per chunk (nodeUploader); the receiver downloads them with fileUrl (URL resolved from ws://)', async () => {
    const bytes = randomBytes(1_000_000)
    const progress: UploadProgress[] = []
    const events: UploadProgress[] = []
    const off = alice.on('upload', p => { events.push(p) })
    const sent = await alice.sendFile(conv, bytes, { name: 'data.bin', onProgress: p => { progress.push(p) } })
    off()
    expect(progress.length).toBeGreaterThan(10)
    expect(progress.map(p => p.sent)).toEqual([...progress.map(p => p.sent)].sort((a, b) => a - b))
    expect(progress.at(-1)).toMatchObject({ conv, file: sent.file, name: 'data.bin', sent: bytes.length, total: bytes.length })
    expect(events).toEqual(progress)
    await waitUntil(() => got.some(m => m.seq === sent.seq && m.conv === conv), 10_000, 'bob got the file')
    const body = got.find(m => m.seq === sent.seq)?.body as FileDescriptor
    expect(body).toEqual({ id: sent.file, name: 'data.bin', size: bytes.length, mime: 'application/octet-stream' })
    const link = await bob.fileUrl(conv, body.id)
    expect(link.url.startsWith(`http://127.0.0.1:${server.ports.http}/files/`)).toBe(true)
    expect(Buffer.from(await (await fetch(link.url)).arrayBuffer()).equals(bytes)).toBe(true)
  })

  test('a Blob image through the fetch fallback; refusals reject with the server code and send nothing', async () => {
    const png = await sharp({ create: { width: 640, height: 480, channels: 3, background: '#3366cc' } }).png().toBuffer()
    const plain = await ImClient.connect({ url: url(server, 'ws'), userId: 'alice', password: 'password-alice', deviceId: 'fetch' })
    try {
      const progress: number[] = []
      const sent = await plain.sendFile(conv, new Blob([new Uint8Array(png)], { type: 'image/png' }), { name: 'blue.png', onProgress: p => { progress.push(p.sent) } })
      expect(progress).toEqual([0, png.length])
      await waitUntil(() => got.some(m => m.seq === sent.seq && m.conv === conv), 10_000, 'bob got the image')
      expect(got.find(m => m.seq === sent.seq)?.body).toMatchObject({ name: 'blue.png', mime: 'image/png', w: 640, h: 480, thumb: { w: 320, h: 240 } })
      const before = plain.unacked
      await expect(plain.sendFile(conv, new Blob(['<html>'], { type: 'text/html' }))).rejects.toMatchObject({ code: 'UNSUPPORTED_TYPE' })
      await expect(plain.sendFile(conv, new Uint8Array(5_000_001))).rejects.toMatchObject({ code: 'TOO_LARGE' })
      expect(plain.unacked).toBe(before)
    } finally {
      await plain.close()
    }
  })

  test('the terminal client sends a file by path, with progress', async () => {
    const dir = tempDir('mqim-cli-file-')
    const file = path.join(dir, 'report.txt')
    writeFileSync(file, 'x'.repeat(300_000))
    const cli = spawnChatCli(['--user', 'alice', '--device', 'cli', '--url', url(server, 'tcp'), '--http', `http://127.0.0.1:${server.ports.http}`], 'password-alice')
    const { type, waitOut, exited } = cli
    try {
      await waitOut('signed in as alice')
      type('/file ' + file)
      await waitOut('open a conversation first')
      type('/open bob')
      await waitOut('opened bob (')
      type('/file ' + file)
      await waitOut('* uploading report.txt: 100%')
      await waitOut('* sent report.txt as #')
      await waitUntil(() => got.some(m => m.kind === 'file' && (m.body as FileDescriptor).name === 'report.txt'), 10_000, 'bob got report.txt')
      await waitOut('[file] report.txt (text/plain, 300000 bytes)')
      type('/file ' + path.join(dir, 'missing.txt'))
      await waitOut('! ')
      type('/quit')
      expect(await exited).toBe(0)
    } finally {
      cli.kill()
    }
  })
})
