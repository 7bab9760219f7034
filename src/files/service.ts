/**
 * Attachments: what the `upload`, `file-url` and `send` (kind `file`) operations and `delete` ask
 * of the object store. Objects of one upload, by key prefix:
 *
 *   f/<id>  the bytes as uploaded, with metadata owner, conv, size, name (base64url UTF-8)
 *   t/<id>  the thumbnail of an image (WebP, no metadata), with w, h (the original's) and tw, th
 *   r/<id>  the reference: written when a message refers to the upload (conv, msgid), so the sweep
 *           keeps it
 *
 * The sweep (FileSweeper) removes uploads without a reference once they are older than
 * files.unreferencedTtlMs, a bounded number per step, and also those whose reference names a
 * message that is not stored (a send that failed for good, or a message retention removed).
 */
import { randomBytes } from 'node:crypto'
import { ImError } from '../errors.js'
import type { Logger } from '../log.js'
import type { FilesConfig } from './config.js'
import { typeAllowed } from './config.js'
import type { ObjectInfo, ObjectStore } from './object-store.js'
import { ImageWorker, THUMBNAIL_TYPES } from './images.js'
import type { UploadQuota } from './quota.js'

/** What a message of kind `file` carries (its body), and what `file-url` describes. */
export interface FileDescriptor {
  id: string
  name: string
  size: number
  mime: string
  /** Images: width and height (upright). */
  w?: number
  h?: number
  /** Images: a thumbnail exists (fetch it with file-url variant "thumb"); its size. */
  thumb?: { w: number, h: number }
}

/** What `send` of kind file stores (the file's description), and how it records the reference. */
export interface Attachment {
  file: FileDescriptor
  /**
   * Writes the reference (r/<id>) that keeps the sweep off the upload; run alongside storing the
   * message (nothing to do for a resend). Throws UNAVAILABLE when the store does not take it: the
   * client resends with the same msgId, which finds the message stored and writes it again.
   */
  refer: () => Promise<void>
}

export interface UploadGrant {
  id: string
  url: string
  method: 'PUT'
  headers: Record<string, string>
  expiresAt: number
}

export interface DownloadGrant {
  url: string
  expiresAt: number
  mime: string
  size: number
  name: string
}

/** Types a browser shows inline; everything else is served as an attachment. */
const INLINE = /^(image\/(jpeg|png|gif|webp|avif)|video\/(mp4|webm)|audio\/(mpeg|ogg|mp4|webm)|application\/pdf)$/

const FILE_ID = /^[A-Za-z0-9_-]{22}$/

export function isFileId (id: string): boolean {
  return FILE_ID.test(id)
}

export interface FileServiceDeps {
  store: ObjectStore
  config: FilesConfig
  quota: UploadQuota
  logger: Logger
  now: () => number
  /** Whether the message (conversation, sender, msgId) is stored (the message store, not a cache). */
  messageStored: (conv: string, senderId: string, msgId: string) => Promise<boolean>
}

/** What an upload costs of the daily quota at least. */
const MIN_CHARGE = 4096

export class FileService {
  readonly store: ObjectStore
  private readonly images: ImageWorker

  constructor (private readonly deps: FileServiceDeps) {
    this.store = deps.store
    this.images = new ImageWorker({ concurrency: deps.config.thumbsInFlight, maxPixels: deps.config.imageMaxPixels, thumbMaxPx: deps.config.thumbMaxPx })
  }

  /** upload: a URL for a new object of exactly this size and type, in `conv`, owned by `userId`. */
  async grantUpload (userId: string, req: { conv: string, name: string, size: number, mime: string, sha256?: string }): Promise<UploadGrant> {
    const { config, quota, now } = this.deps
    if (!typeAllowed(req.mime, config.allowedTypes)) throw new ImError('UNSUPPORTED_TYPE', `files of type ${req.mime} are not allowed; allowed: ${config.allowedTypes.join(', ')}`)
    if (req.size > config.maxFileBytes) throw new ImError('TOO_LARGE', `the file is ${req.size} bytes; the limit is ${config.maxFileBytes}`)
    // every upload costs at least MIN_CHARGE: a flood of tiny uploads runs into the quota too
    if (!await quota.take(userId, Math.max(req.size, MIN_CHARGE), config.bytesPerUserPerDay, now())) throw new ImError('LIMIT_REACHED', `uploads are limited to ${config.bytesPerUserPerDay} bytes per user per day (each upload counts at least ${MIN_CHARGE} bytes)`)
    const id = randomBytes(16).toString('base64url')
    const expiresAt = now() + config.urlTtlMs
    const meta: Record<string, string> = { owner: userId, conv: req.conv, size: String(req.size), name: Buffer.from(req.name).toString('base64url'), ...(req.sha256 === undefined ? {} : { sha256: req.sha256.toLowerCase() }) }
    const url = await this.deps.store.uploadUrl(`f/${id}`, { size: req.size, mime: req.mime, meta, expiresAt, ...(req.sha256 === undefined ? {} : { sha256: req.sha256 }) })
    return { id, ...url, expiresAt }
  }

  /**
   * send (kind file): the upload must exist, be the caller's, for this conversation, with the
   * size announced; it is then referenced by this message (one message per upload). Images get
   * width, height and a thumbnail. A resend with the same msgId finds the same answer. (Two
   * sends of one upload with different msgIds at the same moment may both pass: the check and
   * the reference are not one step.)
   */
  async attach (userId: string, conv: string, msgId: string, id: string): Promise<Attachment> {
    const { store, now, config } = this.deps
    // the upload and its reference are looked up together (one round trip to S3 instead of two)
    const [info, ref] = await Promise.all([this.ownUpload(userId, conv, id), isFileId(id) ? store.head(`r/${id}`) : null])
    if (ref !== null && (ref.meta.msgid !== msgId || ref.meta.conv !== conv)) throw new ImError('CONFLICT', `file ${id} is attached to another message already; upload it again`)
    const write = async (): Promise<void> => { await store.put(`r/${id}`, Buffer.alloc(0), { mime: 'application/octet-stream', meta: { conv, msgid: msgId, owner: userId } }) }
    let refer = async (): Promise<void> => {}
    if (ref === null) {
      // an upload near the sweep's age: referenced first, then checked to be still there
      if (info.modified < now() - config.unreferencedTtlMs / 2) {
        await write()
        if (await store.head(`f/${id}`) === null) {
          await store.delete([`r/${id}`])
          throw new ImError('NOT_FOUND', `file ${id} has expired; upload it again`)
        }
      } else {
        // a younger one cannot be swept before the message is stored: referenced meanwhile
        refer = async () => {
          try {
            await write()
          } catch (err) {
            throw new ImError('UNAVAILABLE', 'the file store did not record the message\'s file; resend with the same msgId', { cause: err })
          }
        }
      }
    }
    return { file: { ...describe(id, info), ...await this.imageFacts(id, info) }, refer }
  }

  /** file-url: a short-lived URL of the file (or of its thumbnail), when it belongs to `conv`. */
  async grantDownload (conv: string, id: string, variant: 'original' | 'thumb'): Promise<DownloadGrant> {
    const { store, config, now } = this.deps
    const original = await store.head(`f/${id}`)
    if (original === null || original.meta.conv !== conv) throw new ImError('NOT_FOUND', `no file ${id} in this conversation (it may have been deleted)`)
    const d = describe(id, original)
    const expiresAt = now() + config.urlTtlMs
    if (variant === 'thumb') {
      const thumb = await store.head(`t/${id}`)
      if (thumb === null || thumb.meta.undecodable === '1' || thumb.size === 0) throw new ImError('NOT_FOUND', `file ${id} has no thumbnail`)
      const url = await store.downloadUrl(`t/${id}`, { expiresAt, mime: thumb.mime, name: `${d.name}.thumb.webp`, disposition: 'inline' })
      return { url, expiresAt, mime: thumb.mime, size: thumb.size, name: d.name }
    }
    const url = await store.downloadUrl(`f/${id}`, { expiresAt, mime: d.mime, name: d.name, disposition: INLINE.test(d.mime) ? 'inline' : 'attachment' })
    return { url, expiresAt, mime: d.mime, size: d.size, name: d.name }
  }

  /** The objects of an upload are removed (a deleted message, an expired upload). */
  async discard (id: string): Promise<void> {
    if (!isFileId(id)) return
    await this.deps.store.delete([`f/${id}`, `t/${id}`, `r/${id}`])
  }

  /**
   * One step of the sweep: looks at up to sweepMaxPerRun uploads after `cursor`, removes those
   * older than unreferencedTtlMs without a reference, or with a reference at least that old whose
   * message is not stored; returns the next cursor (null: start again).
   */
  async sweep (cursor: string | null): Promise<{ removed: number, next: string | null }> {
    const { store, config, now } = this.deps
    const page = await store.list('f/', cursor, config.sweepMaxPerRun)
    const before = now() - config.unreferencedTtlMs
    let removed = 0
    for (const item of page.items) {
      if (item.modified > before) continue
      const id = item.key.slice(2)
      const ref = await store.head(`r/${id}`)
      if (ref !== null && (ref.modified > before || await this.deps.messageStored(ref.meta.conv ?? '', ref.meta.owner ?? '', ref.meta.msgid ?? ''))) continue
      await this.discard(id)
      removed++
    }
    return { removed, next: page.next }
  }

  private async ownUpload (userId: string, conv: string, id: string): Promise<ObjectInfo> {
    const info = isFileId(id) ? await this.deps.store.head(`f/${id}`) : null
    // someone else's upload, or one for another conversation, is answered as missing (no oracle)
    if (info === null || info.meta.owner !== userId || info.meta.conv !== conv) throw new ImError('NOT_FOUND', `file ${id} was not uploaded (finish the PUT first), has expired, or is not yours for this conversation`)
    if (String(info.size) !== info.meta.size) throw new ImError('CONFLICT', `file ${id} has ${info.size} bytes, not the ${info.meta.size ?? '?'} announced`)
    return info
  }

  /** w, h and thumb of an image (made once; a resend finds the thumbnail's metadata). */
  private async imageFacts (id: string, info: ObjectInfo): Promise<Pick<FileDescriptor, 'w' | 'h' | 'thumb'>> {
    const { store, config, logger } = this.deps
    if (!THUMBNAIL_TYPES.has(info.mime) || info.size > config.imageMaxBytes || info.size === 0) return {}
    const made = await store.head(`t/${id}`)
    if (made !== null) return factsOf(made.meta)
    const image = await this.images.process(async () => await store.read(`f/${id}`, config.imageMaxBytes), info.mime)
    if (image === 'busy') {
      logger.debug({ file: id, mime: info.mime }, 'no thumbnail: too many images at once')
      return {}
    }
    if (image === null) {
      // remembered, so that resends do not decode it again (an empty marker: no thumbnail to serve)
      logger.debug({ file: id, mime: info.mime }, 'no thumbnail: not a decodable image of its type')
      await store.put(`t/${id}`, Buffer.alloc(0), { mime: 'application/octet-stream', meta: { undecodable: '1' } })
      return {}
    }
    const meta = { w: String(image.w), h: String(image.h), tw: String(image.thumb.w), th: String(image.thumb.h) }
    await store.put(`t/${id}`, image.thumb.bytes, { mime: image.thumb.mime, meta })
    return factsOf(meta)
  }
}

function factsOf (meta: Record<string, string>): Pick<FileDescriptor, 'w' | 'h' | 'thumb'> {
  const [w, h, tw, th] = [meta.w, meta.h, meta.tw, meta.th].map(Number)
  if (![w, h, tw, th].every(n => Number.isInteger(n) && (n ?? 0) > 0)) return {}
  return { w, h, thumb: { w: tw as number, h: th as number } }
}

function describe (id: string, info: ObjectInfo): FileDescriptor {
  let name = 'file'
  try {
    name = Buffer.from(info.meta.name ?? '', 'base64url').toString('utf8') || 'file'
  } catch {}
  return { id, name, size: info.size, mime: info.mime }
}

/** Runs FileService.sweep every files.sweepIntervalMs (a second later again while a step removed some and the sweep has more to look at). */
export class FileSweeper {
  private timer: NodeJS.Timeout | null = null
  private cursor: string | null = null
  private running: Promise<void> | null = null
  private closed = false

  constructor (private readonly files: FileService, private readonly intervalMs: number, private readonly logger: Logger) {}

  start (delayMs = this.intervalMs): void {
    if (this.closed || this.timer !== null) return
    this.timer = setTimeout(() => { this.running = this.step() }, delayMs)
    this.timer.unref()
  }

  /** One step now (tests); resolves when it is done. */
  async runOnce (): Promise<number> {
    const { removed, next } = await this.files.sweep(this.cursor)
    this.cursor = next
    return removed
  }

  private async step (): Promise<void> {
    this.timer = null
    let again = false
    try {
      const removed = await this.runOnce()
      if (removed > 0) this.logger.info({ removed }, 'files: unreferenced uploads removed')
      // more to look at and this step found some: the next step a second later
      again = removed > 0 && this.cursor !== null
    } catch (err) {
      this.logger.warn({ err }, 'files: the sweep of unreferenced uploads failed; it runs again later')
    }
    this.running = null
    this.start(again ? Math.min(1000, this.intervalMs) : this.intervalMs)
  }

  async close (): Promise<void> {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
    await this.running
  }
}
