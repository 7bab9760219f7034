/**
 * Webhooks: signed HTTP callbacks to other services, off the send path.
 *
 * Events: `message.stored` (every stored entry: messages and changes, as its envelope),
 * `member.changed` (the `member` event of a conversation change), `user.online` and `user.offline`
 * (the first device of a user connected anywhere in the cluster, the last one gone). Each endpoint
 * of `webhooks.endpoints` gets the events it lists, as `POST <url>` with a JSON body
 * `{id, event, at, data}` and the headers
 *   x-mqim-event: <event>
 *   x-mqim-delivery: <id>                  (the same on every retry: receivers dedupe by it)
 *   x-mqim-signature: t=<ms>,v1=<hex>      HMAC-SHA256 of `<t>.<body>` with the endpoint's secret
 * A 2xx answer delivers it. Anything else (an error status, no answer within `timeoutMs`, a
 * connection refused) is retried with back-off (1 s doubling, at most 60 s apart) until
 * `retryForMs` after the event, then dropped and logged. Deliveries wait in a bounded job queue
 * (src/im/jobs.ts; `queueMax`, beyond which new ones are dropped and counted): in memory on one
 * node (lost when it stops), in Redis when clustered (a delivery claimed by a node that dies is
 * made by another once its lease runs out). A receiver that is down or slow never slows sends,
 * whose only cost is a queue push. At most `concurrency` requests are in flight per node.
 *
 * before-send (optional, `webhooks.beforeSend`): every `send` is first posted (signed the same way,
 * event `message.before-send`) and waits at most `timeoutMs` for `{allow: true}` (optionally with a
 * new `body`) or `{allow: false, reason}`; on a timeout, an error or more than `concurrency`
 * waiting, `failOpen` decides. It runs before the message is stored: a refusal stores nothing.
 */
import { createHmac, randomUUID } from 'node:crypto'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { ImError } from '../errors.js'
import { nestsDeeperThan } from './dispatcher.js'
import { JobRunner, MemoryJobQueue, type Job, type JobOutcome, type JobQueue } from './jobs.js'

/** The body of `res` as text, or null once it passes `maxBytes` (the rest is not read). */
async function readCapped (res: Response, maxBytes: number): Promise<string | null> {
  if (res.body === null) return ''
  const chunks: Uint8Array[] = []
  let size = 0
  for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
    size += chunk.byteLength
    if (size > maxBytes) {
      await res.body.cancel().catch(() => {})
      return null
    }
    chunks.push(chunk)
  }
  return Buffer.concat(chunks).toString('utf8')
}

export type WebhookEvent = 'message.stored' | 'member.changed' | 'user.online' | 'user.offline'
export const WEBHOOK_EVENTS: readonly WebhookEvent[] = ['message.stored', 'member.changed', 'user.online', 'user.offline']

export interface WebhookEndpoint { url: string, secret: string, events: WebhookEvent[] }

export interface WebhookOptions {
  endpoints: WebhookEndpoint[]
  timeoutMs: number
  retryForMs: number
  queueMax: number
  concurrency: number
  beforeSend: { url: string, secret: string, timeoutMs: number, failOpen: boolean, concurrency: number } | null
  /** A before-send answer (and the body it gives) is held to a request's limits. */
  limits: { maxPayloadBytes: number, maxJsonDepth: number }
  logger: Logger
  metrics?: Metrics
  /** Where deliveries wait (default: in memory, queueMax); Redis when clustered. */
  queue?: JobQueue
  /** How often to look for deliveries queued by other nodes (clustered). */
  pollMs?: number
  now?: () => number
}

/** A queued delivery: the endpoint by its URL (its secret is read from the configuration when sent). */
interface DeliveryData { url: string, event: WebhookEvent, delivery: string, body: string }

/** `t=<ms>,v1=<hex>`: HMAC-SHA256 of `<t>.<body>` (a receiver recomputes it and checks t is recent). */
export function signature (secret: string, body: string, t: number): string {
  return `t=${t},v1=${createHmac('sha256', secret).update(`${t}.${body}`).digest('hex')}`
}

/** What a before-send hook may answer. */
export interface BeforeSendVerdict { allow: boolean, body?: unknown, reason?: string }

export class Webhooks {
  private readonly queue: JobQueue
  private readonly runner: JobRunner
  private beforeSendInFlight = 0
  /** user -> their sends waiting for the before-send hook (an entry only while some wait). */
  private readonly beforeSendByUser = new Map<string, number>()
  private closed = false
  private readonly now: () => number
  /** Deliveries dropped by this node since start: the queue was full, or retries ran out. */
  dropped = 0
  /** Deliveries made by this node since start. */
  delivered = 0
  private warnedFullAt = 0

  constructor (private readonly opts: WebhookOptions) {
    this.now = opts.now ?? Date.now
    this.queue = opts.queue ?? new MemoryJobQueue(opts.queueMax)
    this.runner = new JobRunner(this.queue, {
      name: 'webhooks',
      concurrency: opts.concurrency,
      // an attempt takes at most timeoutMs; the lease leaves room for the outcome to be recorded
      leaseMs: opts.timeoutMs * 2 + 5000,
      pollMs: opts.pollMs ?? 1000,
      retryForMs: opts.retryForMs,
      handle: async (job) => await this.attempt(job),
      onOutcome: (outcome) => {
        if (outcome !== 'expired') return
        this.dropped++
        opts.metrics?.webhook('any', 'dropped')
      },
      logger: opts.logger,
      now: this.now
    })
    if (this.enabled) this.runner.start()
  }

  get enabled (): boolean {
    return this.opts.endpoints.length > 0
  }

  /** Some endpoint wants `event` (so that callers build its data only then). */
  wants (event: WebhookEvent): boolean {
    return this.opts.endpoints.some(e => e.events.includes(event))
  }

  get hasBeforeSend (): boolean {
    return this.opts.beforeSend !== null
  }

  /** Queues `data` for every endpoint that wants `event`. Never waits, never throws. */
  emit (event: WebhookEvent, data: unknown): void {
    if (this.closed) return
    const targets = this.opts.endpoints.filter(e => e.events.includes(event))
    if (targets.length === 0) return
    const id = randomUUID()
    const body = JSON.stringify({ id, event, at: this.now(), data })
    const jobs = targets.map((endpoint, n) => ({ id: `${id}.${n}`, data: JSON.stringify({ url: endpoint.url, event, delivery: id, body } satisfies DeliveryData) }))
    this.queue.add(jobs, this.now()).then(added => {
      if (added < jobs.length) {
        this.dropped += jobs.length - added
        this.opts.metrics?.webhook(event, 'dropped')
        if (this.now() - this.warnedFullAt > 10_000) {
          this.warnedFullAt = this.now()
          this.opts.logger.warn({ event, dropped: this.dropped }, 'webhooks: the queue is full (webhooks.queueMax); deliveries dropped (warned at most every 10 s)')
        }
      }
      if (added > 0) this.runner.kick()
    }, (err: unknown) => { this.opts.logger.warn({ err, event }, 'webhooks: could not queue a delivery') })
  }

  /** Deliveries waiting (queued, backing off, or being made). */
  async waiting (): Promise<number> {
    return await this.queue.size()
  }

  /** One attempt of one delivery. */
  private async attempt (job: Job): Promise<JobOutcome> {
    const d = JSON.parse(job.data) as DeliveryData
    const endpoint = this.opts.endpoints.find(e => e.url === d.url && e.events.includes(d.event))
    // an endpoint taken out of the configuration (another node's, or before a restart) gets nothing
    if (endpoint === undefined) return 'drop'
    let problem: string
    try {
      const status = await this.post(endpoint.url, endpoint.secret, d.event, d.delivery, d.body, this.opts.timeoutMs)
      if (status >= 200 && status < 300) {
        this.delivered++
        this.opts.metrics?.webhook(d.event, 'delivered')
        return 'done'
      }
      problem = `status ${status}`
    } catch (err) {
      problem = (err as Error).name === 'TimeoutError' ? `no answer within ${this.opts.timeoutMs} ms` : String((err as Error).message ?? err)
    }
    this.opts.metrics?.webhook(d.event, 'retried')
    this.opts.logger.debug({ url: endpoint.url, event: d.event, delivery: d.delivery, attempts: job.attempts, problem }, 'webhook failed; retrying')
    return 'retry'
  }

  private async post (url: string, secret: string, event: string, id: string, body: string, timeoutMs: number): Promise<number> {
    const res = await fetch(url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-mqim-event': event, 'x-mqim-delivery': id, 'x-mqim-signature': signature(secret, body, this.now()) },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(timeoutMs)
    })
    // the body is not needed; read it away so the connection can be reused
    await res.arrayBuffer().catch(() => {})
    return res.status
  }

  /**
   * Asks the before-send hook about a message; resolves with the body to store (the same, or the
   * hook's), or throws REFUSED (the hook said no, or failed while failing closed).
   */
  async beforeSend (message: { conv: string, from: string, msgId: string, kind: string, body: unknown, mentions?: string[] }): Promise<unknown> {
    const hook = this.opts.beforeSend
    if (hook === null) return message.body
    const fail = (why: string): unknown => {
      this.opts.metrics?.webhook('message.before-send', hook.failOpen ? 'failed-open' : 'failed-closed')
      if (hook.failOpen) return message.body
      throw new ImError('REFUSED', `the message was not checked by the before-send hook (${why}); retry later`)
    }
    // one user holds at most a sixteenth of the hook's places: a burst of theirs neither turns the
    // check off for everyone (fail open) nor refuses everyone (fail closed); their own sends beyond
    // their share are refused, whatever failOpen says
    const mine = this.beforeSendByUser.get(message.from) ?? 0
    if (mine >= Math.max(1, Math.ceil(hook.concurrency / 16))) {
      this.opts.metrics?.webhook('message.before-send', 'refused-busy')
      throw new ImError('RATE_LIMITED', 'too many of your messages are waiting for the before-send check; resend in a moment')
    }
    if (this.beforeSendInFlight >= hook.concurrency) return fail('too many waiting')
    this.beforeSendInFlight++
    this.beforeSendByUser.set(message.from, mine + 1)
    try {
      const id = randomUUID()
      const body = JSON.stringify({ id, event: 'message.before-send', at: this.now(), data: message })
      const res = await fetch(hook.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', 'x-mqim-event': 'message.before-send', 'x-mqim-delivery': id, 'x-mqim-signature': signature(hook.secret, body, this.now()) },
        body,
        redirect: 'manual',
        signal: AbortSignal.timeout(hook.timeoutMs)
      })
      if (res.status < 200 || res.status >= 300) {
        await res.body?.cancel().catch(() => {})
        return fail(`status ${res.status}`)
      }
      // an answer is at most a request's size (plus room for the verdict), read as it comes
      const text = await readCapped(res, this.opts.limits.maxPayloadBytes + 1024)
      if (text === null) return fail('answer too large')
      let verdict: BeforeSendVerdict
      try {
        verdict = JSON.parse(text) as BeforeSendVerdict
      } catch {
        return fail('not JSON')
      }
      if (typeof verdict !== 'object' || verdict === null || typeof verdict.allow !== 'boolean') return fail('not a verdict')
      if (!verdict.allow) {
        this.opts.metrics?.webhook('message.before-send', 'refused')
        const reason = typeof verdict.reason === 'string' ? verdict.reason.slice(0, 200) : 'no reason given'
        throw new ImError('REFUSED', `the message was refused by the before-send hook: ${reason}`)
      }
      if (!Object.prototype.hasOwnProperty.call(verdict, 'body')) {
        this.opts.metrics?.webhook('message.before-send', 'allowed')
        return message.body
      }
      // a rewritten body is held to what a client's request may hold
      const json = JSON.stringify(verdict.body) as string | undefined
      if (json === undefined || Buffer.byteLength(json) > this.opts.limits.maxPayloadBytes || nestsDeeperThan(json, this.opts.limits.maxJsonDepth)) return fail('the rewritten body is not a JSON value within the request limits')
      this.opts.metrics?.webhook('message.before-send', 'allowed')
      return verdict.body
    } catch (err) {
      if (err instanceof ImError) throw err
      return fail((err as Error).name === 'TimeoutError' ? `no answer within ${hook.timeoutMs} ms` : 'unreachable')
    } finally {
      this.beforeSendInFlight--
      const left = (this.beforeSendByUser.get(message.from) ?? 1) - 1
      if (left > 0) this.beforeSendByUser.set(message.from, left)
      else this.beforeSendByUser.delete(message.from)
    }
  }

  close (): void {
    this.closed = true
    this.runner.close()
  }
}
