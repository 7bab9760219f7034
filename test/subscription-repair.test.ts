/**
 * aedes-persistence-redis matches offline sessions' subscriptions with a private trie, kept only by
 * the `$SYS/sub/add|rm` broadcasts of every node. A node whose subscriber connection to Redis is
 * down while a device (un)subscribes on another node misses that broadcast for good: it then queued
 * nothing for a session whose SUBSCRIBE it missed (the device got those messages only by syncing),
 * and kept queueing for one that had unsubscribed. After its link is back it now reads the
 * sessions' subscriptions from Redis and puts its matcher right (src/broker/upstream.ts, 19).
 *
 * The loss is made on purpose, as in test/subscribe-broadcast.test.ts: n2's subscriber connection
 * leaves the broadcasts' channel pattern while the devices (un)subscribe on n1, and joins it again
 * after; then the connection breaks and reconnects (what a Redis outage ends with).
 */
import type { Redis } from 'ioredis'
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { redisQueueKey } from '../src/broker/upstream.js'
import { valueOf } from './helpers/metrics.js'
import { MAX_RTT_MS } from '../src/broker/clock-check.js'

const REDIS_DB = 11

/** GET /metrics from loopback. */
async function scrapeMetrics (server: MqimServer): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${server.ports.http}/metrics`)
  expect(res.status).toBe(200)
  return await res.text()
}

interface RedisEmitter { subConn: Redis, _subTopic: (topic: string) => string }

describe('a node that missed subscription broadcasts puts its matcher of offline sessions right when its Redis link is back', () => {
  let n1: MqimServer
  let n2: MqimServer

  beforeAll(async () => {
    const overrides = await clusterOverrides(REDIS_DB)
    n1 = await startServer({ ...overrides, nodeId: 'rep1' })
    n2 = await startServer({ ...overrides, nodeId: 'rep2' })
    for (const u of ['sr.pat', 'sr.quinn']) await addUser(n1, u)
  }, 60_000)

  afterAll(async () => {
    await Promise.allSettled([n1?.stop(), n2?.stop()])
  })

  test('SUBSCRIBEs and an UNSUBSCRIBE missed by n2 (one after an UNSUBSCRIBE it heard): before the repair n2 queues by its stale matcher, after it by Redis', async () => {
    const mq2 = n2.internals.backends.mq as RedisEmitter
    const pattern = mq2._subTopic('$SYS/sub/+')
    const quinn = await connect(n2, 'sr.quinn', 'app')
    const { conv } = await quinn.request('direct', { user: 'sr.pat' })
    const send = async (msgId: string): Promise<void> => { await quinn.request('send', { conv, msgId, kind: 'text', body: msgId }) }
    // n2's first read of Redis (at its start) is done
    await waitUntil(() => n2.internals.backends.matcherRepairs() >= 1, 10_000, 'n2 to read the sessions\' subscriptions at start')
    // while n2 listens: the tablet subscribes; the watch subscribes and unsubscribes
    const tablet = await connect(n1, 'sr.pat', 'tablet', { clean: false, subscribe: false })
    await tablet.mqtt.subscribeAsync('im/u/sr.pat/m', { qos: 1 })
    const watch = await connect(n1, 'sr.pat', 'watch', { clean: false, subscribe: false })
    await watch.mqtt.subscribeAsync('im/u/sr.pat/m', { qos: 1 })
    await watch.mqtt.unsubscribeAsync('im/u/sr.pat/m')
    // n2 deaf to the broadcasts: the phone's first SUBSCRIBE, the tablet's UNSUBSCRIBE, the watch's SUBSCRIBE again
    await mq2.subConn.punsubscribe(pattern)
    try {
      const phone = await connect(n1, 'sr.pat', 'phone', { clean: false, subscribe: false })
      await phone.mqtt.subscribeAsync('im/u/sr.pat/m', { qos: 1 })
      await phone.end()
      await tablet.mqtt.unsubscribeAsync('im/u/sr.pat/m')
      await tablet.end()
      await watch.mqtt.subscribeAsync('im/u/sr.pat/m', { qos: 1 })
      await watch.end()
    } finally {
      await mq2.subConn.psubscribe(pattern)
    }
    // the stale matcher: queued for the tablet, not for the phone or the watch (the sessions' queues in Redis)
    const redis = n2.internals.backends.redis as Redis
    const queued = async (device: string): Promise<number> => await redis.llen(redisQueueKey(`sr.pat:${device}`))
    const queues = async (): Promise<Record<string, number>> => ({ phone: await queued('phone'), tablet: await queued('tablet'), watch: await queued('watch') })
    await send('stale')
    expect(await queues()).toStrictEqual({ phone: 0, tablet: 1, watch: 0 })
    // the link breaks and is back: n2 reads the sessions' subscriptions from Redis
    const before = n2.internals.backends.matcherRepairs()
    mq2.subConn.disconnect(true)
    await waitUntil(() => n2.internals.backends.matcherRepairs() > before, 15_000, 'n2 to repair its matcher after the reconnect')
    // what the repair did, on /metrics for the on-call engineer: the phone's and the watch's
    // subscriptions added, the tablet's removed
    const metrics = await scrapeMetrics(n2)
    expect(valueOf(metrics, 'mqim_subscription_repairs_total')).toBe(before + 1)
    expect(valueOf(metrics, 'mqim_subscription_repair_added_total')).toBe(2)
    expect(valueOf(metrics, 'mqim_subscription_repair_removed_total')).toBe(1)
    expect(valueOf(metrics, 'mqim_subscription_repair_failures_total')).toBe(0)
    expect(valueOf(metrics, 'mqim_subscription_repair_last_sessions')).toBeGreaterThanOrEqual(2)
    expect(valueOf(metrics, 'mqim_subscription_repair_last_seconds')).toBeGreaterThan(0)
    // and the node's clock against Redis' (both on this machine: the same clock, so what it shows is
    // the measurement's error, at most half the longest round trip it uses; CI saw 86 ms on a busy machine)
    expect(Math.abs(valueOf(metrics, 'mqim_clock_offset_seconds') ?? Number.NaN)).toBeLessThanOrEqual(MAX_RTT_MS / 2 / 1000)
    await send('repaired')
    expect(await queues()).toStrictEqual({ phone: 1, tablet: 1, watch: 1 })
    // and the phone gets it from its queue when it comes back
    const phone = await connect(n1, 'sr.pat', 'phone', { clean: false, subscribe: false })
    await phone.waitFor(() => phone.messages.some(m => m.msgId === 'repaired'), 10_000, 'the message queued for the phone after the repair')
    expect(phone.messages.map(m => m.msgId)).toStrictEqual(['repaired'])
    await Promise.all([phone.end(), quinn.end()])
  }, 60_000)
})
