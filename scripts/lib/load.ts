/**
 * Load of the drills: senders that pipeline `send` requests with a bounded in-flight window and
 * resend every unacknowledged message with the SAME msgId until it is acknowledged; receivers
 * that keep every conversation exactly once in seq order (drop seq <= held, append held + 1,
 * fill a gap from `history {after: held}`) and sync by history after every reconnect.
 */
import type { MessageEnvelope } from '../../src/protocol/schemas.js'
import { DrillClient, RequestError } from './client.js'
import { sleep } from './procs.js'

export interface SendOk { conv: string, seq: number, msgId: string, ts: number, duplicate: boolean }

export type Outcome = 'ok' | 'lost' | 'timeout' | 'not-connected' | 'stopped' | `error:${string}`

/** One publish of a send request and what came of it. */
export interface Attempt {
  msgId: string
  /** Published (or queued for publishing), and answered/failed. */
  t0: number
  t1: number
  outcome: Outcome
  seq?: number
  port: number
}

export interface MessageRecord { sender: string, conv: string, body: string }
export interface AckRecord { seq: number, conv: string, at: number, duplicate: boolean, port: number }

/** Error replies after which the same request is sent again. */
const RETRYABLE = new Set(['UNAVAILABLE', 'RATE_LIMITED', 'INTERNAL'])

/** Everything the senders did: the ground truth the verification compares the store against. */
export class Recorder {
  /** Every message a sender published at least once. */
  readonly messages = new Map<string, MessageRecord>()
  /** Every acknowledged message, with the seq its (first) ack carried. */
  readonly acked = new Map<string, AckRecord>()
  readonly attempts: Attempt[] = []
  /** Publishes in all, and those of them that repeated an earlier publish's msgId. */
  publishes = 0
  resent = 0
  /** Acks of one msgId that carried different seqs (never expected). */
  readonly ackConflicts: string[] = []
  /** Messages given up on, and unexpected error replies. */
  readonly failures: string[] = []
  private readonly ackListeners: Array<(acked: number) => void> = []

  onAck (fn: (acked: number) => void): void {
    this.ackListeners.push(fn)
  }

  ack (msgId: string, r: SendOk, port: number): void {
    const known = this.acked.get(msgId)
    if (known !== undefined) {
      if (known.seq !== r.seq) this.ackConflicts.push(`${msgId}: acked with seq ${known.seq} and later with ${r.seq}`)
      return
    }
    this.acked.set(msgId, { seq: r.seq, conv: r.conv, at: Date.now(), duplicate: r.duplicate, port })
    for (const fn of this.ackListeners) fn(this.acked.size)
  }

  /** Attempts per outcome ('ok', 'error:UNAVAILABLE', 'lost', 'timeout', ...). */
  outcomes (from = 0, to = Infinity): Record<string, number> {
    const out: Record<string, number> = {}
    for (const a of this.attempts) if (a.t0 >= from && a.t0 <= to) out[a.outcome] = (out[a.outcome] ?? 0) + 1
    return out
  }

  ackedBetween (from: number, to = Infinity): number {
    let n = 0
    for (const a of this.acked.values()) if (a.at >= from && a.at <= to) n++
    return n
  }

  /** Longest time without any ack between `from` and `to`. */
  longestAckPause (from: number, to: number): number {
    const times = [...this.acked.values()].map(a => a.at).filter(t => t >= from && t <= to).sort((a, b) => a - b)
    let longest = 0
    let prev = from
    for (const t of [...times, to]) {
      longest = Math.max(longest, t - prev)
      prev = t
    }
    return longest
  }
}

export interface LoadOptions {
  /** Messages in all, split over the senders; undefined: until stop(). */
  total?: number
  /** Sends in flight per sender. */
  window: number
  /** Messages per second per sender; undefined: as fast as the window allows. */
  ratePerSender?: number
  /** A send without a reply in this time is sent again (same msgId). */
  requestTimeoutMs: number
  /** Stop resending a message after this long: the message counts as a failure. */
  giveUpMs: number
}

export interface SenderSpec { userId: string, client: DrillClient }

export function bodyOf (msgId: string): string {
  return `drill message ${msgId}`
}

/** The senders' load. Sender i sends to conversations round-robin, starting at conversation i. */
export class SendLoad {
  private stopped = false
  done: Promise<void> = Promise.resolve()

  constructor (
    private readonly senders: SenderSpec[],
    private readonly convs: string[],
    readonly rec: Recorder,
    private readonly opts: LoadOptions
  ) {}

  start (): this {
    this.done = Promise.all(this.senders.map(async (s, i) => await this.runSender(s, i))).then(() => {})
    return this
  }

  /** No new messages after this; the ones under way are still resent until acknowledged. */
  stop (): void {
    this.stopped = true
  }

  private quota (index: number): number {
    const { total } = this.opts
    if (total === undefined) return Infinity
    const n = this.senders.length
    return Math.floor(total / n) + (index < total % n ? 1 : 0)
  }

  private async runSender (s: SenderSpec, index: number): Promise<void> {
    const quota = this.quota(index)
    const started = Date.now()
    let next = 0
    const worker = async (): Promise<void> => {
      while (!this.stopped && next < quota) {
        const i = next++
        if (this.opts.ratePerSender !== undefined) {
          const due = started + (i * 1000) / this.opts.ratePerSender
          if (due > Date.now()) await sleep(due - Date.now())
          if (this.stopped) return
        }
        const msgId = `${s.userId}-${i}`
        const conv = this.convs[(index + i) % this.convs.length]
        if (conv === undefined) throw new Error('no conversation to send to')
        await this.sendOne(s, conv, msgId)
      }
    }
    await Promise.all(Array.from({ length: this.opts.window }, worker))
  }

  private async sendOne (s: SenderSpec, conv: string, msgId: string): Promise<void> {
    const rec = this.rec
    const body = bodyOf(msgId)
    rec.messages.set(msgId, { sender: s.userId, conv, body })
    const giveUpAt = Date.now() + this.opts.giveUpMs
    for (let attempt = 0; ; attempt++) {
      if (attempt > 0) rec.resent++
      rec.publishes++
      const t0 = Date.now()
      let outcome: Outcome
      let port = s.client.port
      try {
        const reply = await s.client.request('send', { conv, msgId, kind: 'text', body }, this.opts.requestTimeoutMs)
        port = s.client.port
        if (reply.ok) {
          const r = reply.result as SendOk
          rec.attempts.push({ msgId, t0, t1: Date.now(), outcome: 'ok', seq: r.seq, port })
          rec.ack(msgId, r, port)
          return
        }
        outcome = `error:${reply.error.code}`
        if (!RETRYABLE.has(reply.error.code)) {
          rec.attempts.push({ msgId, t0, t1: Date.now(), outcome, port })
          rec.failures.push(`${msgId}: unexpected error reply ${reply.error.code}: ${reply.error.message}`)
          return
        }
      } catch (err) {
        if (!(err instanceof RequestError)) throw err
        outcome = err.kind
      }
      rec.attempts.push({ msgId, t0, t1: Date.now(), outcome, port })
      if (outcome === 'stopped') return
      if (Date.now() > giveUpAt) {
        rec.failures.push(`${msgId}: not acknowledged after ${this.opts.giveUpMs} ms of resending (last: ${outcome})`)
        return
      }
      // An error reply: back off. A lost connection: request() waits for the next one.
      if (outcome.startsWith('error:')) await sleep(Math.min(100 * 2 ** Math.min(attempt, 4), 1000))
      else if (outcome === 'not-connected') await sleep(100)
    }
  }
}

/** A receiving device: a persistent session that holds every conversation once, in seq order. */
export class Receiver {
  readonly client: DrillClient
  readonly held = new Map<string, MessageEnvelope[]>()
  /** Envelopes pushed on im/u/<user>/m. */
  pushes = 0
  /** Pushed envelopes already held (QoS 1 redelivery, queued copies after a reconnect). */
  redelivered = 0
  /** Pushed envelopes beyond a gap (kept aside until history has filled the gap). */
  outOfOrder = 0
  /** Messages taken from history pages. */
  fromHistory = 0
  syncs = 0
  syncErrors = 0
  /** The last failed sync, for a drill's diagnostics. */
  lastSyncError = ''
  readonly problems: string[] = []
  private readonly running = new Map<string, Promise<void>>()
  private readonly again = new Set<string>()
  /** conversation -> pushed envelopes beyond a gap, by seq */
  private readonly ahead = new Map<string, Map<number, MessageEnvelope>>()

  constructor (readonly userId: string, deviceId: string, password: string, ports: number[], convs: string[]) {
    for (const c of convs) this.held.set(c, [])
    this.client = new DrillClient({
      userId,
      deviceId,
      password,
      ports,
      clean: false,
      inbox: true,
      onMessage: (m) => {
        this.pushes++
        this.accept(m, 'push')
      },
      // after every reconnect: pull what was missed while away
      onConnect: ({ count }) => { if (count > 1) void this.syncAll() }
    })
  }

  get delivered (): number {
    let n = 0
    for (const list of this.held.values()) n += list.length
    return n
  }

  private accept (m: MessageEnvelope, source: 'push' | 'history'): void {
    const list = this.held.get(m.conv)
    if (list === undefined) {
      this.problems.push(`${this.userId} got a message of conversation ${m.conv}, which it is not a member of`)
      return
    }
    if (m.seq <= list.length) {
      const have = list[m.seq - 1]
      if (have?.msgId !== m.msgId || have.from !== m.from) {
        this.problems.push(`${this.userId}: ${m.conv} seq ${m.seq} is ${have?.from}/${have?.msgId} but ${source} brought ${m.from}/${m.msgId}`)
      }
      if (source === 'push') this.redelivered++
      return
    }
    if (m.seq === list.length + 1) {
      list.push(m)
      if (source === 'history') this.fromHistory++
      // what was pushed beyond the gap follows now
      const ahead = this.ahead.get(m.conv)
      if (ahead !== undefined) {
        for (let next = ahead.get(list.length + 1); next !== undefined; next = ahead.get(list.length + 1)) {
          ahead.delete(next.seq)
          list.push(next)
        }
        for (const seq of ahead.keys()) if (seq <= list.length) ahead.delete(seq)
      }
      return
    }
    if (source === 'push') {
      // a gap: keep this one, fill the gap from history
      this.outOfOrder++
      let ahead = this.ahead.get(m.conv)
      if (ahead === undefined) this.ahead.set(m.conv, ahead = new Map())
      ahead.set(m.seq, m)
      void this.sync(m.conv)
    } else {
      this.problems.push(`${this.userId}: history of ${m.conv} jumped from seq ${list.length} to ${m.seq}`)
    }
  }

  /**
   * Pages through `history {after: highest held}` (up to the first message kept aside, if any)
   * until hasMore is false. Never throws.
   */
  async sync (conv: string): Promise<void> {
    const running = this.running.get(conv)
    if (running !== undefined) {
      this.again.add(conv)
      return await running
    }
    const p = (async () => {
      try {
        do {
          this.again.delete(conv)
          this.syncs++
          for (;;) {
            const list = this.held.get(conv) as MessageEnvelope[]
            // only the gap, when later messages were pushed already
            const ahead = this.ahead.get(conv)
            const before = ahead === undefined || ahead.size === 0 ? undefined : Math.min(...ahead.keys())
            const query = before === undefined ? { conv, after: list.length, limit: 1000 } : { conv, after: list.length, before, limit: 1000 }
            const page = await this.client.call<{ messages: MessageEnvelope[], hasMore: boolean }>('history', query, 30_000)
            for (const m of page.messages) this.accept(m, 'history')
            if (!page.hasMore || page.messages.length === 0) break
          }
        } while (this.again.has(conv) && (this.ahead.get(conv)?.size ?? 0) > 0)
      } catch (err) {
        // the connection dropped: the next connect syncs again
        this.syncErrors++
        this.lastSyncError = `${new Date().toISOString()} ${conv}: ${(err as Error).message}`
      } finally {
        this.running.delete(conv)
        this.again.delete(conv)
      }
    })()
    this.running.set(conv, p)
    return await p
  }

  /** One line on where this receiver stands (for a drill's log when it lags). */
  describe (lastSeq: Map<string, number>): string {
    const c = this.client
    const convs = [...this.held].map(([conv, list]) => `${conv} ${list.length}/${lastSeq.get(conv) ?? '?'} (ahead ${this.ahead.get(conv)?.size ?? 0}${this.running.has(conv) ? ', syncing' : ''})`)
    return `${this.userId}: ${c.connected ? 'connected' : 'NOT connected'} port ${c.port}, connects ${c.connects}, failed attempts ${c.failedAttempts}${c.lastFailure === '' ? '' : ` (last: ${c.lastFailure})`}, ` +
      `pushes ${this.pushes}, syncs ${this.syncs}, sync errors ${this.syncErrors}${this.lastSyncError === '' ? '' : ` (last: ${this.lastSyncError})`}; ${convs.join('; ')}`
  }

  async syncAll (): Promise<void> {
    await Promise.all([...this.held.keys()].map(async c => await this.sync(c)))
  }
}
