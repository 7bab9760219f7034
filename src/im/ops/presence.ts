/** presence: online state and last-seen of users who share a conversation with me (and of myself). */
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import type { PresenceStatus } from '../presence.js'

export async function presence (caller: Caller, req: RequestOf<'presence'>, services: Services): Promise<{ users: PresenceStatus[] }> {
  const contacts = await services.presence.contactsOf(caller.userId)
  contacts.add(caller.userId)
  const visible = [...new Set(req.users)].filter(u => contacts.has(u))
  const statuses = await services.presence.status(visible)
  const known = new Map(statuses.map(s => [s.user, s]))
  // users I share no conversation with look offline and never seen: no presence leak
  return { users: req.users.map(u => known.get(u) ?? { user: u, online: false, lastSeen: null }) }
}
