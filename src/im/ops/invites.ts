/**
 * Invite codes of channels (see ../invites.ts for what a code is): create-invite, invites and
 * revoke-invite, for the admins and the owner of a channel; joining with a code is `join
 * {invite}` (ops/channels.ts). Rules:
 *   - only channels have invites (a group's members are added by its admins: FORBIDDEN);
 *   - outsiders get NOT_MEMBER, as for every operation on a conversation; plain members FORBIDDEN;
 *   - a code works until it expires (expiresInMs, default channels.inviteTtlMs, at most
 *     channels.inviteTtlMaxMs), is used up (maxUses), is revoked, or its creator stops being an
 *     admin or the owner; a channel has at most channels.invitesPerChannel live ones
 *     (LIMIT_REACHED), and dead ones are removed when the channel's next one is made;
 *   - nothing caches invites: every join reads the shared metadata store, so a revoke counts at
 *     once on every node.
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import { StoreConflictError, inviteCodeId, type InviteRecord } from '../../store/types.js'
import type { Caller, Services } from '../context.js'
import { requireMember } from '../access.js'
import { inviteHash, newInviteCode } from '../invites.js'
import { current } from './channels.js'

/** Codes drawn when one collides with an invite of the channel on its codeId (a 1 in 2^32 / 50 chance each). */
const CODE_ATTEMPTS = 3

export interface InviteSummary {
  /** The invite's short name (revoke-invite), not the code: the first 8 hex digits of the code's SHA-256. */
  codeId: string
  createdBy: string
  createdAt: number
  expiresAt: number
  maxUses: number | null
  uses: number
}

/** The caller is an admin or the owner of this channel (the role read from the store). */
async function requireChannelAdmin (caller: Caller, conv: string, services: Services): Promise<void> {
  const { entry } = await requireMember(services, caller, conv)
  if (entry.conversation.kind !== 'channel') throw new ImError('FORBIDDEN', 'invite codes are for channels; add members to a group with add-members')
  if ((await current(services, conv, caller.userId)).role === 'member') throw new ImError('FORBIDDEN', 'only the admins and the owner of a channel manage its invite codes')
}

function summaryOf (invite: InviteRecord): InviteSummary {
  return { codeId: inviteCodeId(invite.codeHash), createdBy: invite.createdBy, createdAt: invite.createdAt, expiresAt: invite.expiresAt, maxUses: invite.maxUses, uses: invite.uses }
}

export async function createInvite (caller: Caller, req: RequestOf<'create-invite'>, services: Services): Promise<InviteSummary & { code: string, conv: string }> {
  await requireChannelAdmin(caller, req.conv, services)
  const { inviteTtlMs, inviteTtlMaxMs, invitesPerChannel } = services.config.channels
  const ttl = req.expiresInMs ?? inviteTtlMs
  if (ttl > inviteTtlMaxMs) throw new ImError('BAD_REQUEST', `expiresInMs: at most ${inviteTtlMaxMs} (channels.inviteTtlMaxMs)`)
  const now = services.now()
  for (let attempt = 1; ; attempt++) {
    const code = newInviteCode()
    const invite: InviteRecord = { codeHash: inviteHash(code), conversationId: req.conv, createdBy: caller.userId, createdAt: now, expiresAt: now + ttl, maxUses: req.maxUses ?? null, uses: 0 }
    try {
      if (await services.meta.inviteCreate(invite, invitesPerChannel, now) === 'full') {
        throw new ImError('LIMIT_REACHED', `the channel has ${invitesPerChannel} live invites, the most it may have; revoke one first`)
      }
      // demoted or removed while the code was being stored: that change removed the creator's codes
      // before this one existed, so this one goes now (a change after this read removes it itself)
      const after = await services.meta.memberGet(req.conv, caller.userId)
      if (after === null || after.role === 'member') {
        await services.meta.inviteRemove(req.conv, inviteCodeId(invite.codeHash))
        throw new ImError('FORBIDDEN', 'your role changed while the invite was made: only the admins and the owner of a channel manage its invite codes')
      }
      // the only time the code is shown: the store keeps its hash
      return { code, conv: req.conv, ...summaryOf(invite) }
    } catch (err) {
      if (!(err instanceof StoreConflictError) || attempt >= CODE_ATTEMPTS) throw err
    }
  }
}

export async function invites (caller: Caller, req: RequestOf<'invites'>, services: Services): Promise<{ conv: string, invites: InviteSummary[] }> {
  await requireChannelAdmin(caller, req.conv, services)
  const live = await services.meta.inviteList(req.conv, services.now())
  return { conv: req.conv, invites: live.map(summaryOf) }
}

export async function revokeInvite (caller: Caller, req: RequestOf<'revoke-invite'>, services: Services): Promise<{ conv: string, codeId: string }> {
  await requireChannelAdmin(caller, req.conv, services)
  if (!(await services.meta.inviteRemove(req.conv, req.codeId))) throw new ImError('NOT_FOUND', `no invite ${req.codeId} in this channel`)
  return { conv: req.conv, codeId: req.codeId }
}
