/**
 * A TCP relay between a client and a server, for tests of what a network does: `cut()` stops
 * relaying the bytes of every open connection in both directions while keeping both sockets open
 * (a network that drops packets: no FIN, no RST, nothing answered), and `target` says where new
 * connections go (a failover to another server behind the same address).
 */
import net from 'node:net'

export interface TcpProxy {
  port: number
  /** The port new connections are relayed to. */
  target: number
  /** Relayed connections open now. */
  open: () => number
  /** Stops relaying on every open connection, both ways; the sockets stay open. */
  cut: () => void
  close: () => Promise<void>
}

export async function startTcpProxy (target: number): Promise<TcpProxy> {
  const pairs = new Set<{ a: net.Socket, b: net.Socket, cut: boolean }>()
  const server = net.createServer(a => {
    const b = net.connect(proxy.target, '127.0.0.1')
    const pair = { a, b, cut: false }
    pairs.add(pair)
    // (what arrives after a cut is read and dropped: never relayed, never pushed back)
    a.on('data', d => { if (!pair.cut) b.write(d) })
    b.on('data', d => { if (!pair.cut) a.write(d) })
    const end = (): void => {
      pairs.delete(pair)
      a.destroy()
      b.destroy()
    }
    a.on('close', end)
    b.on('close', end)
    a.on('error', end)
    b.on('error', end)
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const proxy: TcpProxy = {
    port: (server.address() as net.AddressInfo).port,
    target,
    open: () => [...pairs].filter(p => !p.cut).length,
    cut: () => { for (const p of pairs) p.cut = true },
    close: async () => {
      for (const p of pairs) {
        p.a.destroy()
        p.b.destroy()
      }
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
  return proxy
}
