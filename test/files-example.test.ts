/**
 * topics.md's curl + mosquitto_pub example of "Files" works as written: the fenced block after
 * "### Example: curl and mosquitto_pub" runs in bash against a real server (ports and host
 * substituted), and bob's thumbnail arrives as a 320x240 WebP.
 */
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import sharp from 'sharp'
import { startServer, addUser, connect } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { tempDir } from './helpers/tmp.js'

const TOPICS = readFileSync(fileURLToPath(new URL('../topics.md', import.meta.url)), 'utf8')

function exampleBlock (): string {
  const start = TOPICS.indexOf('### Example: curl and mosquitto_pub')
  if (start < 0) throw new Error('topics.md has no "Example: curl and mosquitto_pub"')
  const m = /^```sh\n([\s\S]*?)^```$/m.exec(TOPICS.slice(start))
  if (m === null) throw new Error('no sh block after the example heading')
  return m[1] as string
}

describe("topics.md's files example", () => {
  let server: MqimServer
  afterAll(async () => { await server?.stop() })

  test('runs as written', async () => {
    server = await startServer({ files: { store: { adapter: 'local' } } })
    await addUser(server, 'alice', 'alice-secret')
    await addUser(server, 'bob', 'bob-secret')
    const dir = tempDir('mqim-files-example-')
    // the step before the block: the reply of `direct`, saved as direct.json
    const alice = await connect(server, 'alice', 'setup', { password: 'alice-secret' })
    const direct = await alice.requestRaw('direct', { user: 'bob' })
    await alice.end()
    writeFileSync(path.join(dir, 'direct.json'), JSON.stringify(direct))
    await sharp({ create: { width: 640, height: 480, channels: 3, background: '#888888' } }).png().toFile(path.join(dir, 'cat.png'))
    const script = exampleBlock()
      .replaceAll('-h localhost -p 1883', `-h 127.0.0.1 -p ${server.ports.mqtt}`)
      .replaceAll('http://localhost:8080', `http://127.0.0.1:${server.ports.http}`)
    expect(script).not.toContain('1883')
    // asynchronously: the server runs in this process
    await promisify(execFile)('bash', ['-euo', 'pipefail', '-c', script], { cwd: dir, timeout: 60_000 })
    const thumb = await sharp(readFileSync(path.join(dir, 'cat-thumb.webp'))).metadata()
    expect(thumb).toMatchObject({ format: 'webp', width: 320, height: 240 })
    const upload = JSON.parse(readFileSync(path.join(dir, 'upload.json'), 'utf8')) as { ok: boolean }
    expect(upload.ok).toBe(true)
  })
})
