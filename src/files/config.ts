/**
 * The `files` section of the configuration (attachments, issue 12): which object store, and the
 * limits of uploads. Kept here so that src/config.ts only names it. Documented in README
 * ("Configuration" and "Production: attachments on S3").
 */
import { z } from 'zod'

const httpUrl = z.string().url().refine(u => /^https?:\/\//.test(u), 'an http:// or https:// URL')

/** A media type as clients announce it: type/subtype, lower case, no parameters. */
export const MIME = /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$/
/** An allowed-type pattern: a media type, or type/* for every subtype. */
const MimePattern = z.string().refine(p => MIME.test(p) || /^[a-z0-9][a-z0-9!#$&^_.+-]{0,126}\/\*$/.test(p), 'a media type (image/png) or a type with * (image/*), lower case')

export const LocalFilesSchema = z.object({
  adapter: z.literal('local'),
  /** Where objects live; null: <dataDir>/files. */
  dir: z.string().min(1).nullable().default(null),
  /** Key of the URL signatures (32+ characters); null: one generated once into <dataDir>/files-secret. Every node of a cluster needs the same. */
  secret: z.string().min(32, 'at least 32 characters').nullable().default(null)
}).strict()

export const S3FilesSchema = z.object({
  adapter: z.literal('s3'),
  bucket: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, 'an S3 bucket name: 3-63 of a-z 0-9 . -'),
  region: z.string().min(1).default('us-east-1'),
  /** The service's URL; null: AWS S3 of `region`. */
  endpoint: httpUrl.nullable().default(null),
  /** The URL clients reach the service at, when it differs from endpoint (presigned URLs carry it). */
  publicEndpoint: httpUrl.nullable().default(null),
  /** endpoint/bucket/key URLs instead of bucket.endpoint/key (most S3-compatible services need true). */
  forcePathStyle: z.boolean().default(false),
  /** null (both): the SDK's credential chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, profile, instance role). */
  accessKeyId: z.string().min(1).nullable().default(null),
  secretAccessKey: z.string().min(1).nullable().default(null),
  /** Create the bucket at start-up when missing (otherwise it must exist). */
  createBucket: z.boolean().default(false)
}).strict().refine(s => (s.accessKeyId === null) === (s.secretAccessKey === null), { message: 'set both accessKeyId and secretAccessKey, or neither', path: ['accessKeyId'] })

export const FilesConfigSchema = z.object({
  store: z.discriminatedUnion('adapter', [LocalFilesSchema, S3FilesSchema]),
  /** Local store: the origin clients reach the HTTP listener at (https://chat.example.com); null: URLs are paths (/files/...), resolved by clients against the server they talk to. */
  publicUrl: httpUrl.nullable(),
  /** Largest file (TOO_LARGE beyond). S3 takes at most 5 GiB in one PUT. */
  maxFileBytes: z.number().int().min(1).max(5 * 1024 ** 3),
  /** Bytes one user may announce in `upload` requests per UTC day (LIMIT_REACHED beyond). */
  bytesPerUserPerDay: z.number().int().min(1),
  /** Media types that may be uploaded (UNSUPPORTED_TYPE otherwise): image/png, or image/* for a whole type. */
  allowedTypes: z.array(MimePattern).min(1).max(200),
  /** Upload and download URLs are valid this long. */
  urlTtlMs: z.number().int().min(1000).max(7 * 24 * 3600 * 1000),
  /** Uploads no message refers to are removed after this long. */
  unreferencedTtlMs: z.number().int().min(1000),
  /** Pause between two steps of the sweep of unreferenced uploads. */
  sweepIntervalMs: z.number().int().min(100).max(24 * 3600 * 1000),
  /** Uploads looked at per sweep step at most. */
  sweepMaxPerRun: z.number().int().min(1).max(10_000),
  /** Images up to this size get width, height and a thumbnail when sent. */
  imageMaxBytes: z.number().int().min(0).max(256 * 1024 * 1024),
  /** Images with more pixels than this are not decoded (no thumbnail). */
  imageMaxPixels: z.number().int().min(1).max(1_000_000_000),
  /** Longest side of a thumbnail. */
  thumbMaxPx: z.number().int().min(16).max(2048),
  /** Thumbnails being made at once per node; more wait, up to 16 times this (UNAVAILABLE beyond). */
  thumbsInFlight: z.number().int().min(1).max(64),
  /** Local store: uploads streaming at once per node (503 UNAVAILABLE beyond). */
  uploadsInFlight: z.number().int().min(1).max(10_000),
  /** Local store: an upload's body must arrive within this time (the HTTP listener's request time for bodies). */
  uploadTimeoutMs: z.number().int().min(1000).max(24 * 3600 * 1000)
}).strict()

export type FilesConfig = z.infer<typeof FilesConfigSchema>

/** True when `mime` matches one of the patterns (exact, or type/*). */
export function typeAllowed (mime: string, patterns: readonly string[]): boolean {
  const type = mime.split('/')[0] ?? ''
  return patterns.some(p => p === mime || (p.endsWith('/*') && p.slice(0, -2) === type))
}

/** Environment overrides: MQIM_S3_BUCKET switches the store to S3 (README "Configuration"). */
export function filesEnvOverrides (env: NodeJS.ProcessEnv): Record<string, unknown> | undefined {
  if (env.MQIM_S3_BUCKET === undefined || env.MQIM_S3_BUCKET === '') return undefined
  const store: Record<string, unknown> = { adapter: 's3', bucket: env.MQIM_S3_BUCKET }
  if (env.MQIM_S3_REGION) store.region = env.MQIM_S3_REGION
  if (env.MQIM_S3_ENDPOINT) {
    store.endpoint = env.MQIM_S3_ENDPOINT
    store.forcePathStyle = true
  }
  if (env.MQIM_S3_ACCESS_KEY) store.accessKeyId = env.MQIM_S3_ACCESS_KEY
  if (env.MQIM_S3_SECRET_KEY) store.secretAccessKey = env.MQIM_S3_SECRET_KEY
  return { store }
}
