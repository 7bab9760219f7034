/**
 * upload and file-url: attachments (src/files/service.ts). Members only; the URLs are short-lived
 * and signed. A file is then sent as a message of kind `file` (ops/send.ts).
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { requireMember } from '../access.js'
import type { DownloadGrant, FileService, UploadGrant } from '../../files/service.js'

export function filesOf (services: Services): FileService {
  if (services.files === undefined) throw new ImError('UNAVAILABLE', 'attachments are not available on this server')
  return services.files
}

/** upload: authorize (member) -> limits (type, size, bytes today) -> a signed PUT URL. */
export async function upload (caller: Caller, req: RequestOf<'upload'>, services: Services): Promise<UploadGrant> {
  const files = filesOf(services)
  await requireMember(services, caller, req.conv)
  return await files.grantUpload(caller.userId, req)
}

/** file-url: authorize (member) -> the file belongs to the conversation -> a signed GET URL. */
export async function fileUrl (caller: Caller, req: RequestOf<'file-url'>, services: Services): Promise<DownloadGrant> {
  const files = filesOf(services)
  await requireMember(services, caller, req.conv)
  return await files.grantDownload(req.conv, req.file, req.variant ?? 'original')
}
