/**
 * UsersElsewhere: which users have reply watchers (or connections) on other nodes, learned over
 * the cluster bus. Nodes here share an in-memory bus (a notice reaches every other node at once,
 * as JSON, like the real one) and a clock the test moves.
 */
import { jest } from '@jest/globals'
import { UsersElsewhere, SNAPSHOT_MAX } from '../../src/broker/users-elsewhere.js'
import { Bloom, BLOOM_BITS_MAX, BLOOM_BITS_MIN } from '../../src/broker/bloom.js'
import { CONNECTED_TOPIC, WATCHERS_TOPIC } from '../../src/protocol/topics.js'
import type { BusHandler } from '../../src/broker/bus.js'
import type { MonotonicMs } from '../../src/clocks.js'

const PERIOD = 1000

class Net {
  now = 1_000_000
  readonly nodes: Array<{ id: string, handlers: Array<{ topic: string, h: BusHandler }> }> = []
  sent: Array<Record<string, unknown>> = []

  bus (id: string): { clustered: boolean, on: (t: string, h: BusHandler) => void, publish: (t: string, m: Record<string, unknown>) => void } {
    const node = { id, handlers: [] as Array<{ topic: string, h: BusHandler }> }
    this.nodes.push(node)
    return {
      clustered: true,
      on: (topic, h) => { node.handlers.push({ topic, h }) },
      publish: (topic, m) => {
        const wire = JSON.parse(JSON.stringify({ ...m, node: id })) as Record<string, unknown>
        if (topic === WATCHERS_TOPIC) this.sent.push(wire)
        for (const n of this.nodes) if (n !== node) for (const { topic: t, h } of n.handlers) if (t === topic) h(wire)
      }
    }
  }

  /** A raw notice as if from node `from` (hostile or malformed ones included), on the watchers' topic unless told. */
  inject (message: Record<string, unknown>, topic = WATCHERS_TOPIC): void {
    for (const n of this.nodes) for (const { topic: t, h } of n.handlers) if (t === topic) h(message)
  }
}

function node (net: Net, id: string, users: Set<string> = new Set(), topic = WATCHERS_TOPIC): { w: UsersElsewhere, users: Set<string> } {
  const w = new UsersElsewhere(net.bus(id), { users: () => users.values(), count: () => users.size }, { topic, periodMs: PERIOD, now: () => net.now as MonotonicMs })
  return { w, users }
}

describe('UsersElsewhere', () => {
  const made: UsersElsewhere[] = []
  const make = (net: Net, id: string, users?: Set<string>, topic?: string): { w: UsersElsewhere, users: Set<string> } => {
    const n = node(net, id, users, topic)
    made.push(n.w)
    return n
  }
  afterEach(() => { for (const w of made.splice(0)) w.close() })

  test('a new node assumes watchers everywhere for one period and a second, then knows', () => {
    const net = new Net()
    const a = make(net, 'a')
    expect(a.w.elsewhere('alice')).toBe(true)
    net.now += PERIOD + 999
    expect(a.w.elsewhere('alice')).toBe(true)
    net.now += 1
    expect(a.w.elsewhere('alice')).toBe(false)
  })

  test('a starting node says hello and learns the lists of the nodes already up', () => {
    const net = new Net()
    const a = make(net, 'a', new Set(['alice']))
    net.now += 10 * PERIOD
    const b = make(net, 'b')
    expect(net.sent.some(m => m.hello === true && m.node === 'b')).toBe(true)
    expect(net.sent.some(m => m.node === 'a' && Array.isArray(m.users) && (m.users as string[]).includes('alice'))).toBe(true)
    net.now += PERIOD + 1000
    expect(b.w.elsewhere('alice')).toBe(true)
    expect(b.w.elsewhere('bob')).toBe(false)
    // a knows nothing of b's watchers (none) and never of its own
    expect(a.w.elsewhere('alice')).toBe(false)
  })

  test('changes arrive as they happen: on, then off', () => {
    const net = new Net()
    const a = make(net, 'a')
    const b = make(net, 'b')
    net.now += PERIOD + 1000
    expect(a.w.elsewhere('bob')).toBe(false)
    b.users.add('bob')
    b.w.changed('bob', true)
    expect(a.w.elsewhere('bob')).toBe(true)
    b.users.delete('bob')
    b.w.changed('bob', false)
    expect(a.w.elsewhere('bob')).toBe(false)
  })

  test('a node that stops says its list is empty, and nothing after', () => {
    const net = new Net()
    const a = make(net, 'a')
    const b = make(net, 'b', new Set(['bob']))
    net.now += PERIOD + 1000
    net.inject({ node: 'c', hello: true })
    expect(a.w.elsewhere('bob')).toBe(true)
    b.w.close()
    expect(a.w.elsewhere('bob')).toBe(false)
    const sent = net.sent.length
    b.w.changed('bob', false) // its connections closing
    net.inject({ node: 'c', hello: true })
    expect(net.sent.filter(m => m.node === 'b').length).toBe(net.sent.slice(0, sent).filter(m => m.node === 'b').length)
  })

  test('after a break in its link a node routes everything for a period and a second, and sends its list within a second', () => {
    const net = new Net()
    let link = net.now
    const users = new Set(['ann'])
    const a = new UsersElsewhere(net.bus('a'), { users: () => users.values(), count: () => users.size }, { topic: WATCHERS_TOPIC, periodMs: PERIOD, now: () => net.now as MonotonicMs, linkSince: () => link as MonotonicMs })
    made.push(a)
    const b = make(net, 'b')
    net.now += PERIOD + 1000
    net.inject({ node: 'c', hello: true })
    expect(a.elsewhere('zed')).toBe(false)
    expect(b.w.elsewhere('ann')).toBe(true)
    // the link is down: every publish is "elsewhere" (notices go by unheard meanwhile)
    link = Number.POSITIVE_INFINITY
    expect(a.elsewhere('zed')).toBe(true)
    // ann leaves while it is down (her notice is lost); the link is back
    users.delete('ann')
    net.now += 500
    link = net.now
    expect(a.elsewhere('zed')).toBe(true)
    const before = net.sent.filter(m => m.node === 'a').length
    a.check() // within a second: the list goes out
    expect(net.sent.filter(m => m.node === 'a').length).toBe(before + 1)
    expect(b.w.elsewhere('ann')).toBe(false)
    a.check() // and not again until the period
    expect(net.sent.filter(m => m.node === 'a').length).toBe(before + 1)
    net.now += PERIOD + 999
    expect(a.elsewhere('zed')).toBe(true)
    net.now += 1
    expect(a.elsewhere('zed')).toBe(false)
    a.check()
    expect(net.sent.filter(m => m.node === 'a').length).toBe(before + 2)
  })

  test('a node that stops sending its list is forgotten after 3.5 periods', () => {
    const net = new Net()
    const a = make(net, 'a')
    net.now += PERIOD + 1000
    net.inject({ node: 'gone', users: ['carol'] })
    expect(a.w.elsewhere('carol')).toBe(true)
    net.now += PERIOD * 3.5 - 1
    expect(a.w.elsewhere('carol')).toBe(true)
    net.now += 2
    expect(a.w.elsewhere('carol')).toBe(false)
  })

  test('more users than a list names: a Bloom filter, which counts in every listed user and few others', () => {
    const net = new Net()
    const a = make(net, 'a')
    const many = new Set(Array.from({ length: SNAPSHOT_MAX + 1 }, (_, i) => `u${i}`))
    make(net, 'b', many)
    net.now += PERIOD + 1000
    // b answers a hello (its own start is not answered by a: a's list is empty, which says nothing)
    net.inject({ node: 'c', hello: true })
    const fromB = net.sent.filter(m => m.node === 'b' && m.hello === undefined).at(-1)
    expect(fromB).toMatchObject({ node: 'b', bits: 32768, k: 7 })
    expect(typeof fromB?.bloom).toBe('string')
    expect(fromB?.users).toBeUndefined()
    for (const u of many) expect(a.w.elsewhere(u)).toBe(true)
    let wrong = 0
    for (let i = 0; i < 10_000; i++) if (a.w.elsewhere(`other-${i}`)) wrong++
    expect(wrong).toBeLessThan(300) // ~1 % expected at 10+ bits a user, 7 positions
    expect(wrong).toBeGreaterThan(0) // (a filter, not a list: some other names come out counted in)
    // a user who connects later is added to the filter; one who leaves stays counted until the next list
    expect(a.w.elsewhere('late')).toBe(false)
    net.inject({ node: 'b', user: 'late', on: true })
    expect(a.w.elsewhere('late')).toBe(true)
    net.inject({ node: 'b', user: 'u7', on: false })
    expect(a.w.elsewhere('u7')).toBe(true)
    // the next list, smaller, takes it back
    many.clear()
    net.inject({ node: 'b', users: [] })
    expect(a.w.elsewhere('u7')).toBe(false)
    expect(a.w.elsewhere('late')).toBe(false)
    // changes beyond the bound turn into "all"
    for (let i = 0; i <= SNAPSHOT_MAX; i++) net.inject({ node: 'b', user: `v${i}`, on: true })
    expect(a.w.elsewhere('nobody-named')).toBe(true)
  })

  test('{all} from a node of an older version still counts in every user', () => {
    const net = new Net()
    const a = make(net, 'a')
    net.now += PERIOD + 1000
    net.inject({ node: 'old', all: true })
    expect(a.w.elsewhere('anybody')).toBe(true)
    net.inject({ node: 'old', users: ['bob'] })
    expect(a.w.elsewhere('anybody')).toBe(false)
    expect(a.w.elsewhere('bob')).toBe(true)
  })

  test('a filter that does not parse counts in everyone there until the next list, and never throws', () => {
    const net = new Net()
    const a = make(net, 'a')
    net.now += PERIOD + 1000
    const good = Bloom.sized(10)
    good.add('bob')
    const wire = good.toWire()
    expect(wire.bits).toBe(BLOOM_BITS_MIN)
    net.inject({ node: 'b', ...wire })
    expect(a.w.elsewhere('bob')).toBe(true)
    expect(a.w.elsewhere('carol')).toBe(false)
    const bad: Array<Record<string, unknown>> = [
      { ...wire, bits: BLOOM_BITS_MIN + 8 }, // not a power of two
      { ...wire, bits: BLOOM_BITS_MIN / 2 },
      { ...wire, bits: BLOOM_BITS_MAX * 2 },
      { ...wire, bits: String(wire.bits) },
      { ...wire, bits: 2 ** 40 },
      { ...wire, k: 0 },
      { ...wire, k: 17 },
      { ...wire, k: 1.5 },
      { ...wire, k: null },
      { ...wire, bloom: wire.bloom.slice(4) }, // too short
      { ...wire, bloom: wire.bloom + 'AAAA' }, // too long
      { ...wire, bloom: '!'.repeat(wire.bloom.length) }, // the right length, not base64
      { ...wire, bloom: 12 },
      { ...wire, bloom: null },
      { bits: BLOOM_BITS_MAX, k: 7, bloom: 'x'.repeat(10_000_000) } // a huge string: refused by its length alone
    ]
    for (const m of bad) {
      net.inject({ node: 'b', users: [] })
      expect(a.w.elsewhere('carol')).toBe(false)
      expect(() => net.inject({ node: 'b', ...m })).not.toThrow()
      expect(a.w.elsewhere('carol')).toBe(true)
    }
  })

  test('a filter crosses the wire unchanged: positions are the same on every node', () => {
    const f = Bloom.sized(100_000)
    expect(f.bits).toBe(1 << 20)
    expect(Bloom.sized(10_000_000).bits).toBe(BLOOM_BITS_MAX)
    const names = Array.from({ length: 1000 }, (_, i) => `user.${i}-é`)
    for (const n of names) f.add(n)
    const copy = Bloom.fromWire({ ...f.toWire() })
    expect(copy).not.toBeNull()
    for (const n of names) expect(copy?.has(n)).toBe(true)
    expect(copy?.toWire()).toEqual(f.toWire())
    // and an empty one names nobody
    const empty = Bloom.sized(0)
    expect(names.some(n => empty.has(n))).toBe(false)
  })

  test('two lists on one bus do not mix: connected users and reply watchers each have their topic', () => {
    const net = new Net()
    const watchers = make(net, 'a')
    const connected = make(net, 'a2', undefined, CONNECTED_TOPIC)
    make(net, 'b', new Set(['bob']), CONNECTED_TOPIC)
    net.now += PERIOD + 1000
    net.inject({ node: 'c', hello: true }, CONNECTED_TOPIC)
    expect(connected.w.elsewhere('bob')).toBe(true)
    expect(watchers.w.elsewhere('bob')).toBe(false)
  })

  test('hostile and malformed notices change nothing they should not, and never throw', () => {
    const net = new Net()
    const a = make(net, 'a')
    net.now += PERIOD + 1000
    const bad: Array<Record<string, unknown>> = [
      {},
      { user: 'x', on: true }, // no node
      { node: 42, user: 'x', on: true },
      { node: 'z', user: 42, on: true },
      { node: 'z', user: 'x', on: 'yes' },
      { node: 'z', users: 'x' },
      { node: 'z', users: [1, null, { a: 1 }] },
      { node: 'z', all: 'true' },
      { node: 'z', hello: 'yes' },
      { node: '__proto__', user: 'x', on: true },
      { node: 'constructor', users: ['__proto__'] }
    ]
    for (const m of bad) expect(() => net.inject(m)).not.toThrow()
    expect(a.w.elsewhere('x')).toBe(true) // from __proto__: a node id like any other
    expect(a.w.elsewhere('__proto__')).toBe(false) // not a user id: ignored
    expect(a.w.elsewhere('y')).toBe(false)
    // names no user can have are not kept (a list of 2,000 long strings would be megabytes)
    net.inject({ node: 'long', users: ['x'.repeat(100_000), 'Upper', 'ok.name'] })
    net.inject({ node: 'long', user: 'y'.repeat(33), on: true })
    expect(a.w.elsewhere('ok.name')).toBe(true)
    expect(a.w.elsewhere('Upper')).toBe(false)
    expect(a.w.elsewhere('y'.repeat(33))).toBe(false)
    net.inject({ node: 'long', users: [] })
    // a list of non-strings counts as empty
    net.inject({ node: '__proto__', users: [] })
    net.inject({ node: 'constructor', users: [] })
    expect(a.w.elsewhere('x')).toBe(false)
  })

  test('more nodes than it remembers: it cannot tell, so every reply is routed until they expire', () => {
    const net = new Net()
    const a = make(net, 'a')
    net.now += PERIOD + 1000
    for (let i = 0; i < 257; i++) net.inject({ node: `n${i}`, users: [] })
    expect(a.w.elsewhere('anybody')).toBe(true)
    net.now += PERIOD * 4
    // the periodic tick expires them (run by hand: the timer is real time)
    a.w.tick()
    expect(a.w.elsewhere('anybody')).toBe(false)
  })

  test('without a clock of its own it reads the monotonic one: a wall clock stepped forward or back changes nothing', () => {
    // (100 ms into the process: a node answers a hello in its first second too)
    let mono = 100
    const monoSpy = jest.spyOn(performance, 'now').mockImplementation(() => mono)
    const wallSpy = jest.spyOn(Date, 'now')
    try {
      const net = new Net()
      const lists = (id: string, users: Set<string>): UsersElsewhere => {
        const w = new UsersElsewhere(net.bus(id), { users: () => users.values(), count: () => users.size }, { topic: WATCHERS_TOPIC, periodMs: PERIOD })
        made.push(w)
        return w
      }
      lists('b', new Set(['bob']))
      const a = lists('a', new Set()) // (b answers a's hello with its list)
      // the wall clock an hour ahead: a node that just started still routes everything
      wallSpy.mockReturnValue(Date.UTC(2030, 0, 1))
      expect(a.elsewhere('alice')).toBe(true)
      mono += PERIOD + 1000
      expect(a.elsewhere('alice')).toBe(false)
      expect(a.elsewhere('bob')).toBe(true)
      // the wall clock stepped a day forward: b's list is as fresh as it was
      wallSpy.mockReturnValue(Date.UTC(2030, 0, 2))
      expect(a.elsewhere('bob')).toBe(true)
      // while the monotonic clock passing 3.5 periods expires it
      mono += PERIOD * 3.5 + 1
      expect(a.elsewhere('bob')).toBe(false)
    } finally {
      monoSpy.mockRestore()
      wallSpy.mockRestore()
    }
  })

  test('on one node nothing is sent and nothing is elsewhere', () => {
    const users = new Set(['alice'])
    const sent: unknown[] = []
    const w = new UsersElsewhere({ clustered: false, on: () => {}, publish: (_t: string, m: Record<string, unknown>) => { sent.push(m) } },
      { users: () => users.values(), count: () => users.size }, { topic: WATCHERS_TOPIC, periodMs: PERIOD })
    made.push(w)
    expect(w.elsewhere('alice')).toBe(false)
    expect(sent).toEqual([])
  })
})
