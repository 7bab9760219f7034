import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import type { StoredMessage } from '../../src/store/types.js'
import { describeMessageStore } from '../contract/message-store.contract.js'

describeMessageStore('memory', async () => ({ store: new MemoryMessageStore() }))

// The memory store serializes messages into shared 1 MiB chunks (see its header comment):
// cases that exercise that layout and are not part of the contract.
describe('MemoryMessageStore layout', () => {
  function message (seq: number, body: unknown, conversationId = 'c1'): StoredMessage {
    return { conversationId, seq, clientMsgId: `m${seq}`, senderId: 'alice', ts: 1_767_225_600_000 + seq, kind: typeof body === 'string' ? 'text' : 'custom', body, replyTo: null }
  }

  it('round-trips messages across chunk boundaries, large ones included', async () => {
    const store = new MemoryMessageStore()
    const all: StoredMessage[] = []
    let seq = 0
    // ~3 MiB of multi-byte text in messages of varied sizes, interleaved over two conversations,
    // plus records larger than a shared chunk's spare room and larger than a chunk.
    for (let i = 0; i < 3000; i++) all.push(message(++seq, `${i} ${'é✓👋'.repeat(i % 97 * 3)}`, i % 2 === 0 ? 'c1' : 'c2'))
    all.push(message(++seq, 'x'.repeat(70_000), 'c1'))
    all.push(message(++seq, { big: 'ü'.repeat(1_500_000) }, 'c2'))
    all.push(message(++seq, 'after the big ones', 'c1'))
    for (let start = 0; start < all.length; start += 500) {
      expect(await store.insertBatch(all.slice(start, start + 500))).toEqual({ inserted: Math.min(500, all.length - start) })
    }
    for (const c of ['c1', 'c2']) {
      const expected = all.filter(m => m.conversationId === c)
      expect(await store.range(c, { fromSeq: 1, toSeq: seq, limit: seq, direction: 'forward' })).toStrictEqual(expected)
      expect(await store.latest(c)).toStrictEqual(expected[expected.length - 1])
    }
    expect(await store.findByClientMsgId('c2', 'alice', `m${seq - 1}`)).toStrictEqual(all[seq - 2])
  })

  it('round-trips a string body with lone surrogates', async () => {
    const store = new MemoryMessageStore()
    const stored = message(1, 'a\ud800b\udc00c 👋 \udbff')
    await store.insertBatch([stored])
    expect(await store.latest('c1')).toStrictEqual(stored)
  })

  it('rejects a body that is not a JSON value, storing the messages before it', async () => {
    const store = new MemoryMessageStore()
    await expect(store.insertBatch([message(1, 'ok'), message(2, undefined)])).rejects.toThrow(TypeError)
    expect(await store.lastSeq('c1')).toBe(1)
    expect(await store.findByClientMsgId('c1', 'alice', 'm2')).toBeNull()
  })
})

describe('MemoryMessageStore retention', () => {
  const T0 = 1_767_225_600_000
  const sweep = async (store: MemoryMessageStore, cutoff: number): Promise<number> => {
    let removed = 0
    for (let i = 0, done = 0; done < 2; i++) {
      if (i > 1000) throw new Error('the sweep does not end')
      const step = await store.removeExpired({ before: cutoff, cutoffs: async ids => new Map(ids.map(id => [id, cutoff])) }, { maxRemoved: 5000, maxExamined: 50 })
      removed += step.removed
      if (step.done) done++
    }
    return removed
  }

  it('gives memory back: emptied chunks are released, and the records still live in sparse ones are moved out', async () => {
    const store = new MemoryMessageStore()
    const body = (c: number, seq: number): string => `${c}/${seq} ${'x'.repeat(1000)}`
    // 200 conversations that go quiet one after the other: their latest messages end up spread over every chunk
    const latest = new Map<string, StoredMessage>()
    for (let round = 1; round <= 50; round++) {
      const batch: StoredMessage[] = []
      for (let c = 0; c < 200; c++) {
        if (round > 1 + c % 50) continue
        const m: StoredMessage = { conversationId: `c${c}`, seq: round, clientMsgId: `m${round}`, senderId: 'alice', ts: T0 + round, kind: 'text', body: body(c, round), replyTo: null }
        batch.push(m)
        latest.set(m.conversationId, m)
      }
      await store.insertBatch(batch)
    }
    const before = store.heldBytes
    expect(before).toBeGreaterThan(5 * 1024 * 1024)
    const removed = await sweep(store, T0 + 1000)
    expect(removed).toBe([...latest.values()].reduce((n, m) => n + m.seq - 1, 0))
    // ~200 kept records of ~1 KB: the chunk being filled and one more at most
    expect(store.heldBytes).toBeLessThanOrEqual(2 * 1024 * 1024)
    for (const [c, m] of latest) {
      expect(await store.latest(c)).toStrictEqual(m)
      expect(await store.firstSeq(c)).toBe(m.seq)
      expect(await store.findByClientMsgId(c, 'alice', m.clientMsgId)).toStrictEqual(m)
    }
    // and the store goes on storing and reading
    await store.insertBatch([{ ...latest.get('c7') as StoredMessage, seq: 9, clientMsgId: 'again', body: 'after' }])
    expect((await store.range('c7', { fromSeq: 1, toSeq: 9, limit: 10, direction: 'forward' })).map(m => m.body)).toEqual([body(7, 8), 'after'])
  })
})
