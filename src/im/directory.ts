/**
 * Conversation directory: a read-through cache of conversations and their members, so that
 * authorizing a send and fanning it out cost no metadata round trip. The least recently used
 * conversations are evicted first. Every membership change made through this process invalidates
 * the entry here and, over the cluster bus, on every other node.
 *
 * A load that races an invalidation must not store what it read before the change: every
 * invalidation takes a number from a counter, and a load stores its result only if no
 * invalidation of that conversation (or, after eviction of the record, possibly of it) came
 * after the load started.
 *
 * Channels (kind 'channel', up to channels.membersMax members) are cached without their members:
 * their entries hold the conversation only, and memberships are looked up one (channel, user) at
 * a time through a separate LRU of channels.membershipCacheMax entries (what a subscribe check or
 * a request needs), invalidated per user when the membership changes.
 */
import { LRUCache } from 'lru-cache'
import { lruCache } from '../lru.js'
import type { ConversationRecord, MemberRecord, MetadataStore } from '../store/types.js'
import type { ClusterBus } from '../broker/bus.js'
import { INVALIDATE_TOPIC } from '../protocol/topics.js'

export interface ConversationEntry {
  conversation: ConversationRecord
  /** Every member; empty for a channel (see ConversationDirectory.member). */
  members: ReadonlyMap<string, MemberRecord>
  /** The members' ids (every message is published to each of them); empty for a channel. */
  memberIds: readonly string[]
}

/** A (channel, user) key of the membership cache. */
function memberKey (conversationId: string, userId: string): string {
  // flat (join), not a tree of string objects kept by the cache (see Sequencer's keyOf)
  return [conversationId, userId].join('\u0000')
}

export class ConversationDirectory {
  private readonly entries: LRUCache<string, ConversationEntry>
  private readonly loading = new Map<string, Promise<ConversationEntry | null>>()
  /** conversation -> number of its last invalidation */
  private readonly invalidatedAt: LRUCache<string, number>
  private clock = 0
  /** The highest invalidation number forgotten by invalidatedAt (evicted). */
  private forgottenUpTo = 0

  /** channel + user -> the membership, or null for "not a member" (channels only). */
  private readonly memberships: LRUCache<string, MemberRecord | false>
  private readonly loadingMembers = new Map<string, Promise<MemberRecord | null>>()

  constructor (private readonly meta: MetadataStore, private readonly bus: ClusterBus, maxEntries = 50_000, maxMemberships = 200_000) {
    this.entries = lruCache(maxEntries)
    this.memberships = lruCache(maxMemberships)
    this.invalidatedAt = lruCache(maxEntries * 2 + maxMemberships, {
      // only a record evicted for room is forgotten (an overwrite keeps a newer number)
      dispose: (n, _conv, reason) => { if (reason === 'evict') this.forgottenUpTo = Math.max(this.forgottenUpTo, n) }
    })
    bus.on(INVALIDATE_TOPIC, (notice) => {
      if (typeof notice.conv !== 'string') return
      if (Array.isArray(notice.users)) this.invalidateMembersLocal(notice.conv, notice.users.filter((u): u is string => typeof u === 'string'))
      else this.invalidateLocal(notice.conv)
    })
  }

  /** Cached entry without I/O (undefined if not loaded). */
  peek (conversationId: string): ConversationEntry | undefined {
    return this.entries.get(conversationId)
  }

  async get (conversationId: string): Promise<ConversationEntry | null> {
    const hit = this.entries.get(conversationId)
    if (hit !== undefined) return hit
    const inFlight = this.loading.get(conversationId)
    if (inFlight !== undefined) return await inFlight
    const started = this.clock
    const load = (async () => {
      const conversation = await this.meta.conversationGet(conversationId)
      if (conversation === null) return null
      const entry = toEntry(conversation, conversation.kind === 'channel' ? [] : await this.meta.memberList(conversationId))
      if (!this.changedSince(conversationId, started)) this.entries.set(conversationId, entry)
      return entry
    })()
    this.loading.set(conversationId, load)
    try {
      return await load
    } finally {
      if (this.loading.get(conversationId) === load) this.loading.delete(conversationId)
    }
  }

  /**
   * Entries of several conversations; the missing ones are loaded together (two store round
   * trips in all). Unknown conversations are absent from the result.
   */
  async getMany (conversationIds: readonly string[]): Promise<Map<string, ConversationEntry>> {
    const out = new Map<string, ConversationEntry>()
    const missing: string[] = []
    for (const id of new Set(conversationIds)) {
      const hit = this.entries.get(id)
      if (hit !== undefined) out.set(id, hit)
      else missing.push(id)
    }
    if (missing.length === 0) return out
    const started = this.clock
    const [conversations, members] = await Promise.all([this.meta.conversationGetMany(missing), this.meta.memberListMany(missing)])
    for (const c of conversations) {
      const entry = toEntry(c, members.get(c.id) ?? [])
      if (!this.changedSince(c.id, started)) this.entries.set(c.id, entry)
      out.set(c.id, entry)
    }
    return out
  }

  /** The member record if `userId` is a member, else null (also for unknown conversations). */
  async member (conversationId: string, userId: string): Promise<{ entry: ConversationEntry, member: MemberRecord } | null> {
    const entry = await this.get(conversationId)
    if (entry === null) return null
    const member = entry.conversation.kind === 'channel' ? await this.channelMember(conversationId, userId) : entry.members.get(userId)
    if (member === undefined || member === null) return null
    return { entry, member }
  }

  /** A channel membership without I/O: the record, null (not a member), or undefined (not cached). */
  peekChannelMember (conversationId: string, userId: string): MemberRecord | null | undefined {
    const hit = this.memberships.get(memberKey(conversationId, userId))
    return hit === false ? null : hit
  }

  /** The user's membership of a channel, or null (one store read per miss; cached either way). */
  async channelMember (conversationId: string, userId: string): Promise<MemberRecord | null> {
    const key = memberKey(conversationId, userId)
    const hit = this.memberships.get(key)
    if (hit !== undefined) return hit === false ? null : hit
    const inFlight = this.loadingMembers.get(key)
    if (inFlight !== undefined) return await inFlight
    const started = this.clock
    const load = (async () => {
      const member = await this.meta.memberGet(conversationId, userId)
      if (!this.changedSince(key, started)) this.memberships.set(key, member ?? false)
      return member
    })()
    this.loadingMembers.set(key, load)
    try {
      return await load
    } finally {
      if (this.loadingMembers.get(key) === load) this.loadingMembers.delete(key)
    }
  }

  /** The invalidation clock: a check started at this mark is stale if channelMemberChangedSince says so. */
  mark (): number {
    return this.clock
  }

  /** True if this (channel, user) membership was invalidated after `mark` (or may have been). */
  channelMemberChangedSince (conversationId: string, userId: string, mark: number): boolean {
    return this.changedSince(memberKey(conversationId, userId), mark)
  }

  /** After channel memberships changed: drop them here and on every node. */
  invalidateMembers (conversationId: string, userIds: readonly string[]): void {
    if (userIds.length === 0) return
    this.invalidateMembersLocal(conversationId, userIds)
    this.bus.publish(INVALIDATE_TOPIC, { conv: conversationId, users: userIds })
  }

  invalidateMembersLocal (conversationId: string, userIds: readonly string[]): void {
    for (const userId of userIds) {
      const key = memberKey(conversationId, userId)
      this.memberships.delete(key)
      this.loadingMembers.delete(key)
      this.invalidatedAt.set(key, ++this.clock)
    }
  }

  /** After a change of the conversation or its members: drop the entry here and on every node. */
  invalidate (conversationId: string): void {
    this.invalidateLocal(conversationId)
    this.bus.publish(INVALIDATE_TOPIC, { conv: conversationId })
  }

  invalidateLocal (conversationId: string): void {
    this.entries.delete(conversationId)
    this.loading.delete(conversationId)
    this.invalidatedAt.set(conversationId, ++this.clock)
  }

  /** Keeps a cached read cursor current without reloading the entry. */
  noteRead (conversationId: string, userId: string, readSeq: number): void {
    const m = this.entries.peek(conversationId)?.members.get(userId) ?? this.memberships.peek(memberKey(conversationId, userId))
    if (m !== undefined && m !== false && readSeq > m.readSeq) m.readSeq = readSeq
  }

  noteMuted (conversationId: string, userId: string, muted: boolean): void {
    const m = this.entries.peek(conversationId)?.members.get(userId) ?? this.memberships.peek(memberKey(conversationId, userId))
    if (m !== undefined && m !== false) m.muted = muted
  }

  private changedSince (key: string, started: number): boolean {
    return (this.invalidatedAt.get(key) ?? this.forgottenUpTo) > started
  }
}

function toEntry (conversation: ConversationRecord, list: MemberRecord[]): ConversationEntry {
  if (conversation.kind === 'channel') return { conversation, members: new Map(), memberIds: [] }
  return { conversation, members: new Map(list.map(m => [m.userId, m])), memberIds: list.map(m => m.userId) }
}
