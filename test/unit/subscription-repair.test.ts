/**
 * The repair of aedes-persistence-redis' matcher of offline sessions (src/broker/upstream.ts, 19)
 * against a stand-in for its Redis reads and the in-process emitter: what it hands the emitter as
 * `$SYS/sub/add|rm` at start and after a reconnect, how broadcasts keep its copy (removals carry
 * the topic only), broadcasts during a read, and a read that fails. The real thing, with Redis and
 * two nodes, is test/subscription-repair.test.ts.
 */
import { EventEmitter } from 'node:events'
import msgpack from 'msgpack-lite'
import type { Redis } from 'ioredis'
import { createEmitter, repairSubscriptionMatcher, SUBSCRIPTION_ADD_TOPIC, SUBSCRIPTION_RM_TOPIC } from '../../src/broker/upstream.js'
import { createLogger } from '../../src/log.js'
import { waitUntil } from '../../scripts/lib/procs.js'

type Subs = Record<string, Record<string, number>>

function setup (initial: Subs): { redis: Subs, failNext: (n: number) => void, onRead: (f: () => void) => void, hidden: Set<string>, conn: EventEmitter, seen: string[], mq: { emit: (m: object) => void }, subConn: EventEmitter & { status: string }, persistenceConn: EventEmitter, broadcast: (add: boolean, clientId: string, subs: object[]) => void } {
  const redis: Subs = structuredClone(initial)
  let failures = 0
  let duringRead = (): void => {}
  // sessions the scan skips although they are there (as after a failover mid-scan)
  const hidden = new Set<string>()
  const conn = Object.assign(new EventEmitter(), {
    sscan: async (_key: string, cursor: string) => {
      if (failures > 0) {
        failures--
        throw new Error('Connection is closed.')
      }
      // two steps, to have broadcasts land between them
      const ids = Object.keys(redis).filter(id => !hidden.has(id))
      if (cursor === '0') return ['1', ids.slice(0, 1)]
      duringRead()
      duringRead = () => {}
      return ['0', ids.slice(1)]
    },
    hgetallBuffer: async (key: string) => {
      const id = decodeURIComponent(key.slice('client:'.length))
      return Object.fromEntries(Object.entries(redis[id] ?? {}).map(([topic, qos]) => [topic, msgpack.encode({ topic, qos, rh: 0 })]))
    }
  })
  const mq = createEmitter() as { on: (t: string, f: (p: { topic: string, payload: unknown }, cb: () => void) => void) => void, emit: (m: object) => void }
  const seen: string[] = []
  mq.on('$SYS/sub/+', (packet, cb) => {
    let parsed: { clientId: string, subs: Array<{ topic: string, qos?: number }> }
    try {
      parsed = JSON.parse(String(packet.payload)) as typeof parsed
      if (typeof parsed.clientId !== 'string' || !Array.isArray(parsed.subs) || !parsed.subs.every(s => typeof s?.topic === 'string')) throw new Error('not a broadcast')
    } catch {
      cb() // the malformed ones (test 'malformed ...'): not recorded
      return
    }
    const { clientId, subs } = parsed
    seen.push(`${packet.topic === SUBSCRIPTION_ADD_TOPIC ? 'add' : 'rm'} ${clientId} ${subs.map(s => s.qos === undefined ? s.topic : `${s.topic}@${s.qos}`).join(',')}`)
    cb()
  })
  const subConn = Object.assign(new EventEmitter(), { status: 'ready', ping: async () => 'PONG' })
  const persistenceConn = Object.assign(new EventEmitter(), { status: 'ready' })
  const repair = repairSubscriptionMatcher(mq, conn as unknown as Redis, subConn as unknown as Redis, createLogger('silent'), [persistenceConn as unknown as Redis])
  afterEachClose.push(() => { repair.close() })
  started = repair
  return {
    redis,
    failNext: (n) => { failures = n },
    onRead: (f) => { duringRead = f },
    hidden,
    conn,
    seen,
    mq,
    subConn,
    persistenceConn,
    // a broadcast as aedes-persistence sends it (a removal names the topics only)
    broadcast: (add, clientId, subs) => { mq.emit({ topic: add ? SUBSCRIPTION_ADD_TOPIC : SUBSCRIPTION_RM_TOPIC, payload: Buffer.from(JSON.stringify({ clientId, subs })) }) }
  }
}

let started: ReturnType<typeof repairSubscriptionMatcher> | undefined
const afterEachClose: Array<() => void> = []
afterEach(() => { for (const f of afterEachClose.splice(0)) f() })

async function reconnect (subConn: EventEmitter, seen: string[], reads: number): Promise<void> {
  seen.length = 0
  subConn.emit('ready')
  await waitUntil(() => (started?.repairs() ?? 0) >= reads, 5000, `read ${reads}`)
}

test('the first read hands the matcher every QoS 1 subscription in Redis; a reconnect hands it what it missed, both ways', async () => {
  const { redis, seen, subConn, broadcast } = setup({ 'a:1': { 'im/u/a/m': 1, 'im/u/a/x': 0 }, 'b:1': { 'im/u/b/m': 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  expect(seen.sort()).toStrictEqual(['add a:1 im/u/a/m@1', 'add b:1 im/u/b/m@1'])
  // heard: c subscribes, then unsubscribes (the removal names the topic only)
  redis['c:1'] = { 'ch/1': 1 }
  broadcast(true, 'c:1', [{ topic: 'ch/1', qos: 1 }])
  delete redis['c:1']
  broadcast(false, 'c:1', [{ topic: 'ch/1' }])
  // missed (the link down): c subscribes again, b unsubscribes, a moves to QoS 0
  redis['c:1'] = { 'ch/1': 1 }
  delete redis['b:1']
  redis['a:1'] = { 'im/u/a/m': 0 }
  await reconnect(subConn, seen, 2)
  expect(seen.sort()).toStrictEqual(['add c:1 ch/1@1', 'rm a:1 im/u/a/m', 'rm b:1 im/u/b/m'])
  // counted for /metrics: the first read's hand-over is not a correction, this one's are
  expect(started?.stats()).toMatchObject({ reads: 2, failures: 0, added: 1, removed: 2, lastSessions: 1 })
  // nothing missed: nothing handed over
  await reconnect(subConn, seen, 3)
  expect(seen).toStrictEqual([])
  expect(started?.stats()).toMatchObject({ reads: 3, failures: 0, added: 1, removed: 2 })
  expect(started?.stats().lastSeconds).toBeGreaterThan(0)
})

test('broadcasts during a read are applied on top of it, in order; a read that fails is done again', async () => {
  const { redis, seen, subConn, broadcast, onRead, failNext } = setup({ 'a:1': { t1: 1 }, 'b:1': { t2: 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // missed: d subscribed
  redis['d:1'] = { t4: 1 }
  // during the next read (after its first step): b unsubscribes, e subscribes (in Redis first, as the persistence does)
  onRead(() => {
    delete redis['b:1']
    broadcast(false, 'b:1', [{ topic: 't2' }])
    redis['e:1'] = { t5: 1 }
    broadcast(true, 'e:1', [{ topic: 't5', qos: 1 }])
  })
  // the first try fails (Redis not back yet on that connection): tried again after a second
  failNext(1)
  const t0 = Date.now()
  subConn.emit('ready')
  await waitUntil(() => started?.repairs() === 2, 5000, 'the read after the failed one')
  expect(Date.now() - t0).toBeGreaterThanOrEqual(1000)
  // the broadcasts themselves reached the emitter (as the matcher saw them); the repair added d only
  expect(seen.filter(l => l.includes('d:1') || l.includes('e:1') || l.includes('b:1'))).toStrictEqual(['add b:1 t2@1', 'rm b:1 t2', 'add e:1 t5@1', 'add d:1 t4@1'])
  expect(started?.stats()).toMatchObject({ reads: 2, failures: 1, added: 1, removed: 0 })
})

test('removals broadcast before the first read (the trie may have missed them while it was built) are handed over by it when Redis agrees', async () => {
  const { seen, broadcast } = setup({ 'a:1': { t1: 1 }, 'y:1': { yt: 1 } })
  broadcast(false, 'z:1', [{ topic: 'zt' }])
  // removed, then subscribed again: Redis has it, nothing to remove
  broadcast(false, 'y:1', [{ topic: 'yt' }])
  broadcast(true, 'y:1', [{ topic: 'yt', qos: 1 }])
  seen.length = 0
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  expect(seen.sort()).toStrictEqual(['add a:1 t1@1', 'add y:1 yt@1', 'rm z:1 zt'])
})

test('broadcasts of one subscription during a read are applied in their order (removed, then made again: nothing to repair)', async () => {
  const { redis, seen, subConn, broadcast, onRead } = setup({ 'a:1': { t1: 1 }, 'c:1': { ct: 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  onRead(() => {
    delete redis['c:1']
    broadcast(false, 'c:1', [{ topic: 'ct' }])
    redis['c:1'] = { ct: 1 }
    broadcast(true, 'c:1', [{ topic: 'ct', qos: 1 }])
  })
  await reconnect(subConn, seen, 2)
  // the two broadcasts themselves, and no repair
  expect(seen).toStrictEqual(['rm c:1 ct', 'add c:1 ct@1'])
})

test('malformed subscription broadcasts (not JSON, wrong shapes, a huge payload) change nothing and throw nothing', async () => {
  const { seen, subConn, mq } = setup({ 'a:1': { t1: 1 } })
  const junk: unknown[] = [
    Buffer.from('not json'), 'also not json', 42, null, undefined,
    Buffer.from(JSON.stringify({ clientId: 7, subs: [] })),
    Buffer.from(JSON.stringify({ clientId: 'x:1', subs: 'nope' })),
    Buffer.from(JSON.stringify({ clientId: 'x:1', subs: [null, 3, { topic: 5, qos: 1 }, { qos: 1 }] })),
    Buffer.from('['.repeat(100_000)),
    Buffer.alloc(1024 * 1024, 'x')
  ]
  const flood = (): void => {
    for (const payload of junk) {
      for (const topic of ['$SYS/sub/add', '$SYS/sub/rm']) expect(() => { mq.emit({ topic, payload }) }).not.toThrow()
    }
    // an add without a QoS (a removal may name the topic only; an add may not)
    mq.emit({ topic: '$SYS/sub/add', payload: Buffer.from(JSON.stringify({ clientId: 'x:1', subs: [{ topic: 'q' }] })) })
  }
  flood()
  seen.length = 0 // what the stand-in recorded of the junk itself
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // the first read hands over Redis as it is: a:1 only
  expect(seen).toStrictEqual(['add a:1 t1@1'])
  flood()
  // and the copy took none of it in: nothing to put right
  await reconnect(subConn, seen, 2)
  expect(seen).toStrictEqual([])
})

test('a session no page shows (gone from Redis when the scan began) loses what the copy held of it, but keeps what was broadcast of it during the read', async () => {
  const { redis, seen, subConn, broadcast, onRead } = setup({ 'a:1': { t1: 1 }, 'b:1': { t2: 1 }, 'x:1': { old: 1, other: 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // missed: x unsubscribed from everything (its hash and its place in `clients` gone)
  delete redis['x:1']
  // during the read (after its first page; the scan does not show x): x subscribes again, to `new` and `other`
  onRead(() => {
    redis['x:1'] = { new: 1, other: 1 }
    broadcast(true, 'x:1', [{ topic: 'new', qos: 1 }, { topic: 'other', qos: 1 }])
  })
  await reconnect(subConn, seen, 2)
  // the broadcast itself, then only `old` removed: `new` and `other` are what Redis holds
  expect(seen).toStrictEqual(['add x:1 new@1,other@1', 'rm x:1 old'])
  expect(started?.stats()).toMatchObject({ reads: 2, added: 0, removed: 1 })
  // and the copy agrees with Redis now: nothing more to put right
  await reconnect(subConn, seen, 3)
  expect(seen).toStrictEqual([])
})

test('a session subscribing while the removals of sessions no page showed are handed over (the hand-over yields) keeps its new subscription', async () => {
  const initial: Subs = {}
  for (let i = 0; i < 250; i++) initial[`s${i}:1`] = { [`t${i}`]: 1 }
  const { redis, seen, subConn, broadcast, mq } = setup(initial)
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // missed: every session unsubscribed, gone from Redis
  for (const id of Object.keys(redis)) delete redis[id]
  // as the first removal is handed over, s249 (one of the last) subscribes again, to a new topic:
  // its broadcast arrives while the hand-over yields
  let once = false
  ;(mq as unknown as { on: (t: string, f: (p: { topic: string }, cb: () => void) => void) => void }).on('$SYS/sub/rm', (_packet, cb) => {
    if (!once) {
      once = true
      setImmediate(() => {
        redis['s249:1'] = { fresh: 1 }
        broadcast(true, 's249:1', [{ topic: 'fresh', qos: 1 }])
      })
    }
    cb()
  })
  await reconnect(subConn, seen, 2)
  expect(seen.filter(l => l.startsWith('rm'))).toHaveLength(250)
  expect(seen).toContain('rm s249:1 t249')
  expect(seen).toContain('add s249:1 fresh@1')
  expect(seen.filter(l => l.includes('fresh'))).toStrictEqual(['add s249:1 fresh@1'])
  // and nothing left to put right: the copy holds `fresh` as Redis does
  await reconnect(subConn, seen, 3)
  expect(seen).toStrictEqual([])
})

test('a read during which the Redis connection closed hands over what its pages showed but removes nothing it did not see; the read after it does', async () => {
  const { redis, seen, subConn, onRead, hidden, conn } = setup({ 'a:1': { t1: 1 }, 'b:1': { t2: 1 }, 'x:1': { tx: 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // missed: x unsubscribed; a moved to a new topic
  delete redis['x:1']
  redis['a:1'] = { t9: 1 }
  // the connection breaks during the next read, and the scan then skips b (there all along)
  hidden.add('b:1')
  onRead(() => {
    conn.emit('close')
    setTimeout(() => { hidden.clear() }, 200)
  })
  const t0 = Date.now()
  await reconnect(subConn, seen, 2)
  // the first try: a's page handed over; neither b (skipped) nor x (not seen either) removed; then
  // the read again after a second, whole: x removed, b kept
  expect(Date.now() - t0).toBeGreaterThanOrEqual(1000)
  expect(seen).toStrictEqual(['add a:1 t9@1', 'rm a:1 t1', 'rm x:1 tx'])
  expect(started?.stats()).toMatchObject({ reads: 2, failures: 1, added: 1, removed: 2 })
})

test('the broker\'s persistence connection ready again after a break: a read too (a subscription written just before the break was reported failed, not sent again, and never broadcast)', async () => {
  const { redis, seen, persistenceConn } = setup({ 'a:1': { t1: 1 } })
  started?.start()
  await waitUntil(() => started?.repairs() === 1, 5000, 'the first read')
  // in Redis, never broadcast
  redis['a:1'] = { t1: 1, t2: 1 }
  await reconnect(persistenceConn, seen, 2)
  expect(seen).toStrictEqual(['add a:1 t2@1'])
})
