/**
 * read: move my read cursor up to seq (never backwards, never past the last message);
 * mute: mute or unmute a conversation for me; receipts: who has read a given seq (aggregate).
 */
import type { RequestOf } from '../../protocol/schemas.js'
import { ImError } from '../../errors.js'
import type { Caller, Services } from '../context.js'
import { requireMember } from '../access.js'
import { unreadMany } from '../unread.js'

export interface ReadResult { conv: string, readSeq: number, unread: number }

export async function read (caller: Caller, req: RequestOf<'read'>, services: Services): Promise<ReadResult> {
  const { entry, member } = await requireMember(services, caller, req.conv)
  const tail = await services.sequencer.tailFor(req.conv, req.seq)
  const target = Math.min(req.seq, tail.seq)
  const before = member.readSeq
  const readSeq = await services.readCursors.advance(req.conv, caller.userId, target)
  if (readSeq === null) throw new ImError('NOT_MEMBER')
  services.directory.noteRead(req.conv, caller.userId, readSeq)
  const [unread = 0] = await unreadMany(services, [{ conversationId: req.conv, tail, readSeq }])
  if (readSeq > before) {
    // the cursor moved: tell my other devices (QoS 0: those connected now; a device that comes back
    // gets the cursors from list; this one has the reply), and the other members (receipts)
    services.publisher.toOtherDevices(caller.userId, caller.deviceId, { type: 'read', conv: req.conv, readSeq, unread })
    // channels have no receipts: nobody is told who read what
    if (entry.conversation.kind !== 'channel') await services.receipts.noteRead(req.conv, caller.userId, readSeq)
  }
  return { conv: req.conv, readSeq, unread }
}

export async function mute (caller: Caller, req: RequestOf<'mute'>, services: Services): Promise<{ conv: string, muted: boolean }> {
  await requireMember(services, caller, req.conv)
  const ok = await services.meta.memberSetMuted(req.conv, caller.userId, req.muted)
  if (!ok) throw new ImError('NOT_MEMBER')
  services.directory.noteMuted(req.conv, caller.userId, req.muted)
  return { conv: req.conv, muted: req.muted }
}

export async function receipts (caller: Caller, req: RequestOf<'receipts'>, services: Services): Promise<{ conv: string, seq: number, readBy: number, members: number }> {
  const { entry } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') throw new ImError('FORBIDDEN', 'channels have no read receipts')
  // read cursors move on every node: count from the store, not the cache
  const members = await services.meta.memberList(req.conv)
  let readBy = 0
  for (const m of members) if (m.readSeq >= req.seq) readBy++
  return { conv: req.conv, seq: req.seq, readBy, members: members.length }
}
