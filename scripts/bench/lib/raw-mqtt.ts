/**
 * A bare MQTT 3.1.1 connection on a net.Socket, the packets written and read by mqtt-packet: for
 * the hostile scenario's attackers, which mqtt.js cannot play. It binds a chosen local address
 * (mqtt.js' TCP transport does not pass `localAddress` on), it can stop reading its socket, and
 * it sends no keep-alive (keepalive 0).
 */
import net from 'node:net'
import { generate, parser as packetParser, type Packet } from 'mqtt-packet'

export interface RawOptions {
  host: string
  port: number
  /** source address of the TCP connection, e.g. 127.0.0.2 */
  localAddress: string
  clientId: string
  username: string
  password: string
  /** give up on the CONNACK after this long (default 30 s) */
  connectTimeoutMs?: number
}

export class RawMqtt {
  /** CONNACK return code (0 = accepted); rejects when the socket closes first or the timeout passes. */
  readonly connack: Promise<number>
  /** Resolves with the reason when the socket has closed (however it closed). */
  readonly closed: Promise<string>
  /** Incoming PUBLISH packets (a QoS 1 one is acknowledged first). */
  onPublish: (topic: string, payload: Buffer) => void = () => {}
  private readonly socket: net.Socket
  private readonly subacks = new Map<number, (granted: number[]) => void>()
  private nextId = 0
  private isClosed = false

  constructor (opts: RawOptions) {
    const socket = this.socket = net.connect({ host: opts.host, port: opts.port, localAddress: opts.localAddress })
    socket.setNoDelay(true)
    const parser = packetParser({ protocolVersion: 4 })
    let onConnack: (rc: number) => void = () => {}
    let failConnect: (err: Error) => void = () => {}
    this.connack = new Promise<number>((resolve, reject) => { onConnack = resolve; failConnect = reject })
    this.connack.catch(() => {}) // a caller that never awaits it must not see an unhandled rejection
    const timer = setTimeout(() => { failConnect(new Error('CONNACK timeout')); socket.destroy() }, opts.connectTimeoutMs ?? 30_000)
    this.closed = new Promise<string>(resolve => {
      let reason = 'closed'
      socket.on('error', (err: NodeJS.ErrnoException) => { reason = err.code ?? err.message })
      socket.once('close', () => {
        this.isClosed = true
        clearTimeout(timer)
        failConnect(new Error(reason))
        for (const done of this.subacks.values()) done([])
        this.subacks.clear()
        resolve(reason)
      })
    })
    socket.on('connect', () => {
      socket.write(generate({
        cmd: 'connect',
        protocolId: 'MQTT',
        protocolVersion: 4,
        clean: true,
        keepalive: 0,
        clientId: opts.clientId,
        username: opts.username,
        password: Buffer.from(opts.password)
      }))
    })
    parser.on('packet', (p: Packet) => {
      switch (p.cmd) {
        case 'connack':
          clearTimeout(timer)
          onConnack(p.returnCode ?? 0)
          break
        case 'suback': {
          const done = this.subacks.get(p.messageId ?? -1)
          this.subacks.delete(p.messageId ?? -1)
          done?.(p.granted as number[])
          break
        }
        case 'publish':
          if (p.qos > 0) this.write({ cmd: 'puback', messageId: p.messageId })
          this.onPublish(p.topic, typeof p.payload === 'string' ? Buffer.from(p.payload) : p.payload)
          break
        default:
          break
      }
    })
    parser.on('error', () => socket.destroy())
    socket.on('data', (chunk: Buffer) => parser.parse(chunk))
  }

  get isOpen (): boolean { return !this.isClosed }

  private write (packet: Packet): void {
    if (!this.isClosed) this.socket.write(generate(packet))
  }

  private id (): number {
    this.nextId = this.nextId % 65535 + 1
    return this.nextId
  }

  /** One SUBSCRIBE packet with every filter; resolves with the SUBACK's return codes (0x80 = refused; [] if the socket closed). */
  async subscribe (filters: string[], qos: 0 | 1 = 1): Promise<number[]> {
    const messageId = this.id()
    const granted = new Promise<number[]>(resolve => this.subacks.set(messageId, resolve))
    this.write({ cmd: 'subscribe', messageId, subscriptions: filters.map(topic => ({ topic, qos })) })
    if (this.isClosed) return []
    return await granted
  }

  /** PUBLISH at QoS 1 (its PUBACK is not waited for). */
  publish (topic: string, payload: string | Buffer): void {
    this.write({ cmd: 'publish', topic, payload, qos: 1, dup: false, retain: false, messageId: this.id() })
  }

  /** A PINGREQ: on a connection the server has dropped the write fails, and `closed` resolves. */
  ping (): void {
    this.write({ cmd: 'pingreq' })
  }

  /** Stops reading the socket: what the server sends piles up in the kernel's buffers, then in the server. */
  stopReading (): void {
    this.socket.pause()
  }

  destroy (): void {
    this.socket.destroy()
  }
}
