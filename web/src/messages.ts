/**
 * The messages of each conversation: the newest page and scroll-back (SDK `history`), live
 * messages, own sends with their pending/failed state, read receipts, and marking read what is on
 * screen. Changes (edit, delete, react entries) are applied to the message they target, never shown
 * as messages of their own, and counted neither as unread nor as the list's preview.
 */
import { applyChange, isChange, type ImClient, type MessageEnvelope, type ReceiptEvent } from '../../src/client/index.js'
import { describeError } from './format.js'
import { chatOf, heldUnread, lastOwnSeq, realsIn, type AppState, type AppStore, type ChatState, type Pending } from './store.js'

/** Entries fetched per history page (the first page and every scroll-back). */
const PAGE = 50
/** Scroll-back fetches at most this many pages in a row that bring no message (only changes). */
const EMPTY_PAGES_MAX = 5
/** Live changes remembered per conversation, to bring a history page answered before them up to date. */
const LIVE_CHANGES_MAX = 200

export class Messages {
  /** Seqs of the active chat whose bubbles are on screen right now (reported by the chat view). */
  private visible: { conv: string, seqs: ReadonlySet<number> } | null = null
  private readonly readSent = new Map<string, number>()
  /** My read cursor as the server last confirmed it (list, read events): receipts count me by it. */
  private readonly confirmedRead = new Map<string, number>()
  private readonly receiptTimers = new Map<string, ReturnType<typeof setTimeout>>()
  /** The latest change entries that arrived live, per conversation (at most LIVE_CHANGES_MAX). */
  private readonly liveChanges = new Map<string, MessageEnvelope[]>()

  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  private get me (): string {
    return this.store.state.me
  }

  close (): void {
    for (const t of this.receiptTimers.values()) clearTimeout(t)
    this.receiptTimers.clear()
  }

  /** A stored entry (live, or the reply to an own send): a message joins its chat and the list's preview; a change is applied. */
  add (m: MessageEnvelope): void {
    if (isChange(m)) {
      this.change(m)
      return
    }
    let added = false
    this.store.update(state => {
      const chat = chatOf(state, m.conv)
      if (!chat.messages.has(m.seq)) {
        chat.messages.set(m.seq, m)
        added = true
      }
      if (m.seq > chat.seenSeq) chat.seenSeq = m.seq
      if (m.from === this.me) chat.pending.delete(m.msgId)
      const s = state.summaries.get(m.conv)
      if (s === undefined) return
      // A seq up to lastSeq is counted already (by the list that told of it).
      if (m.seq > s.lastSeq) {
        s.lastSeq = m.seq
        if (m.seq > s.readSeq) s.unread += 1
      }
      if (m.seq > (s.last?.seq ?? 0)) s.last = chat.messages.get(m.seq) ?? m
    })
    if (added && m.from === this.me && m.conv === this.store.state.active) this.refreshReceipt(m.conv)
  }

  /** The SDK's copy of a message changed (a change applied, mine optimistically, or taken back when refused). */
  onUpdated (m: MessageEnvelope): void {
    this.store.update(state => { replace(state, m.conv, m.seq, () => m) })
  }

  /** A change entry: moves lastSeq (not unread, not the preview) and changes the message it targets. */
  private change (c: MessageEnvelope): void {
    const recent = this.liveChanges.get(c.conv) ?? []
    recent.push(c)
    if (recent.length > LIVE_CHANGES_MAX) recent.shift()
    this.liveChanges.set(c.conv, recent)
    this.store.update(state => {
      const chat = chatOf(state, c.conv)
      if (c.seq > chat.seenSeq) chat.seenSeq = c.seq
      const s = state.summaries.get(c.conv)
      if (s !== undefined && c.seq > s.lastSeq) s.lastSeq = c.seq
      if (c.target !== undefined) replace(state, c.conv, c.target, m => applyChange(m, c))
    })
  }

  /** A message of a history page answered as of `asOf`, with the live changes stored after that applied. */
  private current (m: MessageEnvelope, asOf: number): MessageEnvelope {
    let out = m
    for (const c of this.liveChanges.get(m.conv) ?? []) if (c.target === m.seq && c.seq > asOf) out = applyChange(out, c)
    return out
  }

  /** A history page's messages join the chat (changes in it are already applied to them). */
  private merge (chat: ChatState, messages: MessageEnvelope[], asOf: number): number {
    let added = 0
    for (const m of messages) {
      if (isChange(m) || chat.messages.has(m.seq)) continue
      chat.messages.set(m.seq, this.current(m, asOf))
      added++
    }
    return added
  }

  /** My read cursor as the server has it (from `list`). */
  confirm (conv: string, readSeq: number): void {
    if (readSeq > (this.confirmedRead.get(conv) ?? 0)) this.confirmedRead.set(conv, readSeq)
  }

  /** A `read` event: my cursor moved (this device or another one of mine). */
  onRead (conv: string, readSeq: number): void {
    this.confirm(conv, readSeq)
    if (conv === this.store.state.active) this.refreshReceipt(conv)
  }

  onReceipt (e: ReceiptEvent): void {
    if (e.kind === 'group') {
      if (e.conv === this.store.state.active) this.refreshReceipt(e.conv)
      return
    }
    if (e.user === this.me) return
    this.store.update(state => {
      const chat = chatOf(state, e.conv)
      if (e.readSeq > chat.peerReadSeq) chat.peerReadSeq = e.readSeq
    })
  }

  /** The chat was opened: the newest page (once), and who read my last message. */
  async opened (conv: string): Promise<void> {
    await this.loadNewest(conv)
    void this.fetchReceipt(conv)
  }

  /** The chat was closed or switched away from. */
  closed (): void {
    this.visible = null
  }

  async loadNewest (conv: string): Promise<void> {
    const chat = chatOf(this.store.state, conv)
    if (chat.loaded || chat.loading) return
    chat.loading = true
    try {
      const held = this.client.messages(conv)
      const r = await this.client.history(conv, { limit: PAGE })
      this.store.update(state => {
        for (const m of held) if (!isChange(m) && !chat.messages.has(m.seq)) chat.messages.set(m.seq, m)
        this.merge(chat, r.messages, r.lastSeq)
        chat.loaded = true
        chat.coveredFrom = coverage(r.messages, r.hasMore, r.lastSeq)
        if (r.lastSeq > chat.seenSeq) chat.seenSeq = r.lastSeq
        chat.hasOlder = hasOlder(chat)
        const s = state.summaries.get(conv)
        if (s === undefined) return
        if (r.lastSeq > s.lastSeq) {
          const from = Math.max(s.lastSeq, s.readSeq)
          s.unread += r.messages.filter(m => !isChange(m) && m.seq > from).length
          s.lastSeq = r.lastSeq
        }
        const newest = Math.max(0, ...chat.messages.keys())
        if (newest > (s.last?.seq ?? 0)) s.last = chat.messages.get(newest) ?? s.last
        s.unread = heldUnread(chat, s.readSeq, s.lastSeq) ?? s.unread
      })
    } catch (err) {
      this.store.update(state => { state.sidebarError = describeError(err) })
    } finally {
      chat.loading = false
    }
  }

  /** Scroll-back: the page below the lowest seq fetched (and on while pages bring changes only). */
  async loadOlder (conv: string): Promise<void> {
    const chat = chatOf(this.store.state, conv)
    if (!chat.loaded || !chat.hasOlder || chat.loading || chat.coveredFrom === null) return
    chat.loading = true
    try {
      for (let pages = 0; pages < EMPTY_PAGES_MAX && chat.hasOlder && chat.coveredFrom !== null; pages++) {
        const r = await this.client.history(conv, { before: chat.coveredFrom + 1, limit: PAGE })
        let added = 0
        this.store.update(() => {
          added = this.merge(chat, r.messages, r.lastSeq)
          chat.coveredFrom = Math.min(chat.coveredFrom ?? Infinity, coverage(r.messages, r.hasMore, 0))
          chat.hasOlder = hasOlder(chat)
        })
        if (added > 0 || r.messages.length === 0) break
      }
    } catch (err) {
      this.store.update(state => { state.sidebarError = describeError(err) })
    } finally {
      chat.loading = false
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Reading

  /** The chat view reports which messages are on screen. */
  setVisible (conv: string, seqs: ReadonlySet<number>): void {
    this.visible = { conv, seqs }
    this.maybeMarkRead()
  }

  /** Marks read up to the newest message on screen, when the page is actually visible. */
  maybeMarkRead (): void {
    const { state } = this.store
    const conv = state.active
    const v = this.visible
    if (conv === null || v === null || v.conv !== conv || !state.pageVisible || v.seqs.size === 0) return
    const s = state.summaries.get(conv)
    if (s === undefined) return
    const seq = Math.max(...v.seqs)
    if (seq <= s.readSeq || seq <= (this.readSent.get(conv) ?? 0)) return
    this.readSent.set(conv, seq)
    this.client.markRead(conv, seq)
    // Optimistic: the read event confirms it.
    this.store.update(() => {
      const chat = chatOf(state, conv)
      const before = s.readSeq
      s.readSeq = seq
      s.unread = heldUnread(chat, seq, s.lastSeq) ?? Math.max(0, s.unread - realsIn(chat, before, seq))
    })
  }

  // ------------------------------------------------------------------------------------------------
  // Receipts

  /** Asks the server how many members read my last message (debounced per conversation). */
  private refreshReceipt (conv: string): void {
    if (this.receiptTimers.has(conv) || !this.store.state.summaries.has(conv)) return
    this.receiptTimers.set(conv, setTimeout(() => {
      this.receiptTimers.delete(conv)
      void this.fetchReceipt(conv)
    }, 0))
  }

  private async fetchReceipt (conv: string): Promise<void> {
    const { state } = this.store
    const chat = chatOf(state, conv)
    const s = state.summaries.get(conv)
    const seq = lastOwnSeq(chat, this.me)
    if (s === undefined || seq === 0) return
    try {
      const r = await this.client.receipts(conv, seq)
      // readBy counts me too once my own cursor has reached the message.
      const others = Math.max(0, r.readBy - ((this.confirmedRead.get(conv) ?? 0) >= seq ? 1 : 0))
      this.store.update(() => {
        if (s.kind === 'direct') {
          if (others > 0 && seq > chat.peerReadSeq) chat.peerReadSeq = seq
        } else if (seq >= chat.receiptSeq) {
          chat.receiptSeq = seq
          chat.othersRead = others
        }
      })
    } catch (err) {
      console.warn('receipts', err)
    }
  }

  // ------------------------------------------------------------------------------------------------
  // Sending

  /** Sends from the composer: shown as pending at once, stored by the SDK's outbox. `mentions`: members (or '@all') the text mentions. */
  send (conv: string, text: string, mentions: string[] = []): void {
    const msgId = newMsgId()
    const p = { msgId, text, failed: false, error: null, ...(mentions.length > 0 ? { mentions } : {}) }
    this.store.update(state => { chatOf(state, conv).pending.set(msgId, p) })
    void this.deliver(conv, p)
  }

  /** A failed send, clicked. */
  resend (conv: string, msgId: string): void {
    const p = chatOf(this.store.state, conv).pending.get(msgId)
    if (p === undefined) return
    this.store.update(() => {
      p.failed = false
      p.error = null
    })
    void this.deliver(conv, p)
  }

  private async deliver (conv: string, p: Pending): Promise<void> {
    const chat: ChatState = chatOf(this.store.state, conv)
    const { msgId, text } = p
    const mentions = p.mentions === undefined ? {} : { mentions: p.mentions }
    try {
      const r = await this.client.send(conv, text, { msgId, ...mentions })
      // Usually the message event came first; if not, show the stored message now.
      this.add({ conv, seq: r.seq, msgId, from: this.me, ts: r.ts, kind: 'text', body: text, ...mentions })
      this.store.update(() => { chat.pending.delete(msgId) })
      // My own message counts as read for me once I have seen it.
      this.maybeMarkRead()
    } catch (err) {
      this.store.update(() => {
        const pending = chat.pending.get(msgId)
        if (pending === undefined) return
        pending.failed = true
        pending.error = describeError(err)
      })
    }
  }
}

/**
 * Changes the held copy of message `seq` (and the list's preview when it shows that message) by
 * `fn`; nothing when neither holds it.
 */
function replace (state: AppState, conv: string, seq: number, fn: (m: MessageEnvelope) => MessageEnvelope): void {
  const chat = state.chats.get(conv)
  const held = chat?.messages.get(seq)
  if (chat !== undefined && held !== undefined) chat.messages.set(seq, fn(held))
  const s = state.summaries.get(conv)
  if (s?.last != null && s.last.seq === seq) s.last = fn(s.last)
}

/** Below which seq a history page leaves entries unfetched: 0 when it reached the first. */
function coverage (entries: MessageEnvelope[], hasMore: boolean, lastSeq: number): number {
  if (!hasMore) return 0
  return entries.length === 0 ? lastSeq : Math.min(...entries.map(m => m.seq)) - 1
}

/** More messages may exist below those held: not every entry fetched, and the first message (seq 1) not held. */
function hasOlder (chat: ChatState): boolean {
  return (chat.coveredFrom ?? 0) > 0 && !chat.messages.has(1)
}

function newMsgId (): string {
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return 'w' + Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('')
}
