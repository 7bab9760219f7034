/**
 * Stream 2 executor: a lane is one mqtt.js client of the fuzz user (device c<k>, TCP or
 * WebSocket) that publishes one fuzzed request at a time and waits for its outcome, so that
 * every reply is matched to its request whatever the request's id. Replies are read from the
 * packets in the order they arrive, which also shows whether a request's PUBACK (QoS 1) or
 * PUBREC (QoS 2) came after its reply, as topics.md promises. When the server drops the client,
 * the lane reconnects before the next case.
 *
 * Each outcome is judged against oracle.ts; conversations created by the fuzz user's requests
 * join the pool that conversation references resolve against.
 */
import mqtt, { type MqttClient } from 'mqtt'
import type { Packet } from 'mqtt-packet'
import { isDeepStrictEqual } from 'node:util'
import type { Reply } from '../../src/protocol/schemas.js'
import { expectationOf, judge, redeliveryId, replyShapeProblem, UNCACHED_OPS, type OracleLimits, type ReplyMemory } from './oracle.js'
import { FUZZ_USER, payloadBytes, topicOf, type RequestCase } from './requests.js'

export type RequestOutcome =
  /** a reply, judged fine */
  | 'reply'
  /** the connection closed, as it must for a protocol violation */
  | 'closed-violation'
  /** anything else: see `problem` */
  | 'failed'

export interface RequestResult {
  outcome: RequestOutcome
  problem: string | null
  /** The reply's code, 'ok', or null without a reply. */
  code: string | null
  /** The publish topic's operation (or the whole topic outside im/req/). */
  op: string
  /** Set when the code is a later fault than the documented order gives first. */
  deviation: string | null
  /** The reply came from the server's cache of replies to redelivered requests. */
  fromCache: boolean
  /** What was sent, for reports. */
  topic: string
  payload: Buffer
  reply: Reply | null
}

export interface LaneOptions {
  url: string
  key: string
  device: string
  limits: OracleLimits
  replyTimeoutMs: number
  /** Conversation ids the fuzz user has seen (shared by all lanes; grows). */
  convs: string[]
  /** The server's reply memory as far as the run can tell (shared by every stream of the run). */
  memory: ReplyMemory
}

export class RequestLane {
  private client: MqttClient | null = null
  private closed = true
  /** Packets of the current case, in arrival order. */
  private seen: Array<{ cmd: string, reply?: Reply | string }> = []
  private waiters: Array<() => void> = []
  /**
   * The server's reply cache, as far as this device's requests filled it: `op\0id` -> the reply and
   * when it was stored or last read back (`memory.now()`).
   */
  private readonly cache = new Map<string, { reply: Reply, stamp: number }>()
  reconnects = 0
  readonly replyTopic: string

  constructor (private readonly opts: LaneOptions) {
    this.replyTopic = `im/u/${FUZZ_USER}/r/${opts.device}`
  }

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

  async connect (): Promise<void> {
    if (this.client !== null) this.client.end(true)
    const client = await mqtt.connectAsync(this.opts.url, {
      clientId: `${FUZZ_USER}:${this.opts.device}`,
      username: FUZZ_USER,
      password: this.opts.key,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000,
      keepalive: 60
    })
    const stream = client.stream as { setNoDelay?: (v: boolean) => void }
    stream.setNoDelay?.(true)
    this.client = client
    this.closed = false
    client.on('packetreceive', (p: Packet) => {
      if (p.cmd === 'publish' && p.topic === this.replyTopic) {
        const text = Buffer.from(p.payload).toString('utf8')
        let reply: Reply | string
        try { reply = JSON.parse(text) as Reply } catch { reply = text }
        this.seen.push({ cmd: 'reply', reply })
      } else {
        this.seen.push({ cmd: p.cmd })
      }
      this.wake()
    })
    client.on('close', () => { this.closed = true; this.wake() })
    client.on('error', () => {})
    // events and messages of the fuzz user are not needed; its replies come without a subscription
  }

  /**
   * Notes a reply the server now holds (stored, or read back). Kept for the whole run (one entry per
   * request at most): the run cannot tell when the server has surely forgotten one, and a reply it
   * still holds may answer a later request that reuses the id, whatever that request says.
   */
  private remember (key: string, reply: Reply, stamp: number): void {
    this.cache.set(key, { reply, stamp })
  }

  async stop (): Promise<void> {
    const c = this.client
    this.client = null
    if (c !== null) await c.endAsync(true).catch(() => {})
  }

  async run (c: RequestCase): Promise<RequestResult> {
    if (this.client === null || this.closed) {
      if (this.client !== null) this.reconnects++
      await this.connect()
    }
    const client = this.client as MqttClient
    const topic = topicOf(c)
    const payload = payloadBytes(c.payload, this.opts.convs)
    const exp = expectationOf(topic, payload, c.qos, this.opts.limits)
    const result: RequestResult = { outcome: 'failed', problem: null, code: null, op: exp.kind === 'reply' ? exp.op : topic.slice(0, 100), deviation: null, fromCache: false, topic, payload, reply: null }
    // the server looks a redelivered (DUP) request up in its reply cache by the payload's id
    const dupId = c.dup && exp.kind === 'reply' && exp.request && !UNCACHED_OPS.has(exp.op) ? redeliveryId(payload) : null
    const cacheKey = dupId === null || exp.kind !== 'reply' ? null : `${exp.op}\u0000${dupId}`
    const kept = cacheKey === null ? undefined : this.cache.get(cacheKey)
    // surely still in the server's memory: the earlier reply is the only right answer; perhaps
    // forgotten: the earlier reply, or the request run again (judged as a new one)
    const sure = kept !== undefined && this.opts.memory.sure(kept.stamp)
    const earlier = kept?.reply

    this.seen = []
    // a reply stored or read back for this publish counts from before it (see ReplyMemory)
    const stamp = this.opts.memory.now()
    this.opts.memory.notePublishes(1)
    let acked = false
    let ackError: Error | null = null
    client.publish(topic, payload, { qos: c.qos, retain: c.retain, dup: c.dup }, (err?: Error) => { acked = true; ackError = err ?? null; this.wake() })
    const replyIndex = (): number => this.seen.findIndex(p => p.cmd === 'reply')
    const ackIndex = (): number => this.seen.findIndex(p => p.cmd === (c.qos === 1 ? 'puback' : 'pubrec'))
    // done: the reply and (QoS 1/2) the publish's flow completed; or the connection closed
    await this.until(() => this.closed || (replyIndex() >= 0 && (c.qos === 0 || acked)), this.opts.replyTimeoutMs)

    const at = replyIndex()
    const rawReply = at >= 0 ? this.seen[at]?.reply : undefined
    if (exp.kind === 'close') {
      if (rawReply !== undefined) result.problem = `answered instead of closing the connection (${exp.why})`
      else if (!this.closed) result.problem = `the connection stayed open after a protocol violation (${exp.why})`
      else result.outcome = 'closed-violation'
      return result
    }
    if (rawReply === undefined) {
      result.problem = this.closed ? 'the server closed the connection on a well-formed publish, without a reply' : `no reply within ${this.opts.replyTimeoutMs} ms`
      return result
    }
    if (typeof rawReply === 'string') {
      result.problem = `the reply is not JSON: ${rawReply.slice(0, 300)}`
      return result
    }
    const reply = rawReply
    result.reply = reply
    result.code = reply.ok === true ? 'ok' : (reply.error?.code ?? null)
    if (c.qos > 0) {
      const ack = ackIndex()
      if (ack >= 0 && ack < at) result.problem = `the ${c.qos === 1 ? 'PUBACK' : 'PUBREC'} came before the reply`
      else if (!acked) result.problem = this.closed ? 'the connection closed before the publish was acknowledged' : `the publish was not acknowledged within ${this.opts.replyTimeoutMs} ms`
      else if (ackError !== null) result.problem = `the publish failed: ${(ackError as Error).message}`
      if (result.problem !== null) return result
    }
    if (earlier !== undefined && (sure || isDeepStrictEqual(reply, earlier))) {
      // a redelivery of a request answered before: the earlier reply, unchanged (and the server's
      // memory has just used it: it counts from now)
      result.fromCache = true
      const shape = replyShapeProblem(reply)
      if (shape !== null) result.problem = shape
      else if (!isDeepStrictEqual(reply, earlier)) result.problem = `a redelivered request got ${JSON.stringify(reply).slice(0, 300)} instead of its earlier reply ${JSON.stringify(earlier).slice(0, 300)}`
      else if (cacheKey !== null) this.remember(cacheKey, earlier, stamp)
    } else {
      const verdict = judge(exp, reply)
      if (!verdict.ok) result.problem = verdict.problem
      else result.deviation = verdict.deviation
      if (exp.request && !UNCACHED_OPS.has(exp.op) && reply.id !== null && result.code !== 'RATE_LIMITED') this.remember(`${exp.op}\u0000${reply.id}`, reply, stamp)
    }
    if (result.problem !== null) return result
    result.outcome = 'reply'
    if (reply.ok && (exp.op === 'direct' || exp.op === 'create-group')) {
      const conv = (reply.result as { conv?: unknown }).conv
      if (typeof conv === 'string' && !this.opts.convs.includes(conv)) this.opts.convs.push(conv)
    }
    return result
  }
}
