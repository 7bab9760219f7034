/**
 * A raw MQTT 3.1.1 client, for what a well-behaved client library will not do: send hand-made,
 * oversized or mutated bytes, stop reading its socket, connect from another loopback address
 * (mqtt.js' TCP transport does not pass `localAddress` on), send no keep-alive. Used by the
 * hostile tests, the hostile benchmark's attacker and the fuzzer's packet stream.
 *
 * TCP or WebSocket (one binary frame per write) to 127.0.0.1. Packets are built with mqtt-packet
 * (the broker's own codec) and request/reply topics with the protocol's topic helpers. What the
 * server sends is parsed and kept in `packets`, in order; bytes that do not parse are noted in
 * `malformed` (a server must never send them).
 */
import net from 'node:net'
import type { Duplex } from 'node:stream'
import mqttPacket, { type Packet } from 'mqtt-packet'
import WebSocket, { createWebSocketStream } from 'ws'
import { replyTopic, REQUEST_PREFIX } from '../../src/protocol/topics.js'
import type { Reply } from '../../src/protocol/schemas.js'

export interface RawOptions {
  /** Source address (any of 127.0.0.0/8 reaches the server on loopback). */
  localAddress?: string
  /** Default 'tcp'; 'ws' connects to ws://127.0.0.1:<port>/mqtt. */
  transport?: 'tcp' | 'ws'
  /** Default true; false: a persistent session (what it receives is acknowledged only by `send`ing PUBACKs). */
  clean?: boolean
}

/** How long `open` waits for the TCP connection or the WebSocket handshake. */
const OPEN_TIMEOUT_MS = 10_000

/** The packet type of one `cmd`, e.g. PacketOf<'suback'>. */
type PacketOf<C extends Packet['cmd']> = Extract<Packet, { cmd: C }>

export class RawClient {
  /** Every packet received, in order (unless `onPacket` is replaced). */
  readonly packets: Packet[] = []
  /**
   * Called with each packet received: by default it keeps the packet in `packets`, where `next`,
   * `subscribe`, `connect` and `reply` look for theirs. A long-running load that reads packets as
   * they come replaces it, so that nothing piles up (those methods then see nothing new).
   */
  onPacket: (p: Packet) => void = p => { this.packets.push(p) }
  /** The first parse error on the server's bytes, if any. */
  malformed: string | null = null
  closed = false
  /** Resolves once the connection has closed: with the socket's error code (e.g. ECONNREFUSED), or 'closed'. */
  readonly whenClosed: Promise<string>
  private readonly stream: Duplex
  private readonly socket: net.Socket | null
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 })
  private readonly waiters: Array<() => void> = []
  private connected = false
  private error: NodeJS.ErrnoException | null = null
  private lastId = 0

  /** Starts connecting; writes made before the connection is up are sent once it is. */
  constructor (port: number, options: RawOptions = {}) {
    const noteError = (err: NodeJS.ErrnoException): void => { this.error ??= err }
    // a WebSocket stream's 'close' waits for its writable side to end too: watch the socket
    let closer: WebSocket | net.Socket
    if (options.transport === 'ws') {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt', { localAddress: options.localAddress, handshakeTimeout: OPEN_TIMEOUT_MS })
      ws.once('open', () => { this.connected = true; this.wake() })
      ws.on('error', noteError)
      this.stream = createWebSocketStream(ws)
      this.socket = null
      closer = ws
    } else {
      const socket = net.connect({ port, host: '127.0.0.1', localAddress: options.localAddress, noDelay: true })
      socket.once('connect', () => { this.connected = true; this.wake() })
      this.stream = this.socket = closer = socket
    }
    this.whenClosed = new Promise(resolve => closer.once('close', () => {
      this.closed = true
      this.wake()
      resolve(this.error === null ? 'closed' : this.error.code ?? this.error.message)
    }))
    this.parser.on('packet', (p: Packet) => { this.onPacket(p); this.wake() })
    this.parser.on('error', (err: Error) => { this.malformed ??= err.message; this.wake() })
    this.stream.on('data', (chunk: Buffer) => this.parser.parse(chunk))
    this.stream.on('error', noteError)
  }

  /** A connection that is up (rejects with the socket's error, or after 10 s). */
  static async open (port: number, options: RawOptions = {}): Promise<RawClient> {
    const client = new RawClient(port, options)
    if (await client.until(() => client.connected, OPEN_TIMEOUT_MS)) return client
    client.end()
    throw client.error ?? new Error(`no connection within ${OPEN_TIMEOUT_MS} ms`)
  }

  /** Opens a connection and logs in as `<user>:<device>`; resolves with the CONNACK return code. */
  static async login (port: number, user: string, device: string, password: string, options: RawOptions = {}): Promise<{ client: RawClient, code: number }> {
    const client = await RawClient.open(port, options)
    return { client, code: await client.connect(user, device, password, 10_000, options.clean ?? true) }
  }

  /**
   * Sends a CONNECT (clean session unless told otherwise) as `<user>:<device>`, keepalive 0 (the
   * server never times out a silent connection: one that holds subscriptions, one that stopped
   * reading); resolves with the CONNACK return code. The timeout counts from here, so it covers a
   * connection still opening.
   */
  async connect (user: string, device: string, password: string, timeoutMs = 10_000, clean = true): Promise<number> {
    this.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId: `${user}:${device}`, keepalive: 0, username: user, password: Buffer.from(password) })
    return (await this.next('connack', timeoutMs)).returnCode ?? -1
  }

  /** Writes raw bytes (e.g. many packets generated at once); resolves when the socket takes more (false: it closed). */
  async writeRaw (bytes: Buffer): Promise<boolean> {
    if (this.stream.destroyed) return false
    if (this.stream.write(bytes)) return true
    return await new Promise(resolve => {
      const done = (ok: boolean) => (): void => { this.stream.off('drain', onDrain); this.stream.off('close', onClose); resolve(ok) }
      const onDrain = done(true)
      const onClose = done(false)
      this.stream.once('drain', onDrain)
      this.stream.once('close', onClose)
    })
  }

  send (packet: Packet): void {
    this.write(mqttPacket.generate(packet))
  }

  write (bytes: Buffer): void {
    if (!this.closed) this.stream.write(bytes)
  }

  /** Subscribes and resolves with the granted codes (0x80 = refused). */
  async subscribe (filters: string[], qos: 0 | 1 | 2 = 1): Promise<number[]> {
    const messageId = this.id()
    this.send({ cmd: 'subscribe', messageId, subscriptions: filters.map(topic => ({ topic, qos })) })
    const suback = await this.next('suback', 10_000, p => p.messageId === messageId)
    return suback.granted as number[]
  }

  /** Publishes a request (`body` with its `id`) at QoS 1, not waiting for anything. */
  request (op: string, body: Record<string, unknown>): void {
    this.send({ cmd: 'publish', topic: REQUEST_PREFIX + op, payload: Buffer.from(JSON.stringify(body)), qos: 1, messageId: this.id(), retain: false, dup: false })
  }

  /** The reply to request `id` on this device's reply topic. */
  async reply (user: string, device: string, id: string, timeoutMs = 10_000): Promise<Reply> {
    const topic = replyTopic(user, device)
    const parse = (p: { payload: Buffer | string }): Reply => JSON.parse(p.payload.toString()) as Reply
    return parse(await this.next('publish', timeoutMs, p => p.topic === topic && parse(p).id === id))
  }

  /** The first packet of this kind (and matching) received so far or within the timeout. */
  async next<C extends Packet['cmd']> (cmd: C, timeoutMs: number, match: (p: PacketOf<C>) => boolean = () => true): Promise<PacketOf<C>> {
    const find = (): PacketOf<C> | undefined => this.packets.find((p): p is PacketOf<C> => p.cmd === cmd && match(p as PacketOf<C>))
    await this.until(() => find() !== undefined, timeoutMs)
    const found = find()
    if (found !== undefined) return found
    throw new Error(this.closed ? `connection closed before a ${cmd} arrived` : `no ${cmd} within ${timeoutMs} ms`)
  }

  /** Waits until `done()` holds, the connection closes, or the timeout; returns whether `done()` held. */
  async until (done: () => boolean, timeoutMs: number): Promise<boolean> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (done()) return true
      if (this.closed) return false
      const left = deadline - Date.now()
      if (left <= 0) return false
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }

  /** Resolves once the server has closed the connection (rejects after the timeout). */
  async waitClosed (timeoutMs: number): Promise<void> {
    if (!(await this.until(() => this.closed, timeoutMs))) throw new Error(`connection still open after ${timeoutMs} ms`)
  }

  /** Stops reading: the kernel buffers fill and the server's writes back up. */
  stopReading (): void {
    this.socket?.pause()
    this.stream.pause()
  }

  /** Reads again what the server sent (after stopReading). */
  resumeReading (): void {
    this.socket?.resume()
    this.stream.resume()
  }

  end (): void {
    this.stream.destroy()
  }

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
  }

  private id (): number {
    this.lastId = this.lastId % 65535 + 1
    return this.lastId
  }
}

/**
 * The first bytes of an MQTT packet: its type-and-flags byte, then `length` as its remaining
 * length (MQTT's variable byte integer: 1-4 bytes up to 268,435,455), whatever actually follows.
 */
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
