/**
 * send: authorize -> validate -> assign seq + persist (sequencer, group commit) -> deliver -> ack.
 * The reply (and the PUBACK, see src/gateway/hooks.ts) is sent only after the message is stored.
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { requireMember, lastSeqOf, requireRole } from '../access.js'
import { requireNotBlocked } from '../blocks.js'
import { msgIdInUse, sameEntry } from '../sequencer.js'
import type { ConversationEntry } from '../directory.js'
import { MENTION_ALL } from '../../protocol/schemas.js'
import { filesOf } from './files.js'
import { requirePoster } from './channels.js'

export interface SendResult {
  conv: string
  seq: number
  msgId: string
  ts: number
  /** true when this msgId was stored before: the seq is the original one and nothing was delivered again. */
  duplicate: boolean
}

export async function send (caller: Caller, req: RequestOf<'send'>, services: Services): Promise<SendResult> {
  // 1. authorize: only members may send (without a round of promises when the entry is cached)
  // (a channel's entry holds no members: its membership is looked up on its own, and decides posting)
  let entry = services.directory.peek(req.conv)
  if (entry === undefined || entry.conversation.kind === 'channel') {
    const found = await requireMember(services, caller, req.conv)
    entry = found.entry
    requirePoster(entry, found.member)
  } else if (!entry.members.has(caller.userId)) throw new ImError('NOT_MEMBER')
  // blocks apply to direct conversations only (no promise at all when both members' lists are cached)
  if (entry.conversation.kind === 'direct') {
    const checking = requireNotBlocked(services, caller, entry)
    if (checking !== undefined) await checking
  }
  if (req.mentions !== undefined) requireMentionable(caller, entry, req.mentions)
  // 2. validate what the schema cannot: replyTo must point at an existing message
  if (req.replyTo !== undefined) {
    const last = await lastSeqOf(services, req.conv, req.replyTo)
    if (req.replyTo > last) throw new ImError('BAD_REQUEST', `replyTo ${req.replyTo} is beyond the last message (${last})`)
  }
  // the before-send hook (webhooks.beforeSend) may refuse or rewrite the message
  let body = req.body
  // a resend of a stored message is answered as a duplicate without asking the hook again
  // (a file too: a resend must not make the file's thumbnail again)
  const stored = services.webhooks?.hasBeforeSend === true || req.kind === 'file' ? await services.sequencer.findStored(req.conv, caller.userId, req.msgId) : null
  if (stored !== null) {
    if (!sameEntry(stored, { kind: req.kind })) throw msgIdInUse(req.msgId, `${stored.kind}:${stored.target ?? 0}`)
    return { conv: stored.conversationId, seq: stored.seq, msgId: stored.clientMsgId, ts: stored.ts, duplicate: true }
  }
  // a file: the upload must be the sender's, for this conversation, complete; the message carries its description
  let referFile: (() => Promise<void>) | null = null
  if (req.kind === 'file') {
    const attached = await filesOf(services).attach(caller.userId, req.conv, req.msgId, (req.body as { id: string }).id)
    body = attached.file as unknown as typeof body
    referFile = attached.refer
  }
  const described = body
  if (services.webhooks?.hasBeforeSend === true) {
    body = await services.webhooks.beforeSend({ conv: req.conv, from: caller.userId, msgId: req.msgId, kind: req.kind, body, ...(req.mentions === undefined ? {} : { mentions: req.mentions }) }) as typeof body
    // the hook may refuse a file, not change what it describes
    if (req.kind === 'file') body = described
    if (req.kind === 'text' && (typeof body !== 'string' || body.length === 0)) throw new ImError('REFUSED', 'the before-send hook answered a body that is not a non-empty string for a text message')
  }
  // Routing (Redis) is down: the message could be stored but neither delivered nor acknowledged
  // (the publishes would wait for Redis). Refuse it for now; the sender resends the same msgId.
  if (!services.publisher.available()) throw new ImError('UNAVAILABLE', 'message routing (Redis) is unavailable; resend with the same msgId')
  // 3-5. assign seq, persist, deliver (in the sequencer's commit step)
  const submitted = services.sequencer.submit({
    conversationId: req.conv,
    senderId: caller.userId,
    clientMsgId: req.msgId,
    kind: req.kind,
    body,
    replyTo: req.replyTo ?? null,
    ...(req.mentions === undefined ? {} : { mentions: req.mentions })
  })
  // a file's reference is recorded while the message is stored (a failure: resend the same msgId)
  const [{ message, duplicate }] = await Promise.all([submitted, referFile?.()])
  // a msgId of a stored change (the sequencer tells only what it remembers; the store's copy tells the rest)
  if (duplicate && !sameEntry(message, { kind: req.kind })) throw msgIdInUse(req.msgId, `${message.kind}:${message.target ?? 0}`)
  // 6. ack
  return { conv: message.conversationId, seq: message.seq, msgId: message.clientMsgId, ts: message.ts, duplicate }
}

/** Mentions name members only; `@all` is for groups, by admins and the owner. */
function requireMentionable (caller: Caller, entry: ConversationEntry, mentions: readonly string[]): void {
  if (entry.conversation.kind === 'channel') throw new ImError('BAD_REQUEST', 'mentions: channels have no mentions')
  if (mentions.includes(MENTION_ALL)) {
    if (entry.conversation.kind !== 'group') throw new ImError('BAD_REQUEST', `mentions: ${MENTION_ALL} is for groups`)
    const member = entry.members.get(caller.userId)
    if (member === undefined) throw new ImError('NOT_MEMBER')
    requireRole(member, 'admin')
  }
  const strangers = mentions.filter(u => u !== MENTION_ALL && !entry.members.has(u))
  if (strangers.length > 0) throw new ImError('BAD_REQUEST', `mentions: not members of this conversation: ${strangers.sort().join(', ')}`)
}
