/**
 * send: authorize -> validate -> assign seq + persist (sequencer, group commit) -> deliver -> ack.
 * The reply (and the PUBACK, see src/gateway/hooks.ts) is sent only after the message is stored.
 */
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { Caller, Services } from '../context.js'
import { requireMember, lastSeqOf } from '../access.js'

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
  const cached = services.directory.peek(req.conv)
  if (cached === undefined) await requireMember(services, caller, req.conv)
  else if (!cached.members.has(caller.userId)) throw new ImError('NOT_MEMBER')
  // 2. validate what the schema cannot: replyTo must point at an existing message
  if (req.replyTo !== undefined) {
    const last = await lastSeqOf(services, req.conv, req.replyTo)
    if (req.replyTo > last) throw new ImError('BAD_REQUEST', `replyTo ${req.replyTo} is beyond the last message (${last})`)
  }
  // Routing (Redis) is down: the message could be stored but neither delivered nor acknowledged
  // (the publishes would wait for Redis). Refuse it for now; the sender resends the same msgId.
  if (!services.publisher.available()) throw new ImError('UNAVAILABLE', 'message routing (Redis) is unavailable; resend with the same msgId')
  // 3-5. assign seq, persist, deliver (in the sequencer's commit step)
  const { message, duplicate } = await services.sequencer.submit({
    conversationId: req.conv,
    senderId: caller.userId,
    clientMsgId: req.msgId,
    kind: req.kind,
    body: req.body,
    replyTo: req.replyTo ?? null
  })
  // 6. ack
  return { conv: message.conversationId, seq: message.seq, msgId: message.clientMsgId, ts: message.ts, duplicate }
}
