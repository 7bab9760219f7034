/**
 * Changes to stored messages (edit, delete, react), as both message stores apply them: each part
 * of MessageChanges keeps the change with the highest seq (the deletion: the lowest), so applying the same changes in any
 * order, any number of times, gives the same message. That is what lets two nodes apply changes
 * of one conversation at once, and a change be applied again after a crash.
 */
import type { MessageChanges, StoredMessage } from './types.js'

/** The body of a `react` change. */
export interface ReactionBody { emoji: string, remove: boolean }

/** A reaction state: 2 * seq + 1 when the change at seq added it, 2 * seq when it removed it. */
export function reactionState (seq: number, added: boolean): number {
  return 2 * seq + (added ? 1 : 0)
}

/** `changes` (absent: none yet) with `change` applied; a new object, `changes` is not modified. */
export function applyChangeTo (changes: MessageChanges | undefined, change: StoredMessage): MessageChanges {
  const next: MessageChanges = changes === undefined ? { version: 0 } : structuredClone(changes)
  next.version++
  if (change.kind === 'edit') {
    if ((next.edited?.seq ?? 0) < change.seq) next.edited = { seq: change.seq, ts: change.ts, body: change.body }
  } else if (change.kind === 'delete') {
    // the first deletion counts (two at once on two nodes: the one with the lower seq)
    if (next.deleted === undefined || next.deleted.seq > change.seq) next.deleted = { seq: change.seq, ts: change.ts, by: change.senderId }
  } else if (change.kind === 'react') {
    const { emoji, remove } = change.body as ReactionBody
    next.reactions ??= {}
    const users = Object.hasOwn(next.reactions, emoji) ? next.reactions[emoji] ?? {} : (next.reactions[emoji] = {})
    const state = reactionState(change.seq, !remove)
    // own properties only: a user id like "constructor" is a key like any other
    const before = Object.hasOwn(users, change.senderId) ? users[change.senderId] ?? 0 : 0
    if (before < state) users[change.senderId] = state
  }
  return next
}

/** The users reacting with each emoji now, in the order they reacted (emojis nobody uses left out). */
export function reactionsOf (changes: MessageChanges | undefined): Record<string, string[]> | undefined {
  if (changes?.reactions === undefined) return undefined
  let out: Record<string, string[]> | undefined
  for (const [emoji, users] of Object.entries(changes.reactions)) {
    const on = Object.entries(users).filter(([, state]) => state % 2 === 1).sort((a, b) => a[1] - b[1]).map(([user]) => user)
    if (on.length > 0) (out ??= {})[emoji] = on
  }
  return out
}

/** How many distinct emojis a message has reactions with now (the per-message cap counts these). */
export function emojiCount (changes: MessageChanges | undefined): number {
  return Object.keys(reactionsOf(changes) ?? {}).length
}

/** Whether `user` reacts with `emoji` now. */
export function reacts (changes: MessageChanges | undefined, emoji: string, user: string): boolean {
  const users = changes?.reactions?.[emoji]
  return users !== undefined && Object.hasOwn(users, user) && ((users[user] ?? 0) % 2) === 1
}
