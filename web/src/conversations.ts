/**
 * The conversation list and which conversation is open: summaries from the SDK's `list` (kept live
 * by `read`, `member` and `presence` events in between), opening and closing a chat (with the URL
 * hash `#c=<conv>`, so reload and back work), and starting direct chats and groups.
 */
import type { ConversationSummary, ImClient, MemberEvent, ReadEvent } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { Members } from './members.js'
import type { Messages } from './messages.js'
import { inviteCodeOf, JOIN_HASH, type Channels } from './channels.js'
import { noteListed } from './mentions.js'
import { heldUnread, realsIn, type AppStore, type ChatState, type Presence } from './store.js'

/** Presence is asked for at most this many direct-chat peers (the server's limit per request). */
const PRESENCE_MAX = 500

export class Conversations {
  private listTimer: ReturnType<typeof setTimeout> | null = null
  private closed = false

  constructor (
    private readonly client: ImClient,
    private readonly store: AppStore,
    private readonly messages: Messages,
    private readonly members: Members,
    private readonly channels: Channels
  ) {}

  async start (): Promise<void> {
    await this.refresh()
    await this.joinFromHash()
  }

  close (): void {
    this.closed = true
    if (this.listTimer !== null) clearTimeout(this.listTimer)
  }

  known (conv: string): boolean {
    return this.store.state.summaries.has(conv)
  }

  /** Refreshes the list soon (coalesced). */
  scheduleRefresh (delayMs: number): void {
    if (this.listTimer !== null) return
    this.listTimer = setTimeout(() => {
      this.listTimer = null
      void this.refresh()
    }, delayMs)
  }

  async refresh (): Promise<void> {
    if (this.closed) return
    try {
      const list = await this.client.list()
      if (this.closed) return
      this.store.update(state => {
        const seen = new Set<string>()
        for (const s of list) {
          seen.add(s.conv)
          this.messages.confirm(s.conv, s.readSeq)
          noteListed(state, s)
          merged(s, state.summaries.get(s.conv), state.chats.get(s.conv))
          state.summaries.set(s.conv, s)
        }
        for (const conv of [...state.summaries.keys()]) if (!seen.has(conv)) state.summaries.delete(conv)
      })
      const { active } = this.store.state
      if (active !== null && !this.known(active)) this.closeChat()
      else if (active === null) this.openFromHash()
      void this.fetchPresence()
    } catch (err) {
      this.store.update(state => { state.sidebarError = describeError(err) })
    }
  }

  onRead (e: ReadEvent): void {
    const s = this.store.state.summaries.get(e.conv)
    if (s === undefined || e.readSeq < s.readSeq) return
    this.store.update(state => {
      const chat = state.chats.get(e.conv)
      s.readSeq = e.readSeq
      if (s.lastSeq < e.readSeq) s.lastSeq = e.readSeq
      // e.unread counts real messages up to the server's last seq as it answered; what this page
      // holds beyond the cursor is at least that many
      s.unread = heldUnread(chat, e.readSeq, s.lastSeq) ?? Math.max(e.unread, chat === undefined ? 0 : realsIn(chat, e.readSeq))
    })
  }

  onMember (e: MemberEvent): void {
    if (e.action === 'renamed' && e.name !== undefined) {
      const s = this.store.state.summaries.get(e.conv)
      const name = e.name
      if (s !== undefined) this.store.update(() => { s.name = name })
    }
    this.scheduleRefresh(0)
    if (e.conv === this.store.state.active && e.kind === 'group') void this.members.load()
    if (e.conv === this.store.state.active && e.kind === 'channel') void this.channels.load(e.conv)
  }

  onPresence (statuses: Presence[]): void {
    if (this.closed) return
    this.store.update(state => { for (const st of statuses) state.presence.set(st.user, st) })
  }

  /** Asks for the online state of every direct-chat peer (presence events keep it current afterwards). */
  private async fetchPresence (): Promise<void> {
    const peers = [...new Set([...this.store.state.summaries.values()].flatMap(s => s.peer !== undefined ? [s.peer] : []))].slice(0, PRESENCE_MAX)
    if (peers.length === 0) return
    try {
      this.onPresence((await this.client.presence(peers)).users)
    } catch (err) {
      console.warn('presence', err)
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Open and close

  async open (conv: string, push = true): Promise<void> {
    const s = this.store.state.summaries.get(conv)
    if (s === undefined) return
    const switching = this.store.state.active !== conv
    if (push && location.hash !== hashOf(conv)) history.pushState(null, '', hashOf(conv))
    if (switching) this.messages.closed()
    this.store.update(state => {
      state.active = conv
      if (switching) {
        state.membersOpen = false
        state.invite = null
      }
    })
    if (s.kind === 'group' && switching) void this.members.load()
    if (s.kind === 'channel' && switching) void this.channels.load(conv)
    await this.messages.opened(conv)
  }

  closeChat (push = true): void {
    this.messages.closed()
    this.store.update(state => {
      state.active = null
      state.invite = null
    })
    if (push && location.hash !== '') history.pushState(null, '', location.pathname + location.search)
  }

  /** Back/forward: the hash says which chat is open (or, `#join=<code>`, which channel to join). */
  followHash (): void {
    if (location.hash.startsWith(JOIN_HASH)) {
      void this.joinFromHash()
      return
    }
    const conv = convFromHash()
    if (conv !== '' && this.known(conv)) void this.open(conv, false)
    else this.closeChat(false)
  }

  /**
   * A page opened with an invite link (`#join=<code>`): the code leaves the address bar and waits
   * for the user to press Join (a link someone else sent must not join anything by itself).
   */
  private async joinFromHash (): Promise<void> {
    if (!location.hash.startsWith(JOIN_HASH)) return
    const code = inviteCodeOf(location.hash)
    history.replaceState(null, '', location.pathname + location.search)
    if (code === null) {
      this.store.update(state => { state.sidebarError = 'That invite link is not valid.' })
      return
    }
    this.store.update(state => { state.pendingInvite = code })
  }

  /** The invite link the page was opened with: joined (true) or set aside (false). */
  async answerPendingInvite (join: boolean): Promise<void> {
    const code = this.store.state.pendingInvite
    this.store.update(state => { state.pendingInvite = null })
    if (join && code !== null) await this.joinByInvite(code)
  }

  private openFromHash (): void {
    const conv = convFromHash()
    if (conv !== '' && this.known(conv)) void this.open(conv, false)
  }

  // ------------------------------------------------------------------------------------------------
  // New conversations

  /** Opens (creating it the first time) the direct chat with `user`; resolves false on failure (shown in the sidebar). */
  async openDirect (user: string): Promise<boolean> {
    return await this.guard(async () => {
      const r = await this.client.direct(user)
      this.added({ conv: r.conv, kind: 'direct', name: null, peer: r.peer, role: 'member', lastSeq: 0, last: null, readSeq: 0, unread: 0, mentions: 0, muted: false })
      await this.open(r.conv)
    })
  }

  async createGroup (name: string, members: string[]): Promise<boolean> {
    return await this.guard(async () => {
      const r = await this.client.createGroup(name, members.filter(u => u !== this.store.state.me))
      this.added({ conv: r.conv, kind: 'group', name: r.name, role: 'owner', lastSeq: 0, last: null, readSeq: 0, unread: 0, mentions: 0, muted: false })
      await this.open(r.conv)
    })
  }

  /** Creates a channel (public: anyone may join by its id) and opens it. */
  async createChannel (name: string, isPublic: boolean): Promise<boolean> {
    return await this.guard(async () => {
      const r = await this.client.createChannel(name, { public: isPublic })
      this.added({ conv: r.conv, kind: 'channel', name: r.name, role: 'owner', lastSeq: 0, last: null, readSeq: 0, unread: 0, mentions: 0, muted: false })
      await this.open(r.conv)
    })
  }

  /** Joins a public channel by its id and opens it. */
  async joinChannel (conv: string): Promise<boolean> {
    return await this.guard(async () => {
      const r = await this.client.join(conv)
      this.added({ conv: r.conv, kind: 'channel', name: r.name, role: 'member', lastSeq: r.lastSeq, last: null, readSeq: r.lastSeq, unread: 0, mentions: 0, muted: false })
      await this.open(r.conv)
    })
  }

  /** Joins the channel of an invite code (or link) and opens it; resolves false on failure (shown in the sidebar). */
  async joinWithInvite (text: string): Promise<boolean> {
    const code = inviteCodeOf(text)
    if (code === null) {
      this.store.update(state => { state.sidebarError = 'Paste an invite link (…#join=…) or its 24-character code.' })
      return false
    }
    return await this.joinByInvite(code)
  }

  private async joinByInvite (code: string): Promise<boolean> {
    return await this.guard(async () => {
      const r = await this.client.joinByInvite(code)
      this.added({ conv: r.conv, kind: 'channel', name: r.name, role: 'member', lastSeq: r.lastSeq, last: null, readSeq: r.lastSeq, unread: 0, mentions: 0, muted: false })
      await this.open(r.conv)
    })
  }

  async leaveChannel (conv: string): Promise<void> {
    try {
      await this.client.leave(conv)
      this.closeChat()
      this.store.update(state => {
        state.summaries.delete(conv)
        state.channels.delete(conv)
      })
    } catch (err) {
      this.store.update(state => { state.chatError = { conv, text: describeError(err) } })
    }
  }

  private added (s: ConversationSummary): void {
    this.store.update(state => {
      state.touched.set(s.conv, Date.now())
      if (!state.summaries.has(s.conv)) state.summaries.set(s.conv, s)
    })
  }

  private async guard (fn: () => Promise<void>): Promise<boolean> {
    this.store.update(state => { state.sidebarError = null })
    try {
      await fn()
      return true
    } catch (err) {
      this.store.update(state => { state.sidebarError = describeError(err) })
      return false
    }
  }
}

/**
 * A summary from `list` merged with what this page already knew of the conversation: live
 * messages newer than the snapshot, and my own read cursor ahead of the server's. Unread counts
 * real messages only (the server's, the page's own count when it holds them all).
 */
function merged (s: ConversationSummary, old: ConversationSummary | undefined, chat: ChatState | undefined): void {
  if (old !== undefined && old.lastSeq > s.lastSeq) {
    if (chat !== undefined) s.unread += realsIn(chat, Math.max(s.lastSeq, s.readSeq), old.lastSeq)
    s.lastSeq = old.lastSeq
  }
  if (old?.last != null && (s.last === null || old.last.seq > s.last.seq)) s.last = old.last
  if (old !== undefined && old.readSeq > s.readSeq) {
    if (chat !== undefined) s.unread = Math.max(0, s.unread - realsIn(chat, s.readSeq, old.readSeq))
    s.readSeq = old.readSeq
  }
  s.unread = heldUnread(chat, s.readSeq, s.lastSeq) ?? s.unread
}

function hashOf (conv: string): string {
  return `#c=${encodeURIComponent(conv)}`
}

function convFromHash (): string {
  return decodeURIComponent(location.hash.replace(/^#c=/, ''))
}
