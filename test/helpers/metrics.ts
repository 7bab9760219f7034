import type { MqimServer } from '../../src/server.js'

/** The value of one series of a /metrics text (`name{labels}` exactly as printed), or undefined. */
export function valueOf (text: string, series: string): number | undefined {
  const line = text.split('\n').find(l => l.startsWith(series + ' '))
  return line === undefined ? undefined : Number(line.slice(series.length + 1))
}

/** One series of the server's GET /metrics (metrics enabled; the test runs on loopback), or undefined if absent. */
export async function metricOf (server: MqimServer, series: string): Promise<number | undefined> {
  const res = await fetch(`http://127.0.0.1:${server.ports.http}/metrics`)
  return valueOf(await res.text(), series)
}
