/**
 * Baseline broker: raw Aedes with no hooks (no authentication, no authorization, no IM logic),
 * in its own process, on 127.0.0.1:<port>. Same broker options and socket settings as mqim's
 * embedded broker (src/server.ts): concurrency, drain timeout, TCP_NODELAY.
 *
 *   node --import tsx scripts/bench/aedes-broker.ts <port>
 *
 * Prints "listening <port>" when ready; exits on SIGTERM/SIGINT or when stdin closes (the runner
 * went away).
 */
import net from 'node:net'
import { parseArgs } from 'node:util'
import { Aedes } from 'aedes'
import { intOption, parseCommandLine } from '../lib/cli.js'

const port = parseCommandLine('usage: aedes-broker.ts <port>', () => {
  const { positionals } = parseArgs({ allowPositionals: true })
  return intOption('port', positionals[0], 0, 0)
})
const broker = await Aedes.createBroker({
  concurrency: 1000,
  drainTimeout: 10_000,
  connectTimeout: 30_000,
  heartbeatInterval: 60_000
})
const server = net.createServer(socket => { socket.setNoDelay(true); broker.handle(socket) })
server.listen(port, '127.0.0.1', () => {
  process.stdout.write(`listening ${(server.address() as net.AddressInfo).port}\n`)
})

let stopping = false
function stop (): void {
  if (stopping) return
  stopping = true
  server.close()
  broker.close(() => process.exit(0))
  setTimeout(() => process.exit(0), 2000).unref()
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
process.stdin.on('end', stop)
process.stdin.on('error', stop)
process.stdin.resume()
