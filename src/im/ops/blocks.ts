/**
 * block / unblock / blocks: whom I block (topics.md, "Blocking"). The rules they switch on are
 * applied where the operations they restrict run: `direct` and `send` (requireNotBlocked in
 * ../blocks.ts), `create-group` and `add-members` (conversations.ts), presence (../presence.ts).
 * Both block and unblock are idempotent: the answer says the state after the request.
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'

export interface BlockResult { user: string, blocked: boolean }
export interface BlocksResult { blocks: Array<{ user: string, at: number }> }

/** The other user of a block or unblock: someone else, and someone who exists. */
async function requireOther (services: Services, caller: Caller, userId: string): Promise<void> {
  if (userId === caller.userId) throw new ImError('BAD_REQUEST', 'you cannot block or unblock yourself')
  if ((await services.meta.userGet(userId)) === null) throw new ImError('NOT_FOUND', `no such user: ${userId}`)
}

/** Tells the other user's devices my presence as they may now see it; the answer does not wait for it. */
function retellPresence (services: Services, caller: Caller, userId: string): void {
  services.presence.retell(caller.userId, userId).catch((err: unknown) => services.logger.warn({ user: caller.userId, other: userId, err }, 'presence after a block change failed'))
}

export async function block (caller: Caller, req: RequestOf<'block'>, services: Services): Promise<BlockResult> {
  await requireOther(services, caller, req.user)
  const outcome = await services.blocks.add(caller.userId, req.user, services.now())
  if (outcome === 'full') {
    throw new ImError('LIMIT_REACHED', `you already block ${services.blocks.maxPerUser} users (the most one user may block); unblock someone first`)
  }
  if (outcome === 'added') retellPresence(services, caller, req.user)
  return { user: req.user, blocked: true }
}

export async function unblock (caller: Caller, req: RequestOf<'unblock'>, services: Services): Promise<BlockResult> {
  await requireOther(services, caller, req.user)
  if (await services.blocks.remove(caller.userId, req.user)) retellPresence(services, caller, req.user)
  return { user: req.user, blocked: false }
}

export async function blocks (caller: Caller, _req: RequestOf<'blocks'>, services: Services): Promise<BlocksResult> {
  const list = await services.blocks.list(caller.userId)
  return { blocks: list.map(b => ({ user: b.blockedId, at: b.at })) }
}
