/**
 * The conversation directory and presence in-process, on the in-memory metadata store with every
 * store call counted: loads that race an invalidation do not cache stale members, the least
 * recently used conversations are evicted first, batched loads cost two store calls whatever their
 * size, and presence finds a user's contacts in a fixed number of calls.
 */
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { ConversationRecord, MemberRecord } from '../../src/store/types.js'
import { ConversationDirectory } from '../../src/im/directory.js'
import { MemoryPresenceStore, PresenceService } from '../../src/im/presence.js'
import { BlockService } from '../../src/im/blocks.js'
import type { ClusterBus } from '../../src/broker/bus.js'
import type { Publisher } from '../../src/im/publisher.js'
import type { ImEvent } from '../../src/protocol/schemas.js'
import { createLogger } from '../../src/log.js'
import { counted } from '../helpers/counted-store.js'

const noBus = { on: () => {}, publish: () => {}, clustered: false } as unknown as ClusterBus

function group (id: string): ConversationRecord {
  return { id, kind: 'group', name: id, directKey: null, createdBy: 'alice', createdAt: 1 }
}
function member (conversationId: string, userId: string): MemberRecord {
  return { conversationId, userId, role: 'member', readSeq: 0, muted: false, joinedAt: 1 }
}

/** Presence over one group g of alice and bob on the in-memory stores; events go to `events`. */
async function alicesGroup (): Promise<{ meta: MemoryMetadataStore, events: Array<{ to: string[], event: ImEvent }>, make: (opts: { notifyIntervalMs: number, offlineGraceMs: number, store?: MemoryPresenceStore }) => PresenceService }> {
  const meta = new MemoryMetadataStore()
  await meta.conversationCreate(group('g'), [member('g', 'alice'), member('g', 'bob')])
  const events: Array<{ to: string[], event: ImEvent }> = []
  const publisher = { event: (to: Iterable<string>, event: ImEvent) => { events.push({ to: [...to], event }) } } as unknown as Publisher
  const make = (opts: { notifyIntervalMs: number, offlineGraceMs: number, store?: MemoryPresenceStore }): PresenceService => new PresenceService({
    store: opts.store ?? new MemoryPresenceStore(),
    meta,
    directory: new ConversationDirectory(meta, noBus),
    blocks: new BlockService(meta, noBus, { maxPerUser: 10 }),
    publisher,
    logger: createLogger('silent'),
    notifyIntervalMs: opts.notifyIntervalMs,
    offlineGraceMs: opts.offlineGraceMs
  })
  return { meta, events, make }
}
describe('ConversationDirectory', () => {
  test('a load that races an invalidation returns what it read but does not cache it', async () => {
    const meta = new MemoryMetadataStore()
    await meta.conversationCreate(group('g'), [member('g', 'alice')])
    const { store, calls, hold } = counted(meta, 'memberList')
    const directory = new ConversationDirectory(store, noBus)
    let release: () => void = () => {}
    hold.memberList = new Promise(resolve => { release = resolve })
    const loading = directory.get('g')
    while (calls.get('memberList') !== 1) await new Promise(resolve => setImmediate(resolve))
    // the members were read (alice alone); bob joins before the load is done
    await meta.memberAdd([member('g', 'bob')])
    directory.invalidateLocal('g')
    hold.memberList = null
    release()
    expect((await loading)?.memberIds).toEqual(['alice'])
    expect(directory.peek('g')).toBeUndefined()
    expect((await directory.get('g'))?.memberIds.slice().sort()).toEqual(['alice', 'bob'])
    expect(directory.peek('g')).toBeDefined()
  })

  test('the least recently used conversations are evicted first', async () => {
    const meta = new MemoryMetadataStore()
    for (const id of ['a', 'b', 'c', 'd']) await meta.conversationCreate(group(id), [member(id, 'alice')])
    const directory = new ConversationDirectory(meta, noBus, 3)
    for (const id of ['a', 'b', 'c']) await directory.get(id)
    await directory.get('a') // a is hot again
    await directory.get('d') // room for d: b goes, not a
    expect(['a', 'b', 'c', 'd'].map(id => directory.peek(id) !== undefined)).toEqual([true, false, true, true])
  })

  test('getMany loads the missing entries in two store calls, whatever their number', async () => {
    const meta = new MemoryMetadataStore()
    const ids = Array.from({ length: 300 }, (_, i) => `g${i}`)
    for (const id of ids) await meta.conversationCreate(group(id), [member(id, 'alice'), member(id, `u${id}`)])
    const { store, calls } = counted(meta, 'memberList')
    const directory = new ConversationDirectory(store, noBus)
    await directory.get('g0')
    calls.clear()
    const entries = await directory.getMany([...ids, 'nope', 'g1'])
    expect(entries.size).toBe(300)
    expect(Object.fromEntries(calls)).toEqual({ conversationGetMany: 1, memberListMany: 1 })
    expect(entries.get('g7')?.memberIds).toEqual(['alice', 'ug7'])
  })
})

describe('PresenceService', () => {
  test('contacts of a user in 200 conversations cost five store calls; big groups and channels are left out, channels not even counted', async () => {
    const meta = new MemoryMetadataStore()
    for (let i = 0; i < 200; i++) await meta.conversationCreate(group(`g${i}`), [member(`g${i}`, 'alice'), member(`g${i}`, `friend${i % 50}`)])
    await meta.conversationCreate(group('big'), ['alice', ...Array.from({ length: 20 }, (_, i) => `crowd${i}`)].map(u => member('big', u)))
    await meta.conversationCreate({ ...group('chan'), kind: 'channel', channel: { public: true, postPolicy: 'admins' } }, [member('chan', 'alice'), member('chan', 'reader')])
    const counted0 = meta.memberCountMany.bind(meta)
    const countedIds: string[] = []
    meta.memberCountMany = async (ids) => { countedIds.push(...ids); return await counted0(ids) }
    const { store, calls } = counted(meta, 'memberList')
    const events: Array<{ to: string[], event: ImEvent }> = []
    const publisher = { event: (to: Iterable<string>, event: ImEvent) => { events.push({ to: [...to], event }) } } as unknown as Publisher
    const presence = new PresenceService({
      store: new MemoryPresenceStore(),
      meta: store,
      directory: new ConversationDirectory(store, noBus),
      blocks: new BlockService(store, noBus, { maxPerUser: 10 }),
      publisher,
      logger: createLogger('silent'),
      maxAudience: 10,
      notifyIntervalMs: 0
    })
    const contacts = await presence.contactsOf('alice')
    expect(contacts.size).toBe(50)
    expect([...contacts].some(u => u.startsWith('crowd'))).toBe(false)
    expect(contacts.has('reader')).toBe(false)
    expect(countedIds).not.toContain('chan')
    expect(Object.fromEntries(calls)).toEqual({ memberListByUser: 1, memberCountMany: 1, conversationGetMany: 2, memberListMany: 1 })
    await presence.close()
  })

  test('online while any connection is up; one event per transition to the contacts', async () => {
    const { events, make } = await alicesGroup()
    const presence = make({ notifyIntervalMs: 0, offlineGraceMs: 0 })
    const told = async (n: number): Promise<void> => { while (events.length < n) await new Promise(resolve => setTimeout(resolve, 5)) }
    await presence.connected('alice', 'c1')
    await told(1)
    await presence.connected('alice', 'c2')
    await presence.disconnected('alice', 'c1')
    expect((await presence.status(['alice']))[0]?.online).toBe(true)
    await presence.disconnected('alice', 'c2')
    expect((await presence.status(['alice']))[0]?.online).toBe(false)
    await told(2)
    // a third transition as a marker: an event for the second device's coming or the first's
    // going (no transitions) would have come before it
    await presence.connected('alice', 'c3')
    await told(3)
    expect(events.map(e => [e.to, (e.event as { online: boolean }).online])).toEqual([[['bob'], true], [['bob'], false], [['bob'], true]])
    await presence.close()
  })

  test('offlineGraceMs: a reconnect within it tells nobody, on the same node or another sharing the store', async () => {
    const { events, make } = await alicesGroup()
    // two nodes: two services over one store (Redis in a cluster)
    const store = new MemoryPresenceStore()
    const [n1, n2] = [make({ notifyIntervalMs: 0, offlineGraceMs: 150, store }), make({ notifyIntervalMs: 0, offlineGraceMs: 150, store })]
    const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
    const states = (): boolean[] => events.map(e => (e.event as { online: boolean }).online)
    await n1.connected('alice', 'c1')
    await sleep(30)
    expect(states()).toEqual([true])
    // dropped and back within the grace, on the same node, then on the other one
    await n1.disconnected('alice', 'c1')
    await sleep(50)
    await n1.connected('alice', 'c2')
    await n1.disconnected('alice', 'c2')
    await n2.connected('alice', 'c3')
    await sleep(300)
    expect(states()).toEqual([true])
    // gone: told once, after the grace
    const left = Date.now()
    await n2.disconnected('alice', 'c3')
    // a contact asking during the grace hears what the events say: online (with the time she left);
    // asked at once, as the grace is measured by the clock (a stalled test would be past it)
    expect(await n1.statusFor('bob', ['alice'])).toEqual([{ user: 'alice', online: true, lastSeen: expect.any(Number) }])
    expect((await n1.status(['alice']))[0]?.online).toBe(false)
    await sleep(60)
    expect(states()).toEqual([true])
    while (events.length < 2 && Date.now() - left < 2000) await sleep(5)
    expect(Date.now() - left).toBeGreaterThanOrEqual(140)
    expect(states()).toEqual([true, false])
    expect(events[1]?.to).toEqual(['bob'])
    expect((await n2.statusFor('bob', ['alice']))[0]?.online).toBe(false)
    // back on the other node: told at once, once
    await n1.connected('alice', 'c4')
    await sleep(230)
    expect(states()).toEqual([true, false, true])
    await Promise.all([n1.close(), n2.close()])
  })

  test('a timer that fires during the grace waits out the rest; a failed contact lookup is retried, not recorded as told', async () => {
    const { meta, events, make } = await alicesGroup()
    let failLookups = 0
    const byUser = meta.memberListByUser.bind(meta)
    meta.memberListByUser = async (userId) => {
      if (failLookups > 0) { failLookups--; throw new Error('metadata store down') }
      return await byUser(userId)
    }
    const presence = make({ notifyIntervalMs: 50, offlineGraceMs: 300 })
    const sleep = async (ms: number): Promise<void> => { await new Promise(resolve => setTimeout(resolve, ms)) }
    const states = (): boolean[] => events.map(e => (e.event as { online: boolean }).online)
    // the first lookup fails: the online event still comes (retried one interval later)
    failLookups = 1
    await presence.connected('alice', 'c1')
    while (events.length < 1) await sleep(5)
    expect(states()).toEqual([true])
    // gone at t=0 (timer for t=300), back at 20, gone again at 200: the timer finds her gone for
    // 100 ms only and waits until 500
    await presence.disconnected('alice', 'c1')
    const left = Date.now()
    await sleep(20)
    await presence.connected('alice', 'c2')
    await sleep(180)
    await presence.disconnected('alice', 'c2')
    const leftAgain = Date.now()
    await sleep(450 - (Date.now() - left))
    expect(states()).toEqual([true])
    while (events.length < 2 && Date.now() - left < 3000) await sleep(5)
    expect(Date.now() - leftAgain).toBeGreaterThanOrEqual(290)
    expect(states()).toEqual([true, false])
    await presence.close()
  })

  test('offline checks due: taken once, at most `max` at a time, only those due', async () => {
    const store = new MemoryPresenceStore()
    await store.addDue('a', 100)
    await store.addDue('b', 200)
    await store.addDue('c', 300)
    await store.addDue('a', 150) // one entry per user: the latest time
    await store.removeDue('b')
    expect(await store.takeDue(400, 1)).toEqual(['a'])
    expect(await store.takeDue(250, 10)).toEqual([])
    expect(await store.takeDue(400, 10)).toEqual(['c'])
    expect(await store.takeDue(1000, 10)).toEqual([])
  })
})
