/**
 * The upload scenario (`npm run bench -- --only upload`): N uploads of B bytes through mqim (the
 * `upload` request over MQTT, the HTTP PUT to the URL it answers, then `send` of kind file, acked)
 * against direct PUTs of the same bytes to the same store in the same run:
 *
 *   local disk: mqim's own HTTP listener writing under its data dir, against a bare node:http server
 *               in its own process streaming PUT bodies to files on the same file system;
 *   s3:         (when MQIM_S3_ENDPOINT etc. are set, e.g. by scripts/services.sh) SeaweedFS through
 *               mqim's presigned URLs, against PUTs presigned by the bench itself.
 *
 * Each round starts a fresh mqim, then runs mqim and direct in alternating order. The server's RSS
 * is sampled every 20 ms during the mqim run: growth = the highest sample minus the one before it.
 */
import { randomBytes } from 'node:crypto'
import { mkdirSync } from 'node:fs'
import path from 'node:path'
import { S3Client, PutObjectCommand, CreateBucketCommand } from '@aws-sdk/client-s3'
import { getSignedUrl } from '@aws-sdk/s3-request-presigner'
import { freePort, spawnTracked, stopChild, waitUntil, canConnect } from '../lib/procs.js'
import { median } from './lib/hist.js'
import { createBots, ImClient, openDirects } from './lib/im.js'
import { startMqim } from './lib/targets.js'
import type { Ctx } from './scenarios.js'

export interface UploadParams { uploads: number, bytes: number, concurrency: number, rounds: number }

export interface S3Service { endpoint: string, accessKey: string, secretKey: string, region: string }

export interface UploadRound {
  store: 'local' | 's3'
  round: number
  mqimPerSec: number
  directPerSec: number
  ratio: number
  rssBeforeMiB: number
  rssPeakMiB: number
  rssGrowthMiB: number
  /** medians of the three steps through mqim, ms */
  stepsMs: { upload: number, put: number, send: number, directPut: number }
}

export interface UploadResult { store: 'local' | 's3', rounds: UploadRound[], medianRatio: number, medianMqimPerSec: number, medianDirectPerSec: number, maxRssGrowthMiB: number }

const MiB = 1024 * 1024

/** The S3 service of scripts/services.sh, when its variables are set. */
export function s3FromEnv (env: NodeJS.ProcessEnv = process.env): S3Service | null {
  const { MQIM_S3_ENDPOINT: endpoint, MQIM_S3_ACCESS_KEY: accessKey, MQIM_S3_SECRET_KEY: secretKey } = env
  if (endpoint === undefined || accessKey === undefined || secretKey === undefined) return null
  return { endpoint, accessKey, secretKey, region: env.MQIM_S3_REGION ?? 'us-east-1' }
}

/** Runs `n` jobs, `concurrency` at a time; resolves with the seconds it took. */
async function timed (n: number, concurrency: number, job: (i: number) => Promise<void>): Promise<number> {
  let next = 0
  const t0 = performance.now()
  await Promise.all(Array.from({ length: Math.min(concurrency, n) }, async () => {
    while (next < n) await job(next++)
  }))
  return (performance.now() - t0) / 1000
}

async function put (url: string, headers: Record<string, string>, body: Uint8Array<ArrayBuffer>): Promise<void> {
  const res = await fetch(url, { method: 'PUT', headers, body })
  const text = await res.text()
  if (!res.ok) throw new Error(`PUT answered ${res.status}: ${text.slice(0, 200)}`)
}

/** A bare HTTP server in its own process: each PUT body streamed to a new file in `dir`. */
const DIRECT_SERVER = `
import http from 'node:http'
import { createWriteStream } from 'node:fs'
import { pipeline } from 'node:stream/promises'
let n = 0
const [dir, port] = process.argv.slice(1)
http.createServer((req, res) => {
  pipeline(req, createWriteStream(dir + '/' + (n++))).then(() => { res.writeHead(201); res.end() }, () => { res.writeHead(500); res.end() })
}).listen(Number(port), '127.0.0.1')
`

export async function runUpload (ctx: Ctx, store: 'local' | 's3', p: UploadParams, s3: S3Service | null): Promise<UploadResult> {
  const body = new Uint8Array(randomBytes(p.bytes))
  const rounds: UploadRound[] = []
  const bucket = `bench-${randomBytes(4).toString('hex')}`
  const s3client = s3 === null ? null : new S3Client({ region: s3.region, endpoint: s3.endpoint, forcePathStyle: true, credentials: { accessKeyId: s3.accessKey, secretAccessKey: s3.secretKey }, requestChecksumCalculation: 'WHEN_REQUIRED' })
  if (store === 's3') {
    if (s3 === null || s3client === null) throw new Error('the s3 upload scenario needs MQIM_S3_ENDPOINT, MQIM_S3_ACCESS_KEY and MQIM_S3_SECRET_KEY (scripts/services.sh start)')
    await s3client.send(new CreateBucketCommand({ Bucket: bucket }))
  }
  const filesConfig = store === 'local'
    ? { store: { adapter: 'local' }, maxFileBytes: p.bytes * 2, bytesPerUserPerDay: p.bytes * p.uploads * p.rounds * 4 + 100 * MiB }
    : { store: { adapter: 's3', bucket, region: s3?.region, endpoint: s3?.endpoint, forcePathStyle: true, accessKeyId: s3?.accessKey, secretAccessKey: s3?.secretKey }, maxFileBytes: p.bytes * 2, bytesPerUserPerDay: p.bytes * p.uploads * p.rounds * 4 + 100 * MiB }

  // direct: the baseline server (local disk) or presigned PUTs of our own (S3)
  let directUrl: (i: number) => Promise<string>
  let stopDirect = async (): Promise<void> => {}
  if (store === 'local') {
    const dir = path.join(ctx.dir, 'upload-direct')
    mkdirSync(dir, { recursive: true })
    const port = await freePort()
    const child = spawnTracked(process.execPath, ['--input-type=module', '-e', DIRECT_SERVER, dir, String(port)], { stdio: 'ignore' })
    await waitUntil(async () => await canConnect(port), 10_000, 'the direct upload server')
    directUrl = async (i) => `http://127.0.0.1:${port}/direct-${i}`
    stopDirect = async () => { await stopChild(child, 'SIGTERM', 5000) }
  } else {
    let k = 0
    directUrl = async () => await getSignedUrl(s3client as S3Client, new PutObjectCommand({ Bucket: bucket, Key: `d/direct${k++}`, ContentLength: p.bytes, ContentType: 'application/octet-stream' }), { expiresIn: 600, signableHeaders: new Set(['content-type', 'content-length']) })
  }

  try {
    for (let r = 1; r <= p.rounds; r++) {
      const target = await startMqim(path.join(ctx.dir, `upload-${store}-r${r}`), { stores: null, config: { files: filesConfig } })
      try {
        const [alice, bob] = await createBots(target, ['alice', 'bob'] as const)
        const [conv] = await openDirects(target, [[alice, bob]] as const)
        const im = await ImClient.connect(target, alice, 'bench')
        const origin = `http://127.0.0.1:${target.httpPort ?? 0}`
        let seq = 0
        const steps = { upload: [] as number[], put: [] as number[], send: [] as number[], directPut: [] as number[] }
        const viaMqim = async (): Promise<void> => {
          const t0 = performance.now()
          const grant = await im.request<{ id: string, url: string, headers: Record<string, string> }>('upload', { conv, name: 'bench.bin', size: p.bytes, mime: 'application/octet-stream' })
          const t1 = performance.now()
          await put(new URL(grant.url, origin).toString(), grant.headers, body)
          const t2 = performance.now()
          await im.request('send', { conv, msgId: `u${r}-${seq++}`, kind: 'file', body: { id: grant.id } })
          steps.upload.push(t1 - t0)
          steps.put.push(t2 - t1)
          steps.send.push(performance.now() - t2)
        }
        const direct = async (i: number): Promise<void> => {
          const url = await directUrl(r * 100_000 + i)
          const t0 = performance.now()
          await put(url, { 'content-type': 'application/octet-stream' }, body)
          steps.directPut.push(performance.now() - t0)
        }
        // warm up both paths (JIT, connections), unmeasured
        await timed(5, p.concurrency, async () => { await viaMqim() })
        await timed(5, p.concurrency, direct)
        for (const list of Object.values(steps)) list.length = 0
        const measureMqim = async (): Promise<{ perSec: number, before: number, peak: number }> => {
          const before = target.sample().rssBytes
          let peak = before
          const sampler = setInterval(() => { peak = Math.max(peak, target.sample().rssBytes) }, 20)
          try {
            const seconds = await timed(p.uploads, p.concurrency, async () => { await viaMqim() })
            return { perSec: p.uploads / seconds, before, peak: Math.max(peak, target.sample().rssBytes) }
          } finally {
            clearInterval(sampler)
          }
        }
        const measureDirect = async (): Promise<number> => p.uploads / await timed(p.uploads, p.concurrency, direct)
        let m: { perSec: number, before: number, peak: number }
        let d: number
        if (r % 2 === 1) {
          m = await measureMqim()
          d = await measureDirect()
        } else {
          d = await measureDirect()
          m = await measureMqim()
        }
        await im.end()
        const round: UploadRound = { store, round: r, mqimPerSec: m.perSec, directPerSec: d, ratio: m.perSec / d, rssBeforeMiB: m.before / MiB, rssPeakMiB: m.peak / MiB, rssGrowthMiB: (m.peak - m.before) / MiB, stepsMs: { upload: median(steps.upload), put: median(steps.put), send: median(steps.send), directPut: median(steps.directPut) } }
        ctx.log(`upload ${store} r${r}: mqim ${round.mqimPerSec.toFixed(1)}/s, direct ${round.directPerSec.toFixed(1)}/s, ratio ${round.ratio.toFixed(2)}; server RSS ${round.rssBeforeMiB.toFixed(0)} -> peak ${round.rssPeakMiB.toFixed(0)} MiB (+${round.rssGrowthMiB.toFixed(1)}); median ms: upload ${round.stepsMs.upload.toFixed(1)}, PUT ${round.stepsMs.put.toFixed(1)}, send ${round.stepsMs.send.toFixed(1)} | direct PUT ${round.stepsMs.directPut.toFixed(1)}`)
        rounds.push(round)
      } finally {
        await target.stop()
      }
    }
  } finally {
    await stopDirect()
    s3client?.destroy()
  }
  return {
    store,
    rounds,
    medianRatio: median(rounds.map(x => x.ratio)),
    medianMqimPerSec: median(rounds.map(x => x.mqimPerSec)),
    medianDirectPerSec: median(rounds.map(x => x.directPerSec)),
    maxRssGrowthMiB: Math.max(...rounds.map(x => x.rssGrowthMiB))
  }
}

/** The table lines of the upload results, with the targets (≥ 0.5× the direct rate, ≤ 50 MiB RSS growth). */
export function uploadTable (results: UploadResult[], p: UploadParams): string {
  const out = [`upload: ${p.uploads} uploads of ${(p.bytes / MiB).toFixed(0)} MiB, ${p.concurrency} at a time, ${p.rounds} round(s); medians over rounds`]
  for (const r of results) {
    out.push(`  ${r.store.padEnd(6)} mqim ${r.medianMqimPerSec.toFixed(1)} uploads/s  direct ${r.medianDirectPerSec.toFixed(1)} uploads/s  ratio ${r.medianRatio.toFixed(2)} (target >= 0.5: ${r.medianRatio >= 0.5 ? 'met' : 'NOT met'})  server RSS growth max ${r.maxRssGrowthMiB.toFixed(1)} MiB (target <= 50: ${r.maxRssGrowthMiB <= 50 ? 'met' : 'NOT met'})  rounds: ${r.rounds.map(x => x.ratio.toFixed(2)).join(', ')}`)
  }
  return out.join('\n')
}
