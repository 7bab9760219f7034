/**
 * The SDK's copy of a message follows the server's: applying a conversation's change entries in
 * seq order to the message, starting from the message as the server showed it at any point (a
 * history page fetched then), ends where the server's own state ends. The server side is the
 * embedded store (applyChange) and the envelope the server sends (toEnvelope).
 */
import fc from 'fast-check'
import { applyChange } from '../../src/client/changes.js'
import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import { toEnvelope } from '../../src/im/envelopes.js'
import type { StoredMessage } from '../../src/store/types.js'
import type { MessageEnvelope } from '../../src/protocol/schemas.js'

const USERS = ['alice', 'bob', 'carol']
const EMOJIS = ['👍', '🎉']

type Op = { kind: 'edit', user: string, body: string } | { kind: 'delete', user: string } | { kind: 'react', user: string, emoji: string, remove: boolean }

const op: fc.Arbitrary<Op> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('edit' as const), user: fc.constant('alice'), body: fc.string({ minLength: 1, maxLength: 5 }) }), weight: 3 },
  { arbitrary: fc.record({ kind: fc.constant('delete' as const), user: fc.constantFrom(...USERS) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('react' as const), user: fc.constantFrom(...USERS), emoji: fc.constantFrom(...EMOJIS), remove: fc.boolean() }), weight: 6 }
)

function entry (seq: number, o: Op): StoredMessage {
  const base = { conversationId: 'c', seq, clientMsgId: `x${seq}`, senderId: o.user, ts: 1000 + seq, replyTo: null, target: 1, lastReal: 1 }
  if (o.kind === 'edit') return { ...base, kind: 'edit', body: o.body }
  if (o.kind === 'delete') return { ...base, kind: 'delete', body: null }
  return { ...base, kind: 'react', body: { emoji: o.emoji, remove: o.remove } }
}

describe('SDK: changes applied to a local copy', () => {
  test('from the state at any seq, replaying the later entries in order gives the server\'s final state', async () => {
    await fc.assert(fc.asyncProperty(fc.array(op, { minLength: 1, maxLength: 25 }), fc.nat(), async (ops, cut) => {
      const store = new MemoryMessageStore()
      const message: StoredMessage = { conversationId: 'c', seq: 1, clientMsgId: 'm1', senderId: 'alice', ts: 1000, kind: 'text', body: 'hello', replyTo: null }
      await store.insertBatch([message])
      const entries = ops.map((o, i) => entry(i + 2, o))
      const states: MessageEnvelope[] = [toEnvelope((await store.getMany([{ conversationId: 'c', seq: 1 }]))[0] as StoredMessage)]
      for (const e of entries) {
        await store.insertBatch([e])
        const after = await store.applyChange(e)
        states.push(toEnvelope(after as StoredMessage))
      }
      const final = states[states.length - 1]
      // a device that fetched the message after entry `from` and then got the rest in order
      const from = cut % states.length
      let local = states[from] as MessageEnvelope
      for (const e of entries.slice(from)) local = applyChange(local, toEnvelope(e))
      expect(normalize(local)).toStrictEqual(normalize(final as MessageEnvelope))
    }), { numRuns: 300 })
  })

  test('an edit older than the one shown is skipped; a deleted message stays deleted; reactions are sets', () => {
    const m: MessageEnvelope = { conv: 'c', seq: 1, msgId: 'm', from: 'alice', ts: 1, kind: 'text', body: 'v3', edited: { seq: 3, ts: 3 } }
    expect(applyChange(m, { kind: 'edit', seq: 2, ts: 2, from: 'alice', body: 'v2' })).toBe(m)
    const react = applyChange(m, { kind: 'react', seq: 4, ts: 4, from: 'bob', body: { emoji: '👍', remove: false } })
    expect(react.reactions).toStrictEqual({ '👍': ['bob'] })
    expect(applyChange(react, { kind: 'react', seq: 5, ts: 5, from: 'bob', body: { emoji: '👍', remove: false } })).toBe(react)
    expect(applyChange(react, { kind: 'react', seq: 6, ts: 6, from: 'bob', body: { emoji: '👍', remove: true } })).not.toHaveProperty('reactions')
    const deleted = applyChange({ ...react, replyTo: 1 }, { kind: 'delete', seq: 7, ts: 7, from: 'alice', body: null })
    expect(deleted).toStrictEqual({ conv: 'c', seq: 1, msgId: 'm', from: 'alice', ts: 1, kind: 'text', body: null, deleted: { seq: 7, ts: 7, by: 'alice' } })
    expect(applyChange(deleted, { kind: 'edit', seq: 8, ts: 8, from: 'alice', body: 'back' })).toBe(deleted)
  })
})

/** Reactions compared as sets (the server orders users by the seq of their reaction, a replay by arrival). */
function normalize (m: MessageEnvelope): MessageEnvelope {
  if (m.reactions === undefined) return m
  return { ...m, reactions: Object.fromEntries(Object.entries(m.reactions).map(([e, u]) => [e, [...u].sort()])) }
}
