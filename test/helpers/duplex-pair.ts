/**
 * In-memory connections for in-process tests, the way Aedes' own tests feed the broker: two
 * duplex ends where what one writes the other reads. `stuck` makes the server end never finish a
 * write (a peer that stopped reading): its buffer fills and write() returns false.
 */
import { Duplex } from 'node:stream'
import mqttPacket, { type Packet } from 'mqtt-packet'

class End extends Duplex {
  peer: End | null = null
  constructor (private readonly stuck: boolean, highWaterMark?: number) {
    super({ writableHighWaterMark: highWaterMark })
  }

  override _read (): void {}

  override _write (chunk: Buffer, _encoding: BufferEncoding, callback: (err?: Error | null) => void): void {
    if (this.stuck) return // never acknowledged: the buffer only grows
    this.peer?.push(chunk)
    callback()
  }

  override _final (callback: () => void): void {
    this.peer?.push(null)
    callback()
  }
}

export interface Pair {
  /** Hand this one to broker.handle(). */
  server: Duplex
  /** The test's end: send packets, read what the broker wrote. */
  client: PacketEnd
}

/** The test's end of a pair: writes MQTT packets, parses what comes back. */
export class PacketEnd {
  readonly received: Packet[] = []
  private readonly waiters: Array<() => void> = []

  constructor (readonly stream: Duplex) {
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    parser.on('packet', (p: Packet) => {
      this.received.push(p)
      for (const w of this.waiters.splice(0)) w()
    })
    stream.on('data', (chunk: Buffer) => parser.parse(chunk))
  }

  send (packet: Record<string, unknown>): void {
    this.stream.write(mqttPacket.generate(packet as unknown as Packet))
  }

  /** The first packet of this kind. */
  async next (cmd: string, timeoutMs = 2000): Promise<Packet> {
    return await this.nth(cmd, 1, timeoutMs)
  }

  /** The n-th packet of this kind (1-based), once it has arrived. */
  async nth (cmd: string, n: number, timeoutMs = 2000): Promise<Packet> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      const found = this.received.filter(p => p.cmd === cmd)[n - 1]
      if (found !== undefined) return found
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no ${cmd} within ${timeoutMs} ms`)
      await new Promise<void>(resolve => {
        const timer = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(timer); resolve() })
      })
    }
  }
}

export function duplexPair (options: { stuck?: boolean, highWaterMark?: number } = {}): Pair {
  const server = new End(options.stuck === true, options.highWaterMark)
  const client = new End(false)
  server.peer = client
  client.peer = server
  return { server, client: new PacketEnd(client) }
}
