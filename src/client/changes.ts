/**
 * Changes (edit, delete, react) applied to a local copy of their target, the way the server applies
 * them (topics.md, "Changing messages"). Entries are applied in seq order; an edit older than the
 * edit the copy already shows is skipped (a page fetched after it); a deleted message stays
 * deleted; reactions are sets per emoji. A change shown optimistically (before the server stored
 * it) carries seq 0, so the stored one replaces it. After every entry up to the conversation's last seq the
 * copy equals what the server answers.
 */
import type { MessageEnvelope } from '../protocol/schemas.js'

export function isChange (m: MessageEnvelope): boolean {
  return m.kind === 'edit' || m.kind === 'delete' || m.kind === 'react'
}

/** `target` with `change` applied: a new object, or `target` itself when nothing changes. */
export function applyChange (target: MessageEnvelope, change: Pick<MessageEnvelope, 'kind' | 'seq' | 'ts' | 'from' | 'body'>): MessageEnvelope {
  if (target.deleted !== undefined) {
    // the first deletion counts; one shown optimistically (seq 0) gives way to the stored one
    const replaces = change.kind === 'delete' && change.seq > 0 && (target.deleted.seq === 0 || target.deleted.seq > change.seq)
    return replaces ? { ...target, deleted: { seq: change.seq, ts: change.ts, by: change.from } } : target
  }
  if (change.kind === 'edit') {
    if ((target.edited?.seq ?? -1) >= change.seq) return target
    return { ...target, body: change.body, edited: { seq: change.seq, ts: change.ts } }
  }
  if (change.kind === 'delete') {
    const { edited: _edited, reactions: _reactions, replyTo: _replyTo, mentions: _mentions, ...rest } = target
    return { ...rest, body: null, deleted: { seq: change.seq, ts: change.ts, by: change.from } }
  }
  if (change.kind === 'react') {
    const { emoji, remove } = change.body as { emoji: string, remove: boolean }
    const users = target.reactions?.[emoji] ?? []
    if (remove === users.includes(change.from)) {
      const reactions = { ...target.reactions }
      if (remove) {
        const left = users.filter(u => u !== change.from)
        if (left.length > 0) reactions[emoji] = left
        else delete reactions[emoji]
      } else {
        reactions[emoji] = [...users, change.from]
      }
      const { reactions: _old, ...rest } = target
      return Object.keys(reactions).length === 0 ? rest : { ...rest, reactions }
    }
  }
  return target
}
