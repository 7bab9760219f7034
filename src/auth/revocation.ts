/**
 * Revocation always wins: when an account is disabled or its secret reset, every session of it
 * ends, on every node, including logins still in flight.
 *
 * - Through this server (admin API): revoke() ends the local sessions at once and tells the other
 *   nodes over the cluster bus.
 * - Through the metadata store directly (the admin tool on MySQL, another service): every node
 *   polls the store's change feed (MetadataStore.userChanges) every `pollMs` and ends the sessions
 *   of accounts that are disabled, or whose secret differs from the one the session logged in with.
 * - Logins in flight: Sessions marks the user revoked; a login that started before the mark is
 *   refused when it completes (BrokerHooks.authenticate).
 */
import { LRUCache } from 'lru-cache'
import type { Logger } from '../log.js'
import type { MetadataStore, UserRecord } from '../store/types.js'
import type { Sessions } from '../broker/sessions.js'
import type { ClusterBus } from '../broker/bus.js'
import { REVOKE_TOPIC } from '../protocol/topics.js'

export class Revocations {
  private cursor: string | null = null
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null
  /** The (disabled, secret) state last seen per user, so a change reported twice acts once. */
  private readonly seen = new LRUCache<string, string>({ max: 100_000 })

  constructor (
    private readonly sessions: Sessions,
    private readonly meta: MetadataStore,
    private readonly bus: ClusterBus,
    private readonly logger: Logger,
    private readonly pollMs: number
  ) {
    bus.on(REVOKE_TOPIC, (notice) => {
      if (typeof notice.user === 'string') this.sessions.disconnectUser(notice.user, typeof notice.reason === 'string' ? notice.reason : 'revoked')
    })
  }

  /** Starts watching the store's change feed (the first call only takes a cursor). */
  async start (): Promise<void> {
    this.cursor = (await this.meta.userChanges(null)).cursor
    this.timer = setInterval(() => { this.polling ??= this.poll().finally(() => { this.polling = null }) }, this.pollMs)
    this.timer.unref()
  }

  /** Ends every session of the account here and on every other node. */
  revoke (userId: string, reason: string): number {
    this.bus.publish(REVOKE_TOPIC, { user: userId, reason })
    return this.sessions.disconnectUser(userId, reason)
  }

  /** One look at the change feed (exposed for tests; the timer calls it). */
  async poll (): Promise<void> {
    let changes: { users: UserRecord[], cursor: string }
    try {
      changes = await this.meta.userChanges(this.cursor)
    } catch (err) {
      this.logger.debug({ err }, 'user change feed unavailable')
      return
    }
    this.cursor = changes.cursor
    for (const user of changes.users) this.apply(user)
  }

  private apply (user: UserRecord): void {
    const state = `${user.disabled ? 1 : 0}\u0000${user.secretHash}`
    if (this.seen.get(user.id) === state) return
    this.seen.set(user.id, state)
    const ended = user.disabled
      ? this.sessions.disconnectUser(user.id, 'account disabled')
      : this.sessions.disconnectWhere(user.id, s => s.secretHash !== user.secretHash, 'secret reset')
    if (ended > 0) this.logger.info({ user: user.id, sessions: ended }, 'sessions ended after an account change in the store')
  }

  async close (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    await this.polling
  }
}
