/**
 * The S3 object store: any S3-compatible service (AWS S3, SeaweedFS in tests, Ceph, R2, ...)
 * through @aws-sdk/client-s3. Clients upload and download with presigned URLs; the PUT URL signs
 * the content length, content type and metadata headers, so a PUT of another size, another type
 * or other metadata is refused by the service.
 */
import type { Readable } from 'node:stream'
import { S3Client, PutObjectCommand, GetObjectCommand, HeadObjectCommand, DeleteObjectCommand, ListObjectsV2Command, CreateBucketCommand, HeadBucketCommand } from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { checkKey, checkMeta, contentDisposition, ObjectTooLargeError, type DownloadBinding, type ObjectInfo, type ObjectStore, type UploadBinding, type UploadUrl } from './object-store.js'

export interface S3StoreOptions {
  bucket: string
  region: string
  /** The service's URL (null: AWS S3 of the region). */
  endpoint: string | null
  /** The URL clients reach the service at, when it differs from `endpoint` (presigned URLs use it). */
  publicEndpoint: string | null
  /** Path-style URLs (endpoint/bucket/key), which most S3-compatible services need. */
  forcePathStyle: boolean
  /** null: the SDK's default credential chain (environment, profile, instance role). */
  accessKeyId: string | null
  secretAccessKey: string | null
  /** Create the bucket at start-up when it does not exist. */
  createBucket: boolean
}

/** Longest a presigned URL may live (S3's own limit is 7 days). */
const MAX_PRESIGN_SECONDS = 7 * 24 * 3600

function clientFor (options: S3StoreOptions, endpoint: string | null): S3Client {
  return new S3Client({
    region: options.region,
    forcePathStyle: options.forcePathStyle,
    ...(endpoint === null ? {} : { endpoint }),
    ...(options.accessKeyId !== null && options.secretAccessKey !== null ? { credentials: { accessKeyId: options.accessKeyId, secretAccessKey: options.secretAccessKey } } : {}),
    // no checksum headers on presigned PUTs (a browser could not compute them in advance)
    requestChecksumCalculation: 'WHEN_REQUIRED',
    responseChecksumValidation: 'WHEN_REQUIRED',
    maxAttempts: 3
  })
}

function isNotFound (err: unknown): boolean {
  const e = err as { name?: string, $metadata?: { httpStatusCode?: number } }
  return e.name === 'NotFound' || e.name === 'NoSuchKey' || e.$metadata?.httpStatusCode === 404
}

function secondsUntil (expiresAt: number): number {
  return Math.max(1, Math.min(MAX_PRESIGN_SECONDS, Math.ceil((expiresAt - Date.now()) / 1000)))
}

export class S3ObjectStore implements ObjectStore {
  readonly adapter = 's3' as const
  private readonly s3: S3Client
  private readonly presigner: S3Client

  constructor (private readonly options: S3StoreOptions) {
    this.s3 = clientFor(options, options.endpoint)
    this.presigner = options.publicEndpoint === null ? this.s3 : clientFor(options, options.publicEndpoint)
  }

  async init (): Promise<void> {
    try {
      await this.s3.send(new HeadBucketCommand({ Bucket: this.options.bucket }))
    } catch (err) {
      if (!isNotFound(err) || !this.options.createBucket) throw err
      await this.s3.send(new CreateBucketCommand({ Bucket: this.options.bucket }))
    }
  }

  async close (): Promise<void> {
    this.s3.destroy()
    if (this.presigner !== this.s3) this.presigner.destroy()
  }

  async uploadUrl (key: string, binding: UploadBinding): Promise<UploadUrl> {
    checkKey(key)
    const meta = checkMeta(binding.meta)
    const command = new PutObjectCommand({ Bucket: this.options.bucket, Key: key, ContentLength: binding.size, ContentType: binding.mime, Metadata: meta })
    const metaHeaders = Object.keys(meta).map(k => `x-amz-meta-${k}`)
    const url = await getSignedUrl(this.presigner, command, {
      expiresIn: secondsUntil(binding.expiresAt),
      signableHeaders: new Set(['content-type', 'content-length', ...metaHeaders]),
      unhoistableHeaders: new Set(metaHeaders)
    })
    const headers: Record<string, string> = { 'content-type': binding.mime }
    for (const [k, v] of Object.entries(meta)) headers[`x-amz-meta-${k}`] = v
    return { url, method: 'PUT', headers }
  }

  async downloadUrl (key: string, binding: DownloadBinding): Promise<string> {
    checkKey(key)
    const command = new GetObjectCommand({
      Bucket: this.options.bucket,
      Key: key,
      ResponseContentType: binding.mime,
      ResponseContentDisposition: contentDisposition(binding.disposition, binding.name)
    })
    return await getSignedUrl(this.presigner, command, { expiresIn: secondsUntil(binding.expiresAt) })
  }

  async put (key: string, body: Buffer, binding: { mime: string, meta: Record<string, string> }): Promise<void> {
    checkKey(key)
    await this.s3.send(new PutObjectCommand({ Bucket: this.options.bucket, Key: key, Body: body, ContentLength: body.length, ContentType: binding.mime, Metadata: checkMeta(binding.meta) }))
  }

  async head (key: string): Promise<ObjectInfo | null> {
    checkKey(key)
    try {
      const out = await this.s3.send(new HeadObjectCommand({ Bucket: this.options.bucket, Key: key }))
      return { key, size: out.ContentLength ?? 0, mime: out.ContentType ?? 'application/octet-stream', meta: out.Metadata ?? {}, modified: out.LastModified?.getTime() ?? 0 }
    } catch (err) {
      if (isNotFound(err)) return null
      throw err
    }
  }

  async read (key: string, maxBytes: number): Promise<Buffer | null> {
    checkKey(key)
    let out
    try {
      out = await this.s3.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }))
    } catch (err) {
      if (isNotFound(err)) return null
      throw err
    }
    const body = out.Body as Readable | undefined
    if ((out.ContentLength ?? 0) > maxBytes) {
      body?.destroy()
      throw new ObjectTooLargeError(key, maxBytes)
    }
    if (body === undefined) return Buffer.alloc(0)
    const chunks: Buffer[] = []
    let n = 0
    for await (const chunk of body) {
      n += (chunk as Buffer).length
      if (n > maxBytes) {
        body.destroy()
        throw new ObjectTooLargeError(key, maxBytes)
      }
      chunks.push(chunk as Buffer)
    }
    return Buffer.concat(chunks)
  }

  async stream (key: string): Promise<Readable | null> {
    checkKey(key)
    try {
      const out = await this.s3.send(new GetObjectCommand({ Bucket: this.options.bucket, Key: key }))
      return (out.Body as Readable | undefined) ?? null
    } catch (err) {
      if (isNotFound(err)) return null
      throw err
    }
  }

  async delete (keys: readonly string[]): Promise<void> {
    for (const key of keys) checkKey(key)
    // one request per key: DeleteObjects needs a Content-MD5 some services insist on, and lists are short
    await Promise.all(keys.map(async (key) => await this.s3.send(new DeleteObjectCommand({ Bucket: this.options.bucket, Key: key }))))
  }

  async list (prefix: string, after: string | null, limit: number): Promise<{ items: Array<{ key: string, size: number, modified: number }>, next: string | null }> {
    if (!/^[a-z]\/$/.test(prefix)) throw new Error(`not a key prefix: ${prefix}`)
    if (limit <= 0) return { items: [], next: null }
    const out = await this.s3.send(new ListObjectsV2Command({ Bucket: this.options.bucket, Prefix: prefix, MaxKeys: Math.min(1000, limit), ...(after === null ? {} : { StartAfter: after }) }))
    const items = (out.Contents ?? []).filter(o => o.Key !== undefined).map(o => ({ key: o.Key as string, size: o.Size ?? 0, modified: o.LastModified?.getTime() ?? 0 }))
    return { items, next: out.IsTruncated === true ? (items.at(-1)?.key ?? null) : null }
  }
}
