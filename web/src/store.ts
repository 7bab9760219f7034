/**
 * The page's one state store. Controllers (session.ts, conversations.ts, messages.ts, members.ts)
 * change the state through `update`; the views read it and re-render when the store notifies them,
 * once per microtask however many updates ran. Nothing else holds what is shown.
 */
import type { ChannelInfoResult, ConnectionState, ConversationSummary, MessageEnvelope, PresenceEvent, Role } from '../../src/client/index.js'

/** An own send not yet seen as a stored message; `error` says why it failed (shown under it). */
export interface Pending { msgId: string, text: string, mentions?: string[], failed: boolean, error: string | null }

export interface Member { user: string, role: Role }

/** What the page holds for one conversation. */
export interface ChatState {
  /** Real messages (text, custom) in their current state, by seq; never change entries. */
  messages: Map<number, MessageEnvelope>
  /** Own sends not yet seen as stored messages, by msgId, in the order they were written. */
  pending: Map<string, Pending>
  /** True once the newest page has been fetched. */
  loaded: boolean
  loading: boolean
  /** More messages exist below the lowest seq held. */
  hasOlder: boolean
  /**
   * Every real message with a seq above this one is held (history pages fetched down to here, then
   * live ones); null until the first page. Unread counts below it come from the server.
   */
  coveredFrom: number | null
  /** The highest seq (message or change) this page has seen for the chat. */
  seenSeq: number
  /** Direct: the peer's read cursor, as far as we know it. */
  peerReadSeq: number
  /** Group: how many others have read my last message, `receiptSeq`. */
  receiptSeq: number
  othersRead: number
  /** Group: the members, once fetched. */
  members?: Member[]
}

export type Presence = Omit<PresenceEvent, 'type'>

/**
 * Mentions of me in one conversation: the unread count `list` gave (when the server sends one) as
 * of its lastSeq, and the seqs that `mention` events told of since.
 */
export interface MentionCount { listed: number, listedSeq: number, seqs: number[] }

export interface LoginState {
  user: string
  device: string
  error: string | null
  busy: boolean
}

export interface AppState {
  /** `login`: the form; `restoring`: logging back in with this tab's saved session (nothing shown); `app`: logged in (also while reconnecting). */
  phase: 'login' | 'restoring' | 'app'
  login: LoginState
  me: string
  conn: ConnectionState
  summaries: Map<string, ConversationSummary>
  /** When a conversation was created or opened here: sorts conversations without messages. */
  touched: Map<string, number>
  chats: Map<string, ChatState>
  /** The conversation on screen. */
  active: string | null
  /** Online state of direct-chat peers. */
  presence: Map<string, Presence>
  membersOpen: boolean
  sidebarError: string | null
  /** An invite link the page was opened with (`#join=<code>`), waiting for the user to say Join. */
  pendingInvite: string | null
  membersError: string | null
  /** A refused edit, delete, reaction, block or unblock, shown in that conversation's chat view. */
  chatError: { conv: string, text: string } | null
  /** Who is typing in each conversation (not me), in the order they started. */
  typing: Map<string, string[]>
  mentions: Map<string, MentionCount>
  /** Users I block. */
  blocked: Set<string>
  /** document.visibilityState === 'visible' */
  pageVisible: boolean
  /** Files being uploaded (web/src/files.ts), by a local id. */
  uploads: Map<string, Upload>
  /** Notifications through Web Push on this device (web/src/push.ts). */
  push: PushState
  /** Channels opened here: settings, member count, my role (web/src/channels.ts). */
  channels: Map<string, ChannelInfoResult>
  /** The invite link made in the open channel (shown until another chat opens; the code is not kept anywhere else). */
  invite: InviteLink | null
}

export interface InviteLink { conv: string, link: string, expiresAt: number }

export interface PushState {
  status: 'unsupported' | 'off' | 'working' | 'on' | 'denied' | 'error'
  /** Why (unsupported, denied, error). */
  detail: string | null
}

export interface Upload { conv: string, name: string, sent: number, total: number }

export function initialState (): AppState {
  return {
    phase: 'login',
    login: { user: '', device: '', error: null, busy: false },
    me: '',
    conn: 'connecting',
    summaries: new Map(),
    touched: new Map(),
    chats: new Map(),
    active: null,
    presence: new Map(),
    membersOpen: false,
    sidebarError: null,
    pendingInvite: null,
    membersError: null,
    chatError: null,
    typing: new Map(),
    mentions: new Map(),
    blocked: new Set(),
    push: { status: 'off', detail: null },
    uploads: new Map(),
    pageVisible: true,
    channels: new Map(),
    invite: null
  }
}

export class Store<S> {
  private readonly listeners = new Set<() => void>()
  private scheduled = false

  constructor (readonly state: S) {}

  /** Changes the state; listeners are told once, in a microtask. */
  update (change: (state: S) => void): void {
    change(this.state)
    if (this.scheduled) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      for (const fn of [...this.listeners]) fn()
    })
  }

  subscribe (fn: () => void): () => void {
    this.listeners.add(fn)
    return () => { this.listeners.delete(fn) }
  }
}

export type AppStore = Store<AppState>

// --------------------------------------------------------------------------------------------------
// Reading the state (pure)

/** The chat state of a conversation, created on first use. */
export function chatOf (state: AppState, conv: string): ChatState {
  let c = state.chats.get(conv)
  if (c === undefined) {
    c = { messages: new Map(), pending: new Map(), loaded: false, loading: false, hasOlder: false, coveredFrom: null, seenSeq: 0, peerReadSeq: 0, receiptSeq: 0, othersRead: 0 }
    state.chats.set(conv, c)
  }
  return c
}

export function titleOf (s: ConversationSummary): string {
  return s.kind === 'direct' ? (s.peer ?? 'direct chat') : (s.name ?? s.kind)
}

/** Unread as shown: nothing for the chat being looked at. */
export function shownUnread (state: AppState, s: ConversationSummary): number {
  return s.conv === state.active && state.pageVisible ? 0 : s.unread
}

/** Newest activity first: the last message, or when the conversation was created or opened here. */
export function sortedSummaries (state: AppState): ConversationSummary[] {
  const key = (s: ConversationSummary): number => Math.max(s.last?.ts ?? 0, state.touched.get(s.conv) ?? 0)
  return [...state.summaries.values()].sort((a, b) => key(b) - key(a))
}

export function lastOwnSeq (chat: ChatState, me: string): number {
  let best = 0
  for (const m of chat.messages.values()) if (m.from === me && m.seq > best) best = m.seq
  return best
}

/** Real messages held with from < seq <= to. */
export function realsIn (chat: ChatState, from: number, to = Infinity): number {
  let n = 0
  for (const seq of chat.messages.keys()) if (seq > from && seq <= to) n++
  return n
}

/**
 * The exact unread count of (readSeq, lastSeq] when the chat holds every real message of it (the
 * pages fetched reach down to readSeq, and nothing up to lastSeq is still on its way), else undefined.
 */
export function heldUnread (chat: ChatState | undefined, readSeq: number, lastSeq: number): number | undefined {
  if (chat === undefined || chat.coveredFrom === null || readSeq < chat.coveredFrom || lastSeq > chat.seenSeq) return undefined
  return realsIn(chat, readSeq, lastSeq)
}

export function bodyText (m: MessageEnvelope): string {
  if (m.deleted !== undefined) return 'message deleted'
  if (m.kind === 'text' && typeof m.body === 'string') return m.body
  if (m.kind === 'file') {
    const f = m.body as { name?: unknown, mime?: unknown } | null
    return `${typeof f?.mime === 'string' && f.mime.startsWith('image/') ? 'Photo' : 'File'}: ${typeof f?.name === 'string' ? f.name : 'file'}`
  }
  try {
    return JSON.stringify(m.body)
  } catch {
    return String(m.body)
  }
}
