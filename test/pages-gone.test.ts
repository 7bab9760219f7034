/**
 * Page requests (history, list) of a connection that goes away while they wait: a slow reader can
 * bring hundreds in one read of its socket, and each would build a page of up to limits.pageBytes
 * for nobody when it closes (the attacker review: ten such connections closed together held the
 * event loop for ~2 s). Those not started are dropped; a bystander is answered meanwhile.
 */
import { MEMORY } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import { RawClient } from '../scripts/lib/raw-mqtt.js'
import { metricOf } from './helpers/metrics.js'
import type { MqimServer } from '../src/server.js'
import mqttPacket from 'mqtt-packet'

const historyAnswered = async (server: MqimServer): Promise<number> => await metricOf(server, 'mqim_requests_total{op="history",code="ok"}') ?? 0

describe('page requests of a connection that closed', () => {
  let server: MqimServer
  const open: Array<ImClient | RawClient> = []
  beforeAll(async () => {
    server = await startServer({
      limits: { pageBytes: 200_000, outboundBufferBytes: 512 * 1024, maxPayloadBytes: 65536, requestsPerSecond: 100_000, requestBurst: 100_000, pagesInFlightPerUser: 4 },
      broker: { drainTimeoutMs: 120_000 },
      metrics: { enabled: true }
    }, await MEMORY.make())
    for (const u of ['mallory', 'alice', 'bob']) await addUser(server, u)
  })
  afterAll(async () => {
    for (const c of open) {
      if (c instanceof RawClient) c.end()
      else await c.end().catch(() => {})
    }
    await server.stop()
  })

  test('those still waiting for their turn are not run once it closes; a bystander is answered while they wait', async () => {
    const mallory = await connect(server, 'mallory', 'm')
    const alice = await connect(server, 'alice', 'a')
    open.push(mallory, alice)
    const { conv } = await mallory.request('direct', { user: 'bob' })
    const bystanderConv = (await alice.request('direct', { user: 'bob' })).conv
    const body = 'p'.repeat(60_000)
    for (let i = 0; i < 40; i++) await mallory.request('send', { conv, msgId: `p${i}`, kind: 'text', body })
    const { client: slow, code } = await RawClient.login(server.ports.mqtt, 'mallory', 'slow', 'password-mallory')
    open.push(slow)
    expect(code).toBe(0)
    expect(await slow.subscribe(['im/u/mallory/#'])).toEqual([1])
    slow.stopReading()
    // 150 history requests in one write (one read of the socket for the server): each page is
    // ~180 KB, 27 MB in all
    const REQUESTS = 150
    const packets = Array.from({ length: REQUESTS }, (_, i) => mqttPacket.generate({ cmd: 'publish', topic: 'im/req/history', qos: 1, messageId: i + 1, retain: false, dup: false, payload: Buffer.from(JSON.stringify({ id: `h${i}`, conv, after: 0, limit: 200 })) }))
    expect(await slow.writeRaw(Buffer.concat(packets))).toBe(true)
    // the server answers until the slow reader's socket is full, then the pages wait
    let answered = -1
    for (let stable = 0; stable < 5;) {
      await new Promise(resolve => setTimeout(resolve, 200))
      const now = await historyAnswered(server)
      stable = now === answered ? stable + 1 : 0
      answered = now
    }
    expect(answered).toBeGreaterThanOrEqual(4)
    expect(answered).toBeLessThan(REQUESTS - 20)
    // a bystander is answered while they wait
    expect((await alice.request('send', { conv: bystanderConv, msgId: 'during', kind: 'text', body: 'hi' })).seq).toBe(1)
    // the slow reader goes away: what waited is dropped, not built
    slow.end()
    await new Promise(resolve => setTimeout(resolve, 1500))
    expect(await historyAnswered(server)).toBe(answered)
    // the gate is free again: mallory's own pages are answered
    const page = await mallory.request('history', { conv, after: 0, limit: 200 })
    expect(page.messages.length).toBe(3)
    expect(await historyAnswered(server)).toBe(answered + 1)
  }, 60_000)
})
