/**
 * Verification of a drill: the store (read back through `history`, and counted in MongoDB) against
 * what the senders were told, and every receiver's copy against the store.
 *
 * - gaps: per conversation, seqs 1..lastSeq missing from history (or from MongoDB's count), plus
 *   messages a receiver holds out of seq order;
 * - duplicated: a (sender, msgId) stored more than once, a msgId stored in two conversations, a
 *   message a receiver holds twice, and seqs acknowledged twice with different values;
 * - lost: acknowledged messages not in history under the seq their ack carried, and stored
 *   messages missing on a receiver after its final sync.
 */
import type { MessageEnvelope } from '../../src/protocol/schemas.js'
import type { DrillClient } from './client.js'
import type { Receiver, Recorder } from './load.js'

export interface ConvAudit { conv: string, lastSeq: number, history: MessageEnvelope[] }

/** Reads a conversation's whole history, oldest first (pages of up to 5000: the drills' historyPageMax). */
export async function readHistory (client: DrillClient, conv: string): Promise<ConvAudit> {
  const history: MessageEnvelope[] = []
  let lastSeq = 0
  for (;;) {
    const after = history.at(-1)?.seq ?? 0
    const page = await client.call<{ messages: MessageEnvelope[], hasMore: boolean, lastSeq: number }>('history', { conv, after, limit: 5000 }, 60_000)
    history.push(...page.messages)
    lastSeq = Math.max(lastSeq, page.lastSeq)
    if (!page.hasMore || page.messages.length === 0) return { conv, lastSeq, history }
  }
}

export interface Figures {
  /** Distinct messages the senders published. */
  sent: number
  /** Publishes of send requests, resends included. */
  publishes: number
  /** Publishes that repeated the msgId of an earlier one. */
  resent: number
  acked: number
  /** Messages whose first ack said duplicate: true (stored by an attempt whose reply was lost). */
  ackedAsDuplicate: number
  /** Messages in history (all conversations). */
  stored: number
  /** Messages held by receivers after their final sync (sum over receivers). */
  delivered: number
  /** What `delivered` must be: every stored message once per receiving member. */
  expectedDeliveries: number
  /** Pushed envelopes, redelivered copies dropped, messages fetched from history to fill gaps. */
  pushes: number
  redelivered: number
  outOfOrder: number
  fromHistory: number
  lost: number
  duplicated: number
  gaps: number
  /** Attempt outcomes other than ok ('error:UNAVAILABLE', 'lost', 'timeout', ...). */
  errors: Record<string, number>
  /** Everything that went wrong, in words (empty on success). */
  problems: string[]
}

export interface VerifyInput {
  rec: Recorder
  audits: ConvAudit[]
  receivers: Receiver[]
  /** Message documents per conversation counted in MongoDB (optional cross-check). */
  storedCounts?: Map<string, number>
}

export function verify ({ rec, audits, receivers, storedCounts }: VerifyInput): Figures {
  const problems: string[] = []
  let gaps = 0
  let duplicated = 0
  let lost = 0
  const where = new Map<string, MessageEnvelope>()
  for (const { conv, lastSeq, history } of audits) {
    const seqs = new Set(history.map(m => m.seq))
    for (let s = 1; s <= lastSeq; s++) {
      if (!seqs.has(s)) {
        gaps++
        if (gaps <= 10) problems.push(`${conv}: seq ${s} is missing from history (lastSeq ${lastSeq})`)
      }
    }
    history.forEach((m, i) => {
      if (m.seq !== i + 1 && seqs.size === history.length) problems.push(`${conv}: history position ${i + 1} holds seq ${m.seq}`)
    })
    if (seqs.size !== history.length) {
      duplicated += history.length - seqs.size
      problems.push(`${conv}: history holds ${history.length - seqs.size} seqs twice`)
    }
    const count = storedCounts === undefined ? undefined : storedCounts.get(conv) ?? 0
    if (count !== undefined && count !== lastSeq) {
      problems.push(`${conv}: MongoDB holds ${count} messages but lastSeq is ${lastSeq}`)
      if (count < lastSeq) gaps += lastSeq - count
      else duplicated += count - lastSeq
    }
    const keys = new Set<string>()
    for (const m of history) {
      const key = `${m.from}/${m.msgId}`
      if (keys.has(key)) {
        duplicated++
        problems.push(`${conv}: ${key} is stored twice`)
        continue
      }
      keys.add(key)
      const other = where.get(m.msgId)
      if (other !== undefined) {
        duplicated++
        problems.push(`${m.msgId} is stored in ${other.conv} (seq ${other.seq}) and in ${conv} (seq ${m.seq})`)
      }
      where.set(m.msgId, m)
      const sent = rec.messages.get(m.msgId)
      if (sent === undefined || sent.sender !== m.from || sent.conv !== conv) {
        problems.push(`${conv} seq ${m.seq} holds ${m.from}/${m.msgId}, which no sender sent there`)
      } else if (m.body !== sent.body) {
        problems.push(`${conv} seq ${m.seq}: body ${JSON.stringify(m.body)} is not what was sent`)
      }
    }
  }

  // every acknowledged message is stored, under the seq its ack carried
  for (const [msgId, ack] of rec.acked) {
    const m = where.get(msgId)
    if (m === undefined || m.conv !== ack.conv || m.seq !== ack.seq) {
      lost++
      if (lost <= 10) problems.push(`${msgId} was acknowledged with ${ack.conv} seq ${ack.seq} but history has ${m === undefined ? 'nothing' : `${m.conv} seq ${m.seq}`}`)
    }
  }
  duplicated += rec.ackConflicts.length
  problems.push(...rec.ackConflicts.slice(0, 10))
  const unacked = [...rec.messages.keys()].filter(id => !rec.acked.has(id))
  if (unacked.length > 0) problems.push(`${unacked.length} sent messages were never acknowledged (e.g. ${unacked.slice(0, 3).join(', ')})`)
  problems.push(...rec.failures.slice(0, 10))

  // every receiver holds every message of its conversations once, in seq order
  const byConv = new Map(audits.map(a => [a.conv, a]))
  let delivered = 0
  let expectedDeliveries = 0
  for (const r of receivers) {
    problems.push(...r.problems.slice(0, 10))
    for (const [conv, held] of r.held) {
      const audit = byConv.get(conv)
      if (audit === undefined) continue
      delivered += held.length
      expectedDeliveries += audit.history.length
      const ids = new Set<string>()
      held.forEach((m, i) => {
        if (m.seq !== i + 1) {
          gaps++
          problems.push(`${r.userId}: ${conv} position ${i + 1} holds seq ${m.seq}`)
        }
        const key = `${m.from}/${m.msgId}`
        if (ids.has(key)) {
          duplicated++
          problems.push(`${r.userId}: ${conv} holds ${key} twice`)
        }
        ids.add(key)
        const stored = audit.history[i]
        if (stored !== undefined && (stored.msgId !== m.msgId || stored.from !== m.from)) {
          problems.push(`${r.userId}: ${conv} seq ${i + 1} is ${key} but the store has ${stored.from}/${stored.msgId}`)
        }
      })
      const missing = audit.history.length - held.length
      if (missing > 0) {
        lost += missing
        problems.push(`${r.userId}: ${conv} holds ${held.length} of ${audit.history.length} messages after its final sync`)
      }
    }
  }

  const errors: Record<string, number> = {}
  for (const a of rec.attempts) if (a.outcome !== 'ok') errors[a.outcome] = (errors[a.outcome] ?? 0) + 1
  return {
    sent: rec.messages.size,
    publishes: rec.publishes,
    resent: rec.resent,
    acked: rec.acked.size,
    ackedAsDuplicate: [...rec.acked.values()].filter(a => a.duplicate).length,
    stored: audits.reduce((n, a) => n + a.history.length, 0),
    delivered,
    expectedDeliveries,
    pushes: receivers.reduce((n, r) => n + r.pushes, 0),
    redelivered: receivers.reduce((n, r) => n + r.redelivered, 0),
    outOfOrder: receivers.reduce((n, r) => n + r.outOfOrder, 0),
    fromHistory: receivers.reduce((n, r) => n + r.fromHistory, 0),
    lost,
    duplicated,
    gaps,
    errors,
    problems
  }
}

export function finalLine (f: Pick<Figures, 'lost' | 'duplicated' | 'gaps' | 'acked'>): string {
  return `lost=${f.lost} duplicated=${f.duplicated} gaps=${f.gaps} acked=${f.acked}`
}
