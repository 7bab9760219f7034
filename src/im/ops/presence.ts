/**
 * presence: online state and last-seen of users who share a conversation with me (and of myself),
 * except those who block me (PresenceService.statusFor).
 */
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import type { PresenceStatus } from '../presence.js'

export async function presence (caller: Caller, req: RequestOf<'presence'>, services: Services): Promise<{ users: PresenceStatus[] }> {
  return { users: await services.presence.statusFor(caller.userId, req.users) }
}
