/**
 * The object store contract: where attachments live. Two adapters, chosen by name from config
 * (`files.store.adapter`): local disk under the data dir (the embedded default, served by mqim's
 * own HTTP listener, see ./local-store.ts and ./routes.ts) and S3-compatible storage (./s3-store.ts).
 * Every adapter passes the one contract suite in test/contract/object-store.contract.ts.
 *
 * Keys are made by the server only: `<prefix>/<id>` with a one-letter prefix and an id of 16-64
 * characters of A-Z a-z 0-9 _ - (see isObjectKey); an adapter refuses any other key, so a key can
 * never name something outside the store.
 */
import type { Readable } from 'node:stream'

/** What a stored object says about itself. */
export interface ObjectInfo {
  key: string
  size: number
  /** The content type it was stored with. */
  mime: string
  /** String metadata stored with it (ASCII values; callers encode what is not). */
  meta: Record<string, string>
  /** When it was written (epoch ms). */
  modified: number
}

/** What an upload URL is bound to. */
export interface UploadBinding {
  /** Exactly this many bytes (a different length is refused). */
  size: number
  /** Exactly this content type. */
  mime: string
  /** Stored with the object (lower-case keys of a-z 0-9 -; ASCII values). */
  meta: Record<string, string>
  /** Hex SHA-256 the bytes must have, where the adapter can check it (local disk). */
  sha256?: string
  /** The URL is refused after this time (epoch ms). */
  expiresAt: number
}

export interface UploadUrl {
  url: string
  method: 'PUT'
  /** Headers the PUT must carry exactly as given (content type, signed metadata). */
  headers: Record<string, string>
}

export interface DownloadBinding {
  expiresAt: number
  /** The content type the answer carries. */
  mime: string
  /** The file name the answer suggests (content-disposition). */
  name: string
  /** inline: shown by the browser (images); attachment: saved. */
  disposition: 'inline' | 'attachment'
}

export interface ObjectStore {
  /** Connect, create the bucket or directory when missing. */
  init (): Promise<void>
  close (): Promise<void>
  /** Which adapter this is (logs, /healthz). */
  readonly adapter: 'local' | 's3'

  /** A short-lived URL a client PUTs the object's bytes to; the object exists once the PUT answered 2xx. */
  uploadUrl (key: string, binding: UploadBinding): Promise<UploadUrl>
  /** A short-lived URL to GET the object (with Range requests). */
  downloadUrl (key: string, binding: DownloadBinding): Promise<string>

  /** Writes an object from the server (thumbnails, markers); `size` bytes exactly, or nothing is left. */
  put (key: string, body: Buffer, binding: { mime: string, meta: Record<string, string> }): Promise<void>
  /** The object's info, or null if it does not exist. */
  head (key: string): Promise<ObjectInfo | null>
  /** The whole object, or null if it does not exist; throws ObjectTooLargeError beyond maxBytes (read no further). */
  read (key: string, maxBytes: number): Promise<Buffer | null>
  /** The object as a stream (the server's own copies), or null if it does not exist. */
  stream (key: string): Promise<Readable | null>
  /** Removes the objects; missing ones are no error. */
  delete (keys: readonly string[]): Promise<void>
  /**
   * One page of the keys under `prefix` (e.g. "f/"), in key order, after `after` (null: from the
   * start), at most `limit`; `next` is the cursor for the next page (null: the end).
   */
  list (prefix: string, after: string | null, limit: number): Promise<{ items: Array<{ key: string, size: number, modified: number }>, next: string | null }>
}

/** ^[a-z]/[A-Za-z0-9_-]{16,64}$ : the only keys an adapter accepts. */
const KEY = /^[a-z]\/[A-Za-z0-9_-]{16,64}$/

export function isObjectKey (key: string): boolean {
  return KEY.test(key)
}

export class BadObjectKeyError extends Error {
  constructor (key: string) {
    super(`not an object key: ${JSON.stringify(key.slice(0, 80))}`)
    this.name = 'BadObjectKeyError'
  }
}

export class ObjectTooLargeError extends Error {
  constructor (key: string, maxBytes: number) {
    super(`object ${key} is larger than ${maxBytes} bytes`)
    this.name = 'ObjectTooLargeError'
  }
}

export function checkKey (key: string): string {
  if (!isObjectKey(key)) throw new BadObjectKeyError(key)
  return key
}

/** Metadata keys: lower-case a-z 0-9 -, 1-32; values printable ASCII up to 1024 characters. */
export function checkMeta (meta: Record<string, string>): Record<string, string> {
  for (const [k, v] of Object.entries(meta)) {
    if (!/^[a-z0-9-]{1,32}$/.test(k)) throw new Error(`bad metadata key ${JSON.stringify(k)}`)
    if (!/^[\x20-\x7e]{0,1024}$/.test(v)) throw new Error(`bad metadata value for ${k}`)
  }
  return meta
}

/** RFC 6266 content-disposition with an ASCII fallback and the UTF-8 name. */
export function contentDisposition (disposition: 'inline' | 'attachment', name: string): string {
  const ascii = name.replace(/[^\x20-\x7e]|["\\]/g, '_')
  return `${disposition}; filename="${ascii}"; filename*=UTF-8''${encodeURIComponent(name)}`
}
