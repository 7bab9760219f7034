/**
 * Workaround 17 (listed with the others in src/broker/upstream.ts): mqtt-packet 9.0.2 calls
 * debug() several times for every packet it parses or writes, and with debug 4.4 each call
 * gathers its arguments into an array and reads the instance's `enabled` getter even when nothing
 * is enabled: measured with `npm run bench`'s direct scenario, 7 % of the bytes the broker
 * allocated and ~9 % of its throughput at max load. When the debug module is loaded here, before
 * mqtt-packet (this module is server.ts's first import, ahead of Aedes), mqtt-packet's namespaces
 * get a function that does nothing, unless DEBUG enables them at start-up: then they get debug's
 * own, as before. (debug.enable() called later at run time does not reach them.) Every other
 * package gets debug's own instances.
 *
 * Nothing is installed if mqtt-packet was loaded first (its instances exist already), or if the
 * packages are not laid out as expected (the server then starts as it would without this);
 * `quietDebugInstalled` says whether it was. `mqttPacketTraced` says whether DEBUG enabled one of
 * mqtt-packet's namespaces at start-up (workaround 18 then leaves writing to mqtt-packet, so
 * that the trace shows every packet).
 */
import { createRequire } from 'node:module'

interface DebugFactory {
  (namespace: string): DebugInstance
}
interface DebugInstance {
  (...args: unknown[]): void
  enabled: boolean
  namespace: string
}

/** The namespaces quieted: mqtt-packet's (mqtt-packet:parser, mqtt-packet:writeToStream). */
const QUIET_PREFIX = 'mqtt-packet:'

/** debug as mqtt-packet requires it, and whether mqtt-packet was loaded before this module. */
function locate (): { debug: DebugFactory, debugPath: string, loadedFirst: boolean } | null {
  try {
    const require = createRequire(import.meta.url)
    const parserPath = require.resolve('mqtt-packet/parser.js')
    const debugPath = createRequire(parserPath).resolve('debug')
    return { debug: require(debugPath) as DebugFactory, debugPath, loadedFirst: require.cache[parserPath] !== undefined }
  } catch {
    return null
  }
}

const found = locate()

/** Whether DEBUG (read by debug at start-up) enables the mqtt-packet namespace. */
export function mqttPacketTraced (namespace: 'mqtt-packet:parser' | 'mqtt-packet:writeToStream'): boolean {
  return found !== null && found.debug(namespace).enabled === true
}

function install (): boolean {
  if (found === null || found.loadedFirst) return false
  const { debug, debugPath } = found
  const cached = createRequire(import.meta.url).cache[debugPath]
  if (cached === undefined) return false
  const quiet = function (namespace: string): DebugInstance {
    const own = debug(namespace)
    if (own.enabled === true || !String(namespace).startsWith(QUIET_PREFIX)) return own
    return Object.assign(function quieted (): void {}, { enabled: false, namespace })
  }
  // debug's own functions and settings (enable, disable, formatters, ...) stay reachable
  Object.setPrototypeOf(quiet, debug)
  cached.exports = quiet
  return true
}

export const quietDebugInstalled = install()
