/**
 * A raw MQTT connection for stream 1: writes whatever bytes it is given, over TCP or WebSocket
 * (one binary frame per write), parses what the server sends back with mqtt-packet, and notes
 * when the server closes the connection. Bytes from the server that do not parse are kept: a
 * server must never send a malformed packet.
 */
import net from 'node:net'
import mqttPacket, { type Packet } from 'mqtt-packet'
import WebSocket from 'ws'

export class RawConnection {
  readonly packets: Packet[] = []
  /** A parse error on the server's bytes, if any. */
  malformed: string | null = null
  closed = false
  private readonly parser = mqttPacket.parser({ protocolVersion: 4 })
  private waiters: Array<() => void> = []

  private constructor (private readonly socket: net.Socket | null, private readonly ws: WebSocket | null) {
    this.parser.on('packet', (p: Packet) => { this.packets.push(p); this.wake() })
    this.parser.on('error', (err: Error) => { this.malformed ??= err.message; this.wake() })
    const onData = (chunk: Buffer): void => { this.parser.parse(chunk) }
    const onClose = (): void => { this.closed = true; this.wake() }
    if (socket !== null) {
      socket.on('data', onData)
      socket.on('close', onClose)
      socket.on('error', () => {})
    } else if (ws !== null) {
      ws.on('message', (data: Buffer) => onData(data))
      ws.on('close', onClose)
      ws.on('error', () => {})
    }
  }

  static async open (transport: 'tcp' | 'ws', port: number, timeoutMs = 10_000): Promise<RawConnection> {
    if (transport === 'ws') {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/mqtt`, 'mqtt', { handshakeTimeout: timeoutMs })
      await new Promise<void>((resolve, reject) => { ws.once('open', resolve); ws.once('error', reject) })
      return new RawConnection(null, ws)
    }
    const socket = net.connect({ port, host: '127.0.0.1', noDelay: true })
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => { socket.destroy(); reject(new Error(`TCP connect timed out after ${timeoutMs} ms`)) }, timeoutMs)
      socket.once('connect', () => { clearTimeout(timer); resolve() })
      socket.once('error', (err) => { clearTimeout(timer); reject(err) })
    })
    return new RawConnection(socket, null)
  }

  write (bytes: Buffer): void {
    if (this.closed) return
    if (this.socket !== null) this.socket.write(bytes)
    else if (this.ws !== null && this.ws.readyState === WebSocket.OPEN) this.ws.send(bytes)
  }

  private wake (): void {
    for (const w of this.waiters.splice(0)) w()
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

  destroy (): void {
    if (this.socket !== null) this.socket.destroy()
    else this.ws?.terminate()
  }
}
