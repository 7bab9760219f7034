/**
 * The local object store on mqim's HTTP listener: `PUT /files/<key>?p=..&s=..` streams an upload
 * to disk (./local-store.ts) and `GET /files/<key>?p=..&s=..` serves it, with single byte-range
 * requests. Both need a URL signed by the server (./signing.ts) that has not expired; a PUT must
 * carry the signed content type, and a body longer than the signed size is refused as soon as it
 * gets longer (from its content-length before anything is read). Uploads at once are bounded.
 *
 * What is served is never run by the browser in the page's origin: every answer carries
 * `content-security-policy: sandbox; default-src 'none'`, nosniff, and anything but images, audio,
 * video and PDF is sent as an attachment.
 */
import type { FastifyError, FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { createReadStream } from 'node:fs'
import { ImError } from '../errors.js'
import { fromFastify, statusOf } from '../http/app.js'
import { contentDisposition } from './object-store.js'
import { LocalObjectStore, UploadRefusedError } from './local-store.js'

export interface FileRoutesOptions {
  store: LocalObjectStore
  /** Uploads streaming at once on this node (503 UNAVAILABLE beyond). */
  uploadsInFlight: number
  now?: () => number
}

const FILE_HEADERS = {
  'content-security-policy': "sandbox; default-src 'none'; img-src 'self'; media-src 'self'",
  'x-content-type-options': 'nosniff',
  'cross-origin-resource-policy': 'same-origin',
  'cache-control': 'private, max-age=300'
}

interface FileParams { prefix: string, id: string }
interface FileQuery { p?: string, s?: string }

/** The media type alone, lower-cased (no parameters). */
function mediaType (header: string | undefined): string {
  return (header ?? '').split(';')[0]?.trim().toLowerCase() ?? ''
}

/** bytes=a-b, bytes=a-, bytes=-n (one range) -> [start, end] inclusive; null: serve whole; 'unsatisfiable'. */
export function parseRange (header: string | undefined, size: number): [number, number] | null | 'unsatisfiable' {
  if (header === undefined) return null
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) return null // several ranges or another unit: the whole file (RFC 9110 14.2 allows it)
  const [, a = '', b = ''] = m
  if (a === '' && b === '') return null
  if (a === '') {
    const n = Number(b)
    if (n === 0 || size === 0) return 'unsatisfiable'
    return [Math.max(0, size - n), size - 1]
  }
  const start = Number(a)
  const end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
  if (start >= size || start > end) return 'unsatisfiable'
  return [start, end]
}

export async function fileRoutes (app: FastifyInstance, options: FileRoutesOptions): Promise<void> {
  const { store } = options
  const now = options.now ?? Date.now
  let inFlight = 0
  /** Keys whose body is being received (at most uploadsInFlight). */
  const receiving = new Set<string>()
  /** Uploads streaming per owner (an entry only while some do). */
  const byOwner = new Map<string, number>()
  const perOwner = Math.max(1, Math.ceil(options.uploadsInFlight / 16))

  // bodies are streamed by the PUT handler itself, whatever their type
  app.removeAllContentTypeParsers()
  app.addContentTypeParser('*', (_req, _payload, done) => { done(null, undefined) })
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.headers(FILE_HEADERS)
    return payload
  })
  app.setErrorHandler((err: FastifyError, _req, reply) => {
    // fastify's own refusals are the client's (a content-type that is not a media type, a bad URL)
    const imErr = err instanceof ImError
      ? err
      : err.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? new ImError('UNSUPPORTED_TYPE', 'the content-type is not a media type (type/subtype)') : fromFastify(err)
    if (imErr.code === 'INTERNAL') app.log.error({ err }, 'file request failed')
    void reply.code(statusOf(imErr.code)).send({ code: imErr.code, message: imErr.message })
  })

  function grantFor (req: FastifyRequest<{ Params: FileParams, Querystring: FileQuery }>, method: 'PUT' | 'GET'): { key: string, grant: NonNullable<ReturnType<LocalObjectStore['signer']['check']> & { ok: true }>['grant'] } {
    const key = `${req.params.prefix}/${req.params.id}`
    const checked = store.signer.check(req.query.p, req.query.s, now())
    if (!checked.ok) throw new ImError('FORBIDDEN', checked.reason === 'expired' ? 'this URL has expired; ask for a new one' : 'this URL is not valid (not signed by this server, or changed)')
    if (checked.grant.k !== key || checked.grant.m !== method) throw new ImError('FORBIDDEN', `this URL is not valid for ${method} of this object`)
    return { key, grant: checked.grant }
  }

  app.put<{ Params: FileParams, Querystring: FileQuery }>('/files/:prefix/:id', async (req, reply) => {
    const { key, grant } = grantFor(req, 'PUT')
    const size = grant.z ?? 0
    const type = mediaType(req.headers['content-type'])
    if (type !== grant.t) throw new ImError('UNSUPPORTED_TYPE', `content-type must be ${grant.t} (as announced), not ${type === '' ? 'missing' : type}`)
    const declared = req.headers['content-length']
    if (declared !== undefined && Number(declared) !== size) {
      reply.header('connection', 'close')
      throw Number(declared) > size ? new ImError('TOO_LARGE', `content-length ${declared} is more than the announced ${size} bytes`) : new ImError('BAD_REQUEST', `content-length ${declared} is not the announced ${size} bytes`)
    }
    if (inFlight >= options.uploadsInFlight) {
      reply.header('connection', 'close')
      throw new ImError('UNAVAILABLE', 'too many uploads at once on this server; retry shortly')
    }
    // one body per upload at a time, and each user a share of the places (a slow sender holding
    // many connections to one URL, or many URLs, cannot take them all)
    const owner = grant.meta?.owner ?? ''
    if (receiving.has(key)) {
      reply.header('connection', 'close')
      throw new ImError('CONFLICT', 'this upload is being received already')
    }
    const mine = byOwner.get(owner) ?? 0
    if (mine >= perOwner) {
      reply.header('connection', 'close')
      throw new ImError('RATE_LIMITED', `at most ${perOwner} of your uploads stream at once; retry when one has finished`)
    }
    receiving.add(key)
    byOwner.set(owner, mine + 1)
    inFlight++
    try {
      await store.receive(key, req.raw, { size, mime: grant.t, meta: grant.meta ?? {}, ...(grant.h === undefined ? {} : { sha256: grant.h }) })
    } catch (err) {
      if (!(err instanceof UploadRefusedError)) throw err
      // the rest of a refused body is not read: the connection closes after the answer
      reply.header('connection', 'close')
      switch (err.reason) {
        case 'too large': throw new ImError('TOO_LARGE', err.message)
        case 'exists': throw new ImError('CONFLICT', err.message)
        default: throw new ImError('BAD_REQUEST', err.message)
      }
    } finally {
      inFlight--
      receiving.delete(key)
      const left = (byOwner.get(owner) ?? 1) - 1
      if (left > 0) byOwner.set(owner, left)
      else byOwner.delete(owner)
    }
    return await reply.code(201).send({ key, size })
  })

  app.get<{ Params: FileParams, Querystring: FileQuery }>('/files/:prefix/:id', async (req, reply: FastifyReply) => {
    const { key, grant } = grantFor(req, 'GET')
    const info = await store.head(key)
    if (info === null) throw new ImError('NOT_FOUND', 'no such file (it may have been deleted)')
    const range = parseRange(req.headers.range, info.size)
    void reply.header('accept-ranges', 'bytes')
      .header('content-type', grant.t)
      .header('content-disposition', contentDisposition(grant.d ?? 'attachment', grant.n ?? 'file'))
    if (range === 'unsatisfiable') {
      return await reply.code(416).header('content-range', `bytes */${info.size}`).header('content-type', 'application/json; charset=utf-8').header('content-disposition', 'inline')
        .send(JSON.stringify({ code: 'BAD_REQUEST', message: 'range not satisfiable' }))
    }
    const [start, end] = range ?? [0, info.size - 1]
    if (range !== null) void reply.code(206).header('content-range', `bytes ${start}-${end}/${info.size}`)
    void reply.header('content-length', String(Math.max(0, end - start + 1)))
    if (info.size === 0) return await reply.send('')
    return await reply.send(createReadStream(store.pathOf(key), { start, end }))
  })
}
