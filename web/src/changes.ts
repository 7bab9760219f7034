/**
 * Changing messages: edit (my text messages, within the server's edit window), delete for everyone
 * (mine; in groups admins and the owner delete anyone's) and reactions from a small emoji set,
 * toggled. The SDK shows each at once (its `updated` event) and takes it back when the server
 * refuses; the refusal is shown in the chat.
 */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import { chatOf, type AppStore } from './store.js'

/** The emojis offered for reactions. */
export const REACTIONS = ['👍', '❤️', '😂', '🎉', '😮', '😢'] as const

export class Changes {
  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  async edit (conv: string, seq: number, text: string): Promise<boolean> {
    return await this.run(conv, 'Could not edit', async () => { await this.client.edit(conv, seq, text) })
  }

  async remove (conv: string, seq: number): Promise<boolean> {
    return await this.run(conv, 'Could not delete', async () => { await this.client.deleteMessage(conv, seq) })
  }

  /** Adds my reaction `emoji`, or takes it back when I reacted with it already. */
  async toggleReaction (conv: string, seq: number, emoji: string): Promise<boolean> {
    const { state } = this.store
    const mine = chatOf(state, conv).messages.get(seq)?.reactions?.[emoji]?.includes(state.me) ?? false
    return await this.run(conv, 'Could not react', async () => { await this.client.react(conv, seq, emoji, { remove: mine }) })
  }

  private async run (conv: string, what: string, fn: () => Promise<void>): Promise<boolean> {
    this.store.update(state => { state.chatError = null })
    try {
      await fn()
      return true
    } catch (err) {
      this.store.update(state => { state.chatError = { conv, text: `${what}: ${describeError(err)}` } })
      return false
    }
  }
}
