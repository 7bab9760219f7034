/**
 * A raw MQTT 3.1.1 client for tests that must do what a well-behaved client library would not:
 * send hand-made or oversized packets, stop reading its socket, connect from another loopback
 * address. Packets are built with mqtt-packet (the broker's own codec) and topics with the
 * protocol's topic helpers; incoming packets are parsed and kept in order.
 */
import net from 'node:net'
import mqttPacket, { type Packet } from 'mqtt-packet'
import WebSocket, { createWebSocketStream } from 'ws'
import type { Duplex } from 'node:stream'
import { replyTopic, REQUEST_PREFIX } from '../../src/protocol/topics.js'
import type { Reply } from '../../src/protocol/schemas.js'

export interface RawOptions {
  /** Source address (any of 127.0.0.0/8 reaches the server on loopback). */
  localAddress?: string
  transport?: 'tcp' | 'ws'
}

export class RawClient {
  readonly packets: Packet[] = []
  closed = false
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 })
  private readonly waiters: Array<() => void> = []
  private nextId = 1

  private constructor (readonly stream: Duplex, readonly socket: net.Socket | null, ws: WebSocket | null) {
    this.parser.on('packet', (p: Packet) => { this.packets.push(p); this.wake() })
    stream.on('data', (chunk: Buffer) => this.parser.parse(chunk))
    const onClose = (): void => { this.closed = true; this.wake() }
    // a WebSocket stream's 'close' waits for its writable side to end too: watch the socket
    if (ws !== null) ws.once('close', onClose)
    else stream.on('close', onClose)
    stream.on('error', () => {})
  }

  static async open (port: number, options: RawOptions = {}): Promise<RawClient> {
    if (options.transport === 'ws') {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt', { localAddress: options.localAddress })
      await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
      return new RawClient(createWebSocketStream(ws), null, ws)
    }
    const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress })
    socket.setNoDelay(true)
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
    return new RawClient(socket, socket, null)
  }

  /** Opens a connection and logs in; resolves with the CONNACK return code. */
  static async login (port: number, user: string, device: string, password: string, options: RawOptions & { clean?: boolean } = {}): Promise<{ client: RawClient, code: number }> {
    const client = await RawClient.open(port, options)
    client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: options.clean ?? true, clientId: `${user}:${device}`, keepalive: 60, username: user, password: Buffer.from(password) })
    const connack = await client.next('connack', 10_000)
    return { client, code: (connack as { returnCode?: number }).returnCode ?? -1 }
  }

  wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }

  send (packet: Record<string, unknown>): boolean {
    return this.stream.write(mqttPacket.generate(packet as unknown as Packet))
  }

  write (bytes: Buffer): boolean {
    return this.stream.write(bytes)
  }

  /** Subscribes and resolves with the granted codes (0x80 = refused). */
  async subscribe (filters: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
    const messageId = this.nextId++
    this.send({ cmd: 'subscribe', messageId, subscriptions: filters.map(topic => ({ topic, qos })) })
    const suback = await this.next('suback', 10_000, p => (p as { messageId?: number }).messageId === messageId)
    return (suback as { granted: number[] }).granted
  }

  /** Publishes a request at QoS 1 (not waiting for anything). */
  request (op: string, body: Record<string, unknown>): void {
    this.send({ cmd: 'publish', topic: REQUEST_PREFIX + op, payload: Buffer.from(JSON.stringify(body)), qos: 1, messageId: this.nextId++, retain: false, dup: false })
  }

  /** The reply to request `id` on this device's reply topic. */
  async reply (user: string, device: string, id: string, timeoutMs = 10_000): Promise<Reply> {
    const topic = replyTopic(user, device)
    const p = await this.next('publish', timeoutMs, q => {
      const pub = q as { topic: string, payload: Buffer }
      return pub.topic === topic && (JSON.parse(pub.payload.toString()) as Reply).id === id
    })
    return JSON.parse((p as unknown as { payload: Buffer }).payload.toString()) as Reply
  }

  /** The first packet of this kind (and matching) received so far or within the timeout. */
  async next (cmd: string, timeoutMs: number, match: (p: Packet) => boolean = () => true): Promise<Packet> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.packets.find(p => p.cmd === cmd && match(p))
      if (found !== undefined) return found
      if (this.closed) throw new Error(`connection closed before a ${cmd} arrived`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${cmd} within ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Resolves once the server has closed the connection (rejects after the timeout). */
  async waitClosed (timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!this.closed) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`connection still open after ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Stops reading: the kernel buffers fill and the server's writes back up. */
  stopReading (): void {
    this.socket?.pause()
    this.stream.pause()
  }

  end (): void {
    this.stream.destroy()
  }
}

/** The first bytes of an MQTT packet claiming `length` bytes of remaining length (type byte + varint). */
export function fixedHeader (typeByte: number, length: number): Buffer {
  const bytes = [typeByte]
  let n = length
  do {
    let b = n % 128
    n = Math.floor(n / 128)
    if (n > 0) b |= 0x80
    bytes.push(b)
  } while (n > 0)
  return Buffer.from(bytes)
}
