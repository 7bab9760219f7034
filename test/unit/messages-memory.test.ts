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
