/**
 * edit, delete, react: changes to a message, each stored as an entry of the conversation with the
 * next seq (kinds edit / delete / react, `target` the message's seq), idempotent by msgId exactly
 * like `send`, and delivered to every member in seq order. The sequencer also applies each to its
 * target (store/changes.ts), so `history` and `list` show messages as they are now; a device that
 * syncs forward sees every change in order.
 *
 * Rules: only real messages (text, custom) are changed, never a change, never a deleted message.
 * Edit: the sender, within limits.editWindowMs of sending, with a body of the message's kind.
 * Delete: the sender; in groups also whoever outranks the sender (an admin: members' messages, the
 * owner: anyone's). React: any member, at most
 * limits.reactionsPerMessage different emojis per message (one of each per user, by state). In a
 * direct conversation where one blocks the other, neither may edit or react (BLOCKED); deleting
 * one's own message stays possible.
 *
 * typing: an ephemeral QoS 0 event to the other members' online devices: never stored, never
 * queued for offline sessions, not sent in conversations above limits.typingMembersMax members,
 * and sent at most once per TYPING_INTERVAL_MS per user and conversation (more are answered
 * `sent: false`).
 */
import { LRUCache } from 'lru-cache'
import { lruCache } from '../../lru.js'
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import type { ConversationEntry } from '../directory.js'
import { outranks, requireMember } from '../access.js'
import { requirePoster } from './channels.js'
import { requireNotBlocked } from '../blocks.js'
import { isChangeKind, type ChangeKind, type MemberRecord, type MessageChanges, type Role, type StoredMessage } from '../../store/types.js'
import { emojiCount } from '../../store/changes.js'
import type { SendResult } from './send.js'
import { msgIdInUse, sameEntry } from '../sequencer.js'

/** How long a client shows "typing…" after a `typing` event without a newer one. */
export const TYPING_TTL_MS = 5000
/** A user's typing events in one conversation are sent at most this often. */
const TYPING_INTERVAL_MS = 1000
/** (user, conversation) pairs whose last typing event time is kept. */
const TYPING_KEYS_MAX = 100_000

/** The caller's membership, and the target message as it is now (checked: a real message, not deleted). */
async function targetOf (caller: Caller, conv: string, target: number, services: Services, blockable = true): Promise<{ entry: ConversationEntry, role: Role, message: StoredMessage }> {
  // as in send: no round of promises for what is cached (the member, the tail)
  const cached = services.directory.peek(conv)
  const { entry, member } = cached?.members.has(caller.userId) === true
    ? { entry: cached, member: cached.members.get(caller.userId) as MemberRecord }
    : await requireMember(services, caller, conv)
  requirePoster(entry, member)
  if (blockable && entry.conversation.kind === 'direct') await requireNotBlocked(services, caller, entry)
  const known = services.sequencer.knownLastSeq(conv)
  const lastSeq = known !== undefined && known >= target ? known : await services.sequencer.lastSeqFor(conv, target)
  const [message] = target > lastSeq ? [] : await services.messages.getMany([{ conversationId: conv, seq: target }])
  if (message === undefined) throw new ImError('NOT_FOUND', `no message at seq ${target} (the last is ${lastSeq})`)
  if (isChangeKind(message.kind)) throw new ImError('NOT_EDITABLE', `seq ${target} is a change (${message.kind}), not a message`)
  if (message.changes?.deleted !== undefined) throw new ImError('NOT_EDITABLE', `the message at seq ${target} was deleted`)
  return { entry, role: member.role, message }
}

async function submit (caller: Caller, conv: string, msgId: string, kind: ChangeKind, target: number, body: unknown, services: Services): Promise<SendResult> {
  if (!services.publisher.available()) throw new ImError('UNAVAILABLE', 'message routing (Redis) is unavailable; resend with the same msgId')
  const { message, duplicate } = await services.sequencer.submit({ conversationId: conv, senderId: caller.userId, clientMsgId: msgId, kind, body, replyTo: null, target })
  if (duplicate && !sameEntry(message, { kind, target })) throw msgIdInUse(msgId, isChangeKind(message.kind) ? `${message.kind}:${message.target ?? 0}` : undefined)
  // A resend: apply the stored change again (never the resend's own body: it may differ), in case
  // the process that stored it died before applying it (applying is idempotent).
  if (duplicate) {
    const [stored] = await services.messages.getMany([{ conversationId: conv, seq: message.seq }])
    if (stored !== undefined && stored.senderId === caller.userId && stored.clientMsgId === msgId && sameEntry(stored, { kind, target })) await services.sequencer.applyChange(stored)
  }
  return { conv: message.conversationId, seq: message.seq, msgId: message.clientMsgId, ts: message.ts, duplicate }
}

/**
 * Runs the checks of a change; when they refuse it, a change already stored with this msgId (a
 * resend after the message was deleted, or after the edit window) is answered as a duplicate
 * instead, as `send` answers resends.
 */
async function checked (caller: Caller, req: { conv: string, msgId: string, target: number }, kind: ChangeKind, services: Services, check: () => Promise<void>): Promise<SendResult | null> {
  try {
    await check()
    return null
  } catch (err) {
    if (!(err instanceof ImError) || !REFUSALS_OF_STATE.has(err.code)) throw err
    const stored = await services.sequencer.findStored(req.conv, caller.userId, req.msgId) ?? await lastChangeOf(caller, req, kind, services)
    if (stored === null || !sameEntry(stored, { kind, target: req.target })) throw err
    // (in a cluster the node that stored it may have died before delivering it)
    services.sequencer.resent(stored)
    return { conv: stored.conversationId, seq: stored.seq, msgId: stored.clientMsgId, ts: stored.ts, duplicate: true }
  }
}

/**
 * A change this sender stored with this msgId that the sequencer does not remember (another node
 * stored it, or before a restart): the target's delete that took effect or its last edit, if it is
 * that one (two reads by primary key; never a lookup by msgId, which may scan). A read that fails:
 * none (the refusal stands).
 */
async function lastChangeOf (caller: Caller, req: { conv: string, msgId: string, target: number }, kind: ChangeKind, services: Services): Promise<StoredMessage | null> {
  if (kind !== 'delete' && kind !== 'edit') return null
  try {
    const [target] = await services.messages.getMany([{ conversationId: req.conv, seq: req.target }])
    const last = kind === 'delete' ? target?.changes?.deleted : target?.changes?.edited
    if (last === undefined) return null
    const [change] = await services.messages.getMany([{ conversationId: req.conv, seq: last.seq }])
    return change !== undefined && change.senderId === caller.userId && change.clientMsgId === req.msgId && change.target === req.target ? change : null
  } catch {
    return null
  }
}

/** Refusals that the state of the target or of the member can cause after a change was stored. */
const REFUSALS_OF_STATE: ReadonlySet<string> = new Set(['NOT_EDITABLE', 'FORBIDDEN', 'LIMIT_REACHED', 'BLOCKED'])

export async function edit (caller: Caller, req: RequestOf<'edit'>, services: Services): Promise<SendResult> {
  const resent = await checked(caller, req, 'edit', services, async () => await checkEdit(caller, req, services))
  return resent ?? await submit(caller, req.conv, req.msgId, 'edit', req.target, req.body, services)
}

async function checkEdit (caller: Caller, req: RequestOf<'edit'>, services: Services): Promise<void> {
  const { message } = await targetOf(caller, req.conv, req.target, services)
  if (message.senderId !== caller.userId) throw new ImError('FORBIDDEN', 'only the sender may edit a message')
  const window = services.config.limits.editWindowMs
  if (message.kind === 'file') throw new ImError('NOT_EDITABLE', 'a file message cannot be edited; delete it and send another')
  if (services.now() - message.ts > window) throw new ImError('NOT_EDITABLE', `messages can be edited for ${describeDuration(window)} after they are sent`)
  if (message.kind === 'text' && (typeof req.body !== 'string' || req.body.length === 0)) {
    throw new ImError('BAD_REQUEST', 'body: a text message needs a non-empty string body')
  }
}

export async function remove (caller: Caller, req: RequestOf<'delete'>, services: Services): Promise<SendResult> {
  let target: StoredMessage | undefined
  const resent = await checked(caller, req, 'delete', services, async () => { target = await checkDelete(caller, req, services) })
  if (resent !== null) return resent
  const result = await submit(caller, req.conv, req.msgId, 'delete', req.target, null, services)
  // a deleted file message takes its objects with it (once the deletion is stored)
  if (target?.kind === 'file') await discardFile(services, target)
  return result
}

async function discardFile (services: Services, message: StoredMessage): Promise<void> {
  const id = (message.body as { id?: unknown } | null)?.id
  if (typeof id !== 'string' || services.files === undefined) return
  try {
    await services.files.discard(id)
  } catch (err) {
    // the deletion stands; the objects stay until someone removes them (logged with the id)
    services.logger.error({ conv: message.conversationId, seq: message.seq, file: id, err }, 'the objects of a deleted file message were not removed')
  }
}

async function checkDelete (caller: Caller, req: RequestOf<'delete'>, services: Services): Promise<StoredMessage> {
  // deleting one's own words stays possible in a conversation with someone blocked
  const { entry, role, message } = await targetOf(caller, req.conv, req.target, services, false)
  if (message.senderId !== caller.userId) {
    if (entry.conversation.kind === 'direct') throw new ImError('FORBIDDEN', 'only the sender may delete a message')
    // as for removing members: an admin deletes members' messages, the owner anyone's (someone who
    // left counts as a member)
    const sender = entry.conversation.kind === 'channel' ? await services.directory.channelMember(req.conv, message.senderId) : entry.members.get(message.senderId)
    const senderRole = sender?.role ?? 'member'
    if (!outranks(role, senderRole)) throw new ImError('FORBIDDEN', role === 'member' ? 'only the sender, an admin or the owner may delete a message' : `an ${role} may delete only messages of members of lower rank`)
  }
  return message
}

export async function react (caller: Caller, req: RequestOf<'react'>, services: Services): Promise<SendResult> {
  const run = async (): Promise<SendResult> => {
    const resent = await checked(caller, req, 'react', services, async () => await checkReact(caller, req, services))
    return resent ?? await submit(caller, req.conv, req.msgId, 'react', req.target, { emoji: req.emoji, remove: req.remove === true }, services)
  }
  // counted as pending from its check until it is stored, so that a burst cannot pass the bound
  return req.remove === true ? await run() : await withPendingEmoji(services, req.conv, req.target, req.emoji, run)
}

async function checkReact (caller: Caller, req: RequestOf<'react'>, services: Services): Promise<void> {
  const { message } = await targetOf(caller, req.conv, req.target, services)
  const max = services.config.limits.reactionsPerMessage
  const users = message.changes?.reactions?.[req.emoji]
  // every (user, emoji) ever used on a message is kept (its latest state decides, whatever the
  // order changes are applied in): new pairs are bounded too, taken back ones included, so that
  // adding and taking back emojis cannot grow a message without end
  if (users === undefined || !Object.hasOwn(users, caller.userId)) {
    const keysMax = max * REACTION_KEYS_PER_EMOJI
    if (reactionKeys(message.changes) >= keysMax) throw new ImError('LIMIT_REACHED', `a message keeps at most ${keysMax} reactions (user and emoji pairs, taken back ones included)`)
  }
  if (req.remove === true) return
  const inUse = users !== undefined && Object.values(users).some(state => state % 2 === 1)
  if (!inUse && emojiCount(message.changes) + pendingEmojis(services, req.conv, req.target, req.emoji) >= max) {
    throw new ImError('LIMIT_REACHED', `a message carries at most ${max} different emojis`)
  }
}

/** (user, emoji) pairs a message keeps at most: this many per allowed emoji (2,000 by default). */
const REACTION_KEYS_PER_EMOJI = 100

function reactionKeys (changes: MessageChanges | undefined): number {
  let n = 0
  for (const users of Object.values(changes?.reactions ?? {})) n += Object.keys(users).length
  return n
}

/**
 * Emojis new to a message whose reactions are being stored right now on this node, per message:
 * reactions checked at the same time all see the count before any of them, so the bound counts
 * these too (across nodes it can still be passed by what arrives at the same moment on each).
 */
const inFlightEmojis = new WeakMap<Services, Map<string, Map<string, number>>>()

function pendingEmojis (services: Services, conv: string, target: number, emoji: string): number {
  const pending = inFlightEmojis.get(services)?.get(`${conv}:${target}`)
  if (pending === undefined) return 0
  return pending.size - (pending.has(emoji) ? 1 : 0)
}

/** Runs `work` with `emoji` counted as pending on the message (see pendingEmojis). */
async function withPendingEmoji<T> (services: Services, conv: string, target: number, emoji: string, work: () => Promise<T>): Promise<T> {
  let byMessage = inFlightEmojis.get(services)
  if (byMessage === undefined) inFlightEmojis.set(services, byMessage = new Map())
  const key = `${conv}:${target}`
  let pending = byMessage.get(key)
  if (pending === undefined) byMessage.set(key, pending = new Map())
  pending.set(emoji, (pending.get(emoji) ?? 0) + 1)
  try {
    return await work()
  } finally {
    const n = (pending.get(emoji) ?? 1) - 1
    if (n > 0) pending.set(emoji, n)
    else pending.delete(emoji)
    if (pending.size === 0) byMessage.delete(key)
  }
}

/** Per server (its Services): (user, conversation) -> when its last typing event went out. */
const typingTimes = new WeakMap<Services, LRUCache<string, number>>()

export async function typing (caller: Caller, req: RequestOf<'typing'>, services: Services): Promise<{ conv: string, sent: boolean }> {
  const { entry } = await requireMember(services, caller, req.conv)
  if (entry.conversation.kind === 'channel') throw new ImError('FORBIDDEN', 'channels have no typing indicators')
  await requireNotBlocked(services, caller, entry)
  if (entry.memberIds.length > services.config.limits.typingMembersMax) return { conv: req.conv, sent: false }
  const on = req.typing !== false
  let lastTyping = typingTimes.get(services)
  if (lastTyping === undefined) typingTimes.set(services, lastTyping = lruCache(TYPING_KEYS_MAX))
  const key = `${caller.userId}\u0000${req.conv}`
  const now = services.now()
  // "stopped typing" always goes out (it is what ends the indicator); "typing" once a second
  if (on && now - (lastTyping.get(key) ?? -Infinity) < TYPING_INTERVAL_MS) return { conv: req.conv, sent: false }
  if (on) lastTyping.set(key, now)
  else lastTyping.delete(key)
  const others = entry.memberIds.filter(u => u !== caller.userId)
  services.publisher.ephemeral(others, { type: 'typing', conv: req.conv, user: caller.userId, typing: on, ttlMs: TYPING_TTL_MS })
  return { conv: req.conv, sent: true }
}

/** 48 hours, 5 minutes, 30 seconds: the edit window in a refusal. */
function describeDuration (ms: number): string {
  const [n, unit] = ms >= 7_200_000 ? [ms / 3_600_000, 'hours'] : ms >= 120_000 ? [ms / 60_000, 'minutes'] : [ms / 1000, 'seconds']
  return `${Math.round(n)} ${unit}`
}
