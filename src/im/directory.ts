/**
 * Conversation directory: a read-through cache of conversations and their members, so that
 * authorizing a send and fanning it out cost no metadata round trip. Every membership change
 * made through this process invalidates the entry; `invalidate` is also the hook for changes
 * announced by other nodes.
 */
import type { ConversationRecord, MemberRecord, MetadataStore } from '../store/types.js'

export interface ConversationEntry {
  conversation: ConversationRecord
  members: ReadonlyMap<string, MemberRecord>
  /** The members' ids (every message is published to each of them). */
  memberIds: readonly string[]
}

export class ConversationDirectory {
  private readonly meta: MetadataStore
  private readonly entries = new Map<string, ConversationEntry>()
  private readonly loading = new Map<string, Promise<ConversationEntry | null>>()
  private readonly generation = new Map<string, number>()
  private readonly maxEntries: number

  /** Tells the other nodes (in a cluster) to drop their copy; set by the server. */
  broadcast: (conversationId: string) => void = () => {}

  constructor (meta: MetadataStore, maxEntries = 50_000) {
    this.meta = meta
    this.maxEntries = maxEntries
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
    const gen = this.generation.get(conversationId) ?? 0
    const load = (async () => {
      const conversation = await this.meta.conversationGet(conversationId)
      if (conversation === null) return null
      const list = await this.meta.memberList(conversationId)
      const entry: ConversationEntry = { conversation, members: new Map(list.map(m => [m.userId, m])), memberIds: list.map(m => m.userId) }
      if ((this.generation.get(conversationId) ?? 0) === gen) this.store(conversationId, entry)
      return entry
    })()
    this.loading.set(conversationId, load)
    try {
      return await load
    } finally {
      if (this.loading.get(conversationId) === load) this.loading.delete(conversationId)
    }
  }

  /** The member record if `userId` is a member, else null (also for unknown conversations). */
  async member (conversationId: string, userId: string): Promise<{ entry: ConversationEntry, member: MemberRecord } | null> {
    const entry = await this.get(conversationId)
    const member = entry?.members.get(userId)
    if (entry === null || member === undefined) return null
    return { entry, member }
  }

  /** After a change of the conversation or its members: drop the entry here and on every node. */
  invalidate (conversationId: string): void {
    this.invalidateLocal(conversationId)
    this.broadcast(conversationId)
  }

  invalidateLocal (conversationId: string): void {
    this.entries.delete(conversationId)
    this.loading.delete(conversationId)
    this.generation.set(conversationId, (this.generation.get(conversationId) ?? 0) + 1)
  }

  /** Keeps a cached read cursor current without reloading the entry. */
  noteRead (conversationId: string, userId: string, readSeq: number): void {
    const m = this.entries.get(conversationId)?.members.get(userId)
    if (m !== undefined && readSeq > m.readSeq) m.readSeq = readSeq
  }

  noteMuted (conversationId: string, userId: string, muted: boolean): void {
    const m = this.entries.get(conversationId)?.members.get(userId)
    if (m !== undefined) m.muted = muted
  }

  private store (conversationId: string, entry: ConversationEntry): void {
    this.entries.set(conversationId, entry)
    if (this.entries.size > this.maxEntries) {
      const oldest = this.entries.keys().next().value
      if (oldest !== undefined) this.entries.delete(oldest)
    }
  }
}
