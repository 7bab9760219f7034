/**
 * The conversation directory with channels, on the in-memory metadata store with every store call
 * counted: a channel's member list is never read (not by get, not by getMany), memberships are
 * looked up and cached one (channel, user) at a time within a bound, and a membership read that
 * races an invalidation is not cached.
 */
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { ConversationRecord, MemberRecord } from '../../src/store/types.js'
import { ConversationDirectory } from '../../src/im/directory.js'
import type { ClusterBus } from '../../src/broker/bus.js'
import { counted } from '../helpers/counted-store.js'

const noBus = { on: () => {}, publish: () => {}, clustered: false } as unknown as ClusterBus

function channel (id: string): ConversationRecord {
  return { id, kind: 'channel', name: id, directKey: null, createdBy: 'u0', createdAt: 1, channel: { public: true, postPolicy: 'admins' } }
}
function member (conversationId: string, userId: string): MemberRecord {
  return { conversationId, userId, role: userId === 'u0' ? 'owner' : 'member', readSeq: 0, muted: false, joinedAt: 1 }
}

describe('ConversationDirectory with channels', () => {
  test('a channel entry holds no members, and no member list is read', async () => {
    const meta = new MemoryMetadataStore()
    await meta.conversationCreate(channel('c'), Array.from({ length: 1000 }, (_, i) => member('c', `u${i}`)))
    const { store, calls } = counted(meta, 'memberGet')
    const directory = new ConversationDirectory(store, noBus, 100, 100)
    const entry = await directory.get('c')
    expect(entry?.conversation.kind).toBe('channel')
    expect(entry?.members.size).toBe(0)
    expect(entry?.memberIds).toEqual([])
    directory.invalidateLocal('c')
    expect([...(await directory.getMany(['c'])).values()].map(e => e.members.size)).toEqual([0])
    expect(calls.get('memberList') ?? 0).toBe(0)
    expect((await directory.member('c', 'u5'))?.member.role).toBe('member')
    expect((await directory.member('c', 'u0'))?.member.role).toBe('owner')
    expect(await directory.member('c', 'stranger')).toBeNull()
  })

  test('memberships are cached one at a time within the bound, non-members too', async () => {
    const meta = new MemoryMetadataStore()
    await meta.conversationCreate(channel('c'), Array.from({ length: 500 }, (_, i) => member('c', `u${i}`)))
    const { store, calls } = counted(meta, 'memberGet')
    const directory = new ConversationDirectory(store, noBus, 100, 100)
    expect((await directory.channelMember('c', 'u1'))?.userId).toBe('u1')
    expect(await directory.channelMember('c', 'nobody')).toBeNull()
    expect(await directory.channelMember('c', 'u1')).not.toBeNull()
    expect(await directory.channelMember('c', 'nobody')).toBeNull()
    expect(calls.get('memberGet')).toBe(2)
    expect(directory.peekChannelMember('c', 'u1')?.userId).toBe('u1')
    expect(directory.peekChannelMember('c', 'nobody')).toBeNull()
    // 300 more users: the cache keeps at most 100, the least recently used go first
    for (let i = 100; i < 400; i++) await directory.channelMember('c', `u${i}`)
    expect(directory.peekChannelMember('c', 'u1')).toBeUndefined()
    expect(directory.peekChannelMember('c', 'u399')?.userId).toBe('u399')
    let cached = 0
    for (let i = 0; i < 500; i++) if (directory.peekChannelMember('c', `u${i}`) !== undefined) cached++
    expect(cached).toBe(100)
    // an invalidated membership is read again
    await meta.memberRemove('c', 'u399')
    directory.invalidateMembers('c', ['u399'])
    expect(await directory.channelMember('c', 'u399')).toBeNull()
  })

  test('a membership read that races an invalidation returns what it read but does not cache it', async () => {
    const meta = new MemoryMetadataStore()
    await meta.conversationCreate(channel('c'), [member('c', 'u0'), member('c', 'u1')])
    const { store, calls, hold } = counted(meta, 'memberGet')
    const directory = new ConversationDirectory(store, noBus, 100, 100)
    await directory.get('c')
    let release: () => void = () => {}
    hold.memberGet = new Promise(resolve => { release = resolve })
    const mark = directory.mark()
    const loading = directory.channelMember('c', 'u1')
    while (calls.get('memberGet') !== 1) await new Promise(resolve => setImmediate(resolve))
    await meta.memberRemove('c', 'u1')
    directory.invalidateMembersLocal('c', ['u1'])
    hold.memberGet = null
    release()
    expect((await loading)?.userId).toBe('u1')
    expect(directory.channelMemberChangedSince('c', 'u1', mark)).toBe(true)
    expect(directory.channelMemberChangedSince('c', 'u0', mark)).toBe(false)
    expect(directory.peekChannelMember('c', 'u1')).toBeUndefined()
    expect(await directory.channelMember('c', 'u1')).toBeNull()
  })
})
