/**
 * The chat page once logged in: conversation list, chat view, groups. All state comes from the SDK
 * (ImClient): `list()` for the summaries, `history()` for scroll-back, `message`/`read`/`receipt`/
 * `member` events to keep everything live.
 */
import type { ConnectionState, ConversationSummary, ImClient, MessageEnvelope, ReceiptEvent } from '../../src/client/index.js'
import { $, clockTime, colorFor, dayLabel, describeError, h, parseUserList, shortTime, show, showError } from './dom.js'

/** Messages fetched per history page (the first page and every scroll-back). */
const PAGE = 50

/** Presence as the server reports it (`presence` op and event). */
interface PresenceStatus { user: string, online: boolean, lastSeen: number | null }
/** The SDK's presence API, used when the SDK has it (older SDK builds do not). */
interface PresenceApi {
  presence?: (users: string[]) => Promise<{ users: PresenceStatus[] } | PresenceStatus[]>
}
type AnyOn = (event: string, fn: (e: PresenceStatus) => void) => () => void

interface Pending { msgId: string, text: string, ts: number, failed: boolean }

/** What the page holds for one conversation. */
interface ConvView {
  conv: string
  messages: Map<number, MessageEnvelope>
  /** Own sends not yet seen as stored messages, by msgId. */
  pending: Map<string, Pending>
  /** True once the newest page has been fetched. */
  loaded: boolean
  loading: boolean
  /** More messages exist below the lowest seq held. */
  hasOlder: boolean
  /** Direct: the peer's read cursor, as far as we know it. */
  peerReadSeq: number
  /** Group: how many others have read my last message, for `receiptSeq`. */
  receiptSeq: number
  othersRead: number
  /** Group: the member count, once fetched. */
  memberCount?: number
}

export class ChatApp {
  private readonly summaries = new Map<string, ConversationSummary>()
  /** When a conversation was created or opened here: sorts conversations without messages. */
  private readonly touched = new Map<string, number>()
  private readonly views = new Map<string, ConvView>()
  private active: string | null = null
  private readonly unsubscribe: Array<() => void> = []
  private readonly cleanups: Array<() => void> = []
  private readonly observer: IntersectionObserver
  /** Seqs of the active chat whose bubbles are on screen right now. */
  private readonly visibleSeqs = new Set<number>()
  private readonly readSent = new Map<string, number>()
  /** My read cursor as the server last confirmed it (list, read events): receipts count me by it. */
  private readonly confirmedRead = new Map<string, number>()
  private listTimer: ReturnType<typeof setTimeout> | null = null
  private receiptTimers = new Map<string, ReturnType<typeof setTimeout>>()
  private closed = false
  /** Online state of direct-chat peers; empty (and hidden) when the SDK offers no presence. */
  private readonly presence = new Map<string, PresenceStatus>()
  private readonly presenceSupported: boolean

  private readonly el = {
    app: $('app-view'),
    me: $('me'),
    conn: $('conn-dot'),
    convList: $<HTMLUListElement>('conv-list'),
    convEmpty: $('conv-empty'),
    sidebarError: $('sidebar-error'),
    directForm: $<HTMLFormElement>('direct-form'),
    directUser: $<HTMLInputElement>('direct-user'),
    groupNew: $<HTMLDetailsElement>('group-new'),
    groupForm: $<HTMLFormElement>('group-form'),
    groupName: $<HTMLInputElement>('group-name'),
    groupMembers: $<HTMLInputElement>('group-members'),
    chatEmpty: $('chat-empty'),
    chatPane: $('chat-pane'),
    chatBack: $('chat-back'),
    chatTitle: $('chat-title'),
    chatSubtitle: $('chat-subtitle'),
    membersToggle: $('members-toggle'),
    membersPanel: $('members-panel'),
    membersList: $<HTMLUListElement>('members-list'),
    addForm: $<HTMLFormElement>('add-members-form'),
    addInput: $<HTMLInputElement>('add-members-input'),
    membersError: $('members-error'),
    messages: $('messages'),
    loadOlder: $<HTMLButtonElement>('load-older'),
    messageList: $<HTMLOListElement>('message-list'),
    composer: $<HTMLFormElement>('composer'),
    input: $<HTMLTextAreaElement>('composer-input')
  }

  constructor (private readonly client: ImClient, private readonly me: string) {
    this.observer = new IntersectionObserver(entries => { this.onIntersect(entries) }, { root: this.el.messages, threshold: 0.6 })
    this.presenceSupported = typeof (client as unknown as PresenceApi).presence === 'function'
  }

  async start (): Promise<void> {
    this.el.me.textContent = this.me
    this.setConn('online')
    this.el.app.classList.remove('chat-open')
    show(this.el.chatPane, false)
    show(this.el.chatEmpty, true)
    this.el.convList.replaceChildren()

    const c = this.client
    this.unsubscribe.push(
      c.on('message', m => { this.onMessage(m) }),
      c.on('read', e => { this.onRead(e.conv, e.readSeq, e.unread) }),
      c.on('receipt', e => { this.onReceipt(e) }),
      c.on('member', e => {
        if (e.action === 'renamed' && e.name !== undefined) {
          const s = this.summaries.get(e.conv)
          if (s !== undefined) s.name = e.name
        }
        this.scheduleListRefresh(0)
        if (e.conv === this.active && e.kind === 'group') void this.loadMembers()
      }),
      c.on('state', s => {
        this.setConn(s)
        // Back online: the SDK has synced messages; refresh unread counts and previews too.
        if (s === 'online') this.scheduleListRefresh(0)
      }),
      c.on('error', err => { console.warn('mqim:', err) })
    )
    if (this.presenceSupported) {
      this.unsubscribe.push((c.on as unknown as AnyOn).call(c, 'presence', e => { this.onPresence([e]) }))
    }
    this.bindDom()
    await this.refreshList()
  }

  close (): void {
    this.closed = true
    for (const u of this.unsubscribe.splice(0)) u()
    for (const u of this.cleanups.splice(0)) u()
    this.observer.disconnect()
    if (this.listTimer !== null) clearTimeout(this.listTimer)
    for (const t of this.receiptTimers.values()) clearTimeout(t)
    this.active = null
  }

  // ------------------------------------------------------------------------------------------------
  // DOM wiring

  private listen<K extends keyof (WindowEventMap & DocumentEventMap)> (target: HTMLElement | Document | Window, type: K, fn: (e: (WindowEventMap & DocumentEventMap)[K]) => void): void {
    target.addEventListener(type, fn as EventListener)
    this.cleanups.push(() => { target.removeEventListener(type, fn as EventListener) })
  }

  private bindDom (): void {
    const el = this.el
    this.listen(el.directForm, 'submit', e => {
      e.preventDefault()
      const user = el.directUser.value.trim().toLowerCase()
      if (user === '') return
      void this.guard(el.sidebarError, async () => {
        const r = await this.client.direct(user)
        el.directUser.value = ''
        this.touched.set(r.conv, Date.now())
        if (!this.summaries.has(r.conv)) {
          this.summaries.set(r.conv, { conv: r.conv, kind: 'direct', name: null, peer: r.peer, role: 'member', lastSeq: 0, last: null, readSeq: 0, unread: 0, muted: false })
        }
        this.renderList()
        await this.open(r.conv)
      })
    })
    this.listen(el.groupForm, 'submit', e => {
      e.preventDefault()
      const name = el.groupName.value.trim()
      if (name === '') return
      const members = parseUserList(el.groupMembers.value).filter(u => u !== this.me)
      void this.guard(el.sidebarError, async () => {
        const r = await this.client.createGroup(name, members)
        el.groupName.value = ''
        el.groupMembers.value = ''
        el.groupNew.open = false
        this.touched.set(r.conv, Date.now())
        if (!this.summaries.has(r.conv)) {
          this.summaries.set(r.conv, { conv: r.conv, kind: 'group', name: r.name, role: 'owner', lastSeq: 0, last: null, readSeq: 0, unread: 0, muted: false })
        }
        this.renderList()
        await this.open(r.conv)
      })
    })
    this.listen(el.convList, 'click', e => {
      const item = (e.target as HTMLElement).closest<HTMLElement>('[data-conv]')
      const conv = item?.dataset.conv
      if (conv !== undefined) void this.open(conv)
    })
    this.listen(el.convList, 'keydown', e => {
      if (e.key !== 'Enter' && e.key !== ' ') return
      const conv = (e.target as HTMLElement).closest<HTMLElement>('[data-conv]')?.dataset.conv
      if (conv === undefined) return
      e.preventDefault()
      void this.open(conv)
    })
    this.listen(el.chatBack, 'click', () => { this.closeChat() })
    this.listen(el.membersToggle, 'click', () => {
      const open = el.membersPanel.hidden
      show(el.membersPanel, open)
      showError(el.membersError, null)
      if (open) void this.loadMembers()
    })
    this.listen(el.addForm, 'submit', e => {
      e.preventDefault()
      const conv = this.active
      const users = parseUserList(el.addInput.value)
      if (conv === null || users.length === 0) return
      void this.guard(el.membersError, async () => {
        await this.client.addMembers(conv, users)
        el.addInput.value = ''
        await this.loadMembers()
      })
    })
    this.listen(el.composer, 'submit', e => {
      e.preventDefault()
      this.sendFromComposer()
    })
    this.listen(el.input, 'keydown', e => {
      if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
        e.preventDefault()
        this.sendFromComposer()
      }
    })
    this.listen(el.input, 'input', () => { this.autoGrow() })
    this.listen(el.loadOlder, 'click', () => { void this.loadOlder() })
    this.listen(el.messages, 'scroll', () => {
      if (el.messages.scrollTop < 80) void this.loadOlder()
    })
    this.listen(el.messageList, 'click', e => {
      const item = (e.target as HTMLElement).closest<HTMLElement>('.msg.failed')
      const msgId = item?.dataset.msgId
      if (msgId !== undefined && this.active !== null) this.resend(this.active, msgId)
    })
    this.listen(document, 'visibilitychange', () => {
      if (document.visibilityState === 'visible') this.maybeMarkRead()
      else void this.client.flushReads().catch(() => {})
    })
    this.listen(window, 'focus', () => { this.maybeMarkRead() })
    this.listen(window, 'popstate', () => {
      const conv = decodeURIComponent(location.hash.replace(/^#c=/, ''))
      if (conv !== '' && this.summaries.has(conv)) void this.open(conv, false)
      else this.closeChat(false)
    })
  }

  /** Runs an action, showing its failure in `errorEl`. */
  private async guard (errorEl: HTMLElement, fn: () => Promise<void>): Promise<void> {
    showError(errorEl, null)
    try {
      await fn()
    } catch (err) {
      showError(errorEl, err)
    }
  }

  private setConn (state: ConnectionState): void {
    this.el.conn.dataset.state = state
    this.el.conn.title = state
  }

  // ------------------------------------------------------------------------------------------------
  // Conversation list

  private scheduleListRefresh (delayMs: number): void {
    if (this.listTimer !== null) return
    this.listTimer = setTimeout(() => {
      this.listTimer = null
      void this.refreshList()
    }, delayMs)
  }

  private async refreshList (): Promise<void> {
    if (this.closed) return
    try {
      const list = await this.client.list()
      if (this.closed) return
      const seen = new Set<string>()
      for (const s of list) {
        seen.add(s.conv)
        this.confirm(s.conv, s.readSeq)
        const old = this.summaries.get(s.conv)
        // Never let an older snapshot undo what live events already told us.
        if (old !== undefined && old.lastSeq > s.lastSeq) {
          s.lastSeq = old.lastSeq
          s.last = old.last
        }
        if (old !== undefined && old.readSeq > s.readSeq) s.readSeq = old.readSeq
        s.unread = Math.max(0, s.lastSeq - s.readSeq)
        this.summaries.set(s.conv, s)
      }
      for (const conv of [...this.summaries.keys()]) {
        if (!seen.has(conv)) this.summaries.delete(conv)
      }
      if (this.active !== null && !this.summaries.has(this.active)) this.closeChat()
      this.renderList()
      if (this.active !== null) this.renderHeader()
      else this.openFromHash()
      void this.fetchPresence()
    } catch (err) {
      showError(this.el.sidebarError, err)
    }
  }

  /** Asks for the online state of every direct-chat peer (events keep it current afterwards). */
  private async fetchPresence (): Promise<void> {
    const fn = (this.client as unknown as PresenceApi).presence
    if (fn === undefined) return
    const peers = [...new Set([...this.summaries.values()].flatMap(s => s.peer !== undefined ? [s.peer] : []))].slice(0, 500)
    if (peers.length === 0) return
    try {
      const r = await fn.call(this.client, peers)
      this.onPresence(Array.isArray(r) ? r : r.users)
    } catch (err) {
      console.warn('presence', err)
    }
  }

  private onPresence (statuses: PresenceStatus[]): void {
    if (this.closed) return
    for (const st of statuses) this.presence.set(st.user, st)
    this.renderList()
    if (this.active !== null) this.renderHeader()
  }

  private openFromHash (): void {
    const conv = decodeURIComponent(location.hash.replace(/^#c=/, ''))
    if (conv !== '' && this.summaries.has(conv)) void this.open(conv, false)
  }

  private sortKey (s: ConversationSummary): number {
    return Math.max(s.last?.ts ?? 0, this.touched.get(s.conv) ?? 0)
  }

  private title (s: ConversationSummary): string {
    return s.kind === 'direct' ? (s.peer ?? 'direct chat') : (s.name ?? 'group')
  }

  /** Unread as shown: nothing for the chat being looked at. */
  private shownUnread (s: ConversationSummary): number {
    if (s.conv === this.active && document.visibilityState === 'visible') return 0
    return s.unread
  }

  private renderList (): void {
    const items = [...this.summaries.values()].sort((a, b) => this.sortKey(b) - this.sortKey(a))
    const nodes = items.map(s => this.renderConvItem(s))
    this.el.convList.replaceChildren(...nodes)
    show(this.el.convEmpty, items.length === 0)
    const total = items.reduce((n, s) => n + (s.muted ? 0 : this.shownUnread(s)), 0)
    document.title = total > 0 ? `(${total}) mqim chat` : 'mqim chat'
  }

  private renderConvItem (s: ConversationSummary): HTMLLIElement {
    const title = this.title(s)
    const unread = this.shownUnread(s)
    const last = s.last
    const online = s.peer !== undefined ? this.presence.get(s.peer)?.online : undefined
    let preview = 'No messages yet'
    if (last !== null) {
      const who = last.from === this.me ? 'You: ' : s.kind === 'group' ? `${last.from}: ` : ''
      preview = who + bodyText(last)
    }
    return h('li', {
      class: `conv${s.conv === this.active ? ' active' : ''}${unread > 0 ? ' unread' : ''}`,
      'data-testid': 'conv-item',
      'data-conv': s.conv,
      'data-name': title,
      'data-kind': s.kind,
      'data-unread': unread,
      'data-online': online === undefined ? undefined : String(online),
      role: 'button',
      tabindex: 0
    },
    h('span', { class: 'avatar', style: `background:${colorFor(title)}`, 'aria-hidden': 'true' },
      s.kind === 'group' ? '#' : title.slice(0, 1),
      online === true ? h('span', { class: 'presence', 'data-testid': 'conv-presence', title: 'online' }) : null),
    h('span', { class: 'conv-name', 'data-testid': 'conv-name' }, title),
    h('span', { class: 'conv-time' }, last !== null ? shortTime(last.ts) : ''),
    h('span', { class: 'conv-preview', 'data-testid': 'conv-preview' }, preview),
    unread > 0 ? h('span', { class: `badge${s.muted ? ' muted' : ''}`, 'data-testid': 'conv-unread' }, unread > 999 ? '999+' : String(unread)) : h('span'))
  }

  // ------------------------------------------------------------------------------------------------
  // Live events

  private view (conv: string): ConvView {
    let v = this.views.get(conv)
    if (v === undefined) {
      v = { conv, messages: new Map(), pending: new Map(), loaded: false, loading: false, hasOlder: false, peerReadSeq: 0, receiptSeq: 0, othersRead: 0 }
      this.views.set(conv, v)
    }
    return v
  }

  private onMessage (m: MessageEnvelope): void {
    const s = this.summaries.get(m.conv)
    if (s === undefined) {
      // A conversation we did not know yet (joined while this page was open).
      this.scheduleListRefresh(50)
    } else if (m.seq > s.lastSeq) {
      s.lastSeq = m.seq
      s.last = m
      s.unread = Math.max(0, s.lastSeq - s.readSeq)
      this.renderList()
    }
    const v = this.view(m.conv)
    if (v.messages.has(m.seq)) return
    v.messages.set(m.seq, m)
    const wasPending = m.from === this.me && v.pending.delete(m.msgId)
    if (m.conv === this.active) {
      const nearBottom = this.nearBottom()
      this.renderMessages()
      if (nearBottom || wasPending || m.from === this.me) this.scrollToBottom()
      if (m.from === this.me) this.refreshReceipt(m.conv, 0)
    }
  }

  private onRead (conv: string, readSeq: number, unread: number): void {
    this.confirm(conv, readSeq)
    if (conv === this.active) this.refreshReceipt(conv, 0)
    const s = this.summaries.get(conv)
    if (s === undefined) return
    if (readSeq < s.readSeq) return
    s.readSeq = readSeq
    s.unread = Math.max(0, Math.min(unread, s.lastSeq - readSeq))
    if (s.lastSeq < readSeq + unread) s.lastSeq = readSeq + unread
    this.renderList()
  }

  private onReceipt (e: ReceiptEvent): void {
    const v = this.view(e.conv)
    if (e.kind === 'direct') {
      if (e.user === this.me) return
      if (e.readSeq > v.peerReadSeq) {
        v.peerReadSeq = e.readSeq
        if (e.conv === this.active) this.renderMessages()
      }
    } else if (e.conv === this.active) {
      this.refreshReceipt(e.conv, 0)
    }
  }

  /** Group: asks the server how many members read my last message (debounced per conversation). */
  private refreshReceipt (conv: string, delayMs: number): void {
    const s = this.summaries.get(conv)
    if (s === undefined) return
    if (this.receiptTimers.has(conv)) return
    this.receiptTimers.set(conv, setTimeout(() => {
      this.receiptTimers.delete(conv)
      void this.fetchReceipt(conv)
    }, delayMs))
  }

  private async fetchReceipt (conv: string): Promise<void> {
    const v = this.view(conv)
    const s = this.summaries.get(conv)
    const seq = this.lastOwnSeq(v)
    if (s === undefined || seq === 0) return
    try {
      const r = await this.client.receipts(conv, seq)
      // readBy counts me too once my own cursor has reached the message.
      const others = Math.max(0, r.readBy - ((this.confirmedRead.get(conv) ?? 0) >= seq ? 1 : 0))
      if (s.kind === 'direct') {
        if (others > 0 && seq > v.peerReadSeq) v.peerReadSeq = seq
      } else if (seq >= v.receiptSeq) {
        v.receiptSeq = seq
        v.othersRead = others
      }
      if (conv === this.active) this.renderMessages()
    } catch (err) {
      console.warn('receipts', err)
    }
  }

  private confirm (conv: string, readSeq: number): void {
    if (readSeq > (this.confirmedRead.get(conv) ?? 0)) this.confirmedRead.set(conv, readSeq)
  }

  private lastOwnSeq (v: ConvView): number {
    let best = 0
    for (const m of v.messages.values()) if (m.from === this.me && m.seq > best) best = m.seq
    return best
  }

  // ------------------------------------------------------------------------------------------------
  // Chat view

  private async open (conv: string, push = true): Promise<void> {
    const s = this.summaries.get(conv)
    if (s === undefined) return
    const switching = this.active !== conv
    this.active = conv
    if (push && location.hash !== `#c=${encodeURIComponent(conv)}`) history.pushState(null, '', `#c=${encodeURIComponent(conv)}`)
    this.el.app.classList.add('chat-open')
    show(this.el.chatEmpty, false)
    show(this.el.chatPane, true)
    if (switching) {
      show(this.el.membersPanel, false)
      this.el.input.value = ''
      this.autoGrow()
    }
    this.renderHeader()
    this.renderList()
    const v = this.view(conv)
    this.renderMessages()
    this.scrollToBottom()
    if (matchMedia('(min-width: 721px)').matches) this.el.input.focus()
    if (s.kind === 'group' && switching) void this.loadMembers()
    if (!v.loaded) await this.loadNewest(v)
    void this.fetchReceipt(conv)
  }

  private closeChat (push = true): void {
    this.active = null
    this.visibleSeqs.clear()
    this.observer.disconnect()
    this.el.app.classList.remove('chat-open')
    show(this.el.chatPane, false)
    show(this.el.chatEmpty, true)
    if (push && location.hash !== '') history.pushState(null, '', location.pathname + location.search)
    this.renderList()
  }

  private renderHeader (): void {
    const s = this.active === null ? undefined : this.summaries.get(this.active)
    if (s === undefined) return
    this.el.chatTitle.textContent = this.title(s)
    const count = this.view(s.conv).memberCount
    this.el.chatSubtitle.textContent = s.kind === 'direct' ? this.presenceText(s.peer) : count !== undefined ? `group · ${count} members` : 'group'
    this.el.chatPane.dataset.conv = s.conv
    this.el.chatPane.dataset.kind = s.kind
    show(this.el.membersToggle, s.kind === 'group')
    show(this.el.addForm, s.kind === 'group' && s.role !== 'member')
  }

  private presenceText (peer: string | undefined): string {
    const st = peer === undefined ? undefined : this.presence.get(peer)
    if (st === undefined) return 'direct chat'
    if (st.online) return 'online'
    return st.lastSeen !== null ? `last seen ${shortTime(st.lastSeen)}` : 'offline'
  }

  private async loadMembers (): Promise<void> {
    const conv = this.active
    if (conv === null) return
    try {
      const r = await this.client.members(conv)
      if (conv !== this.active) return
      this.el.membersList.replaceChildren(...r.members.map(m =>
        h('li', { 'data-testid': 'member', 'data-user': m.user }, m.user === this.me ? `${m.user} (you)` : m.user, m.role !== 'member' ? h('small', {}, m.role) : null)))
      this.view(conv).memberCount = r.members.length
      this.renderHeader()
    } catch (err) {
      showError(this.el.membersError, err)
    }
  }

  private async loadNewest (v: ConvView): Promise<void> {
    if (v.loading) return
    v.loading = true
    try {
      for (const m of this.client.messages(v.conv)) v.messages.set(m.seq, m)
      const r = await this.client.history(v.conv, { limit: PAGE })
      for (const m of r.messages) if (!v.messages.has(m.seq)) v.messages.set(m.seq, m)
      v.loaded = true
      const lowest = Math.min(...v.messages.keys())
      v.hasOlder = v.messages.size > 0 && lowest > 1
      const s = this.summaries.get(v.conv)
      if (s !== undefined && r.lastSeq > s.lastSeq) {
        s.lastSeq = r.lastSeq
        s.last = r.messages[r.messages.length - 1] ?? s.last
        s.unread = Math.max(0, s.lastSeq - s.readSeq)
      }
      if (v.conv === this.active) {
        this.renderMessages()
        this.scrollToBottom()
      }
    } catch (err) {
      showError(this.el.sidebarError, err)
    } finally {
      v.loading = false
    }
  }

  private async loadOlder (): Promise<void> {
    const conv = this.active
    if (conv === null) return
    const v = this.view(conv)
    if (!v.loaded || !v.hasOlder || v.loading) return
    v.loading = true
    const box = this.el.messages
    try {
      const before = Math.min(...v.messages.keys())
      const r = await this.client.history(conv, { before, limit: PAGE })
      for (const m of r.messages) if (!v.messages.has(m.seq)) v.messages.set(m.seq, m)
      v.hasOlder = r.hasMore && r.messages.length > 0
      if (conv === this.active) {
        // Keep the message the user was looking at in place.
        const fromBottom = box.scrollHeight - box.scrollTop
        this.renderMessages()
        box.scrollTop = box.scrollHeight - fromBottom
      }
    } catch (err) {
      showError(this.el.sidebarError, err)
    } finally {
      v.loading = false
    }
  }

  private renderMessages (): void {
    const conv = this.active
    if (conv === null) return
    const v = this.view(conv)
    const s = this.summaries.get(conv)
    const group = s?.kind === 'group'
    const list = [...v.messages.values()].sort((a, b) => a.seq - b.seq)
    const lastOwn = this.lastOwnSeq(v)
    const nodes: HTMLElement[] = []
    let prevFrom = ''
    let prevDay = ''
    this.observer.disconnect()
    this.visibleSeqs.clear()
    for (const m of list) {
      const day = dayLabel(m.ts)
      if (day !== prevDay) {
        nodes.push(h('li', { class: 'day' }, day))
        prevDay = day
        prevFrom = ''
      }
      const own = m.from === this.me
      let status: HTMLElement | null = null
      if (own) {
        if (!group) {
          const read = m.seq <= v.peerReadSeq
          status = h('span', { class: 'msg-status', 'data-testid': 'msg-status', 'data-status': read ? 'read' : 'sent' }, read ? '✓✓ read' : '✓ sent')
        } else if (m.seq === lastOwn) {
          const n = v.receiptSeq === m.seq ? v.othersRead : 0
          status = h('span', { class: 'msg-status', 'data-testid': 'msg-status', 'data-status': n > 0 ? 'read' : 'sent', 'data-read-by': n }, n > 0 ? `read by ${n}` : '✓ sent')
        }
      }
      const li = h('li', {
        class: `msg${own ? ' own' : ''}`,
        'data-testid': 'msg',
        'data-seq': m.seq,
        'data-from': m.from,
        'data-own': own
      },
      group && !own && m.from !== prevFrom ? h('span', { class: 'msg-sender', 'data-testid': 'msg-sender' }, m.from) : null,
      h('div', { class: `bubble${m.kind === 'custom' ? ' custom' : ''}`, 'data-testid': 'msg-text' }, bodyText(m)),
      h('div', { class: 'msg-meta' }, h('time', { datetime: new Date(m.ts).toISOString() }, clockTime(m.ts)), status))
      nodes.push(li)
      this.observer.observe(li)
      prevFrom = m.from
    }
    for (const p of v.pending.values()) {
      nodes.push(h('li', { class: `msg own ${p.failed ? 'failed' : 'pending'}`, 'data-testid': 'msg-pending', 'data-msg-id': p.msgId, title: p.failed ? 'Not sent: click to retry' : 'sending…' },
        h('div', { class: 'bubble', 'data-testid': 'msg-text' }, p.text),
        h('div', { class: 'msg-meta' }, h('span', { class: 'msg-status', 'data-status': p.failed ? 'failed' : 'sending' }, p.failed ? 'not sent · tap to retry' : 'sending…'))))
    }
    this.el.messageList.replaceChildren(...nodes)
    show(this.el.loadOlder, v.hasOlder)
    this.el.messageList.dataset.loaded = String(v.loaded)
  }

  private nearBottom (): boolean {
    const box = this.el.messages
    return box.scrollHeight - box.scrollTop - box.clientHeight < 120
  }

  private scrollToBottom (): void {
    const box = this.el.messages
    box.scrollTop = box.scrollHeight
  }

  // ------------------------------------------------------------------------------------------------
  // Reading

  private onIntersect (entries: IntersectionObserverEntry[]): void {
    for (const e of entries) {
      const seq = Number((e.target as HTMLElement).dataset.seq)
      if (!Number.isFinite(seq)) continue
      if (e.isIntersecting) this.visibleSeqs.add(seq)
      else this.visibleSeqs.delete(seq)
    }
    this.maybeMarkRead()
  }

  /** Marks read up to the newest message on screen, when the page is actually visible. */
  private maybeMarkRead (): void {
    const conv = this.active
    if (conv === null || document.visibilityState !== 'visible' || this.visibleSeqs.size === 0) return
    const s = this.summaries.get(conv)
    if (s === undefined) return
    const seq = Math.max(...this.visibleSeqs)
    if (seq <= s.readSeq || seq <= (this.readSent.get(conv) ?? 0)) return
    this.readSent.set(conv, seq)
    this.client.markRead(conv, seq)
    // Optimistic: the read event confirms it.
    s.readSeq = seq
    s.unread = Math.max(0, s.lastSeq - seq)
    this.renderList()
  }

  // ------------------------------------------------------------------------------------------------
  // Sending

  private sendFromComposer (): void {
    const conv = this.active
    const text = this.el.input.value.replace(/\s+$/, '')
    if (conv === null || text.trim() === '') return
    this.el.input.value = ''
    this.autoGrow()
    const msgId = newMsgId()
    this.view(conv).pending.set(msgId, { msgId, text, ts: Date.now(), failed: false })
    this.renderMessages()
    this.scrollToBottom()
    void this.deliver(conv, msgId, text)
  }

  private resend (conv: string, msgId: string): void {
    const p = this.view(conv).pending.get(msgId)
    if (p === undefined) return
    p.failed = false
    this.renderMessages()
    void this.deliver(conv, msgId, p.text)
  }

  private async deliver (conv: string, msgId: string, text: string): Promise<void> {
    const v = this.view(conv)
    try {
      const r = await this.client.send(conv, text, { msgId })
      // Usually the message event came first; if not, show the stored message now.
      if (!v.messages.has(r.seq)) {
        this.onMessage({ conv, seq: r.seq, msgId, from: this.me, ts: r.ts, kind: 'text', body: text })
      }
      if (v.pending.delete(msgId) && conv === this.active) this.renderMessages()
      // My own message counts as read for me once I have seen it.
      if (conv === this.active) this.maybeMarkRead()
    } catch (err) {
      const p = v.pending.get(msgId)
      if (p !== undefined) p.failed = true
      if (conv === this.active) this.renderMessages()
      console.warn('send failed', describeError(err))
    }
  }

  private autoGrow (): void {
    const t = this.el.input
    t.style.height = 'auto'
    t.style.height = `${Math.min(t.scrollHeight + 2, 140)}px`
  }
}

function bodyText (m: MessageEnvelope): string {
  if (m.kind === 'text' && typeof m.body === 'string') return m.body
  try {
    return JSON.stringify(m.body)
  } catch {
    return String(m.body)
  }
}

function newMsgId (): string {
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return 'w' + Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('')
}
