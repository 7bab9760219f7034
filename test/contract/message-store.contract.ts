/**
 * The MessageStore contract: every adapter runs this one suite (test/messages-*.test.ts).
 * It talks to the store through the MessageStore interface only, never to the database behind it.
 *
 * The factory returns a new, empty store that has not been initialized yet; the suite calls
 * init() before each test, then close() and the factory's cleanup() after it.
 */
import type { ConversationHead, ExpiryBounds, ExpiryRule, InsertBatchResult, MessageStore, StoredMessage } from '../../src/store/types.js'

export type MessageStoreFactory = () => Promise<{ store: MessageStore, cleanup?: () => Promise<void> }>

const T0 = 1_767_225_600_000

function message (conversationId: string, seq: number, overrides: Partial<StoredMessage> = {}): StoredMessage {
  return {
    conversationId,
    seq,
    clientMsgId: `m${seq}`,
    senderId: 'alice',
    ts: T0 + seq,
    kind: 'text',
    body: `message ${seq}`,
    replyTo: null,
    ...overrides
  }
}

/** Messages with seqs from..to (inclusive) in one conversation. */
function messages (conversationId: string, from: number, to: number): StoredMessage[] {
  const out: StoredMessage[] = []
  for (let seq = from; seq <= to; seq++) out.push(message(conversationId, seq))
  return out
}

/** The latest entry of each head (what latestMany answered before previews). */
function latestOf (heads: Map<string, ConversationHead>): Map<string, StoredMessage> {
  return new Map([...heads].map(([c, head]) => [c, head.latest]))
}

function seqs (list: StoredMessage[]): number[] {
  return list.map(m => m.seq)
}

function seqRange (from: number, to: number): number[] {
  const out: number[] = []
  for (let seq = from; seq <= to; seq++) out.push(seq)
  return out
}

/** Custom bodies covering every JSON type, including keys BSON documents cannot hold. */
const CUSTOM_BODIES: Array<[string, unknown]> = [
  ['a nested object', { type: 'card', title: 'Hi', items: [{ id: 1, tags: ['a', 'b'] }, { id: 2, tags: [] }], meta: { deep: { deeper: { deepest: true } } } }],
  ['keys starting with $ and containing dots', { $x: 1, 'a.b': { $set: { 'c.d': 'e' } }, $: null, '.': [], '': 'empty key', nested: [{ $ref: 'x', $id: 'y' }] }],
  ['an array', [1, 'two', { three: 3 }, [4], null, true, false]],
  ['an empty object', {}],
  ['an empty array', []],
  ['a string', 'just a string'],
  ['an empty string', ''],
  ['an integer', 42],
  ['a negative float', -12.375],
  ['zero', 0],
  ['a large integer', Number.MAX_SAFE_INTEGER],
  ['a tiny float', 5e-324],
  ['true', true],
  ['false', false],
  ['null', null],
  ['unicode keys and values', { 名前: 'テスト', emoji: '👩‍👩‍👧‍👦🎉', rtl: 'مرحبا', ключ: 'значение' }],
  ['an object with keys in non-alphabetical order', { z: 1, a: 2, m: { y: 1, b: 2 } }]
]

export function describeMessageStore (name: string, factory: MessageStoreFactory): void {
  describe(`MessageStore contract: ${name}`, () => {
    let store: MessageStore
    let cleanup: (() => Promise<void>) | undefined

    beforeEach(async () => {
      const created = await factory()
      store = created.store
      cleanup = created.cleanup
      await store.init()
    })

    /**
     * insertBatch, checking the conflict's `existing` message where the store gives one (it must
     * be the stored message with that key) and leaving it out of the result compared.
     */
    async function insert (batch: StoredMessage[]): Promise<InsertBatchResult> {
      const result = await store.insertBatch(batch)
      const conflict = result.conflict
      if (conflict?.existing === undefined) return result
      const rejected = batch[result.inserted]
      expect(conflict.kind).toBe('clientMsgId')
      expect(rejected).toBeDefined()
      if (rejected !== undefined) expect(conflict.existing).toStrictEqual(await store.findByClientMsgId(rejected.conversationId, rejected.senderId, rejected.clientMsgId))
      return { inserted: result.inserted, conflict: { kind: conflict.kind } }
    }

    afterEach(async () => {
      await store.close()
      if (cleanup !== undefined) await cleanup()
    })

    describe('insert and read back', () => {
      it('stores every field exactly', async () => {
        const first = message('c1', 1, { clientMsgId: 'Ab-_09', senderId: 'bob.smith', ts: 1_767_225_600_123 })
        const reply = message('c1', 2, { clientMsgId: 'x'.repeat(64), replyTo: 1, body: 'a reply' })
        expect(await insert([first, reply])).toEqual({ inserted: 2 })

        expect(await store.findByClientMsgId('c1', 'bob.smith', 'Ab-_09')).toStrictEqual(first)
        expect(await store.findByClientMsgId('c1', 'alice', 'x'.repeat(64))).toStrictEqual(reply)
        expect(await store.range('c1', { fromSeq: 1, toSeq: 2, limit: 10, direction: 'forward' })).toStrictEqual([first, reply])
        expect(await store.latest('c1')).toStrictEqual(reply)
      })

      it('round-trips unicode text', async () => {
        const text = 'héllo wörld ✓ 你好 こんにちは 안녕 مرحبا שלום 👋🏽 👩‍💻 e\u0301 \u0000 tab\t newline\n "quotes" \\ back'
        const stored = message('c1', 1, { body: text })
        await store.insertBatch([stored])
        expect(await store.latest('c1')).toStrictEqual(stored)
      })

      it('round-trips a text body that looks like JSON', async () => {
        const stored = message('c1', 1, { body: '{"a":1}' })
        await store.insertBatch([stored])
        expect((await store.latest('c1'))?.body).toBe('{"a":1}')
      })

      it.each(CUSTOM_BODIES)('round-trips a custom body: %s', async (_label, body) => {
        const stored = message('c1', 1, { kind: 'custom', body })
        expect(await insert([stored])).toEqual({ inserted: 1 })
        const byId = await store.findByClientMsgId('c1', 'alice', 'm1')
        expect(byId).toStrictEqual(stored)
        expect(JSON.stringify(byId?.body)).toBe(JSON.stringify(body))
        expect(await store.range('c1', { fromSeq: 1, toSeq: 1, limit: 1, direction: 'backward' })).toStrictEqual([stored])
        expect(await store.latest('c1')).toStrictEqual(stored)
      })

      it('stores every custom body in one batch', async () => {
        const batch = CUSTOM_BODIES.map(([, body], i) => message('c1', i + 1, { kind: 'custom', body }))
        expect(await insert(batch)).toEqual({ inserted: batch.length })
        expect(await store.range('c1', { fromSeq: 1, toSeq: batch.length, limit: batch.length, direction: 'forward' })).toStrictEqual(batch)
      })

      it('accepts an empty batch', async () => {
        expect(await insert([])).toEqual({ inserted: 0 })
        expect(await store.lastSeq('c1')).toBe(0)
      })

      it('reports no conflict when the whole batch is stored', async () => {
        const result = await store.insertBatch(messages('c1', 1, 3))
        expect(result.inserted).toBe(3)
        expect(result.conflict).toBeUndefined()
      })

      it('returns copies: neither the input nor a result aliases what is stored', async () => {
        const input = message('c1', 1, { kind: 'custom', body: { list: [1, 2], inner: { v: 'a' } } })
        await store.insertBatch([input]);
        (input.body as { list: number[] }).list.push(3)
        input.seq = 99

        const read = await store.findByClientMsgId('c1', 'alice', 'm1')
        expect(read?.body).toStrictEqual({ list: [1, 2], inner: { v: 'a' } })
        expect(read?.seq).toBe(1)
        if (read === null) throw new Error('not found');
        (read.body as { inner: { v: string } }).inner.v = 'changed'
        read.senderId = 'mallory'

        const [ranged] = await store.range('c1', { fromSeq: 1, toSeq: 1, limit: 1, direction: 'forward' })
        expect(ranged?.body).toStrictEqual({ list: [1, 2], inner: { v: 'a' } })
        expect(ranged?.senderId).toBe('alice')
        expect(await store.latest('c1')).toStrictEqual(ranged)
      })
    })

    describe('ordered insert', () => {
      it('stops at a clientMsgId conflict and stores nothing after it', async () => {
        const a = message('c1', 1, { clientMsgId: 'A' })
        const b = message('c1', 2, { clientMsgId: 'B' })
        expect(await insert([a, b])).toEqual({ inserted: 2 })

        const c = message('c1', 3, { clientMsgId: 'C' })
        const aAgain = message('c1', 4, { clientMsgId: 'A', body: 'resent' })
        const d = message('c1', 5, { clientMsgId: 'D' })
        expect(await insert([c, aAgain, d])).toEqual({ inserted: 1, conflict: { kind: 'clientMsgId' } })

        expect(await store.findByClientMsgId('c1', 'alice', 'C')).toStrictEqual(c)
        expect(await store.findByClientMsgId('c1', 'alice', 'A')).toStrictEqual(a)
        expect(await store.findByClientMsgId('c1', 'alice', 'D')).toBeNull()
        expect(await store.lastSeq('c1')).toBe(3)
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' }))).toEqual([1, 2, 3])
      })

      it('stops at a seq conflict and stores nothing after it', async () => {
        await store.insertBatch([message('c1', 1, { clientMsgId: 'A' }), message('c1', 2, { clientMsgId: 'B' })])

        const c = message('c1', 3, { clientMsgId: 'C' })
        const x = message('c1', 2, { clientMsgId: 'X', senderId: 'bob' })
        const d = message('c1', 4, { clientMsgId: 'D' })
        expect(await insert([c, x, d])).toEqual({ inserted: 1, conflict: { kind: 'seq' } })

        expect(await store.findByClientMsgId('c1', 'alice', 'C')).toStrictEqual(c)
        expect(await store.findByClientMsgId('c1', 'bob', 'X')).toBeNull()
        expect(await store.findByClientMsgId('c1', 'alice', 'D')).toBeNull()
        expect((await store.range('c1', { fromSeq: 2, toSeq: 2, limit: 1, direction: 'forward' }))[0]?.clientMsgId).toBe('B')
        expect(await store.lastSeq('c1')).toBe(3)
      })

      it('reports a seq conflict at index 0', async () => {
        await store.insertBatch([message('c1', 1, { clientMsgId: 'A' })])
        expect(await insert([message('c1', 1, { clientMsgId: 'B' })])).toEqual({ inserted: 0, conflict: { kind: 'seq' } })
        expect(await store.findByClientMsgId('c1', 'alice', 'B')).toBeNull()
      })

      it('reports a clientMsgId conflict when retrying a batch that is already stored', async () => {
        const batch = messages('c1', 1, 3)
        expect(await insert(batch)).toEqual({ inserted: 3 })
        expect(await insert(batch)).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        expect(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' })).toStrictEqual(batch)
      })

      it('makes a retry safe when only a prefix of the batch was stored', async () => {
        const batch = messages('c1', 1, 4)
        await store.insertBatch(batch.slice(0, 2))
        expect(await insert(batch)).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        expect(await insert(batch.slice(1))).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        expect(await insert(batch.slice(2))).toEqual({ inserted: 2 })
        expect(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' })).toStrictEqual(batch)
      })

      it('reports a clientMsgId conflict with an earlier message of the same batch', async () => {
        const batch = [
          message('c1', 1, { clientMsgId: 'A' }),
          message('c1', 2, { clientMsgId: 'B' }),
          message('c1', 3, { clientMsgId: 'A' }),
          message('c1', 4, { clientMsgId: 'C' })
        ]
        expect(await insert(batch)).toEqual({ inserted: 2, conflict: { kind: 'clientMsgId' } })
        expect(await store.lastSeq('c1')).toBe(2)
        expect(await store.findByClientMsgId('c1', 'alice', 'C')).toBeNull()
      })

      it('reports a seq conflict with an earlier message of the same batch', async () => {
        const batch = [
          message('c1', 1, { clientMsgId: 'A' }),
          message('c1', 1, { clientMsgId: 'B' }),
          message('c1', 2, { clientMsgId: 'C' })
        ]
        expect(await insert(batch)).toEqual({ inserted: 1, conflict: { kind: 'seq' } })
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' }))).toEqual([1])
      })

      it('stores nothing after a conflict in a large batch, wherever the conflict is', async () => {
        // FerretDB 1.24 splits inserts into chunks of 100 and kept inserting later chunks after a
        // duplicate in an ordered insert: a batch of 250 must still stop at the conflict.
        await store.insertBatch([message('big', 1, { clientMsgId: 'first' })])
        const batch = messages('big', 2, 251)
        batch[0] = message('big', 2, { clientMsgId: 'first' })
        expect(await insert(batch)).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        expect(await store.lastSeq('big')).toBe(1)
        const later = messages('big', 2, 251)
        later[150] = message('big', 152, { clientMsgId: 'first' })
        expect(await insert(later)).toEqual({ inserted: 150, conflict: { kind: 'clientMsgId' } })
        expect(await store.lastSeq('big')).toBe(151)
        expect(seqs(await store.range('big', { fromSeq: 1, toSeq: 1000, limit: 1000, direction: 'forward' }))).toEqual(seqRange(1, 151))
      })

      it('inserts a batch that spans several conversations', async () => {
        const batch = [message('c1', 1), message('c2', 1), message('c1', 2), message('c3', 1)]
        expect(await insert(batch)).toEqual({ inserted: 4 })
        expect(await store.lastSeq('c1')).toBe(2)
        expect(await store.lastSeq('c2')).toBe(1)
        expect(await store.lastSeq('c3')).toBe(1)
      })
    })

    describe('lastSeq and latest', () => {
      it('returns 0 and null for an empty conversation', async () => {
        expect(await store.lastSeq('nobody-here')).toBe(0)
        expect(await store.latest('nobody-here')).toBeNull()
      })

      it('returns the highest seq and its message', async () => {
        const batch = messages('c1', 1, 5)
        await store.insertBatch(batch)
        expect(await store.lastSeq('c1')).toBe(5)
        expect(await store.latest('c1')).toStrictEqual(batch[4])

        await store.insertBatch([message('c1', 6)])
        expect(await store.lastSeq('c1')).toBe(6)
        expect((await store.latest('c1'))?.seq).toBe(6)
      })

      it('orders by seq, not by insertion order', async () => {
        await store.insertBatch([message('c1', 9), message('c1', 3)])
        await store.insertBatch([message('c1', 5)])
        expect(await store.lastSeq('c1')).toBe(9)
        expect((await store.latest('c1'))?.clientMsgId).toBe('m9')
      })

      it('keeps every field with its seq when seqs are inserted before and between stored ones', async () => {
        const stored: [StoredMessage, StoredMessage, StoredMessage, StoredMessage] = [
          message('c1', 2, { body: 'two' }),
          message('c1', 3, { kind: 'custom', body: { n: 3 }, ts: T0 + 300 }),
          message('c1', 5, { body: 'five', senderId: 'bob', replyTo: 3 }),
          message('c1', 6, { body: 'six' })
        ]
        expect(await insert(stored)).toEqual({ inserted: 4 })
        const four = message('c1', 4, { clientMsgId: 'middle', body: 'four', ts: T0 + 1, replyTo: 2 })
        const one = message('c1', 1, { clientMsgId: 'front', body: 'one' })
        expect(await insert([four, one])).toEqual({ inserted: 2 })

        const all = [one, stored[0], stored[1], four, stored[2], stored[3]]
        expect(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' })).toStrictEqual(all)
        expect(await store.range('c1', { fromSeq: 3, toSeq: 5, limit: 2, direction: 'backward' })).toStrictEqual([four, stored[2]])
        for (const m of all) expect(await store.findByClientMsgId('c1', m.senderId, m.clientMsgId)).toStrictEqual(m)
        expect(await store.latest('c1')).toStrictEqual(stored[3])
        expect(await insert([message('c1', 4, { clientMsgId: 'again' })])).toEqual({ inserted: 0, conflict: { kind: 'seq' } })
      })

      it('orders seqs numerically beyond one digit', async () => {
        await store.insertBatch(messages('c1', 1, 12))
        expect(await store.lastSeq('c1')).toBe(12)
      })

      it('latestPast: the latest message when it is past a stored seq, else null', async () => {
        expect(await store.latestPast('c1', 0)).toBeNull()
        const batch = messages('c1', 1, 12)
        await store.insertBatch(batch)
        expect(await store.latestPast('c1', 0)).toStrictEqual(batch[11])
        expect(await store.latestPast('c1', 3)).toStrictEqual(batch[11])
        expect(await store.latestPast('c1', 11)).toStrictEqual(batch[11])
        expect(await store.latestPast('c1', 12)).toBeNull()
        // more stored past a seq it has already answered for (another node's write)
        await store.insertBatch(messages('c1', 13, 40))
        expect((await store.latestPast('c1', 12))?.seq).toBe(40)
        expect(await store.latestPast('c1', 40)).toBeNull()
        expect(await store.latestPast('other', 5)).toBeNull()
      })
    })

    describe('latestMany', () => {
      /** The map as [conversationId, message] pairs sorted by id, for exact comparison. */
      function entries (map: Map<string, StoredMessage>): Array<[string, StoredMessage]> {
        return [...map.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      }

      it('returns an empty map for no ids', async () => {
        await store.insertBatch(messages('c1', 1, 2))
        expect(await store.latestMany([])).toStrictEqual(new Map())
      })

      it('returns the latest message of each conversation that has one, every field exact', async () => {
        const c1 = messages('c1', 1, 3)
        const c2Last = message('c2', 9, { kind: 'custom', body: { $x: 1, 'a.b': [null, true] }, senderId: 'bob', replyTo: 3 })
        await store.insertBatch([...c1, message('c2', 3), c2Last])
        await store.insertBatch([message('c2', 5)])
        await store.insertBatch([message('c3', 1, { body: 'only one' })])

        expect(entries(latestOf(await store.latestMany(['c1', 'c2', 'c3', 'unknown'])))).toStrictEqual([
          ['c1', c1[2]],
          ['c2', c2Last],
          ['c3', message('c3', 1, { body: 'only one' })]
        ])
        expect((await store.latestMany(['c2'])).get('c2')).toStrictEqual({ latest: await store.latest('c2'), preview: await store.latest('c2') })
      })

      it('leaves out unknown conversations and answers each duplicate id once', async () => {
        await store.insertBatch([message('c1', 1), message('c1', 2)])
        const result = await store.latestMany(['nope', 'c1', 'c1', 'also-nope', 'c1'])
        expect(entries(latestOf(result))).toStrictEqual([['c1', message('c1', 2)]])
        expect(await store.latestMany(['nope', 'nope'])).toStrictEqual(new Map())
      })

      it('does not confuse ids that are prefixes of each other or differ in case', async () => {
        await store.insertBatch([message('c', 1), message('c1', 1), message('c1', 2), message('c10', 1), message('C1', 1), message('C1', 2), message('C1', 3)])
        const result = await store.latestMany(['c', 'c1', 'c10', 'C1', 'c100'])
        expect([...result.keys()].sort()).toStrictEqual(['C1', 'c', 'c1', 'c10'])
        expect(result.get('c')?.latest.seq).toBe(1)
        expect(result.get('c1')?.latest.seq).toBe(2)
        expect(result.get('c10')?.latest.seq).toBe(1)
        expect(result.get('C1')?.latest.seq).toBe(3)
      })

      it('answers 2,500+ ids, most of them unknown and some repeated far apart', async () => {
        const known = ['k0', 'k1', 'k2', 'k3', 'k4']
        for (const [i, id] of known.entries()) await store.insertBatch(messages(id, 1, i + 1))
        const ids = Array.from({ length: 2600 }, (_, i) => `x${i}`)
        ids[0] = 'k0'
        ids[999] = 'k1'
        ids[1000] = 'k2'
        ids[1001] = 'k0'
        ids[2000] = 'k3'
        ids[2599] = 'k4'
        ids[2598] = 'k1'
        const result = await store.latestMany(ids)
        expect([...result.keys()].sort()).toStrictEqual(known)
        for (const [i, id] of known.entries()) expect(result.get(id)?.latest).toStrictEqual(message(id, i + 1))
      })

      it('returns copies', async () => {
        await store.insertBatch([message('c1', 1, { kind: 'custom', body: { list: [1] } })])
        const first = await store.latestMany(['c1']);
        (first.get('c1')?.latest.body as { list: number[] }).list.push(2)
        expect((await store.latestMany(['c1'])).get('c1')?.latest.body).toStrictEqual({ list: [1] })
      })
    })

    describe('changes (applyChange), counts and previews', () => {
      /** A change entry at `seq` of conversation c1: kind, target, body, sender; lastReal and count as the sequencer gives them. */
      function change (seq: number, kind: 'edit' | 'delete' | 'react', target: number, body: unknown, senderId = 'alice', lastReal = target, count?: number): StoredMessage {
        const m = message('c1', seq, { kind, body, senderId, target, lastReal, clientMsgId: `ch${seq}` })
        if (count !== undefined) m.count = count
        return m
      }

      it('stores count, target and lastReal and reads them back exactly', async () => {
        const entries = [message('c1', 1), message('c1', 2), change(3, 'react', 1, { emoji: '👍', remove: false }, 'bob', 2, 2), message('c1', 4, { count: 3 })]
        await store.insertBatch(entries)
        expect(await store.range('c1', { fromSeq: 3, toSeq: 4, limit: 10, direction: 'forward' })).toStrictEqual(entries.slice(2))
        expect(await store.latest('c1')).toStrictEqual(entries[3])
      })

      it('an edit replaces the body, keeping the latest edit (by seq) whatever the order; a resend changes nothing but the version', async () => {
        await store.insertBatch([message('c1', 1), change(2, 'edit', 1, 'second'), change(3, 'edit', 1, 'third')])
        const later = await store.applyChange(change(3, 'edit', 1, 'third'))
        expect(later?.changes?.edited).toStrictEqual({ seq: 3, ts: T0 + 3, body: 'third' })
        const earlier = await store.applyChange(change(2, 'edit', 1, 'second'))
        expect(earlier?.changes?.edited).toStrictEqual({ seq: 3, ts: T0 + 3, body: 'third' })
        expect(earlier?.changes?.version).toBe(2)
        // the message itself is unchanged: its body is what was sent
        expect(earlier?.body).toBe('message 1')
        const [read] = await store.getMany([{ conversationId: 'c1', seq: 1 }])
        expect(read?.changes).toStrictEqual(earlier?.changes)
      })

      it('edits of a custom message keep any JSON body; a deletion is kept with who did it', async () => {
        await store.insertBatch([message('c1', 1, { kind: 'custom', body: { a: 1 } })])
        const edited = await store.applyChange(change(2, 'edit', 1, { $x: 1, 'a.b': [null] }))
        expect(edited?.changes?.edited?.body).toStrictEqual({ $x: 1, 'a.b': [null] })
        const deleted = await store.applyChange(change(3, 'delete', 1, null, 'admin.one'))
        expect(deleted?.changes?.deleted).toStrictEqual({ seq: 3, ts: T0 + 3, by: 'admin.one' })
      })

      it('reactions: one state per user and emoji, the highest seq wins in any order; user ids with dots', async () => {
        await store.insertBatch([message('c1', 1)])
        await store.applyChange(change(5, 'react', 1, { emoji: '👍', remove: true }, 'bob.b'))
        await store.applyChange(change(4, 'react', 1, { emoji: '👍', remove: false }, 'bob.b'))
        await store.applyChange(change(6, 'react', 1, { emoji: '👍', remove: false }, 'carol'))
        const now = await store.applyChange(change(7, 'react', 1, { emoji: '👨‍👩‍👧', remove: false }, 'bob.b'))
        expect(now?.changes?.reactions).toStrictEqual({ '👍': { 'bob.b': 10, carol: 13 }, '👨‍👩‍👧': { 'bob.b': 15 } })
        expect(now?.changes?.version).toBe(4)
      })

      it('a change to a seq with no message is answered null and stores nothing', async () => {
        await store.insertBatch([message('c1', 1)])
        expect(await store.applyChange(change(2, 'edit', 9, 'x'))).toBeNull()
        expect(await store.applyChange({ ...change(2, 'edit', 1, 'x'), conversationId: 'nope' })).toBeNull()
        expect(await store.getMany([{ conversationId: 'c1', seq: 9 }])).toStrictEqual([])
        expect((await store.getMany([{ conversationId: 'c1', seq: 1 }]))[0]?.changes).toBeUndefined()
      })

      it('getMany reads several conversations, leaves out what is absent, returns copies', async () => {
        await store.insertBatch([message('c1', 1), message('c1', 2), message('c2', 1, { kind: 'custom', body: { list: [1] } })])
        const found = await store.getMany([{ conversationId: 'c1', seq: 2 }, { conversationId: 'c2', seq: 1 }, { conversationId: 'c3', seq: 1 }, { conversationId: 'c1', seq: 0 }])
        expect(found.sort((a, b) => a.conversationId.localeCompare(b.conversationId))).toStrictEqual([message('c1', 2), message('c2', 1, { kind: 'custom', body: { list: [1] } })]);
        (found[1]?.body as { list: number[] }).list.push(2)
        expect((await store.getMany([{ conversationId: 'c2', seq: 1 }]))[0]?.body).toStrictEqual({ list: [1] })
      })

      it('the preview is the latest real message as it is now; the latest entry may be a change', async () => {
        await store.insertBatch([message('c1', 1), message('c1', 2), change(3, 'react', 2, { emoji: '🎉', remove: false }, 'bob', 2, 2)])
        await store.applyChange(change(3, 'react', 2, { emoji: '🎉', remove: false }, 'bob', 2, 2))
        const head = (await store.latestMany(['c1'])).get('c1')
        expect(head?.latest.seq).toBe(3)
        expect(head?.preview?.seq).toBe(2)
        expect(head?.preview?.changes?.reactions).toStrictEqual({ '🎉': { bob: 7 } })
        // a change to an older message leaves the preview as it is
        await store.insertBatch([change(4, 'edit', 1, 'old one edited', 'alice', 2, 2)])
        await store.applyChange(change(4, 'edit', 1, 'old one edited', 'alice', 2, 2))
        expect((await store.latestMany(['c1'])).get('c1')?.preview?.seq).toBe(2)
        // deleting the preview: it stays the preview, deleted
        await store.insertBatch([change(5, 'delete', 2, null, 'alice', 2, 2)])
        await store.applyChange(change(5, 'delete', 2, null, 'alice', 2, 2))
        const after = (await store.latestMany(['c1'])).get('c1')
        expect(after?.latest.seq).toBe(5)
        expect(after?.preview?.changes?.deleted?.seq).toBe(5)
        // a new message is the preview
        await store.insertBatch([message('c1', 6, { count: 3 })])
        expect((await store.latestMany(['c1'])).get('c1')?.preview).toStrictEqual(message('c1', 6, { count: 3 }))
      })
    })

    describe('isolation', () => {
      it('keeps conversations apart', async () => {
        const inC1 = message('c1', 1, { body: 'in c1' })
        const inC2 = message('c2', 1, { body: 'in c2' })
        expect(await insert([inC1])).toEqual({ inserted: 1 })
        // Same seq, same sender and clientMsgId, other conversation: not a conflict.
        expect(await insert([inC2])).toEqual({ inserted: 1 })
        await store.insertBatch(messages('c2', 2, 7))

        expect(await store.lastSeq('c1')).toBe(1)
        expect(await store.lastSeq('c2')).toBe(7)
        expect(await store.latest('c1')).toStrictEqual(inC1)
        expect(await store.findByClientMsgId('c1', 'alice', 'm1')).toStrictEqual(inC1)
        expect(await store.findByClientMsgId('c2', 'alice', 'm1')).toStrictEqual(inC2)
        expect(await store.findByClientMsgId('c1', 'alice', 'm2')).toBeNull()
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 100, limit: 100, direction: 'forward' }))).toEqual([1])
        expect(seqs(await store.range('c2', { fromSeq: 1, toSeq: 100, limit: 100, direction: 'forward' }))).toEqual(seqRange(1, 7))
      })

      it('does not confuse conversation ids that are prefixes of each other', async () => {
        await store.insertBatch([message('c1', 1), message('c10', 1), message('c10', 2)])
        expect(await store.lastSeq('c1')).toBe(1)
        expect(await store.lastSeq('c10')).toBe(2)
        expect(await store.lastSeq('c')).toBe(0)
        expect(await store.range('c', { fromSeq: 1, toSeq: 10, limit: 10, direction: 'forward' })).toEqual([])
      })
    })

    describe('findByClientMsgId', () => {
      it('finds a stored message and misses an unknown one', async () => {
        const stored = message('c1', 1, { clientMsgId: 'hello' })
        await store.insertBatch([stored])
        expect(await store.findByClientMsgId('c1', 'alice', 'hello')).toStrictEqual(stored)
        expect(await store.findByClientMsgId('c1', 'alice', 'goodbye')).toBeNull()
        expect(await store.findByClientMsgId('c2', 'alice', 'hello')).toBeNull()
        expect(await store.findByClientMsgId('c1', 'bob', 'hello')).toBeNull()
      })

      it('is scoped to the sender: the same clientMsgId from another sender is another message', async () => {
        const fromAlice = message('c1', 1, { clientMsgId: 'same', senderId: 'alice', body: 'from alice' })
        const fromBob = message('c1', 2, { clientMsgId: 'same', senderId: 'bob', body: 'from bob' })
        expect(await insert([fromAlice, fromBob])).toEqual({ inserted: 2 })
        expect(await store.findByClientMsgId('c1', 'alice', 'same')).toStrictEqual(fromAlice)
        expect(await store.findByClientMsgId('c1', 'bob', 'same')).toStrictEqual(fromBob)
        expect(await insert([message('c1', 3, { clientMsgId: 'same', senderId: 'bob' })]))
          .toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
      })

      it('treats clientMsgIds as case-sensitive', async () => {
        await store.insertBatch([message('c1', 1, { clientMsgId: 'abc' }), message('c1', 2, { clientMsgId: 'ABC' })])
        expect((await store.findByClientMsgId('c1', 'alice', 'abc'))?.seq).toBe(1)
        expect((await store.findByClientMsgId('c1', 'alice', 'ABC'))?.seq).toBe(2)
      })
    })

    describe('range', () => {
      beforeEach(async () => {
        expect(await insert(messages('c1', 1, 20))).toEqual({ inserted: 20 })
      })

      it('returns the lowest seqs first when going forward', async () => {
        const page = await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 5, direction: 'forward' })
        expect(seqs(page)).toEqual([1, 2, 3, 4, 5])
        expect(page[0]).toStrictEqual(message('c1', 1))
      })

      it('returns the highest seqs, sorted ascending, when going backward', async () => {
        const page = await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 5, direction: 'backward' })
        expect(seqs(page)).toEqual([16, 17, 18, 19, 20])
        expect(page[4]).toStrictEqual(message('c1', 20))
      })

      it('includes both bounds', async () => {
        expect(seqs(await store.range('c1', { fromSeq: 5, toSeq: 9, limit: 100, direction: 'forward' }))).toEqual([5, 6, 7, 8, 9])
        expect(seqs(await store.range('c1', { fromSeq: 5, toSeq: 9, limit: 100, direction: 'backward' }))).toEqual([5, 6, 7, 8, 9])
        expect(seqs(await store.range('c1', { fromSeq: 7, toSeq: 7, limit: 1, direction: 'forward' }))).toEqual([7])
        expect(seqs(await store.range('c1', { fromSeq: 7, toSeq: 7, limit: 1, direction: 'backward' }))).toEqual([7])
      })

      it('applies the limit inside the bounds', async () => {
        expect(seqs(await store.range('c1', { fromSeq: 5, toSeq: 15, limit: 3, direction: 'forward' }))).toEqual([5, 6, 7])
        expect(seqs(await store.range('c1', { fromSeq: 5, toSeq: 15, limit: 3, direction: 'backward' }))).toEqual([13, 14, 15])
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 1, direction: 'backward' }))).toEqual([20])
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 1, direction: 'forward' }))).toEqual([1])
      })

      it('returns the whole range when the limit is larger', async () => {
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 1000, direction: 'forward' }))).toEqual(seqRange(1, 20))
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 20, direction: 'backward' }))).toEqual(seqRange(1, 20))
      })

      it('clips an upper bound that reaches past the stored seqs going forward', async () => {
        // (backward, callers keep toSeq <= lastSeq: a store may read the window below toSeq)
        expect(seqs(await store.range('c1', { fromSeq: 18, toSeq: 1000, limit: 10, direction: 'forward' }))).toEqual([18, 19, 20])
        expect(seqs(await store.range('c1', { fromSeq: 18, toSeq: 20, limit: 2, direction: 'backward' }))).toEqual([19, 20])
      })

      it('returns nothing for empty ranges', async () => {
        expect(await store.range('c1', { fromSeq: 21, toSeq: 30, limit: 10, direction: 'forward' })).toEqual([])
        expect(await store.range('c1', { fromSeq: 21, toSeq: 30, limit: 10, direction: 'backward' })).toEqual([])
        expect(await store.range('c1', { fromSeq: 10, toSeq: 9, limit: 10, direction: 'forward' })).toEqual([])
        expect(await store.range('c1', { fromSeq: 10, toSeq: 9, limit: 10, direction: 'backward' })).toEqual([])
        expect(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 0, direction: 'forward' })).toEqual([])
        expect(await store.range('c1', { fromSeq: 1, toSeq: 20, limit: 0, direction: 'backward' })).toEqual([])
        expect(await store.range('other', { fromSeq: 1, toSeq: 20, limit: 10, direction: 'forward' })).toEqual([])
      })

      it('leaves out seqs that are not stored (the sequencer never leaves holes; a store may then give a shorter page)', async () => {
        await store.insertBatch([message('c2', 1), message('c2', 2), message('c2', 5), message('c2', 6), message('c2', 9)])
        expect(seqs(await store.range('c2', { fromSeq: 2, toSeq: 6, limit: 10, direction: 'forward' }))).toEqual([2, 5, 6])
        expect(seqs(await store.range('c2', { fromSeq: 3, toSeq: 4, limit: 10, direction: 'forward' }))).toEqual([])
        expect(seqs(await store.range('c2', { fromSeq: 1, toSeq: 9, limit: 9, direction: 'backward' }))).toEqual([1, 2, 5, 6, 9])
        // with holes, a limit below the span: the page holds only stored seqs, in order, from the requested end
        const backward = seqs(await store.range('c2', { fromSeq: 1, toSeq: 9, limit: 2, direction: 'backward' }))
        expect([[9], [6, 9]]).toContainEqual(backward)
        const forward = seqs(await store.range('c2', { fromSeq: 3, toSeq: 9, limit: 3, direction: 'forward' }))
        expect([[5], [5, 6, 9]]).toContainEqual(forward)
      })
    })

    describe('retention (removeExpired, firstSeq)', () => {
      const WIDE: ExpiryBounds = { maxRemoved: 10_000, maxExamined: 10_000 }

      /** Entries with ts < cutoff go, in every conversation (or those `cutoffs` answers for); records what was asked. */
      function olderThan (cutoff: number, asked: string[] = [], only?: (id: string) => number | undefined): ExpiryRule {
        return {
          before: cutoff,
          cutoffs: async (ids) => {
            asked.push(...ids)
            const out = new Map<string, number>()
            for (const id of ids) {
              const c = only === undefined ? cutoff : only(id)
              if (c !== undefined) out.set(id, c)
            }
            return out
          }
        }
      }

      /** Steps until a whole sweep (from the first conversation) is done; the total removed. */
      async function sweep (rule: ExpiryRule, bounds = WIDE): Promise<number> {
        let removed = 0
        let done = 0
        for (let step = 0; done < 2; step++) {
          if (step > 10_000) throw new Error('the sweep does not end')
          const result = await store.removeExpired(rule, bounds)
          expect(result.removed).toBeLessThanOrEqual(bounds.maxRemoved)
          expect(result.examined).toBeLessThanOrEqual(bounds.maxExamined)
          removed += result.removed
          if (result.done) done++
        }
        return removed
      }

      function change (conversationId: string, seq: number, kind: 'edit' | 'react', target: number, lastReal: number, count: number): StoredMessage {
        return message(conversationId, seq, { kind, target, lastReal, count, clientMsgId: `ch${seq}`, body: kind === 'edit' ? 'edited' : { emoji: '👍', remove: false } })
      }

      it('firstSeq: 0 for a conversation with nothing stored, else the lowest seq', async () => {
        expect(await store.firstSeq('c1')).toBe(0)
        await store.insertBatch(messages('c1', 1, 3))
        expect(await store.firstSeq('c1')).toBe(1)
        expect(await store.removeExpired(olderThan(T0), WIDE)).toEqual({ removed: 0, examined: expect.any(Number), done: true })
      })

      it('removes the expired entries oldest first and keeps the rest; every read agrees', async () => {
        const all = messages('c1', 1, 10)
        await store.insertBatch(all)
        await store.insertBatch(messages('c2', 1, 3))
        expect(await sweep(olderThan(T0 + 6))).toBe(5 + 2) // c1: seqs 1-5; c2: 1-2 (3 is its latest)
        expect(await store.firstSeq('c1')).toBe(6)
        expect(await store.firstSeq('c2')).toBe(3)
        expect(await store.lastSeq('c1')).toBe(10)
        expect(await store.latest('c1')).toStrictEqual(all[9])
        expect(latestOf(await store.latestMany(['c1', 'c2']))).toStrictEqual(new Map([['c1', all[9]], ['c2', message('c2', 3)]]))
        expect(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 3, direction: 'forward' })).toStrictEqual(all.slice(5, 8))
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 3, direction: 'backward' }))).toEqual([8, 9, 10])
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 10, limit: 20, direction: 'backward' }))).toEqual(seqRange(6, 10))
        expect(await store.range('c1', { fromSeq: 1, toSeq: 5, limit: 10, direction: 'forward' })).toStrictEqual([])
        expect(await store.range('c1', { fromSeq: 2, toSeq: 5, limit: 10, direction: 'backward' })).toStrictEqual([])
        expect(seqs(await store.getMany([{ conversationId: 'c1', seq: 3 }, { conversationId: 'c1', seq: 6 }]))).toEqual([6])
        expect(await store.findByClientMsgId('c1', 'alice', 'm3')).toBeNull()
        expect(await store.findByClientMsgId('c1', 'alice', 'm7')).toStrictEqual(all[6])
        // a change to a removed message finds nothing
        expect(await store.applyChange(change('c1', 11, 'edit', 2, 10, 10))).toBeNull()
        // nothing more is expired; the conversation goes on
        expect(await sweep(olderThan(T0 + 6))).toBe(0)
        expect(await insert(messages('c1', 11, 12))).toEqual({ inserted: 2 })
        expect(await insert([message('c1', 8, { clientMsgId: 'x' })])).toEqual({ inserted: 0, conflict: { kind: 'seq' } })
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 12, limit: 100, direction: 'forward' }))).toEqual(seqRange(6, 12))
      })

      it('never removes the latest real message nor the changes after it, until a newer message comes', async () => {
        const entries = [message('c1', 1), message('c1', 2), message('c1', 3), change('c1', 4, 'react', 2, 3, 3), change('c1', 5, 'edit', 1, 3, 3)]
        await store.insertBatch(entries)
        await store.insertBatch([message('lonely', 1)])
        const asked: string[] = []
        expect(await sweep(olderThan(T0 + 1000, asked))).toBe(2)
        // nothing to remove below a lone latest message: not even asked about
        expect(asked).not.toContain('lonely')
        expect(await store.firstSeq('c1')).toBe(3)
        expect(await store.firstSeq('lonely')).toBe(1)
        expect(await store.latest('c1')).toStrictEqual(entries[4])
        const head = (await store.latestMany(['c1'])).get('c1')
        expect(head?.latest).toStrictEqual(entries[4])
        expect(head?.preview?.seq).toBe(3)
        expect(await store.range('c1', { fromSeq: 1, toSeq: 5, limit: 10, direction: 'forward' })).toStrictEqual(entries.slice(2))
        // a newer message: the old ones may go now
        await store.insertBatch([message('c1', 6, { count: 4 })])
        expect(await sweep(olderThan(T0 + 1000))).toBe(3)
        expect(await store.firstSeq('c1')).toBe(6)
        expect(await store.range('c1', { fromSeq: 1, toSeq: 6, limit: 10, direction: 'forward' })).toStrictEqual([message('c1', 6, { count: 4 })])
        expect((await store.latestMany(['c1'])).get('c1')?.preview).toStrictEqual(message('c1', 6, { count: 4 }))
      })

      it('removes a prefix only: an entry that is not expired keeps the ones after it', async () => {
        // seq 3 was stamped later than seq 4 (two nodes' clocks): nothing from 3 on goes yet
        await store.insertBatch([message('c1', 1), message('c1', 2), message('c1', 3, { ts: T0 + 100 }), message('c1', 4), message('c1', 5, { ts: T0 + 200 })])
        expect(await sweep(olderThan(T0 + 50))).toBe(2)
        expect(await store.firstSeq('c1')).toBe(3)
        expect(await sweep(olderThan(T0 + 150))).toBe(2)
        expect(seqs(await store.range('c1', { fromSeq: 1, toSeq: 5, limit: 10, direction: 'forward' }))).toEqual([5])
      })

      it('asks the cutoffs only for conversations with old entries; a conversation without a cutoff keeps everything', async () => {
        await store.insertBatch([...messages('c1', 1, 5), ...messages('c2', 1, 5), ...messages('c3', 1, 5).map(m => ({ ...m, ts: T0 + 10_000 + m.seq }))])
        const asked: string[] = []
        // c1: a cutoff later than `before` is held to it; c2: none
        const rule = olderThan(T0 + 3, asked, id => id === 'c1' ? T0 + 10_000 : undefined)
        expect(await sweep(rule)).toBe(2)
        expect([...new Set(asked)].sort()).toEqual(['c1', 'c2'])
        expect([await store.firstSeq('c1'), await store.firstSeq('c2'), await store.firstSeq('c3')]).toEqual([3, 1, 1])
      })

      it('each step is bounded, and the sweep goes on where the last step stopped', async () => {
        for (let c = 1; c <= 5; c++) await store.insertBatch(messages(`c${c}`, 1, 10))
        const bounds = { maxRemoved: 7, maxExamined: 2 }
        let steps = 0
        let removed = 0
        for (;;) {
          const result = await store.removeExpired(olderThan(T0 + 1000), bounds)
          expect(result.removed).toBeLessThanOrEqual(7)
          expect(result.examined).toBeLessThanOrEqual(2)
          removed += result.removed
          if (++steps > 100) throw new Error('the sweep does not end')
          if (result.done && removed === 45) break
        }
        expect(steps).toBeGreaterThanOrEqual(7)
        for (let c = 1; c <= 5; c++) expect(await store.firstSeq(`c${c}`)).toBe(10)
      })

      it('removes a long run over several steps', async () => {
        const total = 1200
        for (let start = 1; start <= total; start += 400) await store.insertBatch(messages('big', start, start + 399))
        const first = await store.removeExpired(olderThan(T0 + 1101), { maxRemoved: 1000, maxExamined: 10 })
        expect(first).toEqual({ removed: 1000, examined: expect.any(Number), done: false })
        expect(await store.firstSeq('big')).toBe(1001)
        expect(await sweep(olderThan(T0 + 1101), { maxRemoved: 1000, maxExamined: 10 })).toBe(100)
        expect(await store.firstSeq('big')).toBe(1101)
        expect(seqs(await store.range('big', { fromSeq: 1, toSeq: total, limit: 3, direction: 'forward' }))).toEqual([1101, 1102, 1103])
        expect(await store.lastSeq('big')).toBe(total)
      })
    })

    describe('many messages', () => {
      it('stores 2,000 messages over several batches and pages through them', async () => {
        const total = 2000
        const batchSize = 250
        const all = messages('big', 1, total)
        for (let start = 0; start < total; start += batchSize) {
          expect(await insert(all.slice(start, start + batchSize))).toEqual({ inserted: batchSize })
        }
        await store.insertBatch(messages('small', 1, 3))

        expect(await store.lastSeq('big')).toBe(total)
        expect(await store.latest('big')).toStrictEqual(all[total - 1])

        const everything = await store.range('big', { fromSeq: 1, toSeq: total, limit: total, direction: 'forward' })
        expect(everything).toStrictEqual(all)

        expect(seqs(await store.range('big', { fromSeq: 1000, toSeq: 1500, limit: 100, direction: 'backward' }))).toEqual(seqRange(1401, 1500))
        expect(seqs(await store.range('big', { fromSeq: 1000, toSeq: 1500, limit: 100, direction: 'forward' }))).toEqual(seqRange(1000, 1099))
        expect(seqs(await store.range('big', { fromSeq: 1999, toSeq: 5000, limit: 10, direction: 'forward' }))).toEqual([1999, 2000])
        expect(seqs(await store.range('big', { fromSeq: 1, toSeq: total, limit: 3, direction: 'backward' }))).toEqual([1998, 1999, 2000])

        // Sync in pages of 300, the way a reconnecting client fills a gap: no gaps, no repeats.
        const synced: number[] = []
        let from = 1
        for (;;) {
          const page = await store.range('big', { fromSeq: from, toSeq: total, limit: 300, direction: 'forward' })
          const last = page.at(-1)
          if (last === undefined) break
          synced.push(...seqs(page))
          from = last.seq + 1
        }
        expect(synced).toEqual(seqRange(1, total))

        expect(await store.findByClientMsgId('big', 'alice', 'm1234')).toStrictEqual(all[1233])
        expect(await insert(all.slice(1500, 1501))).toEqual({ inserted: 0, conflict: { kind: 'clientMsgId' } })
        expect(await store.lastSeq('small')).toBe(3)
      })
    })
  })
}
