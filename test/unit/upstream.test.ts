/**
 * The upstream behaviours that src/broker/upstream.ts works around, checked on the pinned
 * versions, in-process (no network, no services): each "upstream" test asserts the behaviour as
 * it is today, so an upgrade that changes it fails here and names the workaround to revisit; each
 * "workaround" test shows the patch doing its job. (The two Redis-only behaviours are in
 * test/upstream-redis.test.ts.)
 */
import { Aedes, type Client } from 'aedes'
import mqemitter from 'mqemitter'
import mqttPacket from 'mqtt-packet'
import fc from 'fast-check'
import { Writable } from 'node:stream'
import { spawnSync } from 'node:child_process'
import MemoryPersistence from 'aedes-persistence/asyncPersistence.js'
import { duplexPair, type PacketEnd } from '../helpers/duplex-pair.js'
import { fixedHeader } from '../../scripts/lib/raw-mqtt.js'
import {
  BoundedMemoryPersistence, PacketTooLargeError, SubscriptionBroadcastTimeoutError, answerFailedConnect, coalesceAddSubscriptions, connackFirst, createEmitter, dropQueueReplays,
  grantAtMostQos1, keepConnectPacket, limitPacketSize, makeSessionClean, neverWaitForDrain, pauseReading, recordQueueReplays, skipSinkPublishes, unregisterClosedClients,
  wholePacket, wholePacketWrites
} from '../../src/broker/upstream.js'
import { SINK_TOPIC } from '../../src/protocol/topics.js'

const turn = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))
const settle = async (ms = 30): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

interface Emitter { current: number, length: number }

async function connectClean (client: PacketEnd, id: string, clean = true): Promise<void> {
  client.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean, clientId: id, keepalive: 0 })
  await settle()
}

/**
 * Client `s` connects with clean=false (after `prepare` has seen its Aedes client), subscribes to
 * `t` at `qos` and disconnects, leaving its session stored; resolves with CONNACK's sessionPresent.
 */
async function visitSession (broker: Aedes, qos: 0 | 1, prepare: (client: Client) => void = () => {}): Promise<boolean> {
  const pair = duplexPair()
  prepare(broker.handle(pair.server))
  await connectClean(pair.client, 's', false)
  const connack = await pair.client.next('connack')
  pair.client.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 't', qos }] })
  await pair.client.next('suback')
  pair.client.send({ cmd: 'disconnect' })
  await settle()
  return connack.cmd === 'connack' && connack.sessionPresent
}

describe('mqtt-packet 9.0.2: the parser buffers a packet up to its claimed length (workaround 2)', () => {
  test('upstream: a header claiming 200 MB is no error; the body is buffered as it comes', () => {
    const parser = mqttPacket.parser()
    const errors: Error[] = []
    parser.on('error', (e: Error) => errors.push(e))
    const buffered = parser.parse(Buffer.concat([fixedHeader(0x10, 200_000_000), Buffer.alloc(1_000_000)]))
    expect(errors).toEqual([])
    expect(buffered).toBe(1_000_000)
    // what limitPacketSize relies on
    expect(typeof (parser as unknown as { _parseLength: unknown })._parseLength).toBe('function')
    expect(typeof (parser as unknown as { _emitError: unknown })._emitError).toBe('function')
  })

  test('workaround: the length is checked as soon as it is parsed; the first packet has its own limit', () => {
    const parser = mqttPacket.parser()
    const errors: Error[] = []
    parser.on('error', (e: Error) => errors.push(e))
    limitPacketSize({ _parser: parser } as unknown as Client, 100, 1000)
    parser.parse(fixedHeader(0x10, 101))
    expect(errors[0]).toBeInstanceOf(PacketTooLargeError)
    expect((errors[0] as PacketTooLargeError).limit).toBe(100)

    const after = mqttPacket.parser()
    const later: Error[] = []
    after.on('error', (e: Error) => later.push(e))
    limitPacketSize({ _parser: after } as unknown as Client, 100, 1000)
    after.parse(mqttPacket.generate({ cmd: 'pingreq' }))
    after.parse(fixedHeader(0x30, 1000))
    expect(later).toEqual([])
    after.parse(Buffer.alloc(1000))
    after.parse(fixedHeader(0x30, 1001))
    expect(later.map(e => (e as PacketTooLargeError).length)).toEqual([1001])
  })
})

describe('aedes 1.2.0: a delivery to a socket that does not drain holds an emitter slot (workaround 3)', () => {
  async function stuckSubscriber (patch: boolean): Promise<{ broker: Aedes, mq: Emitter, client: Client, backpressure: number }> {
    const mq = mqemitter({ concurrency: 10 }) as unknown as Emitter
    const broker = await Aedes.createBroker({ mq, drainTimeout: 60_000 })
    const { server, client: end } = duplexPair({ stuck: true, highWaterMark: 1024 })
    const client = broker.handle(server)
    let backpressure = 0
    if (patch) neverWaitForDrain(client, () => { backpressure++ })
    await connectClean(end, 'stuck')
    end.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a/#', qos: 0 }] })
    await settle()
    for (let i = 0; i < 20; i++) broker.publish({ cmd: 'publish', topic: 'a/b', payload: Buffer.alloc(4096), qos: 0, retain: false, dup: false }, () => {})
    await settle(100)
    return { broker, mq, client, backpressure }
  }

  test('upstream: the slots stay taken until the socket drains (or drainTimeout)', async () => {
    const { broker, mq } = await stuckSubscriber(false)
    expect(mq.current).toBe(10)
    expect(mq.length).toBe(10)
    await new Promise<void>(resolve => broker.close(() => resolve()))
  })

  test('workaround: deliveries complete at once and the caller is told', async () => {
    const { broker, mq, backpressure } = await stuckSubscriber(true)
    expect(mq.current).toBe(0)
    expect(mq.length).toBe(0)
    expect(backpressure).toBeGreaterThan(0)
    await new Promise<void>(resolve => broker.close(() => resolve()))
  })
})

describe('aedes 1.2.0: the granted QoS is recorded before authorizeSubscribe (workaround 4)', () => {
  async function subackFor (patch: boolean): Promise<number[]> {
    const broker = await Aedes.createBroker()
    broker.authorizeSubscribe = (_client, sub, done) => { sub.qos = Math.min(sub.qos, 1) as 0 | 1; done(null, sub) }
    const { server, client: end } = duplexPair()
    const client = broker.handle(server)
    if (patch) grantAtMostQos1(client)
    await connectClean(end, 'q')
    end.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: 'a', qos: 2 }, { topic: 'b', qos: 0 }] })
    const suback = await end.next('suback')
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return (suback as unknown as { granted: number[] }).granted
  }

  test('upstream: a hook that lowers QoS 2 to 1 still answers SUBACK 2', async () => {
    expect(await subackFor(false)).toEqual([2, 0])
  })

  test('workaround: QoS 2 requests become QoS 1 before Aedes records them', async () => {
    expect(await subackFor(true)).toEqual([1, 0])
  })
})

describe('aedes 1.2.0: a message routed between restoring a session and its CONNACK is written first (workaround 9)', () => {
  async function firstPackets (patch: boolean): Promise<string[]> {
    const persistence = new MemoryPersistence()
    const broker = await Aedes.createBroker({ persistence })
    // a persistent session with a subscription, offline
    await visitSession(broker, 0)
    // a message arrives while the session is being restored: after its subscriptions are back,
    // before the CONNACK (Aedes deletes the old will in between)
    const delWill = persistence.delWill.bind(persistence)
    persistence.delWill = async (client) => {
      await new Promise<void>(resolve => broker.publish({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 0, retain: false, dup: false }, () => resolve()))
      await settle()
      return await delWill(client)
    }
    const again = duplexPair()
    const client = broker.handle(again.server)
    if (patch) connackFirst(client)
    await connectClean(again.client, 's', false)
    await again.client.next('connack')
    await again.client.next('publish')
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return again.client.received.map(p => p.cmd)
  }

  test('upstream: the PUBLISH comes before the CONNACK', async () => {
    expect(await firstPackets(false)).toEqual(['publish', 'connack'])
  })

  test('workaround: the CONNACK comes first, the message after it', async () => {
    expect(await firstPackets(true)).toEqual(['connack', 'publish'])
  })
})

describe('aedes 1.2.0: a message is queued for a session before it is routed (workaround 10)', () => {
  /** The PUBLISH packets a reconnecting session gets for one message queued while it was away and routed after it is back. */
  async function deliveries (patch: boolean): Promise<string[]> {
    const persistence = patch ? recordQueueReplays(new MemoryPersistence(), 100) : new MemoryPersistence()
    const mq = mqemitter()
    const broker = await Aedes.createBroker({ persistence, mq })
    await visitSession(broker, 1)
    // routing is slow (a Redis round trip, stretched): the message is queued for the offline
    // session at once, and reaches the emitter only once the session is back
    const emit = mq.emit.bind(mq)
    let route: (() => void) | undefined
    mq.emit = ((packet: { topic: string }, cb?: (err?: Error) => void) => {
      if (packet.topic !== 't') return emit(packet as never, cb)
      route = () => emit(packet as never, cb)
      return mq
    }) as typeof mq.emit
    broker.publish({ cmd: 'publish', topic: 't', payload: Buffer.from('once'), qos: 1, retain: false, dup: false }, () => {})
    await settle()
    const again = duplexPair()
    const client = broker.handle(again.server)
    if (patch) { dropQueueReplays(client); connackFirst(client) }
    await connectClean(again.client, 's', false)
    await again.client.next('publish')
    expect(route).toBeDefined()
    route?.()
    await settle(100)
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return again.client.received.filter(p => p.cmd === 'publish').map(p => p.cmd === 'publish' ? String(p.payload) : '')
  }

  test('upstream: written twice, from the queue and live', async () => {
    expect(await deliveries(false)).toEqual(['once', 'once'])
  })

  test('workaround: written once (the queued copy)', async () => {
    expect(await deliveries(true)).toEqual(['once'])
  })
})

describe('aedes 1.2.0: authenticate cannot make a persistent session clean (workaround 11)', () => {
  /**
   * A clientId with a stored session connects again (clean=false) and authenticate asks for a
   * clean session: sessionPresent of that connect, and of one more connect after it.
   */
  async function sessionPresent (patch: boolean): Promise<[boolean, boolean]> {
    const broker = await Aedes.createBroker({ persistence: new MemoryPersistence() })
    let makeClean = false
    broker.authenticate = (client, _u, _p, done) => {
      if (makeClean && patch) makeSessionClean(client)
      else if (makeClean) (client as { clean: boolean }).clean = true
      done(null, true)
    }
    const visit = async (): Promise<boolean> => await visitSession(broker, 1, client => { if (patch) keepConnectPacket(client) })
    await visit() // the stored session
    makeClean = true
    const made = await visit()
    makeClean = false
    const after = await visit()
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return [made, after]
  }

  test('upstream: setting client.clean there still restores the stored session, and keeps it (the CONNECT packet decides)', async () => {
    expect(await sessionPresent(false)).toEqual([true, true])
  })

  test('workaround: the kept CONNECT packet is changed too: nothing restored, the session wiped', async () => {
    expect(await sessionPresent(true)).toEqual([false, false])
  })
})

describe('aedes 1.2.0: addSubscriptions is called once per topic of a SUBSCRIBE (workaround 5)', () => {
  test('upstream: three topics, three calls with the whole packet; workaround: identical concurrent calls made once', async () => {
    const persistence = new MemoryPersistence()
    const calls: string[][] = []
    const add = persistence.addSubscriptions.bind(persistence)
    persistence.addSubscriptions = async (c, subs) => {
      calls.push(subs.map(s => s.topic))
      await add(c, subs)
    }
    const broker = await Aedes.createBroker({ persistence })
    const { server, client: end } = duplexPair()
    broker.handle(server)
    await connectClean(end, 'p', false)
    end.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: 'a', qos: 1 }, { topic: 'b', qos: 1 }, { topic: 'c', qos: 1 }] })
    await end.next('suback')
    expect(calls).toEqual([['a', 'b', 'c'], ['a', 'b', 'c'], ['a', 'b', 'c']])
    await new Promise<void>(resolve => broker.close(() => resolve()))

    let underlying = 0
    const store = coalesceAddSubscriptions({ addSubscriptions: async (_c: { id: string }, _s: Array<{ topic: string, qos: number }>) => { underlying++; await settle(10) } })
    const client = { id: 'p' }
    const subs = [{ topic: 'a', qos: 1 }, { topic: 'b', qos: 1 }]
    await Promise.all([store.addSubscriptions(client, subs), store.addSubscriptions(client, subs), store.addSubscriptions(client, subs)])
    expect(underlying).toBe(1)
  })

  test('workaround: a call that never ends (its broadcast was lost) fails after the bound, and the next identical call is made afresh; unsubscribe and clean too', async () => {
    const never = new Promise<never>(() => {})
    let adds = 0
    let answer: 'hang' | 'ok' = 'hang'
    const calls: string[] = []
    const store = coalesceAddSubscriptions({
      addSubscriptions: async (_c: { id: string }, _s: Array<{ topic: string, qos: number }>) => { adds++; if (answer === 'hang') await never },
      removeSubscriptions: async (_c: { id: string }, topics: string[]) => { calls.push(`remove ${topics.join(',')}`); await never },
      cleanSubscriptions: async (_c: { id: string }) => { calls.push('clean'); await never }
    }, 50)
    const client = { id: 'p' }
    const subs = [{ topic: 'a', qos: 1 }]
    const t0 = performance.now()
    const [first, shared] = await Promise.allSettled([store.addSubscriptions(client, subs), store.addSubscriptions(client, subs)])
    expect(performance.now() - t0).toBeGreaterThanOrEqual(45)
    expect(first).toMatchObject({ status: 'rejected', reason: expect.any(SubscriptionBroadcastTimeoutError) })
    expect(shared).toMatchObject({ status: 'rejected', reason: expect.any(SubscriptionBroadcastTimeoutError) })
    expect(adds).toBe(1)
    // the broadcasts come back: the next SUBSCRIBE does not wait on the lost one
    answer = 'ok'
    await expect(store.addSubscriptions(client, subs)).resolves.toBeUndefined()
    expect(adds).toBe(2)
    await expect(store.removeSubscriptions(client, ['a'])).rejects.toThrow(/removeSubscriptions: the subscription broadcast did not come back within 50 ms/)
    await expect(store.cleanSubscriptions(client)).rejects.toThrow(SubscriptionBroadcastTimeoutError)
    expect(calls).toEqual(['remove a', 'clean'])
  })

  test('workaround: two different calls of one client run one after the other (aedes-persistence keys its waiter by client and first topic); other clients do not wait; a call whose turn comes after its connection closed fails at once; timeouts are told', async () => {
    const log: string[] = []
    const timeouts: string[] = []
    const hang = new Set<string>()
    const store = coalesceAddSubscriptions({
      addSubscriptions: async (c: { id: string }, subs: Array<{ topic: string, qos: number }>) => {
        const name = `${c.id}:${subs.map(x => x.topic).join('+')}`
        log.push(`start ${name}`)
        if (hang.has(name)) await new Promise<never>(() => {})
        await settle(20)
        log.push(`end ${name}`)
      }
    }, 60, (call, clientId) => timeouts.push(`${call} ${clientId}`))
    const p = { id: 'p', closed: false }
    const q = { id: 'q', closed: false }
    await Promise.all([
      store.addSubscriptions(p, [{ topic: 'a', qos: 1 }]),
      store.addSubscriptions(p, [{ topic: 'a', qos: 1 }, { topic: 'b', qos: 1 }]),
      store.addSubscriptions(q, [{ topic: 'a', qos: 1 }])
    ])
    expect(new Set(log)).toEqual(new Set(['start p:a', 'end p:a', 'start p:a+b', 'end p:a+b', 'start q:a', 'end q:a']))
    const at = (entry: string): number => log.indexOf(entry)
    expect(at('start p:a+b')).toBeGreaterThan(at('end p:a')) // p's second waits for its first
    expect(at('start q:a')).toBeLessThan(at('end p:a')) // q does not wait for p
    // p's first call never ends: it fails after the bound; the connection closes meanwhile, so the
    // call queued behind it fails at once, without running
    log.length = 0
    hang.add('p:a')
    const both = Promise.allSettled([store.addSubscriptions(p, [{ topic: 'a', qos: 1 }]), store.addSubscriptions(p, [{ topic: 'b', qos: 1 }])])
    while (!log.includes('start p:a')) await settle(1)
    p.closed = true
    const [first, queued] = await both
    expect(first).toMatchObject({ status: 'rejected', reason: expect.any(SubscriptionBroadcastTimeoutError) })
    expect(queued).toMatchObject({ status: 'rejected', reason: expect.objectContaining({ message: 'addSubscriptions: the connection closed' }) })
    expect(log).toEqual(['start p:a'])
    expect(timeouts).toEqual(['addSubscriptions p'])
  })
})

describe('aedes-persistence 11.0.0: offline queues are unbounded (workaround 6)', () => {
  const packet = (i: number): Record<string, unknown> => ({ cmd: 'publish', topic: 't', payload: Buffer.alloc(100), qos: 1, brokerId: 'b', brokerCounter: i, messageId: i })

  async function queued (p: MemoryPersistence): Promise<number> {
    const packets: unknown[] = []
    for await (const packet of p.outgoingStream({ id: 'c' })) packets.push(packet)
    return packets.length
  }

  test('upstream: 2,000 messages for one session, 2,000 queued', async () => {
    const p = new MemoryPersistence()
    for (let i = 1; i <= 2000; i++) await p.outgoingEnqueueCombi([{ clientId: 'c' }], packet(i))
    expect(await queued(p)).toBe(2000)
  })

  test('workaround: at most `messages` and `bytes` per session; acknowledged ones make room', async () => {
    const p = new BoundedMemoryPersistence({ messages: 10, bytes: 1_000_000 })
    for (let i = 1; i <= 2000; i++) await p.outgoingEnqueueCombi([{ clientId: 'c' }, { clientId: 'd' }], packet(i))
    expect(await queued(p)).toBe(10)
    expect(p.queuedOf('c')).toEqual({ messages: 10, bytes: 1000 })
    expect(p.dropped).toBe(2 * 1990)
    await p.outgoingUpdate({ id: 'c' }, packet(1))
    await p.outgoingClearMessageId({ id: 'c' }, { messageId: 1 })
    expect(p.queuedOf('c')).toEqual({ messages: 9, bytes: 900 })
    await p.outgoingEnqueue({ clientId: 'c' }, packet(3000))
    expect(await queued(p)).toBe(10)
    const small = new BoundedMemoryPersistence({ messages: 100, bytes: 250 })
    for (let i = 1; i <= 5; i++) await small.outgoingEnqueue({ clientId: 'c' }, packet(i))
    expect(small.queuedOf('c')).toEqual({ messages: 2, bytes: 200 })
  })

  test('workaround: a payload that is a view of a larger buffer is queued as a copy of its own, the same bytes', async () => {
    const p = new BoundedMemoryPersistence({ messages: 10, bytes: 1_000_000 })
    const slab = Buffer.alloc(64 * 1024, 0x61)
    const view = slab.subarray(100, 200)
    const own = Buffer.allocUnsafeSlow(100).fill(0x62)
    await p.outgoingEnqueueCombi([{ clientId: 'c' }, { clientId: 'd' }], { ...packet(1), payload: view })
    await p.outgoingEnqueue({ clientId: 'c' }, { ...packet(2), payload: own })
    const kept: Buffer[] = []
    for await (const q of p.outgoingStream({ id: 'c' })) kept.push((q as { payload: Buffer }).payload)
    expect(kept.map(b => b.buffer.byteLength)).toEqual([100, 100])
    expect(kept[0]?.equals(view)).toBe(true)
    expect(kept[0]?.buffer).not.toBe(slab.buffer)
    // a buffer of its own is queued as it is
    expect(kept[1]?.buffer).toBe(own.buffer)
    expect(p.queuedOf('c')).toEqual({ messages: 2, bytes: 200 })
  })

  test('upstream: a live delivery of a message that is not in the session\'s queue throws "no such packet" (Aedes then errors the client)', async () => {
    const p = new MemoryPersistence()
    await p.outgoingEnqueueCombi([{ clientId: 'c' }], packet(1))
    await expect(p.outgoingUpdate({ id: 'c' }, packet(2))).rejects.toThrow('no such packet')
  })

  test('workaround: a full queue\'s live deliveries are sent untracked; their acknowledgement finds nothing and changes nothing', async () => {
    const p = new BoundedMemoryPersistence({ messages: 10, bytes: 1_000_000 })
    for (let i = 1; i <= 11; i++) await p.outgoingEnqueueCombi([{ clientId: 'c' }], packet(i))
    expect(p.queuedOf('c')).toEqual({ messages: 10, bytes: 1000 })
    await expect(p.outgoingUpdate({ id: 'c' }, packet(11))).resolves.toBeUndefined()
    expect(p.untracked).toBe(1)
    expect(await p.outgoingClearMessageId({ id: 'c' }, { messageId: 11 })).toBeUndefined()
    expect(p.queuedOf('c')).toEqual({ messages: 10, bytes: 1000 })
  })
})

describe('mqemitter 7.1.0: releasing a queue of synchronously finished messages recurses (workaround 7)', () => {
  test('upstream: with a concurrency limit, 20,000 queued messages overflow the stack when the slot frees', () => {
    const mq = mqemitter({ concurrency: 1 })
    let release: (() => void) | undefined
    mq.on('hold', (_msg: unknown, cb: () => void) => { release = cb })
    mq.emit({ topic: 'hold' })
    for (let i = 0; i < 20_000; i++) mq.emit({ topic: 'nobody' })
    expect(() => release?.()).toThrow(RangeError)
  })

  test('workaround: the embedded emitter has no limit, so nothing queues', () => {
    const mq = createEmitter() as { on: (t: string, f: (m: unknown, cb: () => void) => void) => void, emit: (m: unknown) => void, length: number, current: number }
    mq.on('hold', () => {})
    mq.emit({ topic: 'hold' })
    for (let i = 0; i < 20_000; i++) mq.emit({ topic: 'nobody' })
    expect(mq.length).toBe(0)
  })
})

describe('aedes 1.2.0: pause()/resume() lose count of packets finished while paused (workaround 12)', () => {
  /**
   * Three publishes arrive in one chunk and are held by authorizePublish; the client is paused,
   * they finish, it is resumed (by `resume`, which is told when all three have finished: Aedes
   * has called each one's completion callback, which it reads from `client._nextBatch` as each
   * packet is parsed), and a PINGREQ is sent: answered or not within 300 ms.
   */
  async function pingAnsweredAfterPause (resume: (client: Client, finished: Promise<void>) => void): Promise<boolean> {
    const broker = await Aedes.createBroker()
    let release: () => void = () => {}
    const held = new Promise<void>(resolve => { release = resolve })
    broker.authorizePublish = (_client, _packet, done) => { void held.then(() => done(null)) }
    const { server, client: end } = duplexPair()
    const client = broker.handle(server)
    await connectClean(end, 'p')
    const c = client as unknown as { _nextBatch: (err?: Error) => void, connackSent?: boolean }
    // Aedes marks the CONNACK sent a turn after writing it: before that, packets after the first
    // of a chunk are queued rather than handled (and counted otherwise)
    for (let i = 0; i < 400 && c.connackSent !== true; i++) await settle(5)
    const nextBatch = c._nextBatch
    let done = 0
    let allDone: () => void = () => {}
    const finished = new Promise<void>(resolve => { allDone = resolve })
    c._nextBatch = (err) => {
      nextBatch(err)
      if (++done === 3) allDone()
    }
    // the three in one write: one chunk for Aedes to read, however the machine schedules the test
    end.stream.write(Buffer.concat([1, 2, 3].map(i => mqttPacket.generate({ cmd: 'publish', topic: 'a', payload: Buffer.from('x'), qos: 1, messageId: i, retain: false, dup: false }))))
    await settle()
    resume(client, finished)
    release()
    await end.nth('puback', 3)
    await finished
    await settle(250)
    end.send({ cmd: 'pingreq' })
    const answered = await end.next('pingresp', 300).then(() => true, () => false)
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return answered
  }

  test('upstream: after pause() and resume(), the next packet is not read', async () => {
    expect(await pingAnsweredAfterPause((client, finished) => {
      const c = client as unknown as { pause: () => void, resume: () => void }
      c.pause()
      // resumed once the three have finished while paused, however slow the machine is
      void finished.then(() => { c.resume() })
    })).toBe(false)
  })

  test('workaround: pauseReading reads on once its time is up', async () => {
    expect(await pingAnsweredAfterPause(client => pauseReading(client, 200))).toBe(true)
  })

  test('workaround: nothing is read while paused; one pause at a time', async () => {
    const broker = await Aedes.createBroker()
    const { server, client: end } = duplexPair()
    const client = broker.handle(server)
    await connectClean(end, 'q')
    pauseReading(client, 300)
    pauseReading(client, 5000) // already paused: ignored
    const t0 = performance.now()
    end.send({ cmd: 'pingreq' })
    await end.next('pingresp', 2000)
    const waited = performance.now() - t0
    expect(waited).toBeGreaterThanOrEqual(250)
    expect(waited).toBeLessThan(2000)
    await new Promise<void>(resolve => broker.close(() => resolve()))
  })
})

describe('aedes 1.2.0: a client that closes between authenticate and registerClient stays registered (workaround 13)', () => {
  /**
   * A persistence whose cleanSubscriptions takes 100 ms (as a Redis round trip can, under load);
   * the connection closes 20 ms into it. Returns the broker's clients and count afterwards.
   */
  async function closedDuringConnect (patch: boolean): Promise<{ ids: string[], connected: number, disconnects: number }> {
    const persistence = new MemoryPersistence() as unknown as { cleanSubscriptions: (client: unknown) => Promise<unknown> }
    const clean = persistence.cleanSubscriptions.bind(persistence)
    persistence.cleanSubscriptions = async (client) => { await settle(100); return await clean(client) }
    const broker = await Aedes.createBroker({ persistence: persistence as never })
    if (patch) unregisterClosedClients(broker)
    let disconnects = 0
    broker.on('clientDisconnect', () => { disconnects++ })
    const { server, client: end } = duplexPair()
    broker.handle(server)
    end.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'gone', keepalive: 0 })
    await settle(20)
    server.destroy()
    await settle(200)
    const b = broker as unknown as { clients: Record<string, Client>, connectedClients: number }
    const out = { ids: Object.keys(b.clients), connected: b.connectedClients, disconnects }
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return out
  }

  test('upstream: the closed client is in broker.clients and counted', async () => {
    expect(await closedDuringConnect(false)).toEqual({ ids: ['gone'], connected: 1, disconnects: 0 })
  })

  test('workaround: unregistered as it is registered (clientDisconnect emitted)', async () => {
    expect(await closedDuringConnect(true)).toEqual({ ids: [], connected: 0, disconnects: 1 })
  })
})

describe('aedes 1.2.0: a CONNECT that fails after authenticate ends without a CONNACK (workaround 25)', () => {
  /**
   * A persistence whose cleanSubscriptions fails (as a Redis call does when the node finds its
   * connection hung), or a broker whose authenticate refuses; then, for one that connects, a
   * malformed packet after the CONNACK. Returns the packets the client got and whether the broker closed the connection.
   */
  async function connectOnce (patch: boolean, how: 'persistence fails' | 'login refused' | 'error after connect' | 'no CONNECT in time' | 'error as CONNACK 0 leaves'): Promise<{ got: Array<{ cmd: string, returnCode?: number }>, closed: boolean }> {
    const persistence = new MemoryPersistence() as unknown as { cleanSubscriptions: (client: unknown) => Promise<unknown> }
    if (how === 'persistence fails') persistence.cleanSubscriptions = async () => { throw new Error('Redis did not answer') }
    const broker = await Aedes.createBroker({ persistence: persistence as never, ...(how === 'no CONNECT in time' ? { connectTimeout: 20 } : {}) })
    if (how === 'login refused') broker.authenticate = (_client, _user, _password, done) => { done(Object.assign(new Error('no'), { returnCode: 4 }), false) }
    const { server, client: end } = duplexPair()
    const client = broker.handle(server)
    if (how === 'error as CONNACK 0 leaves') {
      // an error in the turn Aedes writes CONNACK 0 (it marks it sent a turn later): its keepalive
      // running out then, after an event-loop stall, is one way (found by the attacker review)
      const write = server.write.bind(server) as (chunk: Buffer) => boolean
      server.write = ((chunk: Buffer) => {
        const ok = write(chunk)
        if (chunk[0] === 0x20) process.nextTick(() => client.emit('error', new Error('keep alive timeout')))
        return ok
      }) as typeof server.write
    }
    if (patch) answerFailedConnect(client)
    if (how !== 'no CONNECT in time') end.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'c', keepalive: 0 })
    await settle(50)
    // a PUBLISH with QoS 3: the parser's error, which closes the connection
    if (how === 'error after connect') end.stream.write(Buffer.from([0x36, 0x00]))
    await settle(50)
    // (the in-memory pair tells its other end nothing when one is destroyed: the broker's end is asked)
    const closed = server.destroyed || server.writableEnded
    await new Promise<void>(resolve => broker.close(() => resolve()))
    return { got: end.received.map(p => ({ cmd: p.cmd, ...(p.cmd === 'connack' ? { returnCode: p.returnCode } : {}) })), closed }
  }

  test('upstream: the connection is closed with no CONNACK', async () => {
    expect(await connectOnce(false, 'persistence fails')).toEqual({ got: [], closed: true })
  })

  test('workaround: CONNACK 3 first, then closed', async () => {
    expect(await connectOnce(true, 'persistence fails')).toEqual({ got: [{ cmd: 'connack', returnCode: 3 }], closed: true })
  })

  test('workaround: nothing more where Aedes answers itself (a refused login) or has answered (an error after the CONNACK, or in the turn it is written), nor before a login (no CONNECT in time)', async () => {
    expect(await connectOnce(true, 'login refused')).toEqual({ got: [{ cmd: 'connack', returnCode: 4 }], closed: true })
    expect(await connectOnce(true, 'no CONNECT in time')).toEqual({ got: [], closed: true })
    expect(await connectOnce(true, 'error as CONNACK 0 leaves')).toEqual({ got: [{ cmd: 'connack', returnCode: 0 }], closed: true })
    expect(await connectOnce(true, 'error after connect')).toEqual({ got: [{ cmd: 'connack', returnCode: 0 }], closed: true })
  })

  test('workaround: the connection\'s writes are watched until it is connected, not after', async () => {
    const broker = await Aedes.createBroker({ persistence: new MemoryPersistence() as never })
    const { server, client: end } = duplexPair()
    const own = server.write
    answerFailedConnect(broker.handle(server))
    expect(server.write).not.toBe(own)
    end.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'w', keepalive: 0 })
    await end.next('connack')
    await settle(20)
    expect(server.write).toBe(own)
    await new Promise<void>(resolve => broker.close(() => resolve()))
  })
})

describe('aedes 1.2.0: handled requests need no routing (workaround 1)', () => {
  test('a publish to SINK_TOPIC completes without reaching the emitter; others are routed as before', async () => {
    const broker = await Aedes.createBroker()
    skipSinkPublishes(broker)
    const seen: string[] = []
    await new Promise<void>(resolve => broker.subscribe('$mqim/+', (p, cb) => { seen.push(p.topic); cb() }, resolve))
    await new Promise<void>(resolve => broker.publish({ cmd: 'publish', topic: SINK_TOPIC, payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }, () => resolve()))
    await new Promise<void>(resolve => broker.publish({ cmd: 'publish', topic: '$mqim/other', payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }, () => resolve()))
    await turn()
    expect(seen).toEqual(['$mqim/other'])
    await new Promise<void>(resolve => broker.close(() => resolve()))
  })
})

describe('mqtt-packet 9.0.2 + debug 4.4.3: debug() runs for every packet even when disabled (workaround 17)', () => {
  // in a child process: the workaround acts when the debug module is first loaded
  function child (script: string, debug: string | undefined): { out: Record<string, unknown>, err: string, late: string } {
    const env: NodeJS.ProcessEnv = { ...process.env }
    delete env.DEBUG
    if (debug !== undefined) env.DEBUG = debug
    const run = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import { createRequire } from 'node:module'
      const require = createRequire(process.cwd() + '/src/server.ts')
      ${script}
      const packet = require('mqtt-packet')
      const parser = packet.parser({ protocolVersion: 4 })
      let parsed = 0
      parser.on('packet', () => parsed++)
      parser.parse(packet.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false }))
      const debug = require(createRequire(require.resolve('mqtt-packet/parser.js')).resolve('debug'))
      console.log(JSON.stringify({ installed: typeof installed === 'boolean' ? installed : null, traced: typeof traced === 'boolean' ? traced : null, parsed, parserDebug: debug('mqtt-packet:parser').name, other: debug('ioredis:redis').name }))
      // enabled at run time: reaches the instances mqtt-packet made unless they are no-ops
      debug.enable('mqtt-packet:*')
      console.error('-- enabled at run time --')
      parser.parse(packet.generate({ cmd: 'publish', topic: 't', payload: Buffer.from('y'), qos: 1, messageId: 2, retain: false, dup: false }))`],
    { env, encoding: 'utf8' })
    expect(run.status).toBe(0)
    const [err = '', late = ''] = run.stderr.split('-- enabled at run time --')
    return { out: JSON.parse(run.stdout.trim().split('\n').pop() ?? '{}') as Record<string, unknown>, err, late }
  }
  const first = "const { quietDebugInstalled: installed, mqttPacketTraced } = await import(process.cwd() + '/src/broker/quiet-debug.ts'); const traced = mqttPacketTraced('mqtt-packet:writeToStream')"
  const linesOf = (err: string, namespace: string): number => err.split('\n').filter(l => l.includes(namespace)).length

  test('upstream: with DEBUG on, parsing and writing one packet log several lines from each of mqtt-packet\'s two instances; enabled at run time, the same', () => {
    const { out, err } = child('', 'mqtt-packet:*')
    expect(out).toMatchObject({ installed: null, parsed: 1, parserDebug: 'debug' })
    expect(linesOf(err, 'mqtt-packet:parser')).toBeGreaterThanOrEqual(3)
    expect(linesOf(err, 'mqtt-packet:writeToStream')).toBeGreaterThanOrEqual(3)
    expect(linesOf(child('', undefined).late, 'mqtt-packet:parser')).toBeGreaterThanOrEqual(3)
  })

  test('workaround: loaded first, mqtt-packet gets no-op instances (silent even when enabled later) and still parses; other namespaces get debug\'s own', () => {
    const { out, err, late } = child(first, undefined)
    expect(out).toEqual({ installed: true, traced: false, parsed: 1, parserDebug: 'quieted', other: 'debug' })
    expect(linesOf(err, 'mqtt-packet')).toBe(0)
    expect(linesOf(late, 'mqtt-packet')).toBe(0)
  })

  test('workaround: DEBUG given at start-up still reaches mqtt-packet (and says so: the broker then leaves writing to mqtt-packet)', () => {
    const { out, err } = child(first, 'mqtt-packet:*')
    expect(out).toMatchObject({ installed: true, traced: true, parsed: 1, parserDebug: 'debug' })
    expect(linesOf(err, 'mqtt-packet:parser')).toBeGreaterThanOrEqual(3)
    expect(child(first, 'mqtt-packet:parser').out).toMatchObject({ traced: false })
  })

  test('workaround: nothing is installed when mqtt-packet was loaded first', () => {
    const { out } = child(`require('mqtt-packet'); ${first}`, undefined)
    expect(out).toEqual({ installed: false, traced: false, parsed: 1, parserDebug: 'debug', other: 'debug' })
  })

  test('server.ts loads it before Aedes', () => {
    const { out } = child(`await import(process.cwd() + '/src/server.ts'); ${first}`, undefined)
    expect(out).toEqual({ installed: true, traced: false, parsed: 1, parserDebug: 'quieted', other: 'debug' })
  })
})

describe('mqtt-packet 9.0.2: writeToStream writes a packet in several stream writes (workaround 18)', () => {
  /** A stream that records each write (and corks) and keeps the bytes. */
  function recorder (): { stream: Writable, writes: Buffer[], corks: number } {
    const seen = { writes: [] as Buffer[], corks: 0 }
    const stream = new Writable({ write (chunk: Buffer, _enc, cb) { cb() } })
    const write = stream.write.bind(stream)
    stream.write = ((chunk: Buffer | string, ...rest: unknown[]) => {
      seen.writes.push(Buffer.from(chunk))
      return (write as (...a: unknown[]) => boolean)(chunk, ...rest)
    }) as typeof stream.write
    const cork = stream.cork.bind(stream)
    stream.cork = () => { seen.corks++; cork() }
    return { stream, writes: seen.writes, get corks () { return seen.corks } }
  }
  const publish = { cmd: 'publish', topic: 'im/u/bob/m', payload: Buffer.from('{"seq":1}'), qos: 1, messageId: 7, dup: false, retain: false } as const

  test('upstream: six writes for a QoS 1 PUBLISH, three for a PUBACK', () => {
    const writeToStream = mqttPacket.writeToStream as unknown as (p: object, s: Writable) => boolean
    const a = recorder()
    writeToStream(publish, a.stream)
    expect(a.writes.length).toBe(6)
    const b = recorder()
    writeToStream({ cmd: 'puback', messageId: 7 }, b.stream)
    expect(b.writes.length).toBe(3)
  })

  test('workaround: the bytes are mqtt-packet\'s own, for any PUBLISH and PUBACK of MQTT 3.1.1', () => {
    const around = (n: number): fc.Arbitrary<number> => fc.integer({ min: Math.max(0, n - 3), max: n + 3 })
    const payloadLength = fc.oneof(fc.integer({ min: 0, max: 300 }), around(127 - 20), around(16_383 - 20), around(2_097_151 - 20))
    fc.assert(fc.property(
      fc.string({ unit: 'grapheme', maxLength: 40 }), payloadLength, fc.constantFrom(0, 1, 2), fc.integer({ min: 0, max: 0xffff }), fc.boolean(), fc.boolean(),
      (topic, length, qos, messageId, dup, retain) => {
        const packet = { cmd: 'publish' as const, topic, payload: Buffer.alloc(length, 0x5a), qos, messageId, dup, retain }
        expect(wholePacket(packet)?.equals(mqttPacket.generate(packet))).toBe(true)
      }), { seed: 18, numRuns: 300 })
    for (const messageId of [0, 1, 255, 256, 0xffff]) {
      expect(wholePacket({ cmd: 'puback', messageId })?.equals(mqttPacket.generate({ cmd: 'puback', messageId }))).toBe(true)
    }
    // a payload in a slab (a view at an offset) is copied from where it starts
    const slab = Buffer.from('xxxxhelloyyyy')
    const view = { ...publish, payload: slab.subarray(4, 9) }
    expect(wholePacket(view)?.equals(mqttPacket.generate({ ...publish, payload: Buffer.from('hello') }))).toBe(true)
  })

  test('workaround: anything else is left to mqtt-packet (other packets, MQTT 5 properties, string payloads, bad fields)', () => {
    const left = [
      { cmd: 'pingresp' },
      { cmd: 'connack', returnCode: 0, sessionPresent: false },
      { ...publish, properties: { userProperties: { a: 'b' } } },
      { ...publish, payload: 'text' },
      { ...publish, qos: 3 },
      { ...publish, messageId: undefined },
      { ...publish, messageId: 70_000 },
      { ...publish, topic: Buffer.from('t') },
      { ...publish, topic: 'x'.repeat(70_000) },
      { cmd: 'puback' },
      { cmd: 'puback', messageId: -1 },
      { cmd: 'puback', messageId: 1, properties: {} }
    ]
    for (const packet of left) expect(wholePacket(packet)).toBeNull()
  })

  test('workaround: installed once, the broker\'s (and an MQTT 3.1.1 client\'s) PUBLISH and PUBACK leave in one write each, corked until the next tick; the rest as before', async () => {
    wholePacketWrites()
    const installed = mqttPacket.writeToStream
    wholePacketWrites()
    expect(mqttPacket.writeToStream).toBe(installed)
    const writeToStream = mqttPacket.writeToStream as unknown as (p: object, s: Writable, o?: object) => boolean
    const a = recorder()
    writeToStream(publish, a.stream)
    writeToStream({ cmd: 'puback', messageId: 7 }, a.stream)
    expect(a.writes.map(w => w.length)).toEqual([mqttPacket.generate(publish).length, 4])
    expect(Buffer.concat(a.writes).equals(Buffer.concat([mqttPacket.generate(publish), mqttPacket.generate({ cmd: 'puback', messageId: 7 })]))).toBe(true)
    expect(a.corks).toBe(2)
    expect(a.stream.writableCorked).toBe(2)
    await new Promise(resolve => process.nextTick(resolve))
    expect(a.stream.writableCorked).toBe(0)
    // a client's options (mqtt.js passes its own) of MQTT 3.1.1 or 3.1: whole too
    for (const opts of [{ protocolVersion: 4, clean: true }, { protocolVersion: 3 }, {}]) {
      const m = recorder()
      writeToStream(publish, m.stream, opts)
      expect(m.writes.map(w => w.length)).toEqual([mqttPacket.generate(publish).length])
    }
    // MQTT 5 options, options that are not an object, or another packet: mqtt-packet's writes
    for (const opts of [{ protocolVersion: 5 }, 'v4' as unknown as object]) {
      const m = recorder()
      writeToStream(publish, m.stream, opts)
      expect(m.writes.length).toBeGreaterThanOrEqual(6) // (MQTT 5: seven, with the properties' length)
    }
    const b = recorder()
    writeToStream({ cmd: 'pingresp' }, b.stream)
    expect(b.writes.length).toBe(1)
    expect(Buffer.concat(b.writes).equals(mqttPacket.generate({ cmd: 'pingresp' }))).toBe(true)
    // an invalid packet still fails as mqtt-packet fails it (the stream is destroyed)
    const c = recorder()
    c.stream.on('error', () => {})
    expect(writeToStream({ ...publish, topic: 42 }, c.stream)).toBe(false)
    expect(c.stream.destroyed).toBe(true)
  })
})
