/**
 * The MetadataStore contract: every adapter runs this suite (test/metadata-*.test.ts).
 *
 * Tests go through the interface only. Each test gets a fresh, empty store from the
 * factory; the suite calls init() before and close() after each test, then the
 * factory's cleanup (e.g. dropping a database).
 *
 * The interface promises no order for lists, so the suite sorts before comparing.
 */
import { createHash } from 'node:crypto'
import {
  StoreConflictError,
  USER_PAGE_MAX,
  inviteCodeId,
  type ConversationRecord,
  type InviteRecord,
  type MemberRecord,
  type MetadataStore,
  type PushTarget,
  type UserRecord
} from '../../src/store/types.js'

export interface MetadataStoreFixture {
  store: MetadataStore
  cleanup?: () => Promise<void>
}

const T0 = 1_700_000_000_123

function user (id: string, overrides: Partial<UserRecord> = {}): UserRecord {
  return { id, kind: 'user', displayName: `User ${id}`, secretHash: `hash-of-${id}`, disabled: false, createdAt: T0, groupInvites: 'anyone', ...overrides }
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

/** utf8mb4_bin order: UTF-8 bytes, so 'B' < 'a' and '-' < '0' < 'A' < '_' < 'a'. */
function byteOrder (a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b))
}

/** A map's entries sorted by key (byte order), for exact comparison. */
function entries<V> (map: Map<string, V>): Array<[string, V]> {
  return [...map.entries()].sort(([a], [b]) => byteOrder(a, b))
}

/** `count` ids none of which exist, with `known` placed at the given indexes (duplicates allowed). */
function manyIds (count: number, known: Array<[number, string]>): string[] {
  const ids = Array.from({ length: count }, (_, i) => `unknown-${i}`)
  for (const [index, id] of known) ids[index] = id
  return ids
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

      test('userGetMany returns the known users of a list (duplicates, unknown ids, many ids)', async () => {
        const alice = user('alice')
        const bob = user('bob', { kind: 'bot', groupInvites: 'contacts' })
        await store.userCreate(alice)
        await store.userCreate(bob)
        const got = await store.userGetMany(['bob', 'nobody', 'alice', 'bob', 'Alice'])
        expect([...got].sort((a, b) => a.id.localeCompare(b.id))).toStrictEqual([alice, bob])
        expect(await store.userGetMany([])).toStrictEqual([])
        const many = Array.from({ length: 2500 }, (_, i) => `u${i}`)
        expect(await store.userGetMany([...many, 'alice'])).toStrictEqual([alice])
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

      describe('userPage', () => {
        // ids that sort differently byte-wise (utf8mb4_bin) and locale-wise; every third a bot
        const ids = ['a', 'b', 'z', '_x', '-x', '0', '9', 'ab', 'a-b', 'a_b', 'a.b', 'zz', 'z'.repeat(32), 'a0', 'bot.1', 'm']
        const kindOf = (id: string): 'user' | 'bot' => ids.indexOf(id) % 3 === 0 ? 'bot' : 'user'
        const ordered = [...ids].sort(byteOrder)

        beforeEach(async () => {
          for (const id of ids) await store.userCreate(user(id, { kind: kindOf(id), disabled: id === 'm' }))
        })

        /** Every id of a walk with pages of `limit`, and the size of each page. */
        async function walk (limit: number, kind?: 'user' | 'bot'): Promise<{ seen: string[], sizes: number[] }> {
          const seen: string[] = []
          const sizes: number[] = []
          let after: string | null = null
          for (;;) {
            const page: UserRecord[] = await store.userPage({ after, limit, ...(kind === undefined ? {} : { kind }) })
            sizes.push(page.length)
            seen.push(...page.map((u) => u.id))
            const last = page.at(-1)
            if (page.length < limit || last === undefined) break
            after = last.id
          }
          return { seen, sizes }
        }

        test('pages by id in byte order, each user once, whole records', async () => {
          expect(ordered).not.toStrictEqual([...ids].sort((x, y) => x.localeCompare(y)))
          for (const limit of [1, 3, ids.length, ids.length + 1, 1000]) {
            const { seen, sizes } = await walk(limit)
            expect(seen).toStrictEqual(ordered)
            expect(sizes.slice(0, -1).every((n) => n === limit)).toBe(true)
          }
          expect(await store.userPage({ after: null, limit: 2 })).toStrictEqual(ordered.slice(0, 2).map((id) => user(id, { kind: kindOf(id), disabled: id === 'm' })))
        })

        test('kind: only users, or only bots, in the same order', async () => {
          for (const kind of ['user', 'bot'] as const) {
            const want = ordered.filter((id) => kindOf(id) === kind)
            expect((await walk(2, kind)).seen).toStrictEqual(want)
            expect((await store.userPage({ after: null, limit: 100, kind })).every((u) => u.kind === kind)).toBe(true)
          }
        })

        test('after is a position, not a user: an unknown id, the last id, the empty string; limit 0', async () => {
          expect((await store.userPage({ after: 'a1', limit: 2 })).map((u) => u.id)).toStrictEqual(ordered.filter((id) => byteOrder(id, 'a1') > 0).slice(0, 2))
          expect(await store.userPage({ after: ordered.at(-1) ?? null, limit: 10 })).toStrictEqual([])
          expect((await store.userPage({ after: '', limit: 1 })).map((u) => u.id)).toStrictEqual([ordered[0]])
          expect((await store.userPage({ after: 'A', limit: 1, kind: 'bot' })).map((u) => u.id)).toStrictEqual([ordered.filter((id) => kindOf(id) === 'bot' && byteOrder(id, 'A') > 0)[0]])
          expect(await store.userPage({ after: null, limit: 0 })).toStrictEqual([])
        })

        test('hostile input: a limit that is not an integer or above USER_PAGE_MAX throws RangeError; odd cursors are plain values', async () => {
          await expect(store.userPage({ after: null, limit: 1.5 })).rejects.toThrow(RangeError)
          await expect(store.userPage({ after: null, limit: Number.NaN })).rejects.toThrow(RangeError)
          await expect(store.userPage({ after: null, limit: USER_PAGE_MAX + 1 })).rejects.toThrow(RangeError)
          expect(await store.userPage({ after: null, limit: USER_PAGE_MAX })).toHaveLength(ids.length)
          for (const after of ["' OR 1=1 --", '%', '\\', '😀', '\u0000']) {
            expect((await store.userPage({ after, limit: 100 })).map((u) => u.id)).toStrictEqual(ordered.filter((id) => byteOrder(id, after) > 0))
          }
        })

        test('returns copies, and sees users created later past the cursor', async () => {
          const [first] = await store.userPage({ after: null, limit: 1 })
          if (first === undefined) throw new Error('no page')
          first.displayName = 'changed'
          expect((await store.userGet(first.id))?.displayName).toBe(`User ${first.id}`)
          await store.userCreate(user('zzz'))
          expect((await store.userPage({ after: 'zz', limit: 10 })).map((u) => u.id)).toStrictEqual(['zzz', 'z'.repeat(32)].sort(byteOrder))
        })
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

      test('groupInvites round-trips and defaults to nothing but what was given', async () => {
        await store.userCreate(user('alice', { groupInvites: 'contacts' }))
        await store.userCreate(user('bob'))
        expect(await store.userGet('alice')).toStrictEqual(user('alice', { groupInvites: 'contacts' }))
        expect((await store.userGet('bob'))?.groupInvites).toBe('anyone')
        expect((await store.userList()).map((u) => u.groupInvites).sort()).toStrictEqual(['anyone', 'contacts'])
      })

      test('userSetGroupInvites changes the setting and reports unknown users', async () => {
        await store.userCreate(user('alice'))
        expect(await store.userSetGroupInvites('alice', 'contacts')).toBe(true)
        expect(await store.userGet('alice')).toStrictEqual(user('alice', { groupInvites: 'contacts' }))
        expect(await store.userSetGroupInvites('alice', 'contacts')).toBe(true)
        expect(await store.userSetGroupInvites('alice', 'anyone')).toBe(true)
        expect(await store.userGet('alice')).toStrictEqual(user('alice'))
        expect(await store.userSetGroupInvites('nobody', 'contacts')).toBe(false)
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

      test('memberAdvanceReadMany moves several cursors at once, forward only, in the order given', async () => {
        await store.memberAdd([member('g1', 'bob'), member('g1', 'B0b')])
        const result = await store.memberAdvanceReadMany([
          { conversationId: 'g1', userId: 'alice', seq: 2 }, // alice's cursor is at 4: it stays
          { conversationId: 'g1', userId: 'bob', seq: 7 },
          { conversationId: 'g1', userId: 'carol', seq: 5 }, // not a member
          { conversationId: 'nope', userId: 'alice', seq: 5 },
          { conversationId: 'g1', userId: 'bob', seq: 3 }, // a repeat: the cursor's result
          { conversationId: 'g1', userId: 'B0b', seq: 11 }, // a look-alike id (a zero for the o)
          { conversationId: 'g1', userId: 'alice', seq: 2 ** 40 + 1 }
        ])
        expect(result).toStrictEqual([2 ** 40 + 1, 7, null, null, 7, 11, 2 ** 40 + 1])
        expect((await store.memberGet('g1', 'bob'))?.readSeq).toBe(7)
        expect((await store.memberGet('g1', 'B0b'))?.readSeq).toBe(11)
        expect(await store.memberGet('g1', 'carol')).toBeNull()
        expect(await store.memberAdvanceReadMany([])).toStrictEqual([])
        // every cursor moves (MySQL: the rows are not read back): each is its seq; ids that differ
        // in case only are different members
        await store.memberAdd([member('g1', 'BOB')])
        expect(await store.memberAdvanceReadMany([
          { conversationId: 'g1', userId: 'bob', seq: 8 },
          { conversationId: 'g1', userId: 'B0b', seq: 12 },
          { conversationId: 'g1', userId: 'BOB', seq: 3 },
          { conversationId: 'g1', userId: 'bob', seq: 9 }
        ])).toStrictEqual([9, 12, 3, 9])
        expect((await store.memberGet('g1', 'bob'))?.readSeq).toBe(9)
        expect((await store.memberGet('g1', 'B0b'))?.readSeq).toBe(12)
        expect((await store.memberGet('g1', 'BOB'))?.readSeq).toBe(3)
        // one stays where it is (already there): the others move, it keeps its cursor
        expect(await store.memberAdvanceReadMany([
          { conversationId: 'g1', userId: 'bob', seq: 9 },
          { conversationId: 'g1', userId: 'B0b', seq: 13 }
        ])).toStrictEqual([9, 13])
      })

      test('memberAdvanceReadMany over more cursors than one statement takes, racing single calls', async () => {
        const users = Array.from({ length: 700 }, (_, i) => `u${i}`)
        await store.memberAdd(users.map(u => member('g1', u)))
        const [many] = await Promise.all([
          store.memberAdvanceReadMany(users.map((u, i) => ({ conversationId: 'g1', userId: u, seq: i + 1 }))),
          store.memberAdvanceRead('g1', 'u5', 1000)
        ])
        expect(many.slice(0, 5)).toStrictEqual([1, 2, 3, 4, 5])
        expect([6, 1000]).toContain(many[5]) // u5: 6, or the single call's 1000 if that came first
        expect(many.slice(6)).toStrictEqual(users.slice(6).map((_, i) => i + 7))
        expect((await store.memberGet('g1', 'u5'))?.readSeq).toBe(1000)
        expect((await store.memberGet('g1', 'u699'))?.readSeq).toBe(700)
      })

      test('50 concurrent memberAdvanceRead calls end at the maximum', async () => {
        const seqs = Array.from({ length: 50 }, () => 1 + Math.floor(Math.random() * 100_000))
        const results = await Promise.all(seqs.map(async (seq) => await store.memberAdvanceRead('g1', 'alice', seq)))
        const max = Math.max(4, ...seqs)
        seqs.forEach((seq, i) => {
          const result = results[i]
          expect(result).not.toBeNull()
          expect(result).toBeGreaterThanOrEqual(seq)
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

    describe('userChanges', () => {
      /** The ids reported, each user checked against its current record. */
      async function reported (users: UserRecord[]): Promise<string[]> {
        for (const u of users) expect(u).toStrictEqual(await store.userGet(u.id))
        return users.map((u) => u.id)
      }

      test('null starts now: no users, just a cursor', async () => {
        await store.userCreate(user('alice'))
        const first = await store.userChanges(null)
        expect(first.users).toStrictEqual([])
        expect(typeof first.cursor).toBe('string')
      })

      test('reports every kind of change made after the cursor, with the record as it is now', async () => {
        for (const id of ['alice', 'bob', 'carol', 'dave']) await store.userCreate(user(id))
        const { cursor } = await store.userChanges(null)

        await store.userSetDisabled('alice', true)
        await store.userSetSecret('bob', 'new-hash')
        await store.userSetGroupInvites('carol', 'contacts')
        await store.userCreate(user('erin', { kind: 'bot' }))
        const changes = await store.userChanges(cursor)

        expect(await reported(changes.users)).toEqual(expect.arrayContaining(['alice', 'bob', 'carol', 'erin']))
        expect(new Set(changes.users.map((u) => u.id)).size).toBe(changes.users.length)
        expect(changes.users.find((u) => u.id === 'alice')?.disabled).toBe(true)
        expect(typeof changes.cursor).toBe('string')
      })

      test('a change made after each returned cursor is reported by the next call', async () => {
        await store.userCreate(user('alice'))
        let { cursor } = await store.userChanges(null)
        for (let round = 0; round < 6; round++) {
          await store.userSetDisabled('alice', round % 2 === 0)
          const changes = await store.userChanges(cursor)
          expect(await reported(changes.users)).toContain('alice')
          expect(changes.users.find((u) => u.id === 'alice')?.disabled).toBe(round % 2 === 0)
          cursor = changes.cursor
        }
      })

      test('a cursor can be used again: it reports the same change again', async () => {
        await store.userCreate(user('alice'))
        const { cursor } = await store.userChanges(null)
        await store.userSetSecret('alice', 'rotated')
        expect(await reported((await store.userChanges(cursor)).users)).toContain('alice')
        expect(await reported((await store.userChanges(cursor)).users)).toContain('alice')
      })

      test('a malformed cursor is rejected', async () => {
        await expect(store.userChanges('not a cursor')).rejects.toThrow(/cursor/)
      })
    })

    describe('batched conversation reads', () => {
      test('conversationGetMany returns the known conversations once each, ids compared exactly', async () => {
        await store.conversationCreate(group('g1'), [])
        await store.conversationCreate(group('AbC'), [])
        await store.conversationCreate(group('abc'), [])
        await store.conversationCreate(direct('d1', 'alice', 'bob'), [])

        const got = await store.conversationGetMany(['abc', 'g1', 'nope', 'g1', 'AbC', 'ABC', 'd1', 'abc'])
        expect([...got].sort((a, b) => byteOrder(a.id, b.id))).toStrictEqual([group('AbC'), group('abc'), direct('d1', 'alice', 'bob'), group('g1')])
        expect(await store.conversationGetMany([])).toStrictEqual([])
        expect(await store.conversationGetMany(['nope', 'nope'])).toStrictEqual([])
      })

      test('conversationGetMany answers 2,500+ ids, known ones repeated across chunks', async () => {
        for (const id of ['k0', 'k1', 'k2']) await store.conversationCreate(group(id), [])
        const ids = manyIds(2600, [[0, 'k0'], [999, 'k1'], [1000, 'k2'], [1001, 'k0'], [2000, 'k1'], [2599, 'k2']])
        const got = await store.conversationGetMany(ids)
        expect([...got].sort((a, b) => byteOrder(a.id, b.id))).toStrictEqual([group('k0'), group('k1'), group('k2')])
      })

      test('conversationGetMany returns copies', async () => {
        await store.conversationCreate(group('g1'), [])
        const [got] = await store.conversationGetMany(['g1'])
        if (got === undefined) throw new Error('g1 missing')
        got.name = 'changed'
        expect(await store.conversationGetMany(['g1'])).toStrictEqual([group('g1')])
      })

      test('conversationCountCreatedSince counts the groups a user created at or after a time', async () => {
        await store.conversationCreate(group('g1', { createdAt: T0 }), [])
        await store.conversationCreate(group('g2', { createdAt: T0 + 10 }), [])
        await store.conversationCreate(group('g3', { createdAt: T0 + 20 }), [])
        await store.conversationCreate(group('g4', { createdAt: T0 + 20, createdBy: 'bob' }), [])
        await store.conversationCreate(direct('d1', 'alice', 'carol'), []) // created by alice at T0 + 2: not a group

        expect(await store.conversationCountCreatedSince('alice', 0)).toBe(3)
        expect(await store.conversationCountCreatedSince('alice', T0)).toBe(3)
        expect(await store.conversationCountCreatedSince('alice', T0 + 1)).toBe(2)
        expect(await store.conversationCountCreatedSince('alice', T0 + 10)).toBe(2)
        expect(await store.conversationCountCreatedSince('alice', T0 + 20)).toBe(1)
        expect(await store.conversationCountCreatedSince('alice', T0 + 21)).toBe(0)
        expect(await store.conversationCountCreatedSince('bob', 0)).toBe(1)
        expect(await store.conversationCountCreatedSince('Alice', 0)).toBe(0)
        expect(await store.conversationCountCreatedSince('nobody', 0)).toBe(0)
      })
    })

    describe('channels', () => {
      function channel (id: string, settings: ConversationRecord['channel'] = { public: true, postPolicy: 'members' }): ConversationRecord {
        return { id, kind: 'channel', name: `Channel ${id}`, directKey: null, createdBy: 'alice', createdAt: T0 + 4, channel: settings }
      }

      test('a channel round-trips its kind and settings, alone and in batches, as copies', async () => {
        await store.conversationCreate(channel('c1'), [member('c1', 'alice', { role: 'owner' })])
        await store.conversationCreate(channel('c2', { public: false, postPolicy: 'admins' }), [])
        expect(await store.conversationGet('c1')).toStrictEqual(channel('c1'))
        expect(await store.conversationGet('c2')).toStrictEqual(channel('c2', { public: false, postPolicy: 'admins' }))
        const many = await store.conversationGetMany(['c2', 'c1'])
        expect(many.sort((a, b) => byteOrder(a.id, b.id))).toStrictEqual([channel('c1'), channel('c2', { public: false, postPolicy: 'admins' })])
        const got = await store.conversationGet('c1')
        if (got?.channel !== undefined) got.channel.public = false
        expect(await store.conversationGet('c1')).toStrictEqual(channel('c1'))
        // groups have no settings
        await store.conversationCreate(group('g1'), [])
        expect((await store.conversationGet('g1'))?.channel).toBeUndefined()
      })

      test('channels count in conversationCountCreatedSince like groups', async () => {
        await store.conversationCreate(channel('c1'), [])
        await store.conversationCreate(group('g1'), [])
        expect(await store.conversationCountCreatedSince('alice', 0)).toBe(2)
      })

      test('memberPage pages by user id in byte order, each member once, whole records', async () => {
        const ids = ['b', 'B', 'a', '_x', '0', 'a-b', 'zz', 'A']
        await store.conversationCreate(channel('c1'), ids.map((u, i) => member('c1', u, { readSeq: i })))
        await store.conversationCreate(channel('c2'), [member('c2', 'other')])
        const seen: MemberRecord[] = []
        let after: string | null = null
        for (;;) {
          const page: MemberRecord[] = await store.memberPage('c1', { after, limit: 3 })
          seen.push(...page)
          if (page.length < 3) break
          after = page[page.length - 1]?.userId ?? null
        }
        expect(seen.map(m => m.userId)).toStrictEqual([...ids].sort(byteOrder))
        expect(seen.find(m => m.userId === 'zz')).toStrictEqual(member('c1', 'zz', { readSeq: 6 }))
        expect(await store.memberPage('c1', { after: 'zz', limit: 10 })).toStrictEqual([])
        expect(await store.memberPage('c1', { after: 'a', limit: 1 })).toStrictEqual([member('c1', 'a-b', { readSeq: 5 })])
        expect(await store.memberPage('nope', { after: null, limit: 10 })).toStrictEqual([])
        expect(await store.memberPage('c1', { after: null, limit: 0 })).toStrictEqual([])
        expect(await store.memberPage('c1', { after: null, limit: -5 })).toStrictEqual([])
        await expect(store.memberPage('c1', { after: null, limit: 1.5 })).rejects.toThrow(RangeError)
        await expect(store.memberPage('c1', { after: null, limit: Number.NaN })).rejects.toThrow(RangeError)
        // a copy: changing it changes nothing stored
        const [first] = await store.memberPage('c1', { after: null, limit: 1 })
        if (first !== undefined) first.role = 'owner'
        expect((await store.memberPage('c1', { after: null, limit: 1 }))[0]?.role).toBe('member')
      })
    })

    describe('batched member reads', () => {
      beforeEach(async () => {
        await store.conversationCreate(group('g1'), [member('g1', 'bob'), member('g1', 'alice', { role: 'owner', readSeq: 4 })])
        await store.conversationCreate(group('g2'), [member('g2', 'carol', { muted: true })])
        await store.conversationCreate(group('empty'), [])
      })

      test('memberListMany lists the members of each conversation that has any', async () => {
        const lists = await store.memberListMany(['g2', 'g1', 'empty', 'nope', 'g1'])
        expect(entries(lists).map(([id, members]) => [id, byUserId(members)])).toStrictEqual([
          ['g1', [member('g1', 'alice', { role: 'owner', readSeq: 4 }), member('g1', 'bob')]],
          ['g2', [member('g2', 'carol', { muted: true })]]
        ])
        expect(await store.memberListMany([])).toStrictEqual(new Map())
        expect(await store.memberListMany(['empty', 'nope'])).toStrictEqual(new Map())
      })

      test('memberCountMany counts the members of each conversation that has any', async () => {
        expect(entries(await store.memberCountMany(['g2', 'g1', 'empty', 'nope', 'g2']))).toStrictEqual([['g1', 2], ['g2', 1]])
        expect(await store.memberCountMany([])).toStrictEqual(new Map())
        expect(await store.memberCountMany(['empty'])).toStrictEqual(new Map())
        await store.memberRemove('g2', 'carol')
        expect(await store.memberCountMany(['g2'])).toStrictEqual(new Map())
      })

      test('memberListMany and memberCountMany answer 2,500+ ids, known ones repeated across chunks', async () => {
        const ids = manyIds(2700, [[0, 'g1'], [999, 'g2'], [1000, 'g1'], [1999, 'g2'], [2000, 'empty'], [2699, 'g1']])
        const lists = await store.memberListMany(ids)
        expect([...lists.keys()].sort()).toStrictEqual(['g1', 'g2'])
        expect(lists.get('g1')?.map((m) => m.userId).sort()).toStrictEqual(['alice', 'bob'])
        expect(lists.get('g2')).toStrictEqual([member('g2', 'carol', { muted: true })])
        expect(entries(await store.memberCountMany(ids))).toStrictEqual([['g1', 2], ['g2', 1]])
      })

      test('memberListMany returns copies', async () => {
        const lists = await store.memberListMany(['g2'])
        const carol = lists.get('g2')?.[0]
        if (carol === undefined) throw new Error('carol missing')
        carol.role = 'owner'
        expect(await store.memberGet('g2', 'carol')).toStrictEqual(member('g2', 'carol', { muted: true }))
      })
    })

    describe('ownership changes are all or nothing', () => {
      const owner = member('g1', 'alice', { role: 'owner', readSeq: 4 })
      const admin = member('g1', 'bob', { role: 'admin' })
      const plain = member('g1', 'carol')

      beforeEach(async () => {
        await store.conversationCreate(group('g1'), [owner, admin, plain])
        await store.conversationCreate(group('g2'), [member('g2', 'dave', { role: 'owner' })])
      })

      /** Asserts that g1 still has exactly its initial members. */
      async function unchanged (): Promise<void> {
        expect(byUserId(await store.memberList('g1'))).toStrictEqual([owner, admin, plain])
      }

      test('memberRemove with a successor removes the member and makes the successor the owner', async () => {
        expect(await store.memberRemove('g1', 'alice', 'carol')).toBe(true)
        expect(byUserId(await store.memberList('g1'))).toStrictEqual([admin, member('g1', 'carol', { role: 'owner' })])
        expect(await store.memberGet('g1', 'alice')).toBeNull()
        expect(await store.memberListByUser('alice')).toStrictEqual([])
        expect(await store.memberCountByUser('alice')).toBe(0)
      })

      test('memberRemove with a successor who is not a member returns false and changes nothing', async () => {
        expect(await store.memberRemove('g1', 'alice', 'mallory')).toBe(false)
        expect(await store.memberRemove('g1', 'alice', 'dave')).toBe(false) // a member of another conversation
        await unchanged()
        expect(await store.memberGet('g1', 'mallory')).toBeNull()
      })

      test('memberRemove with a successor, of a user who is not a member, returns false and changes nothing', async () => {
        expect(await store.memberRemove('g1', 'mallory', 'carol')).toBe(false)
        expect(await store.memberRemove('g1', 'dave', 'carol')).toBe(false)
        expect(await store.memberRemove('nope', 'alice', 'carol')).toBe(false)
        await unchanged()
        expect(await store.memberGet('g2', 'dave')).toStrictEqual(member('g2', 'dave', { role: 'owner' }))
      })

      test('memberRemove with the member as its own successor returns false and changes nothing', async () => {
        expect(await store.memberRemove('g1', 'alice', 'alice')).toBe(false)
        await unchanged()
      })

      test('concurrent owner leaves with different successors: exactly one happens', async () => {
        const outcomes = await Promise.all([
          store.memberRemove('g1', 'alice', 'bob'),
          store.memberRemove('g1', 'alice', 'carol')
        ])
        expect(outcomes.filter((ok) => ok)).toHaveLength(1)
        const roles = (await store.memberList('g1')).map((m) => m.role).sort()
        expect(roles).toStrictEqual(outcomes[0] ? ['member', 'owner'] : ['admin', 'owner'])
        expect(await store.memberGet('g1', 'alice')).toBeNull()
      })

      test('memberTransferOwnership makes `to` the owner and `from` an admin', async () => {
        expect(await store.memberTransferOwnership('g1', 'alice', 'carol')).toBe(true)
        expect(byUserId(await store.memberList('g1'))).toStrictEqual([
          member('g1', 'alice', { role: 'admin', readSeq: 4 }),
          admin,
          member('g1', 'carol', { role: 'owner' })
        ])
        expect(await store.memberTransferOwnership('g1', 'carol', 'bob')).toBe(true)
        expect((await store.memberList('g1')).map((m) => [m.userId, m.role]).sort()).toStrictEqual([
          ['alice', 'admin'], ['bob', 'owner'], ['carol', 'admin']
        ])
      })

      test('memberTransferOwnership returns false and changes nothing unless both are members and differ', async () => {
        expect(await store.memberTransferOwnership('g1', 'alice', 'mallory')).toBe(false)
        expect(await store.memberTransferOwnership('g1', 'alice', 'dave')).toBe(false)
        expect(await store.memberTransferOwnership('g1', 'mallory', 'carol')).toBe(false)
        expect(await store.memberTransferOwnership('g1', 'dave', 'carol')).toBe(false)
        expect(await store.memberTransferOwnership('g1', 'alice', 'alice')).toBe(false)
        expect(await store.memberTransferOwnership('g1', 'carol', 'carol')).toBe(false)
        expect(await store.memberTransferOwnership('nope', 'alice', 'carol')).toBe(false)
        await unchanged()
        expect(await store.memberGet('g2', 'dave')).toStrictEqual(member('g2', 'dave', { role: 'owner' }))
      })

      test('only the owner hands over: a non-owner `from` or leaver changes nothing', async () => {
        expect(await store.memberTransferOwnership('g1', 'bob', 'carol')).toBe(false)
        expect(await store.memberRemove('g1', 'bob', 'carol')).toBe(false)
        await unchanged()
      })

      test('two concurrent transfers by the same owner: one happens, never two owners', async () => {
        const outcomes = await Promise.all([
          store.memberTransferOwnership('g1', 'alice', 'bob'),
          store.memberTransferOwnership('g1', 'alice', 'carol')
        ])
        expect(outcomes.filter((ok) => ok)).toHaveLength(1)
        const owners = (await store.memberList('g1')).filter((m) => m.role === 'owner').map((m) => m.userId)
        expect(owners).toStrictEqual([outcomes[0] ? 'bob' : 'carol'])
      })

      test('memberTransferOwnership after the new owner left changes nothing', async () => {
        expect(await store.memberRemove('g1', 'carol')).toBe(true)
        expect(await store.memberTransferOwnership('g1', 'alice', 'carol')).toBe(false)
        expect(byUserId(await store.memberList('g1'))).toStrictEqual([owner, admin])
      })
    })

    describe('memberships by user', () => {
      // Ids that sort differently byte-wise (utf8mb4_bin) and locale-wise: 'B' < 'a', '-' < '0',
      // '_' between 'Z' and 'a'; and the longest valid id.
      const ids = ['a', 'B', 'b', 'Z', '_', '-', '0', '9', 'A', 'aB', 'ab', 'a-b', 'a_b', 'zz', 'Z'.repeat(40), 'a0']
      const ordered = [...ids].sort(byteOrder)

      beforeEach(async () => {
        for (const [i, id] of ids.entries()) {
          await store.conversationCreate(group(id), [member(id, 'alice', { readSeq: i }), ...(i % 3 === 0 ? [member(id, 'bob')] : [])])
        }
      })

      test('the expected order is byte order, not locale order', () => {
        expect(ordered.indexOf('B')).toBeLessThan(ordered.indexOf('a'))
        expect(ordered.indexOf('-')).toBeLessThan(ordered.indexOf('0'))
        expect(ordered.indexOf('Z' + 'Z'.repeat(39))).toBeLessThan(ordered.indexOf('_'))
        expect(ordered.indexOf('_')).toBeLessThan(ordered.indexOf('a'))
        expect(ordered).not.toStrictEqual([...ids].sort((x, y) => x.localeCompare(y)))
      })

      test('memberPageByUser pages by conversation id in byte order, one at a time', async () => {
        const seen: MemberRecord[] = []
        let after: string | null = null
        for (;;) {
          const page: MemberRecord[] = await store.memberPageByUser('alice', { after, limit: 1 })
          const [first] = page
          if (first === undefined) break
          expect(page).toHaveLength(1)
          seen.push(...page)
          after = first.conversationId
        }
        expect(seen.map((m) => m.conversationId)).toStrictEqual(ordered)
        expect(seen).toStrictEqual(ordered.map((id) => member(id, 'alice', { readSeq: ids.indexOf(id) })))
      })

      test('memberPageByUser with larger pages covers everything once', async () => {
        for (const limit of [3, 5, ids.length, ids.length + 1, 1000]) {
          const seen: string[] = []
          let after: string | null = null
          for (;;) {
            const page: MemberRecord[] = await store.memberPageByUser('alice', { after, limit })
            expect(page.length).toBeLessThanOrEqual(limit)
            seen.push(...page.map((m) => m.conversationId))
            const last = page.at(-1)
            if (page.length < limit || last === undefined) break
            after = last.conversationId
          }
          expect(seen).toStrictEqual(ordered)
        }
      })

      test('memberPageByUser edge cases: after the last id, after an id that is no membership, limit 0', async () => {
        expect(await store.memberPageByUser('alice', { after: ordered.at(-1) ?? null, limit: 10 })).toStrictEqual([])
        expect((await store.memberPageByUser('alice', { after: ordered.at(-2) ?? null, limit: 10 })).map((m) => m.conversationId))
          .toStrictEqual([ordered[ordered.length - 1]])
        // 'AA' is no conversation: the page starts at the next id in byte order.
        expect((await store.memberPageByUser('alice', { after: 'AA', limit: 2 })).map((m) => m.conversationId))
          .toStrictEqual(ordered.filter((id) => byteOrder(id, 'AA') > 0).slice(0, 2))
        expect((await store.memberPageByUser('alice', { after: 'C', limit: 1 }))[0]?.conversationId).toBe('Z')
        expect((await store.memberPageByUser('alice', { after: '', limit: 1 }))[0]?.conversationId).toBe(ordered[0])
        expect(await store.memberPageByUser('alice', { after: null, limit: 0 })).toStrictEqual([])
        expect(await store.memberPageByUser('nobody', { after: null, limit: 10 })).toStrictEqual([])
        await expect(store.memberPageByUser('alice', { after: null, limit: 1.5 })).rejects.toThrow(RangeError)
      })

      test('memberPageByUser keeps byte order beyond ASCII too (ids the protocol never makes)', async () => {
        // UTF-16 code-unit order would put U+FFFD after the emoji (a surrogate pair); bytes do not.
        const unusual = ['\uFFFD', '😀', 'é', 'z~', 'Ω']
        for (const id of unusual) await store.conversationCreate(group(id), [member(id, 'zed')])
        const page = await store.memberPageByUser('zed', { after: null, limit: 10 })
        expect(page.map((m) => m.conversationId)).toStrictEqual([...unusual].sort(byteOrder))
        expect((await store.memberPageByUser('zed', { after: 'é', limit: 10 })).map((m) => m.conversationId))
          .toStrictEqual(unusual.filter((id) => byteOrder(id, 'é') > 0).sort(byteOrder))
      })

      test('memberPageByUser lists only the user\'s own memberships', async () => {
        const bobs = ids.filter((_, i) => i % 3 === 0).sort(byteOrder)
        const page = await store.memberPageByUser('bob', { after: null, limit: 100 })
        expect(page).toStrictEqual(bobs.map((id) => member(id, 'bob')))
      })

      test('memberCountByUsers counts the memberships of several users at once', async () => {
        const counts = await store.memberCountByUsers(['alice', 'bob', 'nobody', 'alice', 'Alice'])
        expect(counts).toStrictEqual(new Map([['alice', ids.length], ['bob', ids.filter((_, i) => i % 3 === 0).length]]))
        expect(await store.memberCountByUsers([])).toStrictEqual(new Map())
        const many = Array.from({ length: 2500 }, (_, i) => `u${i}`)
        expect(await store.memberCountByUsers([...many, 'bob'])).toStrictEqual(new Map([['bob', ids.filter((_, i) => i % 3 === 0).length]]))
      })

      test('memberCountByUser counts memberships', async () => {
        expect(await store.memberCountByUser('alice')).toBe(ids.length)
        expect(await store.memberCountByUser('bob')).toBe(ids.filter((_, i) => i % 3 === 0).length)
        expect(await store.memberCountByUser('nobody')).toBe(0)
        expect(await store.memberCountByUser('Alice')).toBe(0)
        await store.memberRemove('a', 'alice')
        expect(await store.memberCountByUser('alice')).toBe(ids.length - 1)
      })
    })

    describe('memberContactOf', () => {
      beforeEach(async () => {
        await store.conversationCreate(group('g1'), [member('g1', 'alice', { role: 'owner' }), member('g1', 'bob'), member('g1', 'carol')])
        // dave opened a direct conversation with alice; alice opened one with erin
        await store.conversationCreate(direct('d1', 'dave', 'alice'), [member('d1', 'alice'), member('d1', 'dave')])
        await store.conversationCreate(direct('d2', 'alice', 'erin'), [member('d2', 'alice'), member('d2', 'erin')])
        await store.conversationCreate(group('g2'), [member('g2', 'bob'), member('g2', 'frank')])
        await store.conversationCreate(group('g3'), [member('g3', 'gina')])
      })

      test('returns those of the others who share a group with the user, or a direct conversation they opened', async () => {
        // bob: a group; dave: dave opened the direct one; erin: alice opened it, not erin
        expect(await store.memberContactOf('alice', ['bob', 'dave', 'erin', 'frank', 'gina', 'nobody', 'bob', 'Bob'])).toStrictEqual(new Set(['bob', 'dave']))
        // the other way round: alice opened d2, so erin is alice's contact; dave opened d1, so not
        expect(await store.memberContactOf('erin', ['alice'])).toStrictEqual(new Set(['alice']))
        expect(await store.memberContactOf('dave', ['alice'])).toStrictEqual(new Set())
        expect(await store.memberContactOf('frank', ['alice', 'bob'])).toStrictEqual(new Set(['bob']))
        expect(await store.memberContactOf('nobody', ['alice', 'bob'])).toStrictEqual(new Set())
      })

      test('returns nothing for no others', async () => {
        expect(await store.memberContactOf('alice', [])).toStrictEqual(new Set())
      })

      test('includes the user itself when asked and it is in a group', async () => {
        expect(await store.memberContactOf('alice', ['alice'])).toStrictEqual(new Set(['alice']))
        expect(await store.memberContactOf('nobody', ['nobody'])).toStrictEqual(new Set())
      })

      test('follows membership changes', async () => {
        await store.memberRemove('d1', 'dave')
        expect(await store.memberContactOf('alice', ['dave', 'bob'])).toStrictEqual(new Set(['bob']))
        await store.memberAdd([member('g1', 'frank')])
        expect(await store.memberContactOf('alice', ['frank'])).toStrictEqual(new Set(['frank']))
      })

      test('answers 2,500+ others, the contacts repeated across chunks', async () => {
        const others = manyIds(2600, [[0, 'bob'], [999, 'dave'], [1000, 'erin'], [1001, 'bob'], [2000, 'carol'], [2599, 'dave']])
        expect(await store.memberContactOf('alice', others)).toStrictEqual(new Set(['bob', 'carol', 'dave']))
      })
    })

    describe('push targets', () => {
      const web = (n: number): PushTarget => ({ kind: 'webpush', endpoint: `https://push.example/send/${n}`, p256dh: `key${n}`, auth: `auth${n}` })
      const gw = (token: string): PushTarget => ({ kind: 'gateway', gateway: 'app', token, platform: 'ios' })
      beforeEach(async () => {
        for (const id of ['alice', 'bob', 'carol']) await store.userCreate(user(id))
      })

      test('pushTargetPut adds a device, replaces its target, and pushTargetsOf reads several users in order', async () => {
        expect(await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('t1'), at: T0 }, 5)).toMatchObject({ outcome: 'added' })
        expect(await store.pushTargetPut({ userId: 'alice', device: 'browser', target: web(1), at: T0 + 1 }, 5)).toMatchObject({ outcome: 'added' })
        expect(await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('t2'), at: T0 + 2 }, 5)).toMatchObject({ outcome: 'replaced' })
        expect(await store.pushTargetPut({ userId: 'bob', device: 'Phone', target: web(2), at: T0 + 3 }, 5)).toMatchObject({ outcome: 'added' })
        expect(await store.pushTargetsOf(['bob', 'alice', 'nobody', 'alice'])).toStrictEqual([
          { userId: 'alice', device: 'browser', target: web(1), at: T0 + 1 },
          { userId: 'alice', device: 'phone', target: gw('t2'), at: T0 + 2 },
          { userId: 'bob', device: 'Phone', target: web(2), at: T0 + 3 }
        ])
        expect(await store.pushTargetsOf([])).toStrictEqual([])
        // the replaced token is free again: carol may register it
        expect(await store.pushTargetPut({ userId: 'carol', device: 'd', target: gw('t1'), at: T0 }, 5)).toMatchObject({ outcome: 'added' })
        expect((await store.pushTargetsOf(['alice'])).map(r => r.device)).toStrictEqual(['browser', 'phone'])
      })

      test('a target registered again elsewhere moves there: one device never gets two accounts\' pushes', async () => {
        expect(await store.pushTargetPut({ userId: 'alice', device: 'browser', target: web(1), at: T0 }, 5)).toStrictEqual({ outcome: 'added', moved: [] })
        expect(await store.pushTargetPut({ userId: 'bob', device: 'laptop', target: web(1), at: T0 + 1 }, 5)).toStrictEqual({ outcome: 'added', moved: [{ userId: 'alice', device: 'browser' }] })
        expect(await store.pushTargetsOf(['alice'])).toStrictEqual([])
        expect(await store.pushTargetsOf(['bob'])).toStrictEqual([{ userId: 'bob', device: 'laptop', target: web(1), at: T0 + 1 }])
        // and to another device of the same user
        expect(await store.pushTargetPut({ userId: 'bob', device: 'other', target: web(1), at: T0 + 2 }, 5)).toStrictEqual({ outcome: 'added', moved: [{ userId: 'bob', device: 'laptop' }] })
        expect((await store.pushTargetsOf(['bob'])).map(r => r.device)).toStrictEqual(['other'])
        // the same token at another gateway is another target
        await store.pushTargetPut({ userId: 'alice', device: 'p', target: gw('x'), at: T0 }, 5)
        await store.pushTargetPut({ userId: 'bob', device: 'p', target: { ...gw('x'), gateway: 'other-app' } as PushTarget, at: T0 }, 5)
        expect(await store.pushTargetsOf(['alice'])).toHaveLength(1)
      })

      test('pushTargetRemove: the device, or only while it holds the given target', async () => {
        await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('old'), at: T0 }, 5)
        await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('new'), at: T0 + 1 }, 5)
        expect(await store.pushTargetRemove('alice', 'phone', gw('old'))).toBe(false)
        expect(await store.pushTargetsOf(['alice'])).toHaveLength(1)
        expect(await store.pushTargetRemove('alice', 'phone', gw('new'))).toBe(true)
        expect(await store.pushTargetsOf(['alice'])).toStrictEqual([])
        await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('old'), at: T0 }, 5)
        expect(await store.pushTargetRemove('alice', 'phone')).toBe(true)
        expect(await store.pushTargetRemove('alice', 'phone')).toBe(false)
        expect(await store.pushTargetRemove('bob', 'phone')).toBe(false)
        // a removed target may be registered again, by anyone
        expect(await store.pushTargetPut({ userId: 'bob', device: 'phone', target: gw('old'), at: T0 }, 5)).toMatchObject({ outcome: 'added' })
      })

      test('pushTargetPut refuses a new device past max ("full"), concurrent calls included; replacing at the bound works', async () => {
        const outcomes = await Promise.all(Array.from({ length: 8 }, async (_, i) => await store.pushTargetPut({ userId: 'alice', device: `d${i}`, target: web(i), at: T0 }, 3)))
        expect(outcomes.filter(o => o.outcome === 'added')).toHaveLength(3)
        expect(outcomes.filter(o => o.outcome === 'full')).toHaveLength(5)
        const held = await store.pushTargetsOf(['alice'])
        expect(held).toHaveLength(3)
        const first = held[0]
        if (first === undefined) throw new Error('no target')
        expect(await store.pushTargetPut({ userId: 'alice', device: first.device, target: web(99), at: T0 }, 3)).toMatchObject({ outcome: 'replaced' })
        // a full user's target still moves away when someone else registers it
        await store.pushTargetPut({ userId: 'bob', device: 'b', target: web(99), at: T0 }, 3)
        expect(await store.pushTargetsOf(['alice'])).toHaveLength(2)
      })

      test('returned records are copies', async () => {
        await store.pushTargetPut({ userId: 'alice', device: 'phone', target: gw('t'), at: T0 }, 5)
        const [got] = await store.pushTargetsOf(['alice'])
        if (got === undefined || got.target.kind !== 'gateway') throw new Error('no target')
        got.target.token = 'changed'
        expect(await store.pushTargetsOf(['alice'])).toStrictEqual([{ userId: 'alice', device: 'phone', target: gw('t'), at: T0 }])
      })
    })

    describe('blocks', () => {
      beforeEach(async () => {
        for (const id of ['alice', 'bob', 'carol', 'dave']) await store.userCreate(user(id))
      })

      test('blockAdd adds once: again it is "exists" and keeps the first time', async () => {
        expect(await store.blockAdd('alice', 'bob', T0 + 10, 5)).toBe('added')
        expect(await store.blockAdd('alice', 'bob', T0 + 20, 5)).toBe('exists')
        expect(await store.blockList('alice')).toStrictEqual([{ blockedId: 'bob', at: T0 + 10 }])
        // one way only: bob blocks nobody
        expect(await store.blockList('bob')).toStrictEqual([])
      })

      test('blockList is oldest first, the same time by id in byte order; ids are exact', async () => {
        await store.blockAdd('alice', 'dave', T0 + 30, 10)
        await store.blockAdd('alice', 'carol', T0 + 10, 10)
        await store.blockAdd('alice', 'bob', T0 + 30, 10)
        await store.blockAdd('alice', 'Bob', T0 + 30, 10)
        expect(await store.blockList('alice')).toStrictEqual([
          { blockedId: 'carol', at: T0 + 10 },
          { blockedId: 'Bob', at: T0 + 30 },
          { blockedId: 'bob', at: T0 + 30 },
          { blockedId: 'dave', at: T0 + 30 }
        ])
        expect(await store.blockList('Alice')).toStrictEqual([])
        expect(await store.blockList('nobody')).toStrictEqual([])
      })

      test('blockRemove removes that pair only; false when it was not there', async () => {
        await store.blockAdd('alice', 'bob', T0, 5)
        await store.blockAdd('alice', 'carol', T0, 5)
        await store.blockAdd('bob', 'alice', T0, 5)
        expect(await store.blockRemove('alice', 'bob')).toBe(true)
        expect(await store.blockRemove('alice', 'bob')).toBe(false)
        expect(await store.blockRemove('carol', 'alice')).toBe(false)
        expect(await store.blockList('alice')).toStrictEqual([{ blockedId: 'carol', at: T0 }])
        expect(await store.blockList('bob')).toStrictEqual([{ blockedId: 'alice', at: T0 }])
        // removed, then added again: the new time
        expect(await store.blockAdd('alice', 'bob', T0 + 5, 5)).toBe('added')
        expect(await store.blockList('alice')).toStrictEqual([{ blockedId: 'carol', at: T0 }, { blockedId: 'bob', at: T0 + 5 }])
      })

      test('blockAdd refuses past max ("full", nothing added), but answers "exists" at the bound', async () => {
        expect(await store.blockAdd('alice', 'bob', T0, 2)).toBe('added')
        expect(await store.blockAdd('alice', 'carol', T0, 2)).toBe('added')
        expect(await store.blockAdd('alice', 'dave', T0, 2)).toBe('full')
        expect(await store.blockAdd('alice', 'bob', T0, 2)).toBe('exists')
        expect((await store.blockList('alice')).map(b => b.blockedId)).toStrictEqual(['bob', 'carol'])
        // the bound is per user
        expect(await store.blockAdd('bob', 'dave', T0, 2)).toBe('added')
        await store.blockRemove('alice', 'carol')
        expect(await store.blockAdd('alice', 'dave', T0, 2)).toBe('added')
      })

      test('concurrent blockAdds of one user never pass max', async () => {
        const targets = Array.from({ length: 12 }, (_, i) => `t${i}`)
        const outcomes = await Promise.all(targets.map(async (t) => await store.blockAdd('alice', t, T0, 5)))
        expect(outcomes.filter(o => o === 'added')).toHaveLength(5)
        expect(outcomes.filter(o => o === 'full')).toHaveLength(7)
        expect(await store.blockList('alice')).toHaveLength(5)
      })

      test('blockersAmong: of the others, those who block the user (duplicates, unknown ids, 2,500+)', async () => {
        await store.blockAdd('bob', 'alice', T0, 5)
        await store.blockAdd('carol', 'alice', T0, 5)
        await store.blockAdd('alice', 'dave', T0, 5) // the other way: not a blocker of alice
        await store.blockAdd('dave', 'bob', T0, 5)
        expect(await store.blockersAmong('alice', ['bob', 'dave', 'nobody', 'bob', 'Bob'])).toStrictEqual(new Set(['bob']))
        expect(await store.blockersAmong('alice', [])).toStrictEqual(new Set())
        expect(await store.blockersAmong('dave', ['alice', 'bob'])).toStrictEqual(new Set(['alice']))
        expect(await store.blockersAmong('nobody', ['alice', 'bob'])).toStrictEqual(new Set())
        const others = manyIds(2600, [[0, 'carol'], [999, 'bob'], [1000, 'carol'], [2599, 'dave']])
        expect(await store.blockersAmong('alice', others)).toStrictEqual(new Set(['bob', 'carol']))
        await store.blockRemove('bob', 'alice')
        expect(await store.blockersAmong('alice', ['bob', 'carol'])).toStrictEqual(new Set(['carol']))
      })

      test('a returned list is a copy', async () => {
        await store.blockAdd('alice', 'bob', T0, 5)
        const list = await store.blockList('alice')
        if (list[0] === undefined) throw new Error('nothing listed')
        list[0].blockedId = 'mallory'
        list.push({ blockedId: 'carol', at: T0 })
        expect(await store.blockList('alice')).toStrictEqual([{ blockedId: 'bob', at: T0 }])
      })
    })

    describe('mentions', () => {
      beforeEach(async () => {
        for (const id of ['alice', 'bob', 'carol']) await store.userCreate(user(id))
        await store.conversationCreate(group('g1'), [member('g1', 'alice'), member('g1', 'bob'), member('g1', 'carol')])
        await store.conversationCreate(group('g2'), [member('g2', 'alice'), member('g2', 'bob')])
      })

      test('counts mentions by name and @all after the read cursor, not one\'s own, per conversation', async () => {
        await store.mentionAddMany([
          { conversationId: 'g1', userId: 'bob', seq: 2, senderId: 'alice' },
          { conversationId: 'g1', userId: 'bob', seq: 5, senderId: 'carol' },
          { conversationId: 'g1', userId: '@all', seq: 7, senderId: 'alice' },
          { conversationId: 'g1', userId: '@all', seq: 9, senderId: 'bob' }, // bob's own @all
          { conversationId: 'g2', userId: 'bob', seq: 1, senderId: 'alice' },
          { conversationId: 'g1', userId: 'carol', seq: 3, senderId: 'alice' }
        ])
        expect(entries(await store.mentionCountMany('bob', ['g1', 'g2', 'nope']))).toStrictEqual([['g1', 3], ['g2', 1]])
        expect(entries(await store.mentionCountMany('carol', ['g1', 'g2']))).toStrictEqual([['g1', 3]])
        expect(entries(await store.mentionCountMany('alice', ['g1', 'g2']))).toStrictEqual([['g1', 1]])
        // reading moves the cursor past them
        await store.memberAdvanceRead('g1', 'bob', 5)
        expect(entries(await store.mentionCountMany('bob', ['g1']))).toStrictEqual([['g1', 1]])
        await store.memberAdvanceRead('g1', 'bob', 9)
        expect(entries(await store.mentionCountMany('bob', ['g1']))).toStrictEqual([])
        // a non-member, an unknown user: nothing
        expect(entries(await store.mentionCountMany('dave', ['g1']))).toStrictEqual([])
        expect(entries(await store.mentionCountMany('carol', []))).toStrictEqual([])
      })

      test('the same mention stored twice counts once; ids are exact', async () => {
        const m = { conversationId: 'g1', userId: 'bob', seq: 4, senderId: 'alice' }
        await store.mentionAddMany([m, m])
        await store.mentionAddMany([m])
        await store.mentionAddMany([])
        expect(entries(await store.mentionCountMany('bob', ['g1']))).toStrictEqual([['g1', 1]])
        expect(entries(await store.mentionCountMany('Bob', ['g1']))).toStrictEqual([])
        expect(entries(await store.mentionCountMany('bob', ['G1']))).toStrictEqual([])
      })
    })

    describe('invites', () => {
      const NOW = T0 + 10_000
      /** A code hash: the SHA-256 of `code`, as the server makes them. */
      const hashOf = (code: string): string => createHash('sha256').update(code).digest('hex')
      function invite (code: string, overrides: Partial<InviteRecord> = {}): InviteRecord {
        return { codeHash: hashOf(code), conversationId: 'c1', createdBy: 'alice', createdAt: NOW, expiresAt: NOW + 60_000, maxUses: null, uses: 0, ...overrides }
      }
      function channel (id: string): ConversationRecord {
        return { id, kind: 'channel', name: `Channel ${id}`, directKey: null, createdBy: 'alice', createdAt: T0, channel: { public: false, postPolicy: 'admins' } }
      }
      beforeEach(async () => {
        await store.conversationCreate(channel('c1'), [member('c1', 'alice', { role: 'owner' })])
        await store.conversationCreate(channel('c2'), [member('c2', 'alice', { role: 'owner' })])
      })

      test('an invite round-trips every field, by its hash and in its conversation\'s list, as copies', async () => {
        const one = invite('one', { maxUses: 5, createdBy: 'bob', expiresAt: NOW + 1 })
        expect(await store.inviteCreate(one, 10, NOW)).toBe('added')
        expect(await store.inviteGet(one.codeHash)).toStrictEqual(one)
        expect(await store.inviteList('c1', NOW)).toStrictEqual([one])
        expect(await store.inviteGet(hashOf('other'))).toBeNull()
        expect(await store.inviteList('c2', NOW)).toStrictEqual([])
        expect(await store.inviteList('nope', NOW)).toStrictEqual([])
        const got = await store.inviteGet(one.codeHash)
        if (got !== null) got.uses = 3
        one.maxUses = 1
        expect(await store.inviteGet(hashOf('one'))).toStrictEqual(invite('one', { maxUses: 5, createdBy: 'bob', expiresAt: NOW + 1 }))
      })

      test('the list holds live invites only, oldest first', async () => {
        await store.inviteCreate(invite('late', { createdAt: NOW + 2 }), 10, NOW)
        await store.inviteCreate(invite('early', { createdAt: NOW - 5 }), 10, NOW)
        await store.inviteCreate(invite('expiring', { expiresAt: NOW + 100 }), 10, NOW)
        await store.inviteCreate(invite('once', { maxUses: 1 }), 10, NOW)
        await store.inviteCreate(invite('elsewhere', { conversationId: 'c2' }), 10, NOW)
        expect(await store.inviteUse(hashOf('once'), NOW)).toBe(true)
        expect((await store.inviteList('c1', NOW)).map(i => i.codeHash)).toStrictEqual([hashOf('early'), hashOf('expiring'), hashOf('late')])
        // expiresAt is the first moment it no longer admits
        expect((await store.inviteList('c1', NOW + 100)).map(i => i.codeHash)).toStrictEqual([hashOf('early'), hashOf('late')])
        // used up and expired ones are still stored (until the next inviteCreate of their conversation)
        expect(await store.inviteGet(hashOf('once'))).toStrictEqual(invite('once', { maxUses: 1, uses: 1 }))
      })

      test('inviteCreate keeps at most max live invites per conversation, removing the dead ones first', async () => {
        expect(await store.inviteCreate(invite('a'), 2, NOW)).toBe('added')
        expect(await store.inviteCreate(invite('b', { expiresAt: NOW + 10 }), 2, NOW)).toBe('added')
        expect(await store.inviteCreate(invite('c'), 2, NOW)).toBe('full')
        expect(await store.inviteGet(hashOf('c'))).toBeNull()
        // another conversation has its own bound
        expect(await store.inviteCreate(invite('d', { conversationId: 'c2' }), 2, NOW)).toBe('added')
        // once b has expired it no longer counts, and it is removed
        expect(await store.inviteCreate(invite('c'), 2, NOW + 10)).toBe('added')
        expect(await store.inviteGet(hashOf('b'))).toBeNull()
        // a used-up invite does not count either
        await store.inviteRemove('c1', inviteCodeId(hashOf('c')))
        await store.inviteCreate(invite('once', { maxUses: 1 }), 2, NOW)
        expect(await store.inviteUse(hashOf('once'), NOW)).toBe(true)
        expect(await store.inviteCreate(invite('e'), 2, NOW)).toBe('added')
        expect(await store.inviteGet(hashOf('once'))).toBeNull()
        expect((await store.inviteList('c1', NOW)).map(i => i.codeHash).sort()).toStrictEqual([hashOf('a'), hashOf('e')].sort())
      })

      test('concurrent inviteCreate calls of one conversation never pass the bound', async () => {
        const outcomes = await Promise.all(Array.from({ length: 8 }, async (_, i) => await store.inviteCreate(invite(`race-${i}`), 3, NOW)))
        expect(outcomes.filter(o => o === 'added')).toHaveLength(3)
        expect(await store.inviteList('c1', NOW)).toHaveLength(3)
      })

      test('the same code, or the same codeId in one conversation, is a conflict; in another conversation the codeId is free', async () => {
        await store.inviteCreate(invite('a'), 10, NOW)
        await expect(store.inviteCreate(invite('a', { conversationId: 'c2' }), 10, NOW)).rejects.toThrow(StoreConflictError)
        // another hash with the same first 8 hex digits
        const twin = invite('twin', { codeHash: hashOf('a').slice(0, 8) + 'f'.repeat(56) })
        await expect(store.inviteCreate(twin, 10, NOW)).rejects.toThrow(StoreConflictError)
        expect(await store.inviteCreate({ ...twin, conversationId: 'c2' }, 10, NOW)).toBe('added')
        expect(await store.inviteList('c1', NOW)).toStrictEqual([invite('a')])
      })

      test('inviteUse takes uses while the invite is live, then refuses; inviteRelease gives one back', async () => {
        await store.inviteCreate(invite('two', { maxUses: 2 }), 10, NOW)
        await store.inviteCreate(invite('open', { expiresAt: NOW + 50 }), 10, NOW)
        expect(await store.inviteUse(hashOf('two'), NOW)).toBe(true)
        expect(await store.inviteUse(hashOf('two'), NOW)).toBe(true)
        expect(await store.inviteUse(hashOf('two'), NOW)).toBe(false)
        expect((await store.inviteGet(hashOf('two')))?.uses).toBe(2)
        await store.inviteRelease(hashOf('two'))
        expect((await store.inviteGet(hashOf('two')))?.uses).toBe(1)
        expect(await store.inviteUse(hashOf('two'), NOW)).toBe(true)
        // no limit: until it expires
        for (let i = 0; i < 5; i++) expect(await store.inviteUse(hashOf('open'), NOW + 49)).toBe(true)
        expect(await store.inviteUse(hashOf('open'), NOW + 50)).toBe(false)
        expect((await store.inviteGet(hashOf('open')))?.uses).toBe(5)
        expect(await store.inviteUse(hashOf('nope'), NOW)).toBe(false)
        // never below zero; unknown hashes change nothing
        await store.inviteCreate(invite('fresh'), 10, NOW)
        await store.inviteRelease(hashOf('fresh'))
        await store.inviteRelease(hashOf('nope'))
        expect((await store.inviteGet(hashOf('fresh')))?.uses).toBe(0)
      })

      test('of concurrent inviteUse calls for the last use, exactly one gets it', async () => {
        await store.inviteCreate(invite('last', { maxUses: 3, uses: 2 }), 10, NOW)
        const got = await Promise.all(Array.from({ length: 10 }, async () => await store.inviteUse(hashOf('last'), NOW)))
        expect(got.filter(Boolean)).toHaveLength(1)
        expect((await store.inviteGet(hashOf('last')))?.uses).toBe(3)
      })

      test('inviteRemove revokes by codeId within the conversation; inviteRemoveByCreator removes one creator\'s', async () => {
        await store.inviteCreate(invite('a'), 10, NOW)
        await store.inviteCreate(invite('b', { createdBy: 'bob' }), 10, NOW)
        await store.inviteCreate(invite('c', { createdBy: 'bob' }), 10, NOW)
        await store.inviteCreate(invite('d', { createdBy: 'bob', conversationId: 'c2' }), 10, NOW)
        expect(await store.inviteRemove('c2', inviteCodeId(hashOf('a')))).toBe(false)
        expect(await store.inviteRemove('c1', inviteCodeId(hashOf('a')))).toBe(true)
        expect(await store.inviteRemove('c1', inviteCodeId(hashOf('a')))).toBe(false)
        expect(await store.inviteGet(hashOf('a'))).toBeNull()
        expect(await store.inviteUse(hashOf('a'), NOW)).toBe(false)
        expect(await store.inviteRemoveByCreator('c1', 'bob')).toBe(2)
        expect(await store.inviteRemoveByCreator('c1', 'bob')).toBe(0)
        expect(await store.inviteList('c1', NOW)).toStrictEqual([])
        expect(await store.inviteList('c2', NOW)).toStrictEqual([invite('d', { createdBy: 'bob', conversationId: 'c2' })])
      })
    })

    describe('removals', () => {
      test('marked per conversation and user, marked again with the new time, cleared for the users given', async () => {
        expect(await store.removalGet('c1', 'bob')).toBeNull()
        await store.removalMark('c1', 'bob', 1000)
        await store.removalMark('c1', 'carol', 1001)
        await store.removalMark('c2', 'bob', 1002)
        expect(await store.removalGet('c1', 'bob')).toBe(1000)
        await store.removalMark('c1', 'bob', 2000)
        expect(await store.removalGet('c1', 'bob')).toBe(2000)
        expect(await store.removalGet('c1', 'dave')).toBeNull()
        await store.removalClear('c1', ['bob', 'bob', 'dave'])
        expect(await store.removalGet('c1', 'bob')).toBeNull()
        expect(await store.removalGet('c1', 'carol')).toBe(1001)
        expect(await store.removalGet('c2', 'bob')).toBe(1002)
        await store.removalClear('c3', ['bob'])
        await store.removalClear('c2', [])
        expect(await store.removalGet('c2', 'bob')).toBe(1002)
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
        if (listed[0] === undefined) throw new Error('no users listed')
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
        const initial: [MemberRecord, ...MemberRecord[]] = [member('g1', 'alice', { role: 'owner' })]
        await store.conversationCreate(group('g1'), initial)
        initial[0].role = 'member'
        initial.push(member('g1', 'mallory'))
        const added: [MemberRecord] = [member('g1', 'bob')]
        await store.memberAdd(added)
        added[0].readSeq = 99

        const got = await store.memberGet('g1', 'alice')
        if (got === null) throw new Error('alice missing')
        got.readSeq = 50
        const list = await store.memberList('g1')
        if (list[0] === undefined || list[1] === undefined) throw new Error('members missing')
        list[0].muted = true
        list[1].role = 'owner'
        const mine = await store.memberListByUser('bob')
        if (mine[0] === undefined) throw new Error('bob has no membership')
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
