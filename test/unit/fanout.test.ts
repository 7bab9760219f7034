/**
 * The cluster fan-out (src/broker/fanout.ts) against stand-ins for the broker, its persistence and
 * the Redis emitter that record what happens: a fan-out reaches the emitter once, only after each
 * topic's packet was queued for the persistent sessions subscribed to it, in the order fan-outs
 * were made; what is received from Redis is delivered per topic with each packet's identity, its
 * mark told after, and anything not of that shape is dropped.
 */
import type { Aedes } from 'aedes'
import { FAN_CHUNK, FanOut, MAX_PENDING_TOPICS } from '../../src/broker/fanout.js'
import { CLIENT_ID_MAX, FAN_TOPIC, clientIdOf, parseClientId } from '../../src/protocol/topics.js'
import type { Logger } from '../../src/log.js'

interface Emitted { topic: string, topics?: string[], counters?: number[], qos?: number, brokerId?: string, payload?: Buffer, except?: string }

function stand (opts: { clustered?: boolean, many?: boolean, queueTimeoutMs?: number, maxHeldTopics?: number } = {}) {
  const broker = { id: 'node-a', counter: 0, publish: () => { throw new Error('a cluster fan-out must not publish per topic') } }
  const emitted: Emitted[] = []
  const local: Array<Record<string, unknown>> = []
  let handler: ((m: unknown, done: () => void) => void) | undefined
  const mq = {
    emit: (m: Emitted, done: (err?: Error) => void) => { emitted.push(m); done() },
    on: (topic: string, h: (m: unknown, done: () => void) => void, done: () => void) => { if (topic === FAN_TOPIC) handler = h; done() },
    _emit: (m: Record<string, unknown>) => { local.push(m) }
  }
  // subscriptions of persistent sessions by topic; queueing waits until release() is called
  const subs = new Map<string, Array<{ clientId: string, topic: string, qos: number }>>()
  const queued: Array<{ clientIds: string[], topic: string, brokerCounter: number }> = []
  const waiting: Array<{ resolve: () => void, reject: (err: Error) => void }> = []
  const persistence = {
    subscriptionsByTopic: async (topic: string) => subs.get(topic) ?? [],
    outgoingEnqueueCombi: async (s: Array<{ clientId: string }>, packet: { topic: string, brokerCounter: number }) => {
      await new Promise<void>((resolve, reject) => waiting.push({ resolve, reject }))
      queued.push({ clientIds: s.map(x => x.clientId), topic: packet.topic, brokerCounter: packet.brokerCounter })
    },
    // Redis' one script for all of a publish's packets (upstream.ts)
    ...(opts.many === true
      ? {
          outgoingEnqueueMany: async (entries: Array<{ subs: Array<{ clientId: string }>, packet: { topic: string, brokerCounter: number } }>) => {
            await new Promise<void>((resolve, reject) => waiting.push({ resolve, reject }))
            for (const e of entries) queued.push({ clientIds: e.subs.map(x => x.clientId), topic: e.packet.topic, brokerCounter: e.packet.brokerCounter })
          }
        }
      : {})
  }
  const warnings: string[] = []
  const logger = { warn: (_o: unknown, msg: string) => { warnings.push(msg) }, error: (_o: unknown, msg: string) => { warnings.push(msg) }, debug: () => {}, info: () => {} } as unknown as Logger
  const held: string[][] = []
  const droppedQos: number[] = []
  const create = async (): Promise<FanOut> => await FanOut.create(broker as unknown as Aedes, mq, persistence, { clustered: opts.clustered ?? true, logger, queueTimeoutMs: opts.queueTimeoutMs, maxHeldTopics: opts.maxHeldTopics, onDropped: (q) => { droppedQos.push(q) }, beforeDeliver: (t) => { held.push([...t]) } })
  const receive = (m: unknown): void => { handler?.(m, () => {}) }
  const settle = async (): Promise<void> => { for (let i = 0; i < 5; i++) await new Promise(resolve => setImmediate(resolve)) }
  return { broker, emitted, local, subs, queued, waiting, warnings, held, droppedQos, create, receive, settle }
}

describe('cluster fan-out', () => {
  test('one emit per fan-out, after its packets were queued; in the order made', async () => {
    const s = stand()
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    s.subs.set('im/u/c/m', [{ clientId: 'c:tab', topic: 'im/u/c/m', qos: 1 }, { clientId: 'c:pc', topic: 'im/u/#', qos: 1 }])
    const payload = Buffer.from('{"seq":1}')
    fan.publish(['im/u/a/m', 'im/u/b/m', 'im/u/c/m'], payload, 1)
    fan.publish(['im/u/a/e', 'im/u/b/e'], Buffer.from('{"type":"typing"}'), 0)
    await s.settle()
    // the QoS 1 fan-out waits for its two queueings; the QoS 0 one waits behind it
    expect(s.waiting).toHaveLength(2)
    expect(s.emitted).toEqual([])
    for (const w of s.waiting.splice(0)) w.resolve()
    await s.settle()
    expect(s.queued).toEqual([
      { clientIds: ['b:phone'], topic: 'im/u/b/m', brokerCounter: 2 },
      { clientIds: ['c:tab', 'c:pc'], topic: 'im/u/c/m', brokerCounter: 3 }
    ])
    expect(s.emitted.map(m => [m.topic, m.topics, m.counters, m.qos, m.brokerId])).toEqual([
      [FAN_TOPIC, ['im/u/a/m', 'im/u/b/m', 'im/u/c/m'], [1, 2, 3], 1, 'node-a'],
      [FAN_TOPIC, ['im/u/a/e', 'im/u/b/e'], [4, 5], 0, 'node-a']
    ])
    expect(s.emitted[0]?.payload).toBe(payload)
  })

  test('a marked fan-out goes as a fan-out even to one topic; each node tells its mark after delivering it', async () => {
    const s = stand()
    const fan = await s.create()
    const told: Array<[string, number, number]> = []
    fan.onMark((conv, seq) => told.push([conv, seq, s.local.length]))
    fan.publish(['im/c/ch1/m'], Buffer.from('channel message'), 0, ['ch1', 12])
    expect(s.emitted.map(m => [m.topic, m.topics, (m as { mark?: unknown }).mark])).toEqual([[FAN_TOPIC, ['im/c/ch1/m'], ['ch1', 12]]])
    s.receive({ topic: FAN_TOPIC, payload: Buffer.from('x'), qos: 1, brokerId: 'node-b', topics: ['im/u/a/m', 'im/u/b/m'], counters: [7, 8], mark: ['g1', 3] })
    expect(told).toEqual([['g1', 3, 2]])
  })

  test('one topic: the packet itself, on its own topic, in order with the fan-outs (a connection drops a lower brokerCounter after a higher one)', async () => {
    const s = stand()
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('message'), 1)
    fan.publish(['im/u/b/e'], Buffer.from('read event'), 0)
    fan.publish(['im/u/b/r/phone'], Buffer.from('reply copy'), 0)
    await s.settle()
    expect(s.emitted).toEqual([])
    for (const w of s.waiting.splice(0)) w.resolve()
    await s.settle()
    expect(s.emitted.map(m => [m.topic, (m as { brokerCounter?: number }).brokerCounter ?? m.counters])).toEqual([
      [FAN_TOPIC, [1, 2]],
      ['im/u/b/e', 3],
      ['im/u/b/r/phone', 4]
    ])
    expect(s.emitted[1]).toMatchObject({ cmd: 'publish', brokerId: 'node-a', qos: 0, retain: false, dup: false })
  })

  test('scripts leave in the order the publishes were made, whatever their number of topics (one script each on Redis)', async () => {
    const s = stand({ many: true })
    const fan = await s.create()
    for (const u of ['a', 'b', 'c', 'd']) s.subs.set(`im/u/${u}/m`, [{ clientId: `${u}:phone`, topic: `im/u/${u}/m`, qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m', 'im/u/c/m'], Buffer.from('three'), 1)
    fan.publish(['im/u/d/m'], Buffer.from('one'), 1)
    await s.settle()
    expect(s.waiting).toHaveLength(2)
    s.waiting[0]?.resolve()
    await s.settle()
    // the first script sent was the first publish's
    expect(s.queued.map(q => q.topic)).toEqual(['im/u/a/m', 'im/u/b/m', 'im/u/c/m'])
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['three'])
    s.waiting[1]?.resolve()
    await s.settle()
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['three', 'one'])
  })

  test('a queueing that fails still lets the live copies go, in order, with a warning', async () => {
    const s = stand()
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('1'), 1)
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('2'), 1)
    await s.settle()
    s.waiting[0]?.reject(new Error('redis down'))
    s.waiting[1]?.resolve()
    await s.settle()
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['1', '2'])
    expect(s.warnings).toEqual(['publish: queueing for persistent sessions failed or timed out (the live copies went without it)'])
  })

  test(`waiting publishes name at most ${MAX_PENDING_TOPICS} topics, QoS 0 ones half of that: the next are dropped and counted`, async () => {
    const s = stand({ many: true })
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    const fanOut = (n: number): string[] => Array.from({ length: n }, () => 'im/u/b/m')
    for (let i = 0; i < MAX_PENDING_TOPICS / FAN_CHUNK / 2; i++) fan.publish(fanOut(FAN_CHUNK), Buffer.from(String(i)), 1)
    fan.publish(['im/u/b/e'], Buffer.from('an event'), 0)
    expect(fan.dropped).toBe(1)
    for (let i = 0; i < MAX_PENDING_TOPICS / FAN_CHUNK / 2; i++) fan.publish(fanOut(FAN_CHUNK), Buffer.from(String(i)), 1)
    expect(fan.dropped).toBe(1)
    fan.publish(['im/u/b/m'], Buffer.from('one too many'), 1)
    expect(fan.dropped).toBe(2)
    expect(s.droppedQos).toEqual([0, 1])
    expect(s.warnings).toEqual(['publishes dropped: too many wait for their queue entries (Redis slow or down; devices sync messages by seq)'])
    await s.settle()
    // one script per publish
    expect(s.waiting).toHaveLength(MAX_PENDING_TOPICS / FAN_CHUNK)
    for (const w of s.waiting.splice(0)) w.resolve()
    await s.settle()
    expect(s.emitted).toHaveLength(MAX_PENDING_TOPICS / FAN_CHUNK)
    expect(s.queued).toHaveLength(MAX_PENDING_TOPICS)
    // room again
    fan.publish(['im/u/b/e'], Buffer.from('x'), 0)
    expect(s.emitted).toHaveLength(MAX_PENDING_TOPICS / FAN_CHUNK + 1)
  })

  test('drain() waits for what was published before it, not after, and ends at its timeout', async () => {
    const s = stand()
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('1'), 1)
    await s.settle()
    const started = performance.now()
    await fan.drain(200)
    expect(performance.now() - started).toBeGreaterThanOrEqual(190)
    const drained = fan.drain(5000)
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('2'), 1) // after: not waited for
    await s.settle()
    s.waiting[0]?.resolve()
    const t0 = performance.now()
    await drained
    expect(performance.now() - t0).toBeLessThan(1000)
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['1'])
  })

  test('a queueing unanswered for queueTimeoutMs counts as failed: the live copies go, in order', async () => {
    const s = stand({ queueTimeoutMs: 100 })
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('stuck'), 1)
    fan.publish(['im/u/b/e'], Buffer.from('event'), 0)
    await new Promise(resolve => setTimeout(resolve, 50))
    expect(s.emitted).toEqual([])
    await new Promise(resolve => setTimeout(resolve, 150))
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['stuck', 'event'])
    expect(s.warnings).toEqual(['publish: queueing for persistent sessions failed or timed out (the live copies went without it)'])
  })

  test('a publish whose queueing timed out still counts against the bound until the queueing answers', async () => {
    const s = stand({ queueTimeoutMs: 50, maxHeldTopics: 10, many: true })
    const fan = await s.create()
    for (const u of ['a', 'b', 'c', 'd', 'e']) s.subs.set(`im/u/${u}/m`, [{ clientId: `${u}:p`, topic: `im/u/${u}/m`, qos: 1 }])
    const five = ['a', 'b', 'c', 'd', 'e'].map(u => `im/u/${u}/m`)
    expect(fan.publish(five, Buffer.from('stuck'), 1)).toBe(5)
    await new Promise(resolve => setTimeout(resolve, 120))
    expect(s.emitted.map(m => m.payload?.toString())).toEqual(['stuck'])
    // routed, but its queue entries are still being written: 5 + 6 > 10
    expect(fan.publish([...five, 'im/u/a/m'], Buffer.from('six'), 1)).toBe(0)
    expect(fan.dropped).toBe(1)
    s.waiting[0]?.resolve()
    await s.settle()
    expect(fan.publish([...five, 'im/u/a/m'], Buffer.from('six'), 1)).toBe(6)
  })

  test(`more than ${FAN_CHUNK} topics go in several fan-outs, the mark with the last`, async () => {
    const s = stand()
    const fan = await s.create()
    const topics = Array.from({ length: 2 * FAN_CHUNK + 7 }, (_, i) => `im/u/u${i}/m`)
    fan.publish(topics, Buffer.from('big'), 0, ['g', 9])
    expect(s.emitted.map(m => [m.topics?.length, (m as { mark?: unknown }).mark])).toEqual([[FAN_CHUNK, undefined], [FAN_CHUNK, undefined], [7, ['g', 9]]])
    expect(s.emitted.flatMap(m => m.topics)).toEqual(topics)
  })

  test('a fan-out received is delivered to each topic here with its packet identity, after beforeDeliver', async () => {
    const s = stand()
    await s.create()
    const payload = Buffer.from('{"seq":7}')
    s.receive({ topic: FAN_TOPIC, payload, qos: 1, brokerId: 'node-b', topics: ['im/u/a/m', 'im/u/b/m'], counters: [41, 42] })
    expect(s.held).toEqual([['im/u/a/m', 'im/u/b/m']])
    expect(s.local).toEqual([
      { cmd: 'publish', brokerId: 'node-b', brokerCounter: 41, topic: 'im/u/a/m', payload, qos: 1, retain: false, dup: false, messageId: undefined },
      { cmd: 'publish', brokerId: 'node-b', brokerCounter: 42, topic: 'im/u/b/m', payload, qos: 1, retain: false, dup: false, messageId: undefined }
    ])
  })

  test('except: the packets name the connection left out (QoS 0 only), in the fan-out and its local deliveries', async () => {
    const s = stand()
    const fan = await s.create()
    const payload = Buffer.from('{"type":"read"}')
    fan.publish(['im/u/a/e'], payload, 0, undefined, 'a:phone')
    fan.publish(['im/u/a/e', 'im/u/b/e'], payload, 0, undefined, 'a:phone')
    // a QoS 1 publish leaves out nobody (its queued copies are not checked against it)
    fan.publish(['im/u/c/e'], payload, 1, undefined, 'c:phone')
    await s.settle()
    s.waiting.forEach(w => w.resolve())
    await s.settle()
    expect(s.emitted.map(e => ('topics' in e ? { fan: e.topics, except: e.except } : { topic: e.topic, clientId: (e as { clientId?: string }).clientId }))).toEqual([
      { topic: 'im/u/a/e', clientId: 'a:phone' },
      { fan: ['im/u/a/e', 'im/u/b/e'], except: 'a:phone' },
      { topic: 'im/u/c/e', clientId: undefined }
    ])
    s.receive({ topic: FAN_TOPIC, payload, qos: 0, brokerId: 'node-b', topics: ['im/u/a/e', 'im/u/b/e'], counters: [5, 6], except: 'a:phone' })
    expect(s.local.map(m => [m.topic, m.clientId])).toEqual([['im/u/a/e', 'a:phone'], ['im/u/b/e', 'a:phone']])
  })

  test('a received except as long as the longest clientId is delivered (CLIENT_ID_MAX follows the id patterns)', async () => {
    const longest = clientIdOf('u'.repeat(32), 'd'.repeat(64))
    expect(longest.length).toBe(CLIENT_ID_MAX)
    expect(parseClientId(longest)).not.toBeNull()
    expect(parseClientId(clientIdOf('u'.repeat(33), 'd'.repeat(64)))).toBeNull()
    expect(parseClientId(clientIdOf('u'.repeat(32), 'd'.repeat(65)))).toBeNull()
    const s = stand()
    await s.create()
    s.receive({ topic: FAN_TOPIC, payload: Buffer.from('x'), qos: 0, brokerId: 'node-b', topics: ['im/u/a/e'], counters: [1], except: longest })
    expect(s.local.map(m => m.clientId)).toEqual([longest])
    expect(s.warnings).toEqual([])
  })

  test.each([
    ['a payload that is not bytes', { payload: 'text' }],
    ['QoS 2', { qos: 2 }],
    ['no broker id', { brokerId: 7 }],
    ['topics not a list', { topics: 'im/u/a/m' }],
    ['fewer counters than topics', { counters: [1] }],
    ['a $ topic', { topics: ['im/u/a/m', '$SYS/x'] }],
    ['a wildcard topic', { topics: ['im/u/a/m', 'im/u/#'] }],
    ['a + topic', { topics: ['im/u/+/m', 'im/u/b/m'] }],
    ['a topic of 200 levels (qlobber throws beyond 100)', { topics: ['im/u/a/m', 'x/'.repeat(199) + 'x'] }],
    ['a topic with NUL', { topics: ['im/u/a/m', 'im/u/b\u0000/m'] }],
    ['a topic that is not a string', { topics: ['im/u/a/m', 7] }],
    ['an empty topic', { topics: ['im/u/a/m', ''] }],
    ['a counter that is not an integer', { counters: [1, 1.5] }],
    ['a counter that is a string', { counters: [1, '2'] }],
    ['a mark that is not [conversation, seq]', { mark: ['g1'] }],
    ['a mark whose seq is not an integer', { mark: ['g1', '3'] }],
    ['an except that is not a string', { except: 7 }],
    ['an except longer than any clientId', { except: 'u:' + 'd'.repeat(200) }]
  ])('a received fan-out with %s is dropped with a warning', async (_what, change) => {
    const s = stand()
    await s.create()
    s.receive({ topic: FAN_TOPIC, payload: Buffer.from('x'), qos: 1, brokerId: 'node-b', topics: ['im/u/a/m', 'im/u/b/m'], counters: [1, 2], ...change })
    expect(s.local).toEqual([])
    expect(s.held).toEqual([])
    expect(s.warnings).toEqual(['a fan-out message that is not one of ours: dropped'])
  })

  test('on one node: each packet to the in-process emitter, in the order made (a QoS 0 event never overtakes a message still being queued), nothing subscribed', async () => {
    const s = stand({ clustered: false })
    const fan = await s.create()
    s.subs.set('im/u/b/m', [{ clientId: 'b:phone', topic: 'im/u/b/m', qos: 1 }])
    fan.publish(['im/u/a/m', 'im/u/b/m'], Buffer.from('group message'), 1, ['g', 1])
    fan.publish(['im/c/ch/m'], Buffer.from('channel message'), 0, ['ch', 1])
    fan.publish(['im/u/b/e'], Buffer.from('read event'), 0)
    await s.settle()
    expect(s.emitted).toEqual([])
    for (const w of s.waiting.splice(0)) w.resolve()
    await s.settle()
    expect(s.emitted.map(m => [m.topic, (m as { brokerCounter?: number }).brokerCounter, m.payload?.toString()])).toEqual([
      ['im/u/a/m', 1, 'group message'],
      ['im/u/b/m', 2, 'group message'],
      ['im/c/ch/m', 3, 'channel message'],
      ['im/u/b/e', 4, 'read event']
    ])
    expect(s.queued).toEqual([{ clientIds: ['b:phone'], topic: 'im/u/b/m', brokerCounter: 2 }])
    s.receive({ topic: FAN_TOPIC, payload: Buffer.from('x'), qos: 1, brokerId: 'node-b', topics: ['im/u/a/m'], counters: [1] })
    expect(s.local).toEqual([])
  })
})
