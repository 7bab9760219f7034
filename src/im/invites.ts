/**
 * Invite codes of channels: what a code is and how it is kept. A code is INVITE_CODE_BYTES random
 * bytes in base64url (24 characters, 144 bits: not guessable, and not worth guessing at the request
 * rate limit); the store keeps only its SHA-256 (MetadataStore.invite*), so a copy of the database
 * gives no working code, and create-invite's reply is the only place a code is ever shown (that reply
goes where every reply goes, and stays in the hooks' memory of recent replies for resends). A plain
 * hash suffices (no key, no slow hash): the code is random, so there is nothing to search for.
 *
 * An invite admits a join while it is live (not expired, not used up: inviteLive), not revoked, and
 * its creator is still an admin or the owner of the channel with an enabled account, and the joiner
was not removed by an admin (ops/channels.ts `join`).
 */
import { createHash, randomBytes } from 'node:crypto'

const INVITE_CODE_BYTES = 18

export function newInviteCode (): string {
  return randomBytes(INVITE_CODE_BYTES).toString('base64url')
}

/** What the store keeps of a code: its SHA-256, 64 lower-case hex digits. */
export function inviteHash (code: string): string {
  return createHash('sha256').update(code, 'utf8').digest('hex')
}
