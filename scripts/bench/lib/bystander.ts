/**
 * The hostile scenario's bystander: two users in a direct conversation, connected from
 * 127.0.0.1 with mqtt.js, in the runner's own process (which does nothing else while it
 * measures). One sends `send` requests at a fixed rate (open loop: a stalled server does not slow
 * the sending down, so a stall shows in full in the latencies); for each request it records the
 * round trip publish -> reply at the sender and the delivery latency send -> the peer's inbox.
 */
import { randomBytes } from 'node:crypto'
import mqtt, { type MqttClient } from 'mqtt'
import type { Account } from './im.js'
import type { Target } from './targets.js'

export interface BystanderSample {
  /** when the request was published (performance.now()) */
  t: number
  /** publish -> reply, ms (null: no reply yet) */
  rttMs: number | null
  /** publish -> delivered to the peer, ms (null: not delivered yet) */
  deliveryMs: number | null
  /** error code of a failed reply */
  error: string | null
}

export interface LatencyStats { p50: number, p99: number, max: number, samples: number, missing: number }

export interface WindowStats {
  requests: number
  /** request -> reply; a request without a reply counts as `timeoutMs` */
  rttMs: LatencyStats
  /** send -> peer delivery; a successful send never delivered counts as `timeoutMs` */
  deliveryMs: LatencyStats
  /** replies with ok:false, by code */
  errors: Record<string, number>
}

function stats (values: number[], missing: number): LatencyStats {
  const v = [...values].sort((a, b) => a - b)
  const at = (p: number): number => v[Math.max(0, Math.ceil((p / 100) * v.length) - 1)] ?? NaN
  return { p50: at(50), p99: at(99), max: v.at(-1) ?? NaN, samples: v.length, missing }
}

async function connect (target: Target, account: Account, deviceId: string): Promise<MqttClient> {
  const client = await mqtt.connectAsync(target.mqttUrl, {
    clientId: `${account.id}:${deviceId}`,
    username: account.id,
    password: account.secret,
    protocolVersion: 4,
    clean: true,
    reconnectPeriod: 1000,
    connectTimeout: 10_000,
    keepalive: 60
  })
  const stream = client.stream as { setNoDelay?: (v: boolean) => void }
  stream.setNoDelay?.(true)
  client.on('connect', () => { (client.stream as { setNoDelay?: (v: boolean) => void }).setNoDelay?.(true) })
  client.on('error', () => { /* counted through 'offline' */ })
  return client
}

export class Bystander {
  readonly samples: BystanderSample[] = []
  /** times a connection of the pair went offline while it ran (mqtt.js reconnects it) */
  disconnects = 0
  private pacer: NodeJS.Timeout | null = null
  private readonly tag = randomBytes(3).toString('hex')

  private constructor (private readonly sender: MqttClient, private readonly peer: MqttClient, readonly senderId: string) {}

  static async start (target: Target, sender: Account, peer: Account, conv: string, ratePerSec: number): Promise<Bystander> {
    const a = await connect(target, sender, 'by')
    const b = await connect(target, peer, 'by')
    const granted = await b.subscribeAsync(`im/u/${peer.id}/m`, { qos: 1 })
    if (granted.some(g => g.qos === 128)) throw new Error('bystander: inbox subscription refused')
    const by = new Bystander(a, b, sender.id)
    const replyTopic = `im/u/${sender.id}/r/by`
    a.on('message', (topic, payload) => {
      if (topic !== replyTopic) return
      const reply = JSON.parse(payload.toString('utf8')) as { id?: string, ok?: boolean, error?: { code?: string } }
      const s = by.samples[Number(reply.id) - 1]
      if (s === undefined || s.rttMs !== null) return
      s.rttMs = performance.now() - s.t
      if (reply.ok !== true) s.error = reply.error?.code ?? 'UNKNOWN'
    })
    const prefix = `"msgId":"by-${by.tag}-`
    b.on('message', (_topic, payload) => {
      const text = payload.toString('utf8')
      const at = text.indexOf(prefix)
      if (at < 0) return
      const s = by.samples[parseInt(text.slice(at + prefix.length), 10) - 1]
      if (s !== undefined && s.deliveryMs === null) s.deliveryMs = performance.now() - s.t
    })
    for (const c of [a, b]) c.on('offline', () => { if (by.pacer !== null) by.disconnects++ })
    // open loop: every 5 ms, send what is due since the start
    const t0 = performance.now()
    const body = 'x'.repeat(100)
    by.pacer = setInterval(() => {
      const due = Math.floor((performance.now() - t0) * ratePerSec / 1000)
      while (by.samples.length < due) {
        const n = by.samples.length + 1
        by.samples.push({ t: performance.now(), rttMs: null, deliveryMs: null, error: null })
        a.publish('im/req/send', `{"id":"${n}","conv":"${conv}","msgId":"by-${by.tag}-${n}","kind":"text","body":"${body}"}`, { qos: 1 })
      }
    }, 5)
    return by
  }

  /** Latencies of the requests published in [from, to) (performance.now() times). */
  window (from: number, to: number, timeoutMs: number): WindowStats {
    const rtt: number[] = []
    const delivery: number[] = []
    let rttMissing = 0
    let deliveryMissing = 0
    const errors: Record<string, number> = {}
    let requests = 0
    for (const s of this.samples) {
      if (s.t < from || s.t >= to) continue
      requests++
      if (s.rttMs === null) { rttMissing++; rtt.push(timeoutMs) } else rtt.push(Math.min(s.rttMs, timeoutMs))
      if (s.error !== null) { errors[s.error] = (errors[s.error] ?? 0) + 1; continue }
      if (s.deliveryMs === null) { deliveryMissing++; delivery.push(timeoutMs) } else delivery.push(Math.min(s.deliveryMs, timeoutMs))
    }
    return { requests, rttMs: stats(rtt, rttMissing), deliveryMs: stats(delivery, deliveryMissing), errors }
  }

  /** True when every request published before `before` has its reply and (unless it failed) its delivery. */
  settled (before: number): boolean {
    return this.samples.every(s => s.t >= before || (s.rttMs !== null && (s.error !== null || s.deliveryMs !== null)))
  }

  /** Stops sending (what is in flight may still arrive until `end`). */
  pause (): void {
    if (this.pacer !== null) clearInterval(this.pacer)
    this.pacer = null
  }

  async end (): Promise<void> {
    this.pause()
    await Promise.all([this.sender, this.peer].map(async c => { await c.endAsync(true) }))
  }
}
