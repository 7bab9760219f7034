/**
 * A drill client: one device of one user over MQTT/TCP (mqtt.js, protocol 4, no Nagle), with
 * client-side failover across the nodes: when its connection drops it reconnects, trying the
 * other nodes' ports first (then its own again), and re-subscribes. Requests are matched to
 * replies by id; a request whose connection drops before the reply is rejected with
 * RequestError('lost') so the caller can resend it (with the same msgId for send).
 */
import { randomUUID } from 'node:crypto'
import mqtt, { type MqttClient } from 'mqtt'
import type { MessageEnvelope, Reply } from '../../src/protocol/schemas.js'
import { sleep } from './procs.js'
import { wholePacketWrites } from '../../src/broker/upstream.js'
import { mqttPacketTraced } from '../../src/broker/quiet-debug.js'

// mqtt.js writes a PUBLISH in six stream writes and a PUBACK in three: the load generators write
// each in one, as the server does (workaround 18), to leave more of the machine to the servers
// they measure (unless DEBUG traces mqtt-packet's writes)
if (!mqttPacketTraced('mqtt-packet:writeToStream')) wholePacketWrites()

export class RequestError extends Error {
  constructor (readonly kind: 'lost' | 'timeout' | 'not-connected' | 'stopped', message: string) {
    super(message)
    this.name = 'RequestError'
  }
}

export interface ClientOptions {
  userId: string
  deviceId: string
  password: string
  /** MQTT ports of the nodes, the home node first. */
  ports: number[]
  /** false: persistent session (the broker queues QoS 1 messages while the device is away). */
  clean: boolean
  /** Subscribe to im/u/<user>/m (message envelopes). Replies are always subscribed. */
  inbox: boolean
  onMessage?: (m: MessageEnvelope) => void
  /** Subscribe to im/u/<user>/e (events) too, and hand each one to `onEvent`. Off by default. */
  events?: boolean
  onEvent?: (e: Record<string, unknown>) => void
  /** After every successful (re)connect and subscribe; `count` starts at 1. */
  onConnect?: (info: { port: number, count: number, sessionPresent: boolean }) => void
}

interface Waiter { resolve: (r: Reply) => void, reject: (e: Error) => void }

export class DrillClient {
  /** Port of the current (or last) connection. */
  port: number
  connected = false
  /** Successful connections, the first one included. */
  connects = 0
  /** Connections made to a port other than the previous one. */
  failovers = 0
  /** CONNECT attempts that failed (refused, CONNACK error, timeout). */
  failedAttempts = 0
  /** Why the last failed CONNECT attempt failed (for a drill's diagnostics). */
  lastFailure = ''
  private client: MqttClient | null = null
  /** QoS 1 publishes of the current connection still waiting for their PUBACK. */
  private awaitingPuback = 0
  private readonly waiting = new Map<string, Waiter>()
  private connectedWaiters: Array<() => void> = []
  private stopped = false

  constructor (readonly opts: ClientOptions) {
    const [home] = opts.ports
    if (home === undefined) throw new Error('a DrillClient needs at least one port')
    this.port = home
  }

  get clientId (): string { return `${this.opts.userId}:${this.opts.deviceId}` }

  /**
   * Requests published on the current connection whose PUBACK has not come yet (a request that
   * timed out waiting for its reply stays here until the server acknowledges it).
   */
  get unacked (): number { return this.awaitingPuback }

  /** First connection: the home node, failing over like a reconnect would. */
  async start (timeoutMs = 30_000): Promise<void> {
    void this.connectLoop(0)
    await this.waitConnected(timeoutMs)
  }

  /** Closes the connection and stops reconnecting. */
  async stop (): Promise<void> {
    this.stopped = true
    this.rejectAll(new RequestError('stopped', 'client stopped'))
    for (const w of this.connectedWaiters.splice(0)) w()
    const c = this.client
    this.client = null
    if (c !== null) await c.endAsync(true).catch(() => {})
  }

  /** Resolves once connected (and subscribed); rejects after `timeoutMs`. */
  async waitConnected (timeoutMs: number): Promise<void> {
    if (this.connected) return
    if (this.stopped) throw new RequestError('stopped', 'client stopped')
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.connectedWaiters = this.connectedWaiters.filter(w => w !== done)
        reject(new RequestError('not-connected', `${this.clientId} not connected within ${timeoutMs} ms`))
      }, timeoutMs)
      const done = (): void => { clearTimeout(timer); resolve() }
      this.connectedWaiters.push(done)
    })
    if (this.stopped) throw new RequestError('stopped', 'client stopped')
  }

  /**
   * Publishes a request (QoS 1) and resolves with its reply. Waits for a connection first (up
   * to `timeoutMs`); rejects with RequestError when the connection drops or no reply comes.
   */
  async request (op: string, body: Record<string, unknown>, timeoutMs = 20_000): Promise<Reply> {
    const started = Date.now()
    await this.waitConnected(timeoutMs)
    const client = this.client
    if (client === null || !this.connected) throw new RequestError('lost', 'connection lost')
    const id = randomUUID()
    return await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new RequestError('timeout', `no reply to ${op} within ${timeoutMs} ms`))
      }, Math.max(1, timeoutMs - (Date.now() - started)))
      this.waiting.set(id, {
        resolve: (r) => { clearTimeout(timer); resolve(r) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      this.awaitingPuback++
      client.publish(`im/req/${op}`, Buffer.from(JSON.stringify({ id, ...body })), { qos: 1 }, () => {
        if (this.client === client) this.awaitingPuback--
      })
    })
  }

  /** Like request(), but throws unless the reply is ok; returns the result. */
  async call<T> (op: string, body: Record<string, unknown>, timeoutMs = 20_000): Promise<T> {
    const reply = await this.request(op, body, timeoutMs)
    if (!reply.ok) throw new Error(`${op} failed: ${reply.error.code}: ${reply.error.message}`)
    return reply.result as T
  }

  private rejectAll (err: Error): void {
    const waiters = [...this.waiting.values()]
    this.waiting.clear()
    for (const w of waiters) w.reject(err)
  }

  /** Tries the ports round-robin, starting at index `from`, until connected or stopped. */
  private async connectLoop (from: number): Promise<void> {
    const ports = this.opts.ports
    for (let i = 0; !this.stopped; i++) {
      const port = ports[(from + i) % ports.length] ?? this.port // ports is never empty
      try {
        await this.attempt(port)
        return
      } catch (err) {
        this.failedAttempts++
        this.lastFailure = `${new Date().toISOString()} port ${port}: ${(err as Error).message}`
        await sleep((i + 1) % ports.length === 0 ? 250 : 50)
      }
    }
  }

  private async attempt (port: number): Promise<void> {
    const { userId, deviceId } = this.opts
    const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, {
      clientId: this.clientId,
      username: userId,
      password: this.opts.password,
      protocolVersion: 4,
      clean: this.opts.clean,
      reconnectPeriod: 0,
      connectTimeout: 5000,
      keepalive: 30,
      // mqtt.js logs through debug() for every packet, gathering its arguments even when nothing is
      // enabled: in the soak's load generator (300 clients) that was ~5 % of its CPU, on a machine
      // it shares with the servers it measures. DEBUG=mqttjs* still gets mqtt.js's own logger.
      ...(process.env.DEBUG?.includes('mqttjs') === true ? {} : { log: () => {} })
    })
    const stream = client.stream as { setNoDelay?: (v: boolean) => void } | undefined
    stream?.setNoDelay?.(true)
    client.on('error', () => {})
    let sessionPresent = false
    try {
      await new Promise<void>((resolve, reject) => {
        const fail = (err?: Error): void => { reject(err ?? new Error('closed before CONNACK')) }
        client.once('connect', (connack) => {
          sessionPresent = connack.sessionPresent
          client.off('close', fail)
          client.off('error', fail)
          resolve()
        })
        client.once('close', fail)
        client.once('error', fail)
      })
      const topics = [`im/u/${userId}/r/${deviceId}`]
      if (this.opts.inbox) topics.push(`im/u/${userId}/m`)
      if (this.opts.events === true) topics.push(`im/u/${userId}/e`)
      let timer: NodeJS.Timeout | undefined
      const granted = await Promise.race([
        client.subscribeAsync(topics, { qos: 1 }),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error('SUBACK timeout')), 10_000) })
      ]).finally(() => clearTimeout(timer))
      if (granted.some(g => g.qos === 128)) throw new Error('subscription refused')
    } catch (err) {
      client.removeAllListeners('close')
      client.on('error', () => {})
      await client.endAsync(true).catch(() => {})
      throw err
    }
    if (this.stopped) {
      await client.endAsync(true).catch(() => {})
      return
    }
    client.on('message', (topic, payload) => this.onPacket(topic, payload))
    client.once('close', () => this.onLost(client))
    if (this.connects > 0 && port !== this.port) this.failovers++
    this.client = client
    this.awaitingPuback = 0
    this.port = port
    this.connected = true
    this.connects++
    this.opts.onConnect?.({ port, count: this.connects, sessionPresent })
    for (const w of this.connectedWaiters.splice(0)) w()
  }

  private onPacket (topic: string, payload: Buffer): void {
    let json: unknown
    try {
      json = JSON.parse(payload.toString('utf8'))
    } catch {
      return
    }
    const { userId, deviceId } = this.opts
    if (topic === `im/u/${userId}/m`) {
      this.opts.onMessage?.(json as MessageEnvelope)
    } else if (topic === `im/u/${userId}/e`) {
      if (typeof json === 'object' && json !== null) this.opts.onEvent?.(json as Record<string, unknown>)
    } else if (topic === `im/u/${userId}/r/${deviceId}`) {
      const reply = json as Reply
      const w = reply.id === null ? undefined : this.waiting.get(reply.id)
      if (w !== undefined) {
        this.waiting.delete(reply.id as string)
        w.resolve(reply)
      }
    }
  }

  private onLost (client: MqttClient): void {
    if (this.client !== client) return
    this.connected = false
    this.client = null
    void client.endAsync(true).catch(() => {})
    this.rejectAll(new RequestError('lost', 'connection lost'))
    if (this.stopped) return
    // Failover: the next node's port first, this one last.
    const idx = this.opts.ports.indexOf(this.port)
    void this.connectLoop((idx + 1) % this.opts.ports.length)
  }
}
