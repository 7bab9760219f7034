/**
 * Delivery order across nodes (Redis + MongoDB + MySQL): members on two nodes write to one
 * conversation as fast as they can, so each node keeps storing seqs right after the other's; every
 * device, on either node, must still receive the conversation's entries in seq order, each once
 * (topics.md, "Delivery guarantees").
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

describe('delivery order with writers on two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  const clients: ImClient[] = []
  beforeAll(async () => {
    const overrides = await clusterOverrides(13)
    n1 = await startServer({ ...overrides, nodeId: 'o1' })
    n2 = await startServer({ ...overrides, nodeId: 'o2' })
    for (const u of ['co.alice', 'co.bob', 'co.carol', 'co.extra0', 'co.extra1', 'co.extra2', 'co.extra3']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
  })

  test('two writers per node, interleaving: every device gets 1..N in order, once', async () => {
    const alice1 = await connect(n1, 'co.alice', 'a1')
    const alice2 = await connect(n2, 'co.alice', 'a2')
    const bob1 = await connect(n1, 'co.bob', 'b1')
    const bob2 = await connect(n2, 'co.bob', 'b2')
    const carol = await connect(n2, 'co.carol', 'c')
    clients.push(alice1, alice2, bob1, bob2, carol)
    const { conv } = await alice1.request('create-group', { name: 'order', members: ['co.bob', 'co.carol'] })
    const PER_WRITER = 20
    const IN_FLIGHT = 6
    // each writer keeps IN_FLIGHT sends going: the nodes' batches of this conversation interleave
    const writer = async (c: ImClient, tag: string): Promise<void> => {
      let next = 0
      await Promise.all(Array.from({ length: IN_FLIGHT }, async () => {
        while (next < PER_WRITER) {
          const i = next++
          await c.request('send', { conv, msgId: `${tag}${i}`, kind: 'text', body: `${tag} ${i}` })
        }
      }))
    }
    // rounds: a member added before each (every node drops its cached membership, so the first
    // commit of a round on each node looks the members up before publishing: a window for the
    // other node to store and publish the next seqs first)
    const ROUNDS = 4
    for (let r = 0; r < ROUNDS; r++) {
      await alice1.request('add-members', { conv, members: [`co.extra${r}`] })
      await Promise.all([writer(alice1, `a${r}_`), writer(bob2, `b${r}_`), writer(alice2, `c${r}_`), writer(bob1, `d${r}_`)])
    }
    const total = ROUNDS * 4 * PER_WRITER
    for (const c of clients) {
      await c.waitFor(() => c.messages.filter(m => m.conv === conv).length >= total, 20000, `${c.userId}:${c.deviceId} gets ${total}`)
      const seqs = c.messages.filter(m => m.conv === conv).map(m => m.seq)
      const firstOutOfOrder = seqs.findIndex((s, i) => s !== i + 1)
      const around = firstOutOfOrder === -1 ? [] : seqs.slice(Math.max(0, firstOutOfOrder - 2), firstOutOfOrder + 3)
      expect({ device: `${c.userId}:${c.deviceId}`, count: seqs.length, firstOutOfOrder, around }).toEqual({ device: `${c.userId}:${c.deviceId}`, count: total, firstOutOfOrder: -1, around: [] })
    }
  }, 60000)
})
