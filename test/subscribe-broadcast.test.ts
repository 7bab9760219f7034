/**
 * A persistent session's SUBSCRIBE on Redis waits for aedes-persistence-redis' `$SYS/sub/add`
 * broadcast to come back through the emitter (src/broker/upstream.ts, workaround 5). A broadcast
 * that is lost (published while the node's subscriber connection to Redis is not subscribed to it:
 * down, or re-subscribing after an outage) left that SUBSCRIBE waiting for good, and, as identical
 * calls share one, every later SUBSCRIBE of the same client and topics: the device could never
 * subscribe again until the process restarted. (Seen in CI: after test/outage.test.ts stopped
 * Redis, the drill's two persistent receivers never caught up.)
 *
 * Here the loss is made on purpose: the node's subscriber connection leaves the broadcast's
 * channel pattern while a device subscribes, and joins it again after.
 */
import type { Redis } from 'ioredis'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { SUBSCRIPTION_BROADCAST_TIMEOUT_MS } from '../src/broker/upstream.js'

const REDIS_DB = 18

interface RedisEmitter { subConn: Redis, _subTopic: (topic: string) => string }

describe('a persistent session subscribes again after a lost subscription broadcast (Redis mode)', () => {
  let server: MqimServer

  beforeAll(async () => {
    server = await startServer({ ...(await clusterOverrides(REDIS_DB)), nodeId: 'subcast' })
    await addUser(server, 'pat')
    await addUser(server, 'quinn')
  }, 60_000)

  afterAll(async () => {
    await server?.stop()
  })

  test('the SUBSCRIBE fails within the bound (the connection closes); once broadcasts come back, the same device and topics subscribe and get messages', async () => {
    const mq = server.internals.backends.mq as RedisEmitter
    const pattern = mq._subTopic('$SYS/sub/+')
    await mq.subConn.punsubscribe(pattern)
    let closedAfterMs: number
    try {
      const lost = await connect(server, 'pat', 'phone', { clean: false, subscribe: false })
      let closed = false
      lost.mqtt.once('close', () => { closed = true })
      const t0 = Date.now()
      const suback = lost.mqtt.subscribeAsync('im/u/pat/m', { qos: 1 }).then(() => 'granted', () => 'failed')
      await waitUntil(() => closed, SUBSCRIPTION_BROADCAST_TIMEOUT_MS + 5000, 'the connection of the SUBSCRIBE whose broadcast was lost to close')
      closedAfterMs = Date.now() - t0
      expect(await suback).toBe('failed')
      await lost.mqtt.endAsync(true)
    } finally {
      await mq.subConn.psubscribe(pattern)
    }
    expect(closedAfterMs).toBeGreaterThanOrEqual(SUBSCRIPTION_BROADCAST_TIMEOUT_MS - 500)

    // the same clientId and the same topic: before the fix, this call joined the lost one for good
    const again = await connect(server, 'pat', 'phone', { clean: false, subscribe: false })
    const granted = await Promise.race([
      again.mqtt.subscribeAsync('im/u/pat/m', { qos: 1 }),
      new Promise<never>((_resolve, reject) => setTimeout(() => reject(new Error('no SUBACK within 5 s')), 5000))
    ])
    expect(granted.map(g => g.qos)).toEqual([1])
    const quinn = await connect(server, 'quinn', 'app')
    const { conv } = await quinn.request('direct', { user: 'pat' })
    await quinn.request('send', { conv, msgId: 'after-lost-broadcast', kind: 'text', body: 'hello again' })
    await again.waitFor(() => again.messages.some(m => m.msgId === 'after-lost-broadcast'), 10_000, 'the message on the resubscribed session')
    // and the broker's matcher of offline sessions knows the subscription again: a message sent
    // while the device is away is queued for it, and comes on its next connect
    await again.end()
    await quinn.request('send', { conv, msgId: 'while-away', kind: 'text', body: 'queued' })
    const back = await connect(server, 'pat', 'phone', { clean: false, subscribe: false })
    await back.waitFor(() => back.messages.some(m => m.msgId === 'while-away'), 10_000, 'the message queued while the device was away')
    await Promise.all([back.end(), quinn.end()])
  }, 30_000)
})
