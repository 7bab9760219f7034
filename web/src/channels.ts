/**
 * The open channel's settings and size (SDK `channelInfo`: the member count without the member
 * list, and whether I may post), and its invite links (admins: `createInvite`). Creating, joining
 * and leaving channels is in conversations.ts.
 */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { AppStore } from './store.js'

/** The hash of a link that joins with an invite code: `#join=<code>`. */
export const JOIN_HASH = '#join='

/** The code in an invite link (…#join=<code>) or a bare code; null for anything else. */
export function inviteCodeOf (text: string): string | null {
  const at = text.indexOf(JOIN_HASH)
  const code = (at >= 0 ? text.slice(at + JOIN_HASH.length) : text).trim()
  return /^[A-Za-z0-9_-]{24}$/.test(code) ? code : null
}

export class Channels {
  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  async load (conv: string): Promise<void> {
    try {
      const info = await this.client.channelInfo(conv)
      this.store.update(state => { state.channels.set(conv, info) })
    } catch (err) {
      this.store.update(state => { state.chatError = { conv, text: describeError(err) } })
    }
  }

  /** Makes an invite code (the server's default lifetime, any number of uses) and shows it as a link to this page. */
  async createInvite (conv: string): Promise<void> {
    try {
      const made = await this.client.createInvite(conv)
      const link = `${location.origin}${location.pathname}${JOIN_HASH}${made.code}`
      this.store.update(state => { state.invite = { conv, link, expiresAt: made.expiresAt } })
    } catch (err) {
      this.store.update(state => { state.chatError = { conv, text: describeError(err) } })
    }
  }

  closeInvite (): void {
    this.store.update(state => { state.invite = null })
  }
}
