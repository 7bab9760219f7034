/** Shared authorization steps for operations on one conversation. */
import { ImError } from '../errors.js'
import type { Role } from '../store/types.js'
import type { ConversationEntry } from './directory.js'
import type { Caller, Services } from './context.js'
import type { MemberRecord } from '../store/types.js'

/** The caller must be a member; unknown conversations look the same (no existence leak). */
export async function requireMember (services: Services, caller: Caller, conversationId: string): Promise<{ entry: ConversationEntry, member: MemberRecord }> {
  const found = await services.directory.member(conversationId, caller.userId)
  if (found === null) throw new ImError('NOT_MEMBER')
  return found
}

export function requireGroup (entry: ConversationEntry): void {
  if (entry.conversation.kind !== 'group') throw new ImError('FORBIDDEN', 'direct conversations have exactly two members and cannot be changed')
}

const RANK: Record<Role, number> = { member: 0, admin: 1, owner: 2 }

export function requireRole (member: MemberRecord, atLeast: Role): void {
  if (RANK[member.role] < RANK[atLeast]) throw new ImError('FORBIDDEN', atLeast === 'owner' ? 'only the group owner may do this' : 'only a group admin or the owner may do this')
}

export function outranks (a: Role, b: Role): boolean {
  return RANK[a] > RANK[b]
}

/**
 * Latest stored seq of a conversation: from the sequencer when it can tell, else from the store
 * (see Sequencer.lastSeqFor). `atLeast`: the caller needs to know only whether this seq is stored.
 */
export async function lastSeqOf (services: Services, conversationId: string, atLeast?: number): Promise<number> {
  return await services.sequencer.lastSeqFor(conversationId, atLeast)
}
