/**
 * The messages of each conversation: the newest page and scroll-back (SDK `history`), live
 * messages, own sends with their pending/failed state, read receipts, and marking read what is on
 * screen.
 */
import type { ImClient, MessageEnvelope, ReceiptEvent } from '../../src/client/index.js'
import { describeError } from './format.js'
import { chatOf, lastOwnSeq, type AppStore, type ChatState } from './store.js'

/** Messages fetched per history page (the first page and every scroll-back). */
const PAGE = 50

export class Messages {
  /** Seqs of the active chat whose bubbles are on screen right now (reported by the chat view). */
  private visible: { conv: string, seqs: ReadonlySet<number> } | null = null
  private readonly readSent = new Map<string, number>()
  /** My read cursor as the server last confirmed it (list, read events): receipts count me by it. */
  private readonly confirmedRead = new Map<string, number>()
  private readonly receiptTimers = new Map<string, ReturnType<typeof setTimeout>>()

  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  private get me (): string {
    return this.store.state.me
  }

  close (): void {
    for (const t of this.receiptTimers.values()) clearTimeout(t)
    this.receiptTimers.clear()
  }

  /** A stored message (live, or the reply to an own send): joins its chat and the list's preview. */
  add (m: MessageEnvelope): void {
    let added = false
    this.store.update(state => {
      const s = state.summaries.get(m.conv)
      if (s !== undefined && m.seq > s.lastSeq) {
        s.lastSeq = m.seq
        s.last = m
        s.unread = Math.max(0, s.lastSeq - s.readSeq)
      }
      const chat = chatOf(state, m.conv)
      if (chat.messages.has(m.seq)) return
      chat.messages.set(m.seq, m)
      if (m.from === this.me) chat.pending.delete(m.msgId)
      added = true
    })
    if (added && m.from === this.me && m.conv === this.store.state.active) this.refreshReceipt(m.conv)
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
        for (const m of [...held, ...r.messages]) if (!chat.messages.has(m.seq)) chat.messages.set(m.seq, m)
        chat.loaded = true
        chat.hasOlder = chat.messages.size > 0 && Math.min(...chat.messages.keys()) > 1
        const s = state.summaries.get(conv)
        if (s !== undefined && r.lastSeq > s.lastSeq) {
          s.lastSeq = r.lastSeq
          s.last = r.messages[r.messages.length - 1] ?? s.last
          s.unread = Math.max(0, s.lastSeq - s.readSeq)
        }
      })
    } catch (err) {
      this.store.update(state => { state.sidebarError = describeError(err) })
    } finally {
      chat.loading = false
    }
  }

  /** Scroll-back: the page before the oldest message held. */
  async loadOlder (conv: string): Promise<void> {
    const chat = chatOf(this.store.state, conv)
    if (!chat.loaded || !chat.hasOlder || chat.loading) return
    chat.loading = true
    try {
      const before = Math.min(...chat.messages.keys())
      const r = await this.client.history(conv, { before, limit: PAGE })
      this.store.update(() => {
        for (const m of r.messages) if (!chat.messages.has(m.seq)) chat.messages.set(m.seq, m)
        chat.hasOlder = r.hasMore && r.messages.length > 0
      })
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
      s.readSeq = seq
      s.unread = Math.max(0, s.lastSeq - seq)
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

  /** Sends from the composer: shown as pending at once, stored by the SDK's outbox. */
  send (conv: string, text: string): void {
    const msgId = newMsgId()
    this.store.update(state => { chatOf(state, conv).pending.set(msgId, { msgId, text, failed: false }) })
    void this.deliver(conv, msgId, text)
  }

  /** A failed send, clicked. */
  resend (conv: string, msgId: string): void {
    const p = chatOf(this.store.state, conv).pending.get(msgId)
    if (p === undefined) return
    this.store.update(() => { p.failed = false })
    void this.deliver(conv, msgId, p.text)
  }

  private async deliver (conv: string, msgId: string, text: string): Promise<void> {
    const chat: ChatState = chatOf(this.store.state, conv)
    try {
      const r = await this.client.send(conv, text, { msgId })
      // Usually the message event came first; if not, show the stored message now.
      this.add({ conv, seq: r.seq, msgId, from: this.me, ts: r.ts, kind: 'text', body: text })
      this.store.update(() => { chat.pending.delete(msgId) })
      // My own message counts as read for me once I have seen it.
      this.maybeMarkRead()
    } catch (err) {
      this.store.update(() => {
        const p = chat.pending.get(msgId)
        if (p !== undefined) p.failed = true
      })
      console.warn('send failed', describeError(err))
    }
  }
}

function newMsgId (): string {
  const bytes = new Uint8Array(16)
  crypto.getRandomValues(bytes)
  return 'w' + Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('')
}
