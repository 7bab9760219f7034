/**
 * The MetadataStore contract: every adapter runs this suite (test/metadata-*.test.ts).
 *
 * Tests go through the interface only. Each test gets a fresh, empty store from the
 * factory; the suite calls init() before and close() after each test, then the
 * factory's cleanup (e.g. dropping a database).
 *
 * The interface promises no order for lists, so the suite sorts before comparing.
 */
import {
  StoreConflictError,
  type ConversationRecord,
  type MemberRecord,
  type MetadataStore,
  type UserRecord
} from '../../src/store/types.js'

export interface MetadataStoreFixture {
  store: MetadataStore
  cleanup?: () => Promise<void>
}

const T0 = 1_700_000_000_123

function user (id: string, overrides: Partial<UserRecord> = {}): UserRecord {
  return { id, kind: 'user', displayName: `User ${id}`, secretHash: `hash-of-${id}`, disabled: false, createdAt: T0, ...overrides }
}

function group (id: string, overrides: Partial<ConversationRecord> = {}): ConversationRecord {
  return { id, kind: 'group', name: `Group ${id}`, directKey: null, createdBy: 'alice', createdAt: T0 + 1, ...overrides }
}

function direct (id: string, a: string, b: string): ConversationRecord {
  return { id, kind: 'direct', name: null, directKey: [a, b].sort().join('|'), createdBy: a, createdAt: T0 + 2 }
}

function member (conversationId: string, userId: string, overrides: Partial<MemberRecord> = {}): MemberRecord {
  return { conversationId, userId, role: 'member', readSeq: 0, muted: false, joinedAt: T0 + 3, ...overrides }
}

function byUserId (members: MemberRecord[]): MemberRecord[] {
  return [...members].sort((a, b) => a.userId.localeCompare(b.userId))
}

function byConversationId (members: MemberRecord[]): MemberRecord[] {
  return [...members].sort((a, b) => a.conversationId.localeCompare(b.conversationId))
}

export function describeMetadataStore (name: string, factory: () => Promise<MetadataStoreFixture>): void {
  describe(`MetadataStore contract: ${name}`, () => {
    let store: MetadataStore
    let cleanup: (() => Promise<void>) | undefined

    beforeEach(async () => {
      const fixture = await factory()
      store = fixture.store
      cleanup = fixture.cleanup
      await store.init()
    })

    afterEach(async () => {
      await store.close()
      await cleanup?.()
    })

    describe('users', () => {
      test('userCreate then userGet round-trips every field exactly', async () => {
        const alice = user('alice', { displayName: 'Alice Ünïcødé 🚀', createdAt: Date.now() })
        const bot = user('helper.bot-1', { kind: 'bot', disabled: true, secretHash: 'sha256:' + 'ab'.repeat(32) })
        await store.userCreate(alice)
        await store.userCreate(bot)

        const gotAlice = await store.userGet('alice')
        expect(gotAlice).toStrictEqual(alice)
        expect(typeof gotAlice?.createdAt).toBe('number')
        expect(gotAlice?.disabled).toBe(false)
        expect(await store.userGet('helper.bot-1')).toStrictEqual(bot)
      })

      test('userGet of an unknown id is null', async () => {
        expect(await store.userGet('nobody')).toBeNull()
      })

      test('userCreate with an existing id throws StoreConflictError and keeps the original', async () => {
        await store.userCreate(user('alice'))
        await expect(store.userCreate(user('alice', { displayName: 'Impostor' }))).rejects.toBeInstanceOf(StoreConflictError)
        expect(await store.userGet('alice')).toStrictEqual(user('alice'))
      })

      test('userList is empty at first and then lists every user', async () => {
        expect(await store.userList()).toStrictEqual([])
        const users = [user('carol'), user('alice', { kind: 'bot' }), user('bob', { disabled: true })]
        for (const u of users) await store.userCreate(u)
        const listed = await store.userList()
        expect([...listed].sort((a, b) => a.id.localeCompare(b.id))).toStrictEqual([users[1], users[2], users[0]])
      })

      test('userSetDisabled flips the flag and reports unknown users', async () => {
        await store.userCreate(user('alice'))
        expect(await store.userSetDisabled('alice', true)).toBe(true)
        expect(await store.userGet('alice')).toStrictEqual(user('alice', { disabled: true }))
        expect(await store.userSetDisabled('alice', true)).toBe(true)
        expect(await store.userSetDisabled('alice', false)).toBe(true)
        expect((await store.userGet('alice'))?.disabled).toBe(false)
        expect(await store.userSetDisabled('nobody', true)).toBe(false)
        expect(await store.userGet('nobody')).toBeNull()
      })

      test('userSetSecret replaces the hash and reports unknown users', async () => {
        await store.userCreate(user('alice'))
        expect(await store.userSetSecret('alice', 'new-hash')).toBe(true)
        expect(await store.userGet('alice')).toStrictEqual(user('alice', { secretHash: 'new-hash' }))
        expect(await store.userSetSecret('alice', 'new-hash')).toBe(true)
        expect(await store.userSetSecret('nobody', 'x')).toBe(false)
      })
    })

    describe('conversations', () => {
      test('conversationCreate stores the conversation and its members', async () => {
        const conversation = group('g1', { name: 'Team 🐙' })
        const members = [
          member('g1', 'alice', { role: 'owner' }),
          member('g1', 'bob', { role: 'admin', muted: true }),
          member('g1', 'carol', { readSeq: 7 })
        ]
        await store.conversationCreate(conversation, members)

        expect(await store.conversationGet('g1')).toStrictEqual(conversation)
        expect(byUserId(await store.memberList('g1'))).toStrictEqual(members)
        expect(await store.memberGet('g1', 'bob')).toStrictEqual(members[1])
      })

      test('a direct conversation round-trips a null name and is found by its direct key', async () => {
        const conversation = direct('d1', 'bob', 'alice')
        await store.conversationCreate(conversation, [member('d1', 'alice'), member('d1', 'bob')])

        const got = await store.conversationGet('d1')
        expect(got).toStrictEqual(conversation)
        expect(got?.name).toBeNull()
        expect(await store.conversationGetDirect('alice|bob')).toStrictEqual(conversation)
        expect(await store.conversationGetDirect('bob|carol')).toBeNull()
      })

      test('a group is not found by getDirect, and unknown ids are null', async () => {
        await store.conversationCreate(group('g1'), [])
        expect(await store.conversationGetDirect('g1')).toBeNull()
        expect(await store.conversationGet('nope')).toBeNull()
        expect(await store.memberList('g1')).toStrictEqual([])
      })

      test('conversation ids are case-sensitive', async () => {
        await store.conversationCreate(group('AbC'), [member('AbC', 'alice')])
        await store.conversationCreate(group('abc'), [member('abc', 'alice')])
        expect((await store.conversationGet('AbC'))?.id).toBe('AbC')
        expect((await store.conversationGet('abc'))?.id).toBe('abc')
        expect(await store.conversationGet('ABC')).toBeNull()
      })

      test('an existing id throws StoreConflictError and writes none of the new members', async () => {
        await store.conversationCreate(group('g1'), [member('g1', 'alice', { role: 'owner' })])
        const attempt = store.conversationCreate(group('g1', { name: 'Other' }),
          [member('g1', 'dave'), member('g1', 'alice', { role: 'member' })])
        await expect(attempt).rejects.toBeInstanceOf(StoreConflictError)

        expect(await store.conversationGet('g1')).toStrictEqual(group('g1'))
        expect(await store.memberListByUser('dave')).toStrictEqual([])
        expect(await store.memberList('g1')).toStrictEqual([member('g1', 'alice', { role: 'owner' })])
      })

      test('a duplicate direct key throws StoreConflictError and leaves no trace of the attempt', async () => {
        await store.conversationCreate(direct('d1', 'alice', 'bob'), [member('d1', 'alice'), member('d1', 'bob')])
        const attempt = store.conversationCreate(direct('d2', 'bob', 'alice'), [member('d2', 'alice'), member('d2', 'bob')])
        await expect(attempt).rejects.toBeInstanceOf(StoreConflictError)

        expect(await store.conversationGet('d2')).toBeNull()
        expect(await store.memberList('d2')).toStrictEqual([])
        expect((await store.memberListByUser('alice')).map((m) => m.conversationId)).toStrictEqual(['d1'])
        expect((await store.memberListByUser('bob')).map((m) => m.conversationId)).toStrictEqual(['d1'])
        expect(await store.conversationGetDirect('alice|bob')).toStrictEqual(direct('d1', 'alice', 'bob'))
      })

      test('concurrent creates of the same direct conversation: exactly one wins', async () => {
        const attempts = ['d1', 'd2', 'd3', 'd4'].map(async (id) => await store.conversationCreate(
          direct(id, 'alice', 'bob'), [member(id, 'alice'), member(id, 'bob')]))
        const outcomes = await Promise.allSettled(attempts)

        const won = outcomes.filter((o) => o.status === 'fulfilled')
        const lost = outcomes.flatMap((o) => o.status === 'rejected' ? [o.reason] : [])
        expect(won).toHaveLength(1)
        expect(lost).toHaveLength(3)
        for (const reason of lost) expect(reason).toBeInstanceOf(StoreConflictError)
        const winner = await store.conversationGetDirect('alice|bob')
        expect(winner).not.toBeNull()
        expect((await store.memberListByUser('alice')).map((m) => m.conversationId)).toStrictEqual([winner?.id])
        expect((await store.memberListByUser('bob')).map((m) => m.conversationId)).toStrictEqual([winner?.id])
      })

      test('a member listed twice throws StoreConflictError and creates nothing', async () => {
        const attempt = store.conversationCreate(group('g1'), [member('g1', 'alice'), member('g1', 'bob'), member('g1', 'alice')])
        await expect(attempt).rejects.toBeInstanceOf(StoreConflictError)
        expect(await store.conversationGet('g1')).toBeNull()
        expect(await store.memberListByUser('alice')).toStrictEqual([])
        expect(await store.memberListByUser('bob')).toStrictEqual([])
      })

      test('conversationRename changes the name and reports unknown conversations', async () => {
        await store.conversationCreate(group('g1'), [])
        expect(await store.conversationRename('g1', 'Renamed ✓')).toBe(true)
        expect(await store.conversationGet('g1')).toStrictEqual(group('g1', { name: 'Renamed ✓' }))
        expect(await store.conversationRename('g1', 'Renamed ✓')).toBe(true)
        expect(await store.conversationRename('nope', 'x')).toBe(false)
        expect(await store.conversationGet('nope')).toBeNull()
      })
    })

    describe('members', () => {
      beforeEach(async () => {
        await store.conversationCreate(group('g1'), [member('g1', 'alice', { role: 'owner', readSeq: 4 })])
      })

      test('memberGet of a non-member is null', async () => {
        expect(await store.memberGet('g1', 'bob')).toBeNull()
        expect(await store.memberGet('nope', 'alice')).toBeNull()
      })

      test('memberAdd returns only the ids actually added and leaves existing members alone', async () => {
        const added = await store.memberAdd([
          member('g1', 'bob'),
          member('g1', 'alice', { role: 'member', readSeq: 0, muted: true }),
          member('g1', 'carol', { role: 'admin', readSeq: 2 })
        ])
        expect([...added].sort()).toStrictEqual(['bob', 'carol'])
        expect(await store.memberGet('g1', 'alice')).toStrictEqual(member('g1', 'alice', { role: 'owner', readSeq: 4 }))
        expect(await store.memberGet('g1', 'carol')).toStrictEqual(member('g1', 'carol', { role: 'admin', readSeq: 2 }))
        expect((await store.memberList('g1')).map((m) => m.userId).sort()).toStrictEqual(['alice', 'bob', 'carol'])

        expect(await store.memberAdd([member('g1', 'bob'), member('g1', 'carol')])).toStrictEqual([])
      })

      test('memberAdd of nothing adds nothing; a user listed twice is added once', async () => {
        expect(await store.memberAdd([])).toStrictEqual([])
        expect(await store.memberAdd([member('g1', 'bob'), member('g1', 'bob', { role: 'admin' })])).toStrictEqual(['bob'])
        expect((await store.memberList('g1')).filter((m) => m.userId === 'bob')).toHaveLength(1)
      })

      test('concurrent memberAdd of the same user adds it exactly once', async () => {
        const results = await Promise.all(Array.from({ length: 8 }, async () =>
          await store.memberAdd([member('g1', 'bob'), member('g1', 'carol')])))
        expect(results.flat().filter((id) => id === 'bob')).toHaveLength(1)
        expect(results.flat().filter((id) => id === 'carol')).toHaveLength(1)
        expect((await store.memberList('g1')).map((m) => m.userId).sort()).toStrictEqual(['alice', 'bob', 'carol'])
      })

      test('memberRemove removes and reports non-members', async () => {
        await store.memberAdd([member('g1', 'bob')])
        expect(await store.memberRemove('g1', 'bob')).toBe(true)
        expect(await store.memberGet('g1', 'bob')).toBeNull()
        expect(await store.memberListByUser('bob')).toStrictEqual([])
        expect(await store.memberRemove('g1', 'bob')).toBe(false)
        expect(await store.memberRemove('nope', 'alice')).toBe(false)
        expect(await store.memberAdd([member('g1', 'bob')])).toStrictEqual(['bob'])
      })

      test('memberSetRole changes the role and reports non-members', async () => {
        await store.memberAdd([member('g1', 'bob')])
        expect(await store.memberSetRole('g1', 'bob', 'admin')).toBe(true)
        expect(await store.memberGet('g1', 'bob')).toStrictEqual(member('g1', 'bob', { role: 'admin' }))
        expect(await store.memberSetRole('g1', 'bob', 'admin')).toBe(true)
        expect(await store.memberSetRole('g1', 'carol', 'admin')).toBe(false)
        expect(await store.memberGet('g1', 'carol')).toBeNull()
      })

      test('memberSetMuted changes the flag and reports non-members', async () => {
        expect(await store.memberSetMuted('g1', 'alice', true)).toBe(true)
        expect((await store.memberGet('g1', 'alice'))?.muted).toBe(true)
        expect(await store.memberSetMuted('g1', 'alice', true)).toBe(true)
        expect(await store.memberSetMuted('g1', 'alice', false)).toBe(true)
        expect(await store.memberGet('g1', 'alice')).toStrictEqual(member('g1', 'alice', { role: 'owner', readSeq: 4 }))
        expect(await store.memberSetMuted('g1', 'bob', true)).toBe(false)
      })

      test('memberAdvanceRead only moves forward', async () => {
        expect(await store.memberAdvanceRead('g1', 'alice', 9)).toBe(9)
        expect(await store.memberAdvanceRead('g1', 'alice', 3)).toBe(9)
        expect(await store.memberAdvanceRead('g1', 'alice', 9)).toBe(9)
        expect(await store.memberAdvanceRead('g1', 'alice', 0)).toBe(9)
        expect((await store.memberGet('g1', 'alice'))?.readSeq).toBe(9)
        expect(await store.memberAdvanceRead('g1', 'alice', 2 ** 40 + 1)).toBe(2 ** 40 + 1)
        expect((await store.memberGet('g1', 'alice'))?.readSeq).toBe(2 ** 40 + 1)
      })

      test('memberAdvanceRead of a non-member is null and creates nothing', async () => {
        expect(await store.memberAdvanceRead('g1', 'bob', 5)).toBeNull()
        expect(await store.memberAdvanceRead('nope', 'alice', 5)).toBeNull()
        expect(await store.memberGet('g1', 'bob')).toBeNull()
      })

      test('50 concurrent memberAdvanceRead calls end at the maximum', async () => {
        const seqs = Array.from({ length: 50 }, () => 1 + Math.floor(Math.random() * 100_000))
        const results = await Promise.all(seqs.map(async (seq) => await store.memberAdvanceRead('g1', 'alice', seq)))
        const max = Math.max(4, ...seqs)
        results.forEach((result, i) => {
          expect(result).not.toBeNull()
          expect(result).toBeGreaterThanOrEqual(seqs[i])
          expect(result).toBeLessThanOrEqual(max)
        })
        expect((await store.memberGet('g1', 'alice'))?.readSeq).toBe(max)
        expect(await store.memberAdvanceRead('g1', 'alice', 1)).toBe(max)
      })

      test('memberListByUser lists every membership of one user only', async () => {
        await store.conversationCreate(group('g2'), [member('g2', 'alice', { muted: true }), member('g2', 'bob')])
        await store.conversationCreate(direct('d1', 'alice', 'carol'), [member('d1', 'alice'), member('d1', 'carol')])

        expect(byConversationId(await store.memberListByUser('alice'))).toStrictEqual([
          member('d1', 'alice'),
          member('g1', 'alice', { role: 'owner', readSeq: 4 }),
          member('g2', 'alice', { muted: true })
        ])
        expect(await store.memberListByUser('bob')).toStrictEqual([member('g2', 'bob')])
        expect(await store.memberListByUser('nobody')).toStrictEqual([])
      })
    })

    describe('returned records are copies', () => {
      test('mutating a returned or passed-in user does not change the store', async () => {
        const input = user('alice')
        await store.userCreate(input)
        input.displayName = 'changed after create'

        const got = await store.userGet('alice')
        if (got === null) throw new Error('alice missing')
        got.disabled = true
        got.displayName = 'changed after get'
        const listed = await store.userList()
        listed[0].secretHash = 'changed after list'
        listed.pop()

        expect(await store.userGet('alice')).toStrictEqual(user('alice'))
        expect(await store.userList()).toStrictEqual([user('alice')])
      })

      test('mutating a returned or passed-in conversation does not change the store', async () => {
        const input = direct('d1', 'alice', 'bob')
        await store.conversationCreate(input, [])
        input.directKey = 'x|y'
        input.name = 'changed after create'

        const got = await store.conversationGet('d1')
        if (got === null) throw new Error('d1 missing')
        got.name = 'changed after get'
        const byKey = await store.conversationGetDirect('alice|bob')
        if (byKey === null) throw new Error('d1 missing by key')
        byKey.createdBy = 'mallory'

        expect(await store.conversationGet('d1')).toStrictEqual(direct('d1', 'alice', 'bob'))
        expect(await store.conversationGetDirect('alice|bob')).toStrictEqual(direct('d1', 'alice', 'bob'))
        expect(await store.conversationGetDirect('x|y')).toBeNull()
      })

      test('mutating returned or passed-in members does not change the store', async () => {
        const initial = [member('g1', 'alice', { role: 'owner' })]
        await store.conversationCreate(group('g1'), initial)
        initial[0].role = 'member'
        initial.push(member('g1', 'mallory'))
        const added = [member('g1', 'bob')]
        await store.memberAdd(added)
        added[0].readSeq = 99

        const got = await store.memberGet('g1', 'alice')
        if (got === null) throw new Error('alice missing')
        got.readSeq = 50
        const list = await store.memberList('g1')
        list[0].muted = true
        list[1].role = 'owner'
        const mine = await store.memberListByUser('bob')
        mine[0].joinedAt = 0

        expect(byUserId(await store.memberList('g1'))).toStrictEqual([
          member('g1', 'alice', { role: 'owner' }),
          member('g1', 'bob')
        ])
        expect(await store.memberListByUser('bob')).toStrictEqual([member('g1', 'bob')])
      })
    })
  })
}
