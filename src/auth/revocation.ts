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
import { lruCache } from '../lru.js'
import type { Logger } from '../log.js'
import type { MetadataStore, UserRecord } from '../store/types.js'
import type { Sessions } from '../broker/sessions.js'
import type { ClusterBus } from '../broker/bus.js'
import { REVOKE_TOPIC } from '../protocol/topics.js'

export class Revocations {
  private cursor: string | null = null
  private timer: NodeJS.Timeout | null = null
  private polling: Promise<void> | null = null
  /** The (disabled, secret) state last seen per user: what changed since the last report. */
  private readonly seen = lruCache<string, { disabled: boolean, secretHash: string }>(100_000)

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

  /**
   * A reported user (a change may be reported several times, and the first report of a user may
   * be its creation). Disabled: every session ends, and logins in flight are refused, the first
   * time it is seen disabled. Otherwise the sessions that logged in with another secret end, on
   * every report (so a login that was in flight during an earlier report is caught by a later
   * one); logins in flight are refused only when the secret is known to have changed.
   */
  private apply (user: UserRecord): void {
    const before = this.seen.get(user.id)
    this.seen.set(user.id, { disabled: user.disabled, secretHash: user.secretHash })
    let ended = 0
    if (user.disabled) {
      if (before?.disabled !== true) ended = this.sessions.disconnectUser(user.id, 'account disabled')
    } else {
      const secretChanged = before !== undefined && before.secretHash !== user.secretHash
      ended = this.sessions.disconnectWhere(user.id, s => s.secretHash !== user.secretHash, 'secret reset', { mark: secretChanged })
    }
    if (ended > 0) this.logger.info({ user: user.id, sessions: ended }, 'sessions ended after an account change in the store')
  }

  async close (): Promise<void> {
    if (this.timer !== null) clearInterval(this.timer)
    await this.polling
  }
}
