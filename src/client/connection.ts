/**
 * The MQTT connection and request/reply matching. One persistent session (clean: false) per device,
 * subscribed at QoS 1 to the user's messages, events and this device's replies, and to the topics of
 * the user's channels (im/c/<conv>/m, see subscribeChannels). Requests carry a random `id` and
 * resolve on the reply with the same id, or reject with TIMEOUT.
 */
import mqtt, { type MqttClient } from 'mqtt'
import type { OpName, Reply } from '../protocol/schemas.js'
import { ImClientError, type ImClientErrorCode } from './errors.js'
import { randomId } from './ids.js'
import type { IntervalTimer } from './types.js'
import { channelTopic, clientIdOf, parseChannelTopic } from '../protocol/topics.js'

/** Channel topics per SUBSCRIBE packet. */
const CHANNEL_TOPICS_PER_SUBSCRIBE = 100

export interface ConnectionOptions {
  url: string
  userId: string
  password: string
  deviceId: string
  requestTimeoutMs: number
  reconnectPeriodMs: number
  connectTimeoutMs: number
  keepaliveTimer?: IntervalTimer
}

export interface ConnectionHandlers {
  /** The broker accepted the connection and the subscriptions are in place. */
  up: () => void
  down: () => void
  /** CONNACK refused or another error mqtt.js reports. */
  failure: (err: ImClientError) => void
  /** A message of any conversation: from the user's inbox, or from a channel topic. */
  message: (payload: unknown) => void
  event: (payload: unknown) => void
}

interface Pending { op: string, resolve: (result: unknown) => void, reject: (err: ImClientError) => void, timer: ReturnType<typeof setTimeout> }

const decoder = new TextDecoder()

/** CONNACK return codes of MQTT 3.1.1 [MQTT-3.2.2.3] mapped to SDK error codes. */
function connackError (code: number): ImClientError {
  if (code === 4 || code === 5) return new ImClientError('AUTH', code === 4 ? 'bad user name or password' : 'not authorized (account disabled)')
  if (code === 2) return new ImClientError('BAD_REQUEST', 'identifier rejected: the device id must be 1-64 of A-Z a-z 0-9 _ -')
  return new ImClientError('UNAVAILABLE', `connection refused (CONNACK ${code})`)
}

export class Connection {
  readonly mqtt: MqttClient
  private readonly pending = new Map<string, Pending>()
  private readonly topics: { m: string, e: string, r: string }
  private closed = false

  constructor (private readonly options: ConnectionOptions, private readonly handlers: ConnectionHandlers) {
    const { userId, deviceId } = options
    this.topics = { m: `im/u/${userId}/m`, e: `im/u/${userId}/e`, r: `im/u/${userId}/r/${deviceId}` }
    this.mqtt = mqtt.connect(options.url, {
      clientId: clientIdOf(userId, deviceId),
      username: userId,
      password: options.password,
      protocolVersion: 4,
      clean: false,
      reconnectPeriod: options.reconnectPeriodMs,
      connectTimeout: options.connectTimeoutMs,
      resubscribe: false,
      timerVariant: options.keepaliveTimer ?? 'native'
    })
    this.mqtt.on('connect', () => { this.onConnect() })
    this.mqtt.on('close', () => { if (!this.closed) handlers.down() })
    this.mqtt.on('error', (err: Error & { code?: unknown }) => {
      handlers.failure(typeof err.code === 'number' ? connackError(err.code) : new ImClientError('UNAVAILABLE', err.message))
    })
    this.mqtt.on('message', (topic, payload) => { this.onMessage(topic, payload) })
  }

  get connected (): boolean {
    return this.mqtt.connected
  }

  /** Sends `{id, ...fields}` to im/req/<op> and resolves with the reply's `result`. */
  async request<T>(op: OpName, fields: Record<string, unknown>, timeoutMs = this.options.requestTimeoutMs): Promise<T> {
    if (this.closed) throw new ImClientError('CLOSED', 'the client is closed', op)
    const id = randomId()
    return await new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id)
        reject(new ImClientError('TIMEOUT', `no reply to ${op} within ${timeoutMs} ms`, op))
      }, timeoutMs)
      this.pending.set(id, { op, resolve: resolve as (r: unknown) => void, reject, timer })
      // QoS 1: mqtt.js keeps the publish while offline and sends it once connected again.
      this.mqtt.publish(`im/req/${op}`, JSON.stringify({ id, ...fields }), { qos: 1 }, (err) => {
        if (err !== undefined && err !== null) this.settle(id, new ImClientError(this.closed ? 'CLOSED' : 'UNAVAILABLE', err.message, op))
      })
    })
  }

  /**
   * Subscribes the topics of these channels (the server grants members only, up to its
   * channels.subscriptionsPerConnection); resolves with the channels refused. Subscribe first, then
   * pull `history {after}`: together they miss nothing (ConversationSync drops the overlap).
   */
  async subscribeChannels (convs: readonly string[]): Promise<string[]> {
    const refused: string[] = []
    for (let i = 0; i < convs.length; i += CHANNEL_TOPICS_PER_SUBSCRIBE) {
      const chunk = convs.slice(i, i + CHANNEL_TOPICS_PER_SUBSCRIBE)
      const granted = await new Promise<number[] | null>((resolve) => {
        // mqtt.js reports a refused filter as an error; either way the SUBACK's codes are on its packet
        this.mqtt.subscribe(chunk.map(channelTopic), { qos: 0 }, (_err, _grants, packet) => {
          const codes = (packet as { granted?: Array<number | object> } | undefined)?.granted
          resolve(codes?.map(g => typeof g === 'number' ? g : 128) ?? null)
        })
      })
      if (granted === null) return [...refused, ...convs.slice(i)] // connection lost: the next connect subscribes again
      chunk.forEach((conv, n) => { if (granted[n] === 128) refused.push(conv) })
    }
    return refused
  }

  /** Stops receiving a channel (the server also does this when the user leaves or is removed). */
  unsubscribeChannel (conv: string): void {
    if (this.mqtt.connected) this.mqtt.unsubscribe(channelTopic(conv))
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    for (const id of [...this.pending.keys()]) this.settle(id, new ImClientError('CLOSED', 'the client was closed'))
    // A graceful end (DISCONNECT) waits for in-flight publishes to be acknowledged, which never
    // happens offline; their requests were just rejected and unacked sends stay in the outbox anyway.
    const force = !this.mqtt.connected || Object.keys(this.mqtt.outgoing).length > 0
    await this.mqtt.endAsync(force)
  }

  private onConnect (): void {
    // No Nagle on TCP: small request/reply packets must not wait for the peer's delayed ACK (topics.md).
    const stream = this.mqtt.stream as { setNoDelay?: (v: boolean) => void }
    stream.setNoDelay?.(true)
    const { m, e, r } = this.topics
    this.mqtt.subscribe([m, e, r], { qos: 1 }, (err, granted) => {
      if (err !== undefined && err !== null) return // the connection dropped: the next 'connect' subscribes again
      if (granted?.some(g => g.qos === 128) === true) {
        this.handlers.failure(new ImClientError('FORBIDDEN', 'the server refused the subscriptions'))
        return
      }
      this.handlers.up()
    })
  }

  private onMessage (topic: string, payload: Uint8Array): void {
    let data: unknown
    try {
      data = JSON.parse(decoder.decode(payload))
    } catch {
      return
    }
    if (topic === this.topics.m) this.handlers.message(data)
    else if (topic === this.topics.e) this.handlers.event(data)
    else if (topic === this.topics.r) this.onReply(data as Reply)
    else if (parseChannelTopic(topic) !== null) this.handlers.message(data)
  }

  private onReply (reply: Reply): void {
    if (typeof reply?.id !== 'string') return // replies for requests of an earlier run of this device, or id: null
    if (reply.ok) this.settle(reply.id, null, reply.result)
    else this.settle(reply.id, new ImClientError(reply.error.code as ImClientErrorCode, reply.error.message, reply.op))
  }

  private settle (id: string, err: ImClientError | null, result?: unknown): void {
    const p = this.pending.get(id)
    if (p === undefined) return
    this.pending.delete(id)
    clearTimeout(p.timer)
    if (err === null) p.resolve(result)
    else p.reject(err)
  }
}
