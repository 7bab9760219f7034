/**
 * Attachments in the SDK: the PUT of a file's bytes to the URL `upload` answered, with progress.
 * In the browser XMLHttpRequest reports upload progress; in Node, ./node.ts has `nodeUploader`
 * (node:http, progress per chunk written). Without either, fetch uploads and reports 0 and the end.
 */
import { ImClientError, type ImClientErrorCode } from './errors.js'

/** A file to send: a Blob or File (browser, Node 20+), or bytes (then `name` and `mime` come from the options). */
export type FileSource = Blob | Uint8Array

export interface UploadProgress {
  conv: string
  /** The upload's id (also the `id` of the file message's body). */
  file: string
  name: string
  sent: number
  total: number
}

export interface UploadRequest {
  url: string
  method: 'PUT'
  headers: Record<string, string>
  body: FileSource
  size: number
  onProgress: (sent: number) => void
}

/** Performs one upload; resolves with the HTTP status and body text. */
export type Uploader = (req: UploadRequest) => Promise<{ status: number, text: string }>

export interface SendFileOptions {
  /** The file name shown (default: the File's name, else "file"). */
  name?: string
  /** The media type (default: the Blob's type, else application/octet-stream). */
  mime?: string
  msgId?: string
  onProgress?: (p: UploadProgress) => void
}

/** Name, type and size of a file source. */
export function describeSource (file: FileSource, opts: SendFileOptions): { name: string, mime: string, size: number } {
  const isBlob = typeof Blob !== 'undefined' && file instanceof Blob
  const fileName = isBlob && 'name' in file && typeof file.name === 'string' ? file.name : undefined
  const blobType = isBlob ? file.type : ''
  const mime = (opts.mime ?? (blobType === '' ? 'application/octet-stream' : blobType)).split(';')[0]?.trim().toLowerCase() ?? ''
  return { name: opts.name ?? fileName ?? 'file', mime, size: isBlob ? file.size : (file as Uint8Array).byteLength }
}

/** The browser's uploader: XMLHttpRequest, whose upload events report progress. */
export const xhrUploader: Uploader = async (req) => await new Promise((resolve, reject) => {
  const xhr = new XMLHttpRequest()
  xhr.open(req.method, req.url)
  for (const [k, v] of Object.entries(req.headers)) xhr.setRequestHeader(k, v)
  xhr.upload.onprogress = (e) => { req.onProgress(e.loaded) }
  xhr.onload = () => { resolve({ status: xhr.status, text: xhr.responseText }) }
  xhr.onerror = () => { reject(new ImClientError('UNAVAILABLE', 'the upload failed (network error)')) }
  xhr.send(req.body as XMLHttpRequestBodyInit)
})

/** The fallback: fetch (no progress between the start and the end). */
export const fetchUploader: Uploader = async (req) => {
  req.onProgress(0)
  const res = await fetch(req.url, { method: req.method, headers: req.headers, body: req.body as BodyInit })
  const text = await res.text()
  if (res.ok) req.onProgress(req.size)
  return { status: res.status, text }
}

export function defaultUploader (): Uploader {
  return typeof XMLHttpRequest === 'undefined' ? fetchUploader : xhrUploader
}

/** Where relative file URLs point: the HTTP origin of a ws(s):// server URL, or the page's. */
export function httpBaseOf (serverUrl: string): string | null {
  const u = new URL(serverUrl)
  if (u.protocol === 'ws:' || u.protocol === 'wss:') return `${u.protocol === 'wss:' ? 'https:' : 'http:'}//${u.host}`
  if (typeof location !== 'undefined') return location.origin
  return null
}

/** An absolute URL for what the server answered (absolute already, or a path on its HTTP listener). */
export function resolveFileUrl (url: string, base: string | null): string {
  if (/^https?:\/\//.test(url)) return url
  if (base === null) throw new ImClientError('BAD_REQUEST', 'the server answered a relative file URL: set the httpUrl option (the server\'s HTTP address)')
  return new URL(url, base).toString()
}

/** The error of a failed PUT: the server's {code, message} when it sent one. */
export function uploadError (status: number, text: string): ImClientError {
  try {
    const j = JSON.parse(text) as { code?: unknown, message?: unknown }
    if (typeof j.code === 'string' && typeof j.message === 'string') return new ImClientError(j.code as ImClientErrorCode, `upload: ${j.message}`, 'upload')
  } catch {}
  return new ImClientError(status === 403 ? 'FORBIDDEN' : 'UNAVAILABLE', `upload: HTTP ${status}`, 'upload')
}
