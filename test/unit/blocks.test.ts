/**
 * BlockService: the cached lists (no store read when cached, bounded, dropped on change here and
 * through the bus, never caching what a racing change made stale, expiring), and presence events
 * that leave out the people a user blocks.
 */
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { MetadataStore } from '../../src/store/types.js'
import { BlockService } from '../../src/im/blocks.js'
import { ConversationDirectory } from '../../src/im/directory.js'
import { MemoryPresenceStore, PresenceService } from '../../src/im/presence.js'
import type { ClusterBus, BusHandler } from '../../src/broker/bus.js'
import type { Publisher } from '../../src/im/publisher.js'
import type { ImEvent } from '../../src/protocol/schemas.js'
import { BLOCKS_TOPIC } from '../../src/protocol/topics.js'
import { createLogger } from '../../src/log.js'
import { counted } from '../helpers/counted-store.js'

/** A bus that records what this node publishes and lets the test deliver notices from "other nodes". */
function fakeBus (): { bus: ClusterBus, published: Array<[string, Record<string, unknown>]>, deliver: (topic: string, message: Record<string, unknown>) => void } {
  const handlers = new Map<string, BusHandler>()
  const published: Array<[string, Record<string, unknown>]> = []
  const bus = {
    on: (topic: string, h: BusHandler) => { handlers.set(topic, h) },
    publish: (topic: string, message: Record<string, unknown>) => { published.push([topic, message]) },
    clustered: true
  } as unknown as ClusterBus
  return { bus, published, deliver: (topic, message) => handlers.get(topic)?.(message) }
}

async function users (meta: MetadataStore, ...ids: string[]): Promise<void> {
  for (const id of ids) await meta.userCreate({ id, kind: 'user', displayName: id, secretHash: 'h', disabled: false, createdAt: 1, groupInvites: 'anyone' })
}

describe('BlockService', () => {
  test('between reads each list once, then answers from the cache; both directions', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob', 'carol')
    await meta.blockAdd('bob', 'alice', 1, 10)
    const { store, calls } = counted(meta, 'blockList')
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10 })
    expect(await blocks.between('alice', 'bob')).toBe('blockedBy')
    expect(await blocks.between('bob', 'alice')).toBe('blocking')
    expect(await blocks.between('alice', 'carol')).toBe('none')
    expect(calls.get('blockList')).toBe(3) // alice, bob, carol: once each
    for (let i = 0; i < 100; i++) await blocks.between('alice', 'bob')
    expect(calls.get('blockList')).toBe(3)
  })

  test('a change drops the list here and tells the other nodes; a notice from another node drops it here', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob')
    const { bus, published, deliver } = fakeBus()
    const blocks = new BlockService(meta, bus, { maxPerUser: 10 })
    expect(await blocks.between('alice', 'bob')).toBe('none')
    expect(await blocks.add('alice', 'bob', 1)).toBe('added')
    expect(published).toEqual([[BLOCKS_TOPIC, { user: 'alice' }]])
    expect(await blocks.between('alice', 'bob')).toBe('blocking')
    // nothing changed: nobody is told
    expect(await blocks.add('alice', 'bob', 2)).toBe('exists')
    expect(await blocks.remove('bob', 'alice')).toBe(false)
    expect(published).toHaveLength(1)
    // another node removes it (straight in the store) and says so
    await meta.blockRemove('alice', 'bob')
    expect(await blocks.between('alice', 'bob')).toBe('blocking') // still cached here
    deliver(BLOCKS_TOPIC, { user: 'alice', node: 'n2' })
    expect(await blocks.between('alice', 'bob')).toBe('none')
    // malformed notices are ignored
    deliver(BLOCKS_TOPIC, { user: 7 })
    deliver(BLOCKS_TOPIC, {})
    expect(await blocks.remove('alice', 'bob')).toBe(false)
  })

  test('a load that races a change returns what it read but does not cache it', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob')
    const { store, calls, hold } = counted(meta, 'blockList')
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10 })
    let release: () => void = () => {}
    hold.blockList = new Promise(resolve => { release = resolve })
    const loading = blocks.blocking('alice')
    while (calls.get('blockList') !== 1) await new Promise(resolve => setImmediate(resolve))
    // the list was read (empty); alice blocks bob before the load is done
    await blocks.add('alice', 'bob', 1)
    hold.blockList = null
    release()
    expect([...await loading]).toEqual([])
    expect([...await blocks.blocking('alice')]).toEqual(['bob'])
    expect(calls.get('blockList')).toBe(2)
  })

  test('the cache is bounded by entries and by ids held; the least recently used go first', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'a', 'b', 'c', 'big')
    for (let i = 0; i < 8; i++) await meta.blockAdd('big', `u${i}`, 1, 10)
    const { store, calls } = counted(meta, 'blockList')
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10, maxEntries: 2, maxCachedIds: 8 })
    await blocks.blocking('a')
    await blocks.blocking('b')
    await blocks.blocking('a')
    await blocks.blocking('c') // evicts b (a was used since)
    expect(calls.get('blockList')).toBe(3)
    await blocks.blocking('a')
    expect(calls.get('blockList')).toBe(3)
    await blocks.blocking('b')
    expect(calls.get('blockList')).toBe(4)
    // a list of 8 ids costs 9: more than the cache holds, so it is read each time, and right
    expect((await blocks.blocking('big')).size).toBe(8)
    expect((await blocks.blocking('big')).size).toBe(8)
    expect(calls.get('blockList')).toBe(6)
  })

  test('cached lists expire after ttlMs (a node that missed a notice is right again)', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob')
    // 1 s: a 30 ms ttl ran out between two lines once on a loaded CI machine
    const blocks = new BlockService(meta, fakeBus().bus, { maxPerUser: 10, ttlMs: 1000 })
    expect(await blocks.between('alice', 'bob')).toBe('none')
    await meta.blockAdd('alice', 'bob', 1, 10) // as if on another node, its notice lost
    expect(await blocks.between('alice', 'bob')).toBe('none')
    await new Promise(resolve => setTimeout(resolve, 1100))
    expect(await blocks.between('alice', 'bob')).toBe('blocking')
  })

  test('a list used in the last quarter of its time is read again in the background: the cached one answers, never a wait for the store while the user is active', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob')
    const { store, calls } = counted(meta, 'blockList')
    let now = 1_000
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10, ttlMs: 60_000, now: () => now })
    expect(await blocks.between('alice', 'bob')).toBe('none')
    expect(calls.get('blockList')).toBe(2)
    await meta.blockAdd('alice', 'bob', 1, 10) // as if on another node, its notice lost
    // three quarters of the time: answered from the cache, nothing read
    now += 45_000
    expect(blocks.cachedBetween('alice', 'bob')).toBe('none')
    expect(calls.get('blockList')).toBe(2)
    // past them: still answered from the cache at once, and both lists read in the background (once each)
    now += 1
    expect(blocks.cachedBetween('alice', 'bob')).toBe('none')
    expect(blocks.cachedBetween('bob', 'alice')).toBe('none')
    expect(calls.get('blockList')).toBe(4)
    await new Promise(resolve => setImmediate(resolve))
    // the lists read then are cached for a full time from now: the block is seen, without a wait
    expect(blocks.cachedBetween('alice', 'bob')).toBe('blocking')
    now += 59_000
    expect(blocks.cachedBetween('alice', 'bob')).toBe('blocking')
    expect(calls.get('blockList')).toBe(6) // (renewed again: used in their last quarter)
    await new Promise(resolve => setImmediate(resolve))
    // a list nobody used in its time expires as before: the next use reads it and waits
    now += 60_001
    expect(blocks.cachedBetween('alice', 'bob')).toBeUndefined()
    expect(await blocks.between('alice', 'bob')).toBe('blocking')
    expect(calls.get('blockList')).toBe(8)
  })

  test('a background read that fails leaves the cached list to expire; the next use after that reads and reports the failure', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob')
    let down = false
    const calls = { blockList: 0 }
    const store = new Proxy(meta, {
      get (target, prop, receiver) {
        if (prop === 'blockList') {
          return async (userId: string) => {
            calls.blockList++
            if (down) throw new Error('store down')
            return await target.blockList(userId)
          }
        }
        return Reflect.get(target, prop, receiver) as unknown
      }
    })
    let now = 1_000
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10, ttlMs: 60_000, now: () => now })
    expect(await blocks.between('alice', 'bob')).toBe('none')
    down = true
    now += 50_000
    expect(blocks.cachedBetween('alice', 'bob')).toBe('none') // (the reads start and fail, unseen)
    await new Promise(resolve => setImmediate(resolve))
    expect(calls.blockList).toBe(4)
    // kept until its time is up; no read in the background for a second after one failed, however often it is used
    for (let i = 0; i < 10; i++) expect(blocks.cachedBetween('alice', 'bob')).toBe('none')
    expect(calls.blockList).toBe(4)
    now += 1000
    expect(blocks.cachedBetween('alice', 'bob')).toBe('none')
    await new Promise(resolve => setImmediate(resolve))
    expect(calls.blockList).toBe(6)
    now += 10_001
    expect(blocks.cachedBetween('alice', 'bob')).toBeUndefined()
    await expect(blocks.between('alice', 'bob')).rejects.toThrow('store down')
    down = false
    expect(await blocks.between('alice', 'bob')).toBe('none')
  })

  test('add answers "full" at maxPerUser and adds nothing', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice')
    const blocks = new BlockService(meta, fakeBus().bus, { maxPerUser: 2 })
    expect(await blocks.add('alice', 'x', 1)).toBe('added')
    expect(await blocks.add('alice', 'y', 1)).toBe('added')
    expect(await blocks.add('alice', 'z', 1)).toBe('full')
    expect((await blocks.list('alice')).map(b => b.blockedId)).toEqual(['x', 'y'])
    expect([...await blocks.blocking('alice')].sort()).toEqual(['x', 'y'])
  })
})

describe('PresenceService with blocks', () => {
  test('events leave out the people the user blocks; the list costs no store read per event', async () => {
    const meta = new MemoryMetadataStore()
    await users(meta, 'alice', 'bob', 'carol')
    await meta.conversationCreate({ id: 'g', kind: 'group', name: 'g', directKey: null, createdBy: 'alice', createdAt: 1 },
      ['alice', 'bob', 'carol'].map(userId => ({ conversationId: 'g', userId, role: 'member' as const, readSeq: 0, muted: false, joinedAt: 1 })))
    const { store, calls } = counted(meta, 'blockList')
    const events: Array<{ to: string[], event: ImEvent }> = []
    const publisher = { event: (to: Iterable<string>, event: ImEvent) => { events.push({ to: [...to].sort(), event }) } } as unknown as Publisher
    const blocks = new BlockService(store, fakeBus().bus, { maxPerUser: 10 })
    const presence = new PresenceService({
      store: new MemoryPresenceStore(),
      meta: store,
      directory: new ConversationDirectory(store, fakeBus().bus),
      blocks,
      publisher,
      logger: createLogger('silent'),
      notifyIntervalMs: 0,
      offlineGraceMs: 0
    })
    const told = async (n: number): Promise<void> => { while (events.length < n) await new Promise(resolve => setTimeout(resolve, 5)) }
    await blocks.add('alice', 'bob', 1)
    await presence.connected('alice', 'c1')
    await told(1)
    await presence.disconnected('alice', 'c1')
    await told(2)
    expect(events.map(e => e.to)).toEqual([['carol'], ['carol']])
    expect(calls.get('blockList')).toBe(1)
    // bob asks: alice looks offline and never seen; carol sees her last-seen
    expect(await presence.statusFor('bob', ['alice', 'carol', 'bob'])).toEqual([
      { user: 'alice', online: false, lastSeen: null }, { user: 'carol', online: false, lastSeen: null }, { user: 'bob', online: false, lastSeen: null }])
    expect((await presence.statusFor('carol', ['alice']))[0]?.lastSeen).toEqual(expect.any(Number))
    // the block goes: bob is told alice's real state, and gets her events again
    await blocks.remove('alice', 'bob')
    await presence.retell('alice', 'bob')
    await told(3)
    expect(events[2]).toEqual({ to: ['bob'], event: { type: 'presence', user: 'alice', online: false, lastSeen: expect.any(Number) } })
    await presence.connected('alice', 'c2')
    await told(4)
    expect(events[3]?.to).toEqual(['bob', 'carol'])
    // blocked again: bob is told she is offline, never seen
    await blocks.add('alice', 'bob', 2)
    await presence.retell('alice', 'bob')
    await told(5)
    expect(events[4]).toEqual({ to: ['bob'], event: { type: 'presence', user: 'alice', online: false, lastSeen: null } })
    // a stranger is told nothing
    await users(meta, 'dave')
    await blocks.add('alice', 'dave', 3)
    await presence.retell('alice', 'dave')
    await new Promise(resolve => setTimeout(resolve, 20))
    expect(events).toHaveLength(5)
    await presence.close()
  })
})
