/**
 * The open channel's settings and size (SDK `channelInfo`: the member count without the member
 * list, and whether I may post). Creating, joining and leaving channels is in conversations.ts.
 */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { AppStore } from './store.js'

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
}
