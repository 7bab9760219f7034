/**
 * The local-disk object store (the embedded default): objects under `dir`, each as two files,
 * `<prefix>/<id>` (the bytes) and `<prefix>/<id>.json` (type, metadata). Uploads and downloads go
 * through mqim's own HTTP listener (./routes.ts) with URLs signed by ./signing.ts.
 *
 * Writes go to `tmp/` first and are linked into place only when complete (the exact size, and the
 * SHA-256 when one was announced): a client never sees half an object, and a failed or refused
 * upload leaves nothing behind. Keys are checked against isObjectKey and the resolved path must stay
 * inside `dir`.
 */
import { createReadStream, createWriteStream } from 'node:fs'
import { link, mkdir, readFile, readdir, rename, rm, stat, unlink, writeFile, open } from 'node:fs/promises'
import { createHash, randomBytes } from 'node:crypto'
import path from 'node:path'
import type { Readable } from 'node:stream'
import { checkKey, checkMeta, ObjectTooLargeError, type DownloadBinding, type ObjectInfo, type ObjectStore, type UploadBinding, type UploadUrl } from './object-store.js'
import { UrlSigner, type SignedGrant } from './signing.js'

export interface LocalStoreOptions {
  /** Where objects live (created when missing). */
  dir: string
  /** Signs the upload and download URLs (at least 32 bytes). */
  secret: Buffer
  /** Prefix of the URLs: "" for paths on the HTTP listener ("/files/..."), or an absolute origin. */
  publicUrl: string
}

/** Why an upload was refused (the route maps it to an HTTP answer). */
export class UploadRefusedError extends Error {
  constructor (readonly reason: 'too large' | 'too short' | 'too slow' | 'checksum' | 'exists' | 'aborted', message: string) {
    super(message)
    this.name = 'UploadRefusedError'
  }
}

interface Sidecar { mime: string, meta: Record<string, string>, size: number }

/** An upload must bring at least this many bytes (or the rest of the file) in every window. */
const MIN_BYTES_PER_WINDOW = 16 * 1024
const SLOW_WINDOW_MS = 10_000

export class LocalObjectStore implements ObjectStore {
  readonly adapter = 'local' as const
  readonly signer: UrlSigner
  private readonly dir: string
  private readonly tmp: string
  /** Prefix directories known to exist (at most one per key prefix letter). */
  private readonly made = new Set<string>()

  constructor (private readonly options: LocalStoreOptions) {
    this.dir = path.resolve(options.dir)
    this.tmp = path.join(this.dir, 'tmp')
    this.signer = new UrlSigner(options.secret)
  }

  async init (): Promise<void> {
    await mkdir(this.tmp, { recursive: true })
    // what a crash left half-written is never an object: start clean
    for (const name of await readdir(this.tmp)) await rm(path.join(this.tmp, name), { force: true })
  }

  async close (): Promise<void> {}

  async uploadUrl (key: string, binding: UploadBinding): Promise<UploadUrl> {
    checkKey(key)
    const grant: SignedGrant = { k: key, m: 'PUT', e: binding.expiresAt, z: binding.size, t: binding.mime, meta: checkMeta(binding.meta), ...(binding.sha256 === undefined ? {} : { h: binding.sha256.toLowerCase() }) }
    return { url: `${this.options.publicUrl}/files/${key}?${this.signer.sign(grant)}`, method: 'PUT', headers: { 'content-type': binding.mime } }
  }

  async downloadUrl (key: string, binding: DownloadBinding): Promise<string> {
    checkKey(key)
    const grant: SignedGrant = { k: key, m: 'GET', e: binding.expiresAt, t: binding.mime, n: binding.name, d: binding.disposition }
    return `${this.options.publicUrl}/files/${key}?${this.signer.sign(grant)}`
  }

  /** The path of a key's bytes: inside `dir` (checked twice: the key's form, then the resolved path). */
  pathOf (key: string): string {
    checkKey(key)
    const p = path.resolve(this.dir, key)
    if (!p.startsWith(this.dir + path.sep)) throw new Error(`object path outside the store: ${key}`)
    return p
  }

  /**
   * Streams `body` into the object `key`: at most `size` bytes are read (more: refused at once,
   * without reading further), exactly `size` must arrive, the SHA-256 must match when given; then
   * the object appears whole. Refused when the key exists. Nothing is left behind on failure.
   */
  async receive (key: string, body: Readable, binding: { size: number, mime: string, meta: Record<string, string>, sha256?: string }): Promise<void> {
    const final = this.pathOf(key)
    if (await exists(final)) throw new UploadRefusedError('exists', 'this object was uploaded already')
    const tmp = path.join(this.tmp, randomBytes(12).toString('hex'))
    const hash = binding.sha256 === undefined ? null : createHash('sha256')
    const out = createWriteStream(tmp, { flags: 'wx', mode: 0o600 })
    const closed = new Promise<void>(resolve => out.once('close', () => resolve()))
    let received = 0
    let progress: NodeJS.Timeout | undefined
    try {
      await new Promise<void>((resolve, reject) => {
        let done = false
        const fail = (err: Error): void => {
          if (done) return
          done = true
          body.unpipe(out)
          out.destroy()
          reject(err)
        }
        // a body that trickles (less than MIN_BYTES_PER_WINDOW, or the rest, per window) is cut
        let lastWindow = 0
        progress = setInterval(() => {
          const need = Math.min(MIN_BYTES_PER_WINDOW, binding.size - lastWindow)
          if (received - lastWindow < need) fail(new UploadRefusedError('too slow', `fewer than ${need} bytes arrived in ${SLOW_WINDOW_MS / 1000} s`))
          lastWindow = received
        }, SLOW_WINDOW_MS)
        progress.unref()
        body.on('data', (chunk: Buffer) => {
          received += chunk.length
          if (received > binding.size) {
            fail(new UploadRefusedError('too large', `more than the announced ${binding.size} bytes`))
            return
          }
          hash?.update(chunk)
        })
        body.on('error', fail)
        body.on('aborted', () => { fail(new UploadRefusedError('aborted', 'the upload was aborted')) })
        body.on('close', () => { if (!body.readableEnded) fail(new UploadRefusedError('aborted', 'the upload was aborted')) })
        out.on('error', fail)
        out.on('finish', () => {
          if (done) return
          done = true
          resolve()
        })
        body.pipe(out)
      })
      if (received !== binding.size) throw new UploadRefusedError('too short', `${received} bytes arrived; ${binding.size} were announced`)
      if (hash !== null && hash.digest('hex') !== binding.sha256?.toLowerCase()) throw new UploadRefusedError('checksum', 'the bytes do not have the announced sha256')
      await this.commit(tmp, key, { mime: binding.mime, meta: checkMeta(binding.meta), size: binding.size })
    } finally {
      clearInterval(progress)
      // the file may still be opening: removed once the stream has let go of it
      out.destroy()
      await closed
      await rm(tmp, { force: true })
    }
  }

  /**
   * A server write (thumbnails, markers) replaces what was there: both files are written aside and
   * renamed into place, the sidecar first; a reader between the two renames finds sizes that
   * differ and sees no object yet.
   */
  async put (key: string, body: Buffer, binding: { mime: string, meta: Record<string, string> }): Promise<void> {
    const final = this.pathOf(key)
    const sidecar: Sidecar = { mime: binding.mime, meta: checkMeta(binding.meta), size: body.length }
    const tmp = path.join(this.tmp, randomBytes(12).toString('hex'))
    await this.dirOf(final)
    try {
      await Promise.all([writeFile(tmp, body, { mode: 0o600, flag: 'wx' }), writeFile(`${tmp}.json`, JSON.stringify(sidecar), { mode: 0o600, flag: 'wx' })])
      await rename(`${tmp}.json`, `${final}.json`)
      await rename(tmp, final)
    } catch (err) {
      await Promise.all([rm(tmp, { force: true }), rm(`${tmp}.json`, { force: true })])
      throw err
    }
  }

  private async dirOf (file: string): Promise<void> {
    const dir = path.dirname(file)
    if (this.made.has(dir)) return
    await mkdir(dir, { recursive: true })
    this.made.add(dir)
  }

  /** The bytes linked into place (fails if another upload got there first), then the sidecar: only then is it an object. */
  private async commit (tmp: string, key: string, sidecar: Sidecar): Promise<void> {
    const final = this.pathOf(key)
    await this.dirOf(final)
    const sideTmp = `${tmp}.json`
    try {
      await writeFile(sideTmp, JSON.stringify(sidecar), { mode: 0o600 })
      try {
        await link(tmp, final)
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new UploadRefusedError('exists', 'this object was uploaded already')
        throw err
      }
      await rename(sideTmp, `${final}.json`)
    } catch (err) {
      await rm(sideTmp, { force: true })
      throw err
    }
  }

  async head (key: string): Promise<ObjectInfo | null> {
    const file = this.pathOf(key)
    try {
      const [st, text] = await Promise.all([stat(file), readFile(`${file}.json`, 'utf8')])
      const side = JSON.parse(text) as Sidecar
      if (st.size !== side.size) return null
      return { key, size: st.size, mime: side.mime, meta: side.meta, modified: st.mtimeMs }
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  async read (key: string, maxBytes: number): Promise<Buffer | null> {
    const file = this.pathOf(key)
    let handle
    try {
      handle = await open(file, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
    try {
      const { size } = await handle.stat()
      if (size > maxBytes) throw new ObjectTooLargeError(key, maxBytes)
      return await handle.readFile()
    } finally {
      await handle.close()
    }
  }

  async stream (key: string): Promise<Readable | null> {
    const file = this.pathOf(key)
    if (!await exists(file)) return null
    return createReadStream(file)
  }

  async delete (keys: readonly string[]): Promise<void> {
    for (const key of keys) {
      const file = this.pathOf(key)
      // the sidecar first: without it the object no longer exists for head()
      await rm(`${file}.json`, { force: true })
      await unlink(file).catch((err: NodeJS.ErrnoException) => { if (err.code !== 'ENOENT') throw err })
    }
  }

  async list (prefix: string, after: string | null, limit: number): Promise<{ items: Array<{ key: string, size: number, modified: number }>, next: string | null }> {
    if (!/^[a-z]\/$/.test(prefix)) throw new Error(`not a key prefix: ${prefix}`)
    let names: string[]
    try {
      names = await readdir(path.join(this.dir, prefix))
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { items: [], next: null }
      throw err
    }
    const keys = names.filter(n => !n.endsWith('.json')).map(n => prefix + n).filter(k => after === null || k > after).sort()
    const page = keys.slice(0, Math.max(0, limit))
    const items: Array<{ key: string, size: number, modified: number }> = []
    for (const key of page) {
      try {
        const st = await stat(this.pathOf(key))
        items.push({ key, size: st.size, modified: st.mtimeMs })
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
      }
    }
    return { items, next: keys.length > page.length ? (page.at(-1) ?? null) : null }
  }
}

async function exists (file: string): Promise<boolean> {
  try {
    await stat(file)
    return true
  } catch {
    return false
  }
}
