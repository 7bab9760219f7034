/**
 * The bystanders: two ordinary users (bya over TCP, byb over WebSocket) chatting in their
 * direct conversation for the whole run. Each exchange: one of them sends a message, the reply
 * must be ok with the next seq, and the other must receive the envelope; every tenth exchange
 * the receiver also pages `history`. A failed request, a missing message, a gap in seqs, a
 * dropped connection, or an exchange slower than `stallMs` is a failure.
 */
import mqtt, { type MqttClient } from 'mqtt'
import type { MessageEnvelope, Reply } from '../../src/protocol/schemas.js'
import { Histogram } from '../bench/lib/hist.js'
import type { ReplyMemory } from './oracle.js'

export const BYSTANDERS = ['bya', 'byb'] as const

interface Side {
  user: string
  client: MqttClient
  replies: Map<string, Reply>
  inbox: Map<string, MessageEnvelope>
  closed: boolean
}

export interface BystanderOptions {
  mqttUrl: string
  wsUrl: string
  passwords: Record<string, string>
  /** An exchange (send -> reply, and -> the peer's copy) slower than this is a stall. */
  stallMs: number
  /** Pause between exchanges. */
  pauseMs: number
  timeoutMs: number
  /** Counts the bystanders' publishes for the oracle's model of the server's reply memory. */
  memory?: ReplyMemory
}

export interface BystanderStats {
  exchanges: number
  historyChecks: number
  failures: string[]
  /** send -> its reply, ms */
  request: { p50: number, p99: number, max: number }
  /** send -> the peer has the message, ms */
  delivery: { p50: number, p99: number, max: number }
}

export class Bystander {
  private sides: Side[] = []
  private conv = ''
  private lastSeq = 0
  private stopped = false
  private loop: Promise<void> = Promise.resolve()
  private waiters: Array<() => void> = []
  private readonly requestHist = new Histogram()
  private readonly deliveryHist = new Histogram()
  readonly failures: string[] = []
  exchanges = 0
  historyChecks = 0
  private nextId = 0

  constructor (private readonly opts: BystanderOptions) {}

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private async until (done: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (done()) return true
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  private async side (user: string, url: string): Promise<Side> {
    const client = await mqtt.connectAsync(url, {
      clientId: `${user}:main`, username: user, password: this.opts.passwords[user], protocolVersion: 4, clean: true, reconnectPeriod: 0, connectTimeout: 10_000
    })
    const stream = client.stream as { setNoDelay?: (v: boolean) => void }
    stream.setNoDelay?.(true)
    const side: Side = { user, client, replies: new Map(), inbox: new Map(), closed: false }
    client.on('message', (topic, payload) => {
      try {
        if (topic === `im/u/${user}/r/main`) {
          const r = JSON.parse(payload.toString('utf8')) as Reply
          if (typeof r.id === 'string') side.replies.set(r.id, r)
        } else if (topic === `im/u/${user}/m`) {
          const m = JSON.parse(payload.toString('utf8')) as MessageEnvelope
          if (m.conv === this.conv) side.inbox.set(m.msgId, m)
        }
      } catch (err) {
        this.failures.push(`${user} got a payload that is not JSON on ${topic}: ${(err as Error).message}`)
      }
      this.wake()
    })
    client.on('close', () => {
      if (!side.closed && !this.stopped) this.failures.push(`${user}'s connection was closed by the server`)
      side.closed = true
      this.wake()
    })
    client.on('error', () => {})
    await client.subscribeAsync([`im/u/${user}/m`], { qos: 1 })
    return side
  }

  private async request (side: Side, op: string, body: Record<string, unknown>): Promise<{ reply: Reply | null, ms: number }> {
    const id = `b${this.nextId++}`
    const started = performance.now()
    this.opts.memory?.notePublishes(1)
    side.client.publish(`im/req/${op}`, JSON.stringify({ id, ...body }), { qos: 1 })
    await this.until(() => side.replies.has(id) || side.closed, this.opts.timeoutMs)
    const reply = side.replies.get(id) ?? null
    side.replies.delete(id)
    return { reply, ms: performance.now() - started }
  }

  async start (): Promise<void> {
    const first = await this.side(BYSTANDERS[0], this.opts.mqttUrl)
    this.sides = [first, await this.side(BYSTANDERS[1], this.opts.wsUrl)]
    const { reply } = await this.request(first, 'direct', { user: BYSTANDERS[1] })
    if (reply === null || !reply.ok) throw new Error(`bystander setup: direct failed: ${JSON.stringify(reply)}`)
    this.conv = (reply.result as { conv: string }).conv
    this.loop = this.run()
  }

  /** Resolves once `n` exchanges have completed since the start (or the loop ended). */
  async warm (n: number): Promise<void> {
    await this.until(() => this.exchanges >= n || this.stopped || this.failures.length > 0, this.opts.timeoutMs * 2)
  }

  private async exchange (i: number): Promise<boolean> {
    const from = this.sides[i % 2]
    const to = this.sides[(i + 1) % 2]
    if (from === undefined || to === undefined) throw new Error('the bystanders have not started')
    const msgId = `by-${i}`
    const started = performance.now()
    const { reply, ms } = await this.request(from, 'send', { conv: this.conv, msgId, kind: 'text', body: `bystander message ${i}` })
    if (reply === null) { this.failures.push(`exchange ${i}: ${from.user}'s send got no reply within ${this.opts.timeoutMs} ms`); return false }
    if (!reply.ok) { this.failures.push(`exchange ${i}: ${from.user}'s send failed: ${JSON.stringify(reply.error)}`); return false }
    const seq = (reply.result as { seq: number }).seq
    if (seq !== this.lastSeq + 1) this.failures.push(`exchange ${i}: seq ${seq} after ${this.lastSeq}`)
    this.lastSeq = seq
    this.requestHist.add(ms)
    const got = await this.until(() => to.inbox.has(msgId) || to.closed, this.opts.timeoutMs)
    const deliveredMs = performance.now() - started
    if (!got || !to.inbox.has(msgId)) { this.failures.push(`exchange ${i}: ${to.user} did not receive ${msgId} within ${this.opts.timeoutMs} ms`); return false }
    if (to.inbox.get(msgId)?.seq !== seq) this.failures.push(`exchange ${i}: ${to.user} got ${msgId} as seq ${to.inbox.get(msgId)?.seq}, the sender's reply said ${seq}`)
    to.inbox.delete(msgId)
    this.deliveryHist.add(deliveredMs)
    if (deliveredMs > this.opts.stallMs) this.failures.push(`exchange ${i}: stalled, ${Math.round(deliveredMs)} ms from send to delivery (limit ${this.opts.stallMs} ms)`)
    if (i % 10 === 9) {
      const h = await this.request(to, 'history', { conv: this.conv, after: Math.max(0, seq - 3) })
      if (h.reply === null || !h.reply.ok) { this.failures.push(`exchange ${i}: history failed: ${JSON.stringify(h.reply)}`); return false }
      const messages = (h.reply.result as { messages: MessageEnvelope[] }).messages
      if (messages.at(-1)?.seq !== seq) this.failures.push(`exchange ${i}: history ends at seq ${messages.at(-1)?.seq}, expected ${seq}`)
      this.requestHist.add(h.ms)
      if (h.ms > this.opts.stallMs) this.failures.push(`exchange ${i}: stalled, history took ${Math.round(h.ms)} ms`)
      this.historyChecks++
    }
    this.exchanges++
    return true
  }

  private async run (): Promise<void> {
    for (let i = 0; !this.stopped; i++) {
      if (!(await this.exchange(i))) break
      await new Promise(resolve => setTimeout(resolve, this.opts.pauseMs))
    }
    this.stopped = true
    this.wake()
  }

  async stop (): Promise<BystanderStats> {
    this.stopped = true
    this.wake()
    await this.loop
    await Promise.all(this.sides.map(async s => { await s.client.endAsync(true).catch(() => {}) }))
    const pct = (h: Histogram): { p50: number, p99: number, max: number } => ({ p50: round(h.percentile(50)), p99: round(h.percentile(99)), max: round(h.max) })
    return { exchanges: this.exchanges, historyChecks: this.historyChecks, failures: [...this.failures], request: pct(this.requestHist), delivery: pct(this.deliveryHist) }
  }
}

function round (ms: number): number {
  return Math.round(ms * 10) / 10
}
