/** Node-only parts of the SDK (kept out of the browser bundle). */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import http from 'node:http'
import https from 'node:https'
import type { ClientStorage } from './types.js'
import type { Uploader } from './files.js'

export * from './index.js'

/**
 * One JSON file per key in `dir`. Writes are synchronous and atomic (temp file + rename), so the
 * state is on disk when `set` returns and a killed process never leaves a torn file behind.
 */
export class FileStorage implements ClientStorage {
  constructor (private readonly dir: string) {
    mkdirSync(dir, { recursive: true })
  }

  async get (key: string): Promise<string | null> {
    try {
      return readFileSync(this.file(key), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  async set (key: string, value: string): Promise<void> {
    const file = this.file(key)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, value)
    renameSync(tmp, file)
  }

  private file (key: string): string {
    return path.join(this.dir, encodeURIComponent(key) + '.json')
  }
}

/** Bytes written per chunk by nodeUploader (progress is reported after each). */
const UPLOAD_CHUNK = 64 * 1024

/**
 * The Node uploader for `sendFile` (pass it as the `uploader` option): node:http(s) with the
 * content-length set, the body written in 64 KiB chunks with backpressure, progress after each.
 */
export const nodeUploader: Uploader = async (req) => await new Promise((resolve, reject) => {
  const url = new URL(req.url)
  const request = (url.protocol === 'https:' ? https : http).request(url, { method: req.method, headers: { ...req.headers, 'content-length': String(req.size) } }, (res) => {
    let text = ''
    res.setEncoding('utf8')
    res.on('data', (c: string) => { if (text.length < 65536) text += c })
    res.on('end', () => { resolve({ status: res.statusCode ?? 0, text }) })
    res.on('error', reject)
  })
  request.on('error', reject)
  void (async () => {
    let sent = 0
    req.onProgress(0)
    const chunks: AsyncIterable<Uint8Array> | Iterable<Uint8Array> = req.body instanceof Uint8Array ? slices(req.body) : (req.body.stream())
    for await (const chunk of chunks) {
      if (request.destroyed) return
      const ok = request.write(chunk)
      sent += chunk.byteLength
      req.onProgress(sent)
      if (!ok) await new Promise(resolve => request.once('drain', resolve))
    }
    request.end()
  })().catch((err: unknown) => { request.destroy(err as Error) })
})

function * slices (bytes: Uint8Array): Iterable<Uint8Array> {
  for (let i = 0; i < bytes.byteLength; i += UPLOAD_CHUNK) yield bytes.subarray(i, i + UPLOAD_CHUNK)
}
