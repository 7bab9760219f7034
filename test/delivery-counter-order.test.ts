/**
 * One node (the embedded default): everything published to a device reaches it in the order it
 * was made. Aedes drops, as a duplicate, a packet whose brokerCounter is not above the last one a
 * connection got from the node, and its own publish routes a QoS 0 packet at once but a QoS 1
 * packet only after queueing it: a channel message (QoS 0) committed in one batch with a group
 * message (QoS 1) reached a member of both first and cost that device the group message (1 of 300
 * arrived before the fan-out's FIFO, src/broker/fanout.ts).
 */
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

describe('publishes reach a device in the order they were made (one node)', () => {
  let server: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    server = await startServer({ limits: { requestsPerSecond: 100000, requestBurst: 100000 } })
    for (const u of ['co1.a', 'co1.b']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await server.stop()
  })

  test('group and channel messages committed together: a member of both (clean and persistent sessions) gets every one of each', async () => {
    const a = await connect(server, 'co1.a', 'one')
    const clean = await connect(server, 'co1.b', 'clean')
    const persistent = await connect(server, 'co1.b', 'kept', { clean: false })
    clients.push(a, clean, persistent)
    const channelSeqs = new Map<ImClient, number[]>([[clean, []], [persistent, []]])
    for (const [c, seqs] of channelSeqs) c.mqtt.on('message', (topic, payload) => { if (topic.startsWith('im/c/')) seqs.push(JSON.parse(payload.toString()).seq) })
    const group = await a.request('create-group', { name: 'g', members: ['co1.b'] })
    const channel = await a.request('create-channel', { name: 'ch', postPolicy: 'members' }) as { conv: string }
    await a.request('add-members', { conv: channel.conv, members: ['co1.b'] })
    // the server subscribes the connected devices of a new member to the channel topic: a first
    // channel message (seq 1) to both devices says it has
    await a.request('send', { conv: channel.conv, msgId: 'probe', kind: 'text', body: 'probe' })
    for (const [c, seqs] of channelSeqs) await c.waitFor(() => seqs.includes(1), 10_000, `${c.deviceId} subscribed to the channel`)
    for (const seqs of channelSeqs.values()) seqs.length = 0
    const N = 150
    let next = 0
    await Promise.all(Array.from({ length: 8 }, async () => {
      while (next < N) {
        const k = next++
        await Promise.all([
          a.request('send', { conv: group.conv, msgId: `g${k}`, kind: 'text', body: `g ${k}` }),
          a.request('send', { conv: channel.conv, msgId: `c${k}`, kind: 'text', body: `c ${k}` })
        ])
      }
    }))
    const all = Array.from({ length: N }, (_, i) => i + 1)
    for (const c of [clean, persistent]) {
      await c.waitFor(() => c.messages.filter(m => m.conv === group.conv).length >= N && (channelSeqs.get(c)?.length ?? 0) >= N, 10_000, `${c.deviceId} gets every message`)
      expect(c.messages.filter(m => m.conv === group.conv).map(m => m.seq)).toEqual(all)
      // (seq 1 was the probe)
      expect(channelSeqs.get(c)).toEqual(all.map(s => s + 1))
    }
  })
})
