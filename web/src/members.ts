/** The members panel of a group: who is in it (SDK `members`), adding members. */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import { chatOf, type AppStore } from './store.js'

export class Members {
  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  /** Fetches the members of the active group (for the panel and the "n members" subtitle). */
  async load (): Promise<void> {
    const conv = this.store.state.active
    if (conv === null) return
    try {
      const r = await this.client.members(conv)
      this.store.update(state => { chatOf(state, conv).members = r.members })
    } catch (err) {
      this.store.update(state => { state.membersError = describeError(err) })
    }
  }

  toggle (): void {
    const open = !this.store.state.membersOpen
    this.store.update(state => {
      state.membersOpen = open
      state.membersError = null
    })
    if (open) void this.load()
  }

  /** Resolves true once added (the form clears itself then). */
  async add (users: string[]): Promise<boolean> {
    const conv = this.store.state.active
    if (conv === null || users.length === 0) return false
    this.store.update(state => { state.membersError = null })
    try {
      await this.client.addMembers(conv, users)
      await this.load()
      return true
    } catch (err) {
      this.store.update(state => { state.membersError = describeError(err) })
      return false
    }
  }
}
