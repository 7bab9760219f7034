/**
 * ReplyWatchers: which users have reply watchers on other nodes, learned over the cluster bus.
 * Nodes here share an in-memory bus (a notice reaches every other node at once, as JSON, like the
 * real one) and a clock the test moves.
 */
import { ReplyWatchers, SNAPSHOT_MAX } from '../../src/broker/reply-watchers.js'
import { WATCHERS_TOPIC } from '../../src/protocol/topics.js'
import type { BusHandler } from '../../src/broker/bus.js'

const PERIOD = 1000

class Net {
  now = 1_000_000
  readonly nodes: Array<{ id: string, handlers: BusHandler[] }> = []
  sent: Array<Record<string, unknown>> = []

  bus (id: string): { clustered: boolean, on: (t: string, h: BusHandler) => void, publish: (t: string, m: Record<string, unknown>) => void } {
    const node = { id, handlers: [] as BusHandler[] }
    this.nodes.push(node)
    return {
      clustered: true,
      on: (topic, h) => { if (topic === WATCHERS_TOPIC) node.handlers.push(h) },
      publish: (topic, m) => {
        const wire = JSON.parse(JSON.stringify({ ...m, node: id })) as Record<string, unknown>
        this.sent.push(wire)
        for (const n of this.nodes) if (n !== node) for (const h of n.handlers) h(wire)
      }
    }
  }

  /** A raw notice as if from node `from` (hostile or malformed ones included). */
  inject (message: Record<string, unknown>): void {
    for (const n of this.nodes) for (const h of n.handlers) h(message)
  }
}

function node (net: Net, id: string, users: Set<string> = new Set()): { w: ReplyWatchers, users: Set<string> } {
  const w = new ReplyWatchers(net.bus(id), { watchedUsers: () => users.values(), watchedCount: () => users.size }, { periodMs: PERIOD, now: () => net.now })
  return { w, users }
}

describe('ReplyWatchers', () => {
  const made: ReplyWatchers[] = []
  const make = (net: Net, id: string, users?: Set<string>): { w: ReplyWatchers, users: Set<string> } => {
    const n = node(net, id, users)
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

  test('more users than a list names: {all}, and every user counts as watched there', () => {
    const net = new Net()
    const a = make(net, 'a')
    const many = new Set(Array.from({ length: SNAPSHOT_MAX + 1 }, (_, i) => `u${i}`))
    make(net, 'b', many)
    net.now += PERIOD + 1000
    // b answers a hello (its own start is not answered by a: a's list is empty, which says nothing)
    net.inject({ node: 'c', hello: true })
    const fromB = net.sent.filter(m => m.node === 'b' && m.hello === undefined)
    expect(fromB.at(-1)).toEqual({ node: 'b', all: true })
    expect(a.w.elsewhere('anybody')).toBe(true)
    // the next list, smaller, takes it back
    many.clear()
    net.inject({ node: 'b', users: [] })
    expect(a.w.elsewhere('anybody')).toBe(false)
    // changes beyond the bound turn into {all} as well
    for (let i = 0; i <= SNAPSHOT_MAX; i++) net.inject({ node: 'b', user: `v${i}`, on: true })
    expect(a.w.elsewhere('nobody-named')).toBe(true)
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
    expect(a.w.elsewhere('__proto__')).toBe(true)
    expect(a.w.elsewhere('y')).toBe(false)
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

  test('on one node nothing is sent and nothing is elsewhere', () => {
    const users = new Set(['alice'])
    const sent: unknown[] = []
    const w = new ReplyWatchers({ clustered: false, on: () => {}, publish: (_t, m) => { sent.push(m) } },
      { watchedUsers: () => users.values(), watchedCount: () => users.size }, { periodMs: PERIOD })
    made.push(w)
    expect(w.elsewhere('alice')).toBe(false)
    expect(sent).toEqual([])
  })
})
