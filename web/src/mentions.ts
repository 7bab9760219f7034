/**
 * Mentions: who a composed text mentions (sent with it), the composer's autocomplete (the `@word`
 * at the caret and the members it may complete to), the parts of a message's text to highlight,
 * and the mention badge of the conversation list (from `mention` events, and the unread mention
 * count of `list` when the server sends one).
 */
import type { ConversationSummary, MentionEvent, MessageEnvelope } from '../../src/client/index.js'
import type { AppState } from './store.js'

/** Mentions every member of a group (its admins and owner may send it). */
export const MENTION_ALL = '@all'
/** Suggestions shown at most. */
const SUGGESTIONS_MAX = 8
/**
 * Where a `@name` ends: not before another character of a user id (src/protocol/topics.ts
 * USER_ID_PATTERN), except a dot that ends a sentence.
 */
const TOKEN_END = '(?![a-z0-9_-]|\\.[a-z0-9_-])'
/** What may stand before a `@name`: the start, or anything but a user id's character (not e-mail addresses). */
const TOKEN_START = '(^|[^a-z0-9_.-])'

/** How a mention is written in text: `@bob`, `@all`. */
export function mentionToken (mention: string): string {
  return mention === MENTION_ALL ? MENTION_ALL : `@${mention}`
}

/** Who can be mentioned in a conversation: the other members, and '@all' first for a group's admins and owner. */
export function mentionCandidates (state: AppState, s: ConversationSummary): string[] {
  if (s.kind === 'direct') return s.peer === undefined ? [] : [s.peer]
  const members = (state.chats.get(s.conv)?.members ?? []).map(m => m.user).filter(u => u !== state.me)
  return s.role === 'member' ? members : [MENTION_ALL, ...members]
}

/** The candidates `text` mentions (as `@name`), in candidate order. */
export function mentionsIn (text: string, candidates: readonly string[]): string[] {
  return candidates.filter(c => tokenPattern([c], '').test(text))
}

/** The `@word` being typed at the caret: where its `@` is and the word so far (lower-cased), or null. */
export function mentionQuery (text: string, caret: number): { start: number, query: string } | null {
  const match = /(?:^|[^a-z0-9_.-])@([a-z0-9_.-]{0,32})$/i.exec(text.slice(0, caret))
  if (match === null) return null
  const word = match[1] ?? ''
  return { start: caret - word.length - 1, query: word.toLowerCase() }
}

/** Candidates for a query: those starting with it first, then those containing it. */
export function suggestions (candidates: readonly string[], query: string): string[] {
  const name = (c: string): string => mentionToken(c).slice(1)
  const starting = candidates.filter(c => name(c).startsWith(query))
  const containing = candidates.filter(c => !name(c).startsWith(query) && name(c).includes(query))
  return [...starting, ...containing].slice(0, SUGGESTIONS_MAX)
}

export type TextPart = string | { token: string, mention: string }

/** A message's text cut into plain text and the `@name`s of the users (or '@all') it mentions. */
export function mentionParts (text: string, mentions: readonly string[] | undefined): TextPart[] {
  if (mentions === undefined || mentions.length === 0) return [text]
  const re = tokenPattern(mentions, 'g')
  const parts: TextPart[] = []
  let at = 0
  for (let m = re.exec(text); m !== null; m = re.exec(text)) {
    const start = m.index + (m[1] ?? '').length
    const token = text.slice(start, m.index + m[0].length)
    if (start > at) parts.push(text.slice(at, start))
    const lower = token.toLowerCase()
    parts.push({ token, mention: lower === MENTION_ALL ? MENTION_ALL : lower.slice(1) })
    at = m.index + m[0].length
  }
  if (at < text.length) parts.push(text.slice(at))
  return parts
}

/** The message mentions me (by name, or everyone), and is not mine. */
export function mentionsMe (m: MessageEnvelope, me: string): boolean {
  return m.from !== me && m.deleted === undefined && (m.mentions?.some(u => u === me || u === MENTION_ALL) ?? false)
}

function tokenPattern (mentions: readonly string[], flags: string): RegExp {
  const names = [...mentions].map(mentionToken).sort((a, b) => b.length - a.length).map(t => t.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&'))
  return new RegExp(`${TOKEN_START}(${names.join('|')})${TOKEN_END}`, `i${flags}`)
}

// --------------------------------------------------------------------------------------------------
// The badge

/** A summary from `list` (before it is merged with newer live state): its mention count replaces what events told up to its lastSeq. */
export function noteListed (state: AppState, s: ConversationSummary): void {
  // a server from before mention counts sends none: the events alone count then
  const listed: unknown = s.mentions
  if (typeof listed !== 'number') return
  const seqs = (state.mentions.get(s.conv)?.seqs ?? []).filter(seq => seq > s.lastSeq)
  state.mentions.set(s.conv, { listed, listedSeq: s.lastSeq, seqs })
}

/** A `mention` event: I was mentioned at e.seq. */
export function noteMention (state: AppState, e: MentionEvent): void {
  const readSeq = state.summaries.get(e.conv)?.readSeq ?? 0
  const m = state.mentions.get(e.conv) ?? { listed: 0, listedSeq: 0, seqs: [] }
  if (e.seq <= readSeq || e.seq <= m.listedSeq || m.seqs.includes(e.seq)) return
  m.seqs = [...m.seqs.filter(seq => seq > readSeq), e.seq]
  state.mentions.set(e.conv, m)
}

/** Unread mentions of me as shown: those after my read cursor; nothing for the chat being looked at. */
export function shownMentions (state: AppState, s: ConversationSummary): number {
  const m = state.mentions.get(s.conv)
  if (m === undefined || (s.conv === state.active && state.pageVisible)) return 0
  return (s.readSeq < m.listedSeq ? m.listed : 0) + m.seqs.filter(seq => seq > s.readSeq).length
}
