/** settings: my account settings; the fields given are changed first. */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { GroupInvites } from '../../store/types.js'
import type { Caller, Services } from '../context.js'

export interface SettingsResult { groupInvites: GroupInvites }

export async function settings (caller: Caller, req: RequestOf<'settings'>, services: Services): Promise<SettingsResult> {
  if (req.groupInvites !== undefined && !(await services.meta.userSetGroupInvites(caller.userId, req.groupInvites))) {
    throw new ImError('NOT_FOUND', 'your account no longer exists')
  }
  const user = await services.meta.userGet(caller.userId)
  if (user === null) throw new ImError('NOT_FOUND', 'your account no longer exists')
  return { groupInvites: user.groupInvites }
}
