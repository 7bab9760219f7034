/** Whom I block (SDK `blocks`), and blocking or unblocking the peer of a direct chat from its header. */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { AppStore } from './store.js'

export class Blocks {
  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  async load (): Promise<void> {
    try {
      const { blocks } = await this.client.blocks()
      this.store.update(state => { state.blocked = new Set(blocks.map(b => b.user)) })
    } catch (err) {
      console.warn('blocks', describeError(err))
    }
  }

  /** Blocks (or unblocks) `user`; a refusal is shown in the chat `conv`. */
  async set (conv: string, user: string, blocked: boolean): Promise<void> {
    this.store.update(state => { state.chatError = null })
    try {
      const r = blocked ? await this.client.block(user) : await this.client.unblock(user)
      this.store.update(state => {
        if (r.blocked) state.blocked.add(r.user)
        else state.blocked.delete(r.user)
      })
    } catch (err) {
      this.store.update(state => { state.chatError = { conv, text: `Could not ${blocked ? 'block' : 'unblock'} ${user}: ${describeError(err)}` } })
    }
  }
}
