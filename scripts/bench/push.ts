/**
 * The push scenario: does a push gateway that is down or hanging slow sends down?
 *
 * Each measurement starts a fresh mqim (embedded stores) whose push gateway is, in turn:
 *   up         a local receiver answering 200 at once (in the runner's process),
 *   down       a port nobody listens on (every push refused at once, retried with back-off),
 *   hanging    a receiver that accepts and never answers (every push waits push.timeoutMs).
 * One sender (from the runner's process) sends at a fixed rate (open loop) round-robin to `pairs`
 * direct conversations whose peers are offline with a gateway target, so every conversation wants
 * a push per collapse window; the figure is the sender's request -> reply latency (p50, p99) in a
 * window after a warm-up. Rounds interleave the three gateways (up, down, hanging, then reversed)
 * and the ratios are medians of per-round p99 ratios (down / up, hanging / up).
 */
import { createServer, type Server } from 'node:http'
import type { AddressInfo, Socket } from 'node:net'
import { freePort, sleep } from '../lib/procs.js'
import { median } from './lib/hist.js'
import { createBots, ImClient, openDirects, type Account } from './lib/im.js'
import { targetDir, withTarget, type Ctx } from './scenarios.js'

export type GatewayState = 'up' | 'down' | 'hanging'
const STATES: readonly GatewayState[] = ['up', 'down', 'hanging']
const SECRET = 'bench-gateway-secret-0123456789-abcdefgh'

export interface PushParams {
  rounds: number
  /** direct conversations, each to an offline peer with a gateway target */
  pairs: number
  /** sends per second (open loop) */
  rate: number
  warmMs: number
  measureMs: number
}

export interface PushMeasure {
  round: number
  gateway: GatewayState
  sends: number
  p50: number
  p99: number
  errors: number
  /** pushes the gateway received (up only) */
  pushes: number
}

export interface PushResult {
  measures: PushMeasure[]
  p99DownVsUp: number | null
  p99HangingVsUp: number | null
}

/** A gateway for one measurement: its URL, the pushes it took, and how to stop it. */
async function gateway (state: GatewayState): Promise<{ url: string, pushes: () => number, close: () => Promise<void> }> {
  if (state === 'down') {
    const port = await freePort()
    return { url: `http://127.0.0.1:${port}/push`, pushes: () => 0, close: async () => {} }
  }
  let pushes = 0
  const sockets = new Set<Socket>()
  const server: Server = createServer((req, res) => {
    req.resume()
    req.on('end', () => {
      if (state === 'hanging') return
      pushes++
      res.writeHead(200).end()
    })
  })
  server.on('connection', s => { sockets.add(s); s.on('close', () => sockets.delete(s)) })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/push`,
    pushes: () => pushes,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

function percentile (sorted: number[], p: number): number {
  return sorted[Math.max(0, Math.ceil((p / 100) * sorted.length) - 1)] ?? NaN
}

async function measureOne (ctx: Ctx, round: number, state: GatewayState, p: PushParams): Promise<PushMeasure> {
  const gw = await gateway(state)
  try {
    const config = { push: { gateways: [{ name: 'bench', url: gw.url, secret: SECRET }] } }
    return await withTarget(ctx, 'mqim', targetDir(ctx, `push-${state}`, 'mqim', round), { stores: null, config }, async (target) => {
      const ids = ['sender', ...Array.from({ length: p.pairs }, (_, i) => `peer${i}`)]
      const accounts = await createBots(target, ids)
      const [sender, ...peers] = accounts as [Account, ...Account[]]
      const convs = await openDirects(target, peers.map(peer => [sender, peer] as const))
      // each peer registers a gateway target, then goes offline
      for (const [i, peer] of peers.entries()) {
        const im = await ImClient.connect(target, peer, 'phone')
        await im.request('push-register', { gateway: { name: 'bench', token: `token-${i}`, platform: 'android' } })
        await im.end()
      }
      const im = await ImClient.connect(target, sender, 'bench')
      const latencies: number[] = []
      let errors = 0
      let n = 0
      let measuring = false
      const inFlight = new Set<Promise<void>>()
      const started = performance.now()
      const end = started + p.warmMs + p.measureMs
      const interval = 1000 / p.rate
      // open loop: request k goes out at started + k * interval, whatever the earlier ones do
      while (performance.now() < end) {
        const due = started + n * interval
        const wait = due - performance.now()
        if (wait > 0) await sleep(wait)
        if (!measuring && performance.now() - started >= p.warmMs) measuring = true
        const counted = measuring
        const conv = convs[n % convs.length] as string
        const t0 = performance.now()
        const req = im.request('send', { conv, msgId: `m${n}`, kind: 'text', body: `push bench ${n}` }, 30_000).then(
          () => { if (counted) latencies.push(performance.now() - t0) },
          () => { if (counted) errors++ })
        inFlight.add(req)
        void req.finally(() => inFlight.delete(req))
        n++
      }
      await Promise.all(inFlight)
      await im.end()
      latencies.sort((a, b) => a - b)
      return { round, gateway: state, sends: latencies.length, p50: percentile(latencies, 50), p99: percentile(latencies, 99), errors, pushes: gw.pushes() }
    })
  } finally {
    await gw.close()
  }
}

export async function runPush (ctx: Ctx, p: PushParams): Promise<PushResult> {
  const measures: PushMeasure[] = []
  for (let r = 1; r <= p.rounds; r++) {
    const order = r % 2 === 1 ? STATES : [...STATES].reverse()
    for (const state of order) {
      const m = await measureOne(ctx, r, state, p)
      ctx.log(`  push r${r} gateway ${state}: ${m.sends} sends, p50 ${m.p50.toFixed(1)} ms, p99 ${m.p99.toFixed(1)} ms, ${m.errors} errors, ${m.pushes} pushes received`)
      measures.push(m)
    }
  }
  const ratio = (state: GatewayState): number | null => {
    const per: number[] = []
    for (let r = 1; r <= p.rounds; r++) {
      const up = measures.find(m => m.round === r && m.gateway === 'up')
      const other = measures.find(m => m.round === r && m.gateway === state)
      if (up !== undefined && other !== undefined && up.p99 > 0) per.push(other.p99 / up.p99)
    }
    return per.length === 0 ? null : median(per)
  }
  return { measures, p99DownVsUp: ratio('down'), p99HangingVsUp: ratio('hanging') }
}
