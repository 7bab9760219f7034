/**
 * ReadCursors: reads that arrive together are written as one group (one memberAdvanceReadMany),
 * reads that arrive while a group is being written go into the next one, errors reach every read of
 * their group, a deadlock is retried once, and the number of waiting cursors is bounded.
 */
import { ReadCursors } from '../../src/im/read-cursors.js'
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { MetadataStore } from '../../src/store/types.js'

type Item = { conversationId: string, userId: string, seq: number }

async function storeWithMembers (users: string[]): Promise<MemoryMetadataStore> {
  const meta = new MemoryMetadataStore()
  await meta.conversationCreate(
    { id: 'g1', kind: 'group', name: 'g', directKey: null, createdBy: users[0] ?? 'u0', createdAt: 1 },
    users.map(userId => ({ conversationId: 'g1', userId, role: 'member', readSeq: 0, muted: false, joinedAt: 1 })))
  return meta
}

/** The store, recording each group it is asked to write; `gate` holds a write until released. */
function recording (meta: MetadataStore, behave: (group: readonly Item[], call: number) => Promise<void> = async () => {}): { meta: MetadataStore, groups: Item[][] } {
  const groups: Item[][] = []
  const wrapped = Object.create(meta) as MetadataStore
  wrapped.memberAdvanceReadMany = async (items) => {
    groups.push(items.map(i => ({ conversationId: i.conversationId, userId: i.userId, seq: i.seq })))
    await behave(items, groups.length)
    return await meta.memberAdvanceReadMany(items)
  }
  return { meta: wrapped, groups }
}

test('reads of one event-loop turn are one group; reads during its write are the next group', async () => {
  const users = Array.from({ length: 6 }, (_, i) => `u${i}`)
  let release: () => void = () => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const { meta, groups } = recording(await storeWithMembers(users), async (_g, call) => { if (call === 1) await gate })
  const cursors = new ReadCursors(meta)
  const first = users.slice(0, 3).map(async (u, i) => await cursors.advance('g1', u, i + 1))
  await new Promise(resolve => setImmediate(resolve))
  await new Promise(resolve => setImmediate(resolve))
  // the first group is being written (held at the gate): these wait for the next one
  const second = users.slice(3).map(async (u, i) => await cursors.advance('g1', u, 10 + i))
  const repeat = cursors.advance('g1', 'u0', 7)
  const stranger = cursors.advance('g1', 'nobody', 5)
  release()
  expect(await Promise.all(first)).toEqual([1, 2, 3])
  expect(await Promise.all(second)).toEqual([10, 11, 12])
  expect(await repeat).toBe(7)
  expect(await stranger).toBeNull()
  expect(groups.map(g => g.length)).toEqual([3, 5])
})

test('a failed group fails each of its reads; a deadlock is retried once', async () => {
  const base = await storeWithMembers(['a', 'b'])
  const failing = recording(base, async () => { throw Object.assign(new Error('down'), { code: 'ECONNREFUSED' }) })
  const c1 = new ReadCursors(failing.meta)
  const results = await Promise.allSettled([c1.advance('g1', 'a', 1), c1.advance('g1', 'b', 1)])
  expect(results.map(r => r.status)).toEqual(['rejected', 'rejected'])
  expect(failing.groups.length).toBe(1)

  const deadlocked = recording(base, async (_g, call) => { if (call === 1) throw Object.assign(new Error('deadlock'), { code: 'ER_LOCK_DEADLOCK' }) })
  const c2 = new ReadCursors(deadlocked.meta)
  expect(await Promise.all([c2.advance('g1', 'a', 4), c2.advance('g1', 'b', 6)])).toEqual([4, 6])
  expect(deadlocked.groups.length).toBe(2)
})

test('at most 50,000 cursors wait: beyond, a read is refused UNAVAILABLE at once', async () => {
  let release: () => void = () => {}
  const gate = new Promise<void>(resolve => { release = resolve })
  const { meta } = recording(await storeWithMembers(['a']), async () => { await gate })
  const cursors = new ReadCursors(meta)
  const waiting = Array.from({ length: 50_000 }, async (_, i) => await cursors.advance('g1', 'a', i + 1))
  await expect(cursors.advance('g1', 'a', 1)).rejects.toMatchObject({ code: 'UNAVAILABLE' })
  release()
  const done = await Promise.all(waiting)
  expect(done.at(-1)).toBe(50_000)
})

test('groups start at least the interval apart (the reads between share one); after a quiet spell a read goes at the end of the turn', async () => {
  const users = Array.from({ length: 5 }, (_, i) => `u${i}`)
  const starts: number[] = []
  const { meta, groups } = recording(await storeWithMembers(users), async () => { starts.push(performance.now()) })
  const cursors = new ReadCursors(meta, 1000)
  const t0 = performance.now()
  expect(await cursors.advance('g1', 'u0', 1)).toBe(1)
  // the first group went without waiting for the interval
  expect(starts[0]! - t0).toBeLessThan(700)
  // four reads, one per turn, right after it: they wait for the interval and go as one group
  const later: Array<Promise<number | null>> = []
  for (const u of users.slice(1)) {
    later.push(cursors.advance('g1', u, 2))
    await new Promise(resolve => setImmediate(resolve))
  }
  expect(await Promise.all(later)).toEqual([2, 2, 2, 2])
  expect(groups.map(g => g.length)).toEqual([1, 4])
  expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(995)
  // quiet for longer than the interval: the next read is written at once
  await new Promise(resolve => setTimeout(resolve, 1020))
  const t1 = performance.now()
  expect(await cursors.advance('g1', 'u0', 3)).toBe(3)
  expect(starts[2]! - t1).toBeLessThan(700)
  expect(groups.map(g => g.length)).toEqual([1, 4, 1])
})

test('a clock that jumps (back or forward) never holds a group longer than the interval', async () => {
  let clock = 1_000_000
  const { meta, groups } = recording(await storeWithMembers(['a', 'b']))
  const cursors = new ReadCursors(meta, 50, () => clock)
  expect(await cursors.advance('g1', 'a', 1)).toBe(1)
  clock -= 3_600_000 // an hour back
  const started = performance.now()
  expect(await cursors.advance('g1', 'b', 2)).toBe(2)
  expect(performance.now() - started).toBeLessThan(1000)
  clock += 7_200_000
  expect(await cursors.advance('g1', 'a', 3)).toBe(3)
  expect(groups.map(g => g.length)).toEqual([1, 1, 1])
})
