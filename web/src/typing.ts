/**
 * "typing…": other members' `typing` events, each shown for its ttlMs unless renewed, and ended
 * early by typing:false or by a message from that user; and mine, sent while I type in the
 * composer (at most every RESEND_MS), with typing:false once the composer is emptied, the message
 * sent or the chat left.
 */
import { isChange, type ImClient, type MessageEnvelope, type TypingEvent } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { AppStore } from './store.js'

/** My typing:true goes out at most this often while I keep typing (the server shows it for 5 s). */
export const RESEND_MS = 2000

export class Typing {
  /** When each (conversation, user) stops being shown, as timers. */
  private readonly expiry = new Map<string, ReturnType<typeof setTimeout>>()
  /** Conversations where my typing:true went out, with when. */
  private readonly sentAt = new Map<string, number>()

  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  close (): void {
    for (const t of this.expiry.values()) clearTimeout(t)
    this.expiry.clear()
  }

  onTyping (e: TypingEvent): void {
    if (e.user === this.store.state.me) return
    if (e.typing) this.show(e.conv, e.user, e.ttlMs)
    else this.hide(e.conv, e.user)
  }

  /** A message from someone ends their "typing…". */
  onMessage (m: MessageEnvelope): void {
    if (!isChange(m)) this.hide(m.conv, m.from)
  }

  /** The composer's text changed. */
  composing (conv: string, text: string): void {
    if (text.trim() === '') {
      this.stopped(conv)
      return
    }
    const now = Date.now()
    const last = this.sentAt.get(conv)
    if (last !== undefined && now - last < RESEND_MS) return
    this.sentAt.set(conv, now)
    this.tell(conv, true)
  }

  /** The composer was emptied, its message sent, or the chat left. */
  stopped (conv: string): void {
    if (this.sentAt.delete(conv)) this.tell(conv, false)
  }

  private tell (conv: string, typing: boolean): void {
    this.client.typing(conv, typing).catch((err: unknown) => {
      // In a blocked direct chat the send itself shows the error; after logout nobody is told anyway.
      const code = (err as { code?: unknown }).code
      if (code !== 'BLOCKED' && code !== 'CLOSED') console.warn('typing', describeError(err))
    })
  }

  private show (conv: string, user: string, ttlMs: number): void {
    const key = `${conv}\u0000${user}`
    clearTimeout(this.expiry.get(key))
    this.expiry.set(key, setTimeout(() => { this.hide(conv, user) }, ttlMs))
    const users = this.store.state.typing.get(conv) ?? []
    if (!users.includes(user)) this.store.update(state => { state.typing.set(conv, [...users, user]) })
  }

  private hide (conv: string, user: string): void {
    const key = `${conv}\u0000${user}`
    clearTimeout(this.expiry.get(key))
    this.expiry.delete(key)
    const users = this.store.state.typing.get(conv)
    if (users === undefined || !users.includes(user)) return
    this.store.update(state => {
      const left = users.filter(u => u !== user)
      if (left.length > 0) state.typing.set(conv, left)
      else state.typing.delete(conv)
    })
  }
}

/** "alice is typing…", "alice and bob are typing…", "alice, bob and 2 others are typing…"; '' for nobody. */
export function typingText (users: readonly string[]): string {
  const [a, b] = users
  if (a === undefined) return ''
  if (b === undefined) return `${a} is typing…`
  if (users.length === 2) return `${a} and ${b} are typing…`
  return `${a}, ${b} and ${users.length - 2} other${users.length === 3 ? '' : 's'} are typing…`
}
