/**
 * Offline push: a member who has no device online anywhere in the cluster learns of a new message
 * through their devices' push targets: Web Push (RFC 8030, payload encrypted per RFC 8291, VAPID
 * per RFC 8292, through the web-push library) for browsers, and a push gateway for mobile apps (a
 * service of the app's makers that holds the FCM/APNs credentials; mqim POSTs it a signed JSON
 * notification, as Matrix homeservers do).
 *
 * Off the send path: the sequencer hands each stored message here (noteStored, a map update); a
 * conversation's messages are gathered for `delayMs` and then pushed at most once per
 * `collapseMs` (the latest message wins; in a cluster the bound per user and conversation holds
 * across nodes through Redis). Who gets it: each member but the sender with a push target, no
 * device online, and the conversation not muted; a mention (by name or @all) breaks through mute
 * and is what the push shows. The badge is the user's total unread (not muted conversations).
 * The pushes go through a bounded job queue (src/im/jobs.ts, in Redis when clustered) with
 * retries and back-off: a dead or slow push service never slows a send.
 *
 * A target that the push service or gateway says is gone (404, 410) is removed.
 */
import { createHash, randomUUID } from 'node:crypto'
import { chmodSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { Redis } from 'ioredis'
import webpush from 'web-push'
import { LRUCache } from 'lru-cache'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import { isChangeKind, type PushTarget, type PushTargetRecord, type StoredMessage } from '../store/types.js'
import { MENTION_ALL } from '../protocol/schemas.js'
import type { Services } from './context.js'
import type { ConversationEntry } from './directory.js'
import { JobRunner, type Job, type JobOutcome, type JobQueue } from './jobs.js'
import { totalUnread } from './unread.js'
import { signature } from './webhooks.js'

export type PushConfig = Config['push']

/** What a push says (the Web Push payload, decrypted by the service worker; a gateway's `notification`). */
export interface PushNotification {
  type: 'message'
  conv: string
  /** group: its name; direct: null. */
  convName: string | null
  convKind: 'direct' | 'group' | 'channel'
  seq: number
  from: string
  kind: string
  /** The message's time, epoch ms. */
  ts: number
  /** A text message's first previewChars characters; absent when includeText is off or not text. */
  text?: string
  /** The message mentions this user (by name or @all). */
  mention: boolean
  /** The user's total unread messages (conversations not muted). */
  badge: number
}

interface PushJobData {
  user: string
  device: string
  target: PushTarget
  notification: PushNotification
}

interface Pending {
  latest: StoredMessage
  /** Members mentioned by name in the window → the latest message that did. */
  mentioned: Map<string, StoredMessage>
  /** The latest message of the window that mentioned @all. */
  all: StoredMessage | null
  /** Only these users (a push held back by another node's recent push to them); null: everyone. */
  only: Set<string> | null
}

export interface VapidKeys { publicKey: string, privateKey: string, subject: string }

/**
 * The VAPID key pair: configured, else (clustered) shared through Redis, first node's wins, else
 * generated once into <dataDir>/vapid.json. A browser's subscription is bound to the public key:
 * every node must sign with the same one, and it must not change (subscriptions would all fail).
 */
export async function loadVapidKeys (config: PushConfig['webPush'], dataDir: string, redis: Redis | null, logger: Logger): Promise<VapidKeys> {
  const subject = config.subject
  if (config.publicKey !== null && config.privateKey !== null) return { publicKey: config.publicKey, privateKey: config.privateKey, subject }
  if (redis !== null) {
    const fresh = webpush.generateVAPIDKeys()
    await redis.set('mqim:push:vapid', JSON.stringify(fresh), 'NX')
    const held = JSON.parse(await redis.get('mqim:push:vapid') ?? 'null') as { publicKey: string, privateKey: string } | null
    if (held === null) throw new Error('push: the VAPID keys could not be kept in Redis')
    logger.warn('push.webPush keys are kept in Redis (mqim:push:vapid): set push.webPush.publicKey/privateKey in production, so that a Redis reset does not void every browser subscription')
    return { ...held, subject }
  }
  const file = path.join(dataDir, 'vapid.json')
  try {
    const held = JSON.parse(readFileSync(file, 'utf8')) as { publicKey?: unknown, privateKey?: unknown }
    if (typeof held.publicKey === 'string' && typeof held.privateKey === 'string') return { publicKey: held.publicKey, privateKey: held.privateKey, subject }
    throw new Error(`${file} holds no publicKey and privateKey`)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err
  }
  const fresh = webpush.generateVAPIDKeys()
  writeFileSync(file, JSON.stringify(fresh) + '\n', { mode: 0o600, flag: 'wx' })
  chmodSync(file, 0o600)
  logger.info({ file }, 'push: VAPID keys generated')
  return { ...fresh, subject }
}

/** Whether mqim may POST to a Web Push endpoint: a URL on an allowed host (https unless allowHttp). */
export function webPushEndpointProblem (endpoint: string, config: PushConfig['webPush']): string | null {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return 'not a URL'
  }
  if (url.protocol !== 'https:' && !(config.allowHttp && url.protocol === 'http:')) return config.allowHttp ? 'not an http(s) URL' : 'not an https URL'
  if (url.username !== '' || url.password !== '') return 'a URL with credentials'
  const host = url.hostname.toLowerCase()
  const hostPort = url.port === '' ? host : `${host}:${url.port}`
  const allowed = config.allowedHosts.some(rule => {
    const r = rule.toLowerCase()
    if (r.startsWith('*.')) return host.endsWith(r.slice(1))
    return r === host || r === hostPort
  })
  return allowed ? null : `the host ${hostPort} is not one of push.webPush.allowedHosts`
}

export interface PushServiceOptions {
  config: PushConfig
  queue: JobQueue
  /** Clustered: the collapse bound per user and conversation holds across nodes. */
  redis: Redis | null
  vapid: VapidKeys | null
  logger: Logger
  metrics?: Metrics
  now?: () => number
}

/** Flushes (store reads to decide who gets a push) in progress at once. */
const FLUSHES_AT_ONCE = 4

export class PushService {
  private readonly pending = new Map<string, Pending>()
  private readonly timers = new Map<string, NodeJS.Timeout>()
  /** conversation → when this node last pushed for it (the collapse window). */
  private readonly lastFlush: LRUCache<string, number>
  private readonly runner: JobRunner
  private readonly waiting: Array<() => void> = []
  private flushing = 0
  private closed = false
  private readonly now: () => number
  private services: Services | null = null

  constructor (private readonly opts: PushServiceOptions) {
    this.now = opts.now ?? Date.now
    this.lastFlush = new LRUCache({ max: opts.config.pendingMax * 2, ttl: Math.max(1, opts.config.collapseMs) })
    this.runner = new JobRunner(opts.queue, {
      name: 'push',
      concurrency: opts.config.concurrency,
      // an attempt takes at most timeoutMs; the lease leaves room for the outcome to be recorded
      leaseMs: opts.config.timeoutMs * 2 + 5000,
      pollMs: opts.redis === null ? 1000 : 250,
      retryForMs: opts.config.retryForMs,
      handle: async (job) => await this.send(job),
      onOutcome: (outcome) => { if (outcome === 'expired') opts.metrics?.push('any', 'expired') },
      logger: opts.logger,
      now: this.now
    })
  }

  get enabled (): boolean {
    return this.opts.config.enabled
  }

  /** The VAPID public key browsers subscribe with, or null when Web Push is off. */
  get vapidPublicKey (): string | null {
    return this.opts.vapid?.publicKey ?? null
  }

  /** Starts sending (the queue may hold pushes from before a restart, or from other nodes). */
  start (services: Services): void {
    this.services = services
    if (this.enabled) this.runner.start()
  }

  /** A message was stored (called in seq order per conversation). Never waits, never throws. */
  noteStored (m: StoredMessage): void {
    if (!this.enabled || this.closed || isChangeKind(m.kind)) return
    let p = this.pending.get(m.conversationId)
    if (p === undefined) {
      if (this.pending.size >= this.opts.config.pendingMax) {
        this.opts.metrics?.push('any', 'dropped')
        return
      }
      p = { latest: m, mentioned: new Map(), all: null, only: null }
      this.pending.set(m.conversationId, p)
      this.schedule(m.conversationId, this.opts.config.delayMs)
    } else {
      this.opts.metrics?.push('any', 'collapsed')
      p.latest = m
      p.only = null
    }
    for (const u of m.mentions ?? []) {
      if (u === MENTION_ALL) p.all = m
      else p.mentioned.set(u, m)
    }
  }

  /** Flushes the conversation after `delayMs`, and no sooner than collapseMs after its last push. */
  private schedule (conv: string, delayMs: number): void {
    if (this.timers.has(conv)) return
    const now = this.now()
    const last = this.lastFlush.get(conv)
    const at = Math.max(now + delayMs, last === undefined ? 0 : last + this.opts.config.collapseMs)
    const timer = setTimeout(() => {
      this.timers.delete(conv)
      void this.flush(conv)
    }, at - now)
    timer.unref()
    this.timers.set(conv, timer)
  }

  private async flush (conv: string): Promise<void> {
    const p = this.pending.get(conv)
    if (p === undefined || this.closed) return
    this.pending.delete(conv)
    this.lastFlush.set(conv, this.now())
    if (this.flushing >= FLUSHES_AT_ONCE) await new Promise<void>(resolve => this.waiting.push(resolve))
    this.flushing++
    try {
      await this.pushFor(conv, p)
    } catch (err) {
      this.opts.logger.warn({ err, conv }, 'push: could not decide who to push')
    } finally {
      this.flushing--
      this.waiting.shift()?.()
    }
  }

  /** Who gets which message: members but the sender; muted ones only when mentioned. */
  private recipients (entry: ConversationEntry, p: Pending): Map<string, { message: StoredMessage, mention: boolean }> {
    const out = new Map<string, { message: StoredMessage, mention: boolean }>()
    for (const [user, member] of entry.members) {
      if (p.only !== null && !p.only.has(user)) continue
      const named = p.mentioned.get(user)
      const mention = named !== undefined && named.senderId !== user ? named : p.all !== null && p.all.senderId !== user ? p.all : null
      if (mention !== null) out.set(user, { message: mention, mention: true })
      else if (!member.muted && p.latest.senderId !== user) out.set(user, { message: p.latest, mention: false })
    }
    return out
  }

  private async pushFor (conv: string, p: Pending): Promise<void> {
    const services = this.services
    if (services === null) return
    const entry = await services.directory.get(conv)
    // channels are read by pull (history): no pushes, and their member lists are never read whole
    if (entry === null || entry.conversation.kind === 'channel') return
    const who = this.recipients(entry, p)
    if (who.size === 0) return
    const targets = await services.meta.pushTargetsOf([...who.keys()])
    if (targets.length === 0) return
    const withTargets = [...new Set(targets.map(t => t.userId))]
    const offline = (await services.presence.status(withTargets)).filter(s => !s.online).map(s => s.user)
    const allowed = await this.collapse(conv, offline, p)
    if (allowed.length === 0) return
    const byUser = new Map<string, PushTargetRecord[]>()
    for (const t of targets) {
      if (!allowed.includes(t.userId)) continue
      const list = byUser.get(t.userId)
      if (list === undefined) byUser.set(t.userId, [t])
      else list.push(t)
    }
    const jobs: Array<{ id: string, data: string }> = []
    for (const [user, list] of byUser) {
      const pick = who.get(user)
      if (pick === undefined) continue
      const badge = await totalUnread(services, user, this.opts.config.badgeConversationsMax)
      const notification = this.notification(entry, pick.message, pick.mention, badge)
      for (const t of list) jobs.push({ id: randomUUID(), data: JSON.stringify({ user, device: t.device, target: t.target, notification } satisfies PushJobData) })
    }
    const added = await this.opts.queue.add(jobs, this.now())
    this.opts.metrics?.push('any', 'queued', added)
    if (added < jobs.length) {
      this.opts.metrics?.push('any', 'dropped', jobs.length - added)
      this.opts.logger.warn({ conv, dropped: jobs.length - added }, 'push: the queue is full (push.queueMax); pushes dropped')
    }
    if (added > 0) this.runner.kick()
  }

  /**
   * Clustered: of these users, those no node pushed this conversation to within collapseMs (the
   * rest are held back until that window ends, then get the latest message then). One node: all
   * (this node's flushes of a conversation are collapseMs apart already).
   */
  private async collapse (conv: string, users: string[], p: Pending): Promise<string[]> {
    const redis = this.opts.redis
    const window = this.opts.config.collapseMs
    if (redis === null || window === 0 || users.length === 0) return users
    const multi = redis.multi()
    for (const u of users) multi.set(`mqim:push:recent:${u}:${conv}`, '1', 'PX', window, 'NX').pttl(`mqim:push:recent:${u}:${conv}`)
    const res = await multi.exec()
    const allowed: string[] = []
    const held: string[] = []
    let wait = 0
    users.forEach((u, i) => {
      const set = res?.[2 * i]?.[1]
      if (set === 'OK') allowed.push(u)
      else {
        held.push(u)
        wait = Math.max(wait, Number(res?.[2 * i + 1]?.[1] ?? window))
      }
    })
    if (held.length > 0 && !this.pending.has(conv) && this.pending.size < this.opts.config.pendingMax) {
      this.opts.metrics?.push('any', 'collapsed', held.length)
      this.pending.set(conv, { ...p, only: new Set(held) })
      this.schedule(conv, Math.max(10, wait))
    }
    return allowed
  }

  private notification (entry: ConversationEntry, m: StoredMessage, mention: boolean, badge: number): PushNotification {
    const n: PushNotification = {
      type: 'message',
      conv: m.conversationId,
      convName: entry.conversation.kind === 'group' ? entry.conversation.name : null,
      convKind: entry.conversation.kind,
      seq: m.seq,
      from: m.senderId,
      kind: m.kind,
      ts: m.ts,
      mention,
      badge
    }
    if (this.opts.config.includeText && m.kind === 'text' && typeof m.body === 'string') n.text = preview(m.body, this.opts.config.previewChars)
    return n
  }

  /** One attempt at one push. */
  private async send (job: Job): Promise<JobOutcome> {
    const data = JSON.parse(job.data) as PushJobData
    const kind = data.target.kind
    const unsendable = this.unsendable(data.target)
    if (unsendable !== null) {
      // switched off or taken out of the configuration since: dropped, the target kept
      this.opts.metrics?.push(kind, 'rejected')
      this.opts.logger.warn({ user: data.user, device: data.device, kind, problem: unsendable }, 'push not sent')
      return 'drop'
    }
    let outcome: { status: number } | { error: string }
    try {
      outcome = data.target.kind === 'webpush' ? await this.sendWebPush(data.target, data.notification) : await this.sendGateway(job, data, data.target)
    } catch (err) {
      outcome = { error: (err as Error).name === 'TimeoutError' ? `no answer within ${this.opts.config.timeoutMs} ms` : String((err as Error).message ?? err) }
    }
    if ('error' in outcome) {
      this.opts.metrics?.push(kind, 'retry')
      this.opts.logger.debug({ user: data.user, device: data.device, kind, problem: outcome.error }, 'push failed; retrying')
      return 'retry'
    }
    const { status } = outcome
    if (status >= 200 && status < 300) {
      this.opts.metrics?.push(kind, 'delivered')
      return 'done'
    }
    if (status === 404 || status === 410) {
      this.opts.metrics?.push(kind, 'gone')
      this.opts.logger.info({ user: data.user, device: data.device, kind, status }, 'push target gone: removed')
      await this.services?.meta.pushTargetRemove(data.user, data.device, data.target)
      return 'drop'
    }
    if (status === 429 || status >= 500) {
      this.opts.metrics?.push(kind, 'retry')
      return 'retry'
    }
    this.opts.metrics?.push(kind, 'rejected')
    this.opts.logger.warn({ user: data.user, device: data.device, kind, status }, 'push refused by the push service; not retried')
    return 'drop'
  }

  /** Why a push to this target cannot be sent with the configuration of now, or null. */
  private unsendable (target: PushTarget): string | null {
    if (target.kind === 'gateway') return this.opts.config.gateways.some(g => g.name === target.gateway) ? null : `no push gateway named ${target.gateway} is configured`
    if (!this.opts.config.webPush.enabled || this.opts.vapid === null) return 'Web Push is switched off'
    // checked again when sent: the allowed hosts may have changed since it was registered
    return webPushEndpointProblem(target.endpoint, this.opts.config.webPush)
  }

  private async sendWebPush (target: Extract<PushTarget, { kind: 'webpush' }>, notification: PushNotification): Promise<{ status: number } | { error: string }> {
    const vapid = this.opts.vapid
    if (vapid === null) return { error: 'no VAPID keys' }
    const details = webpush.generateRequestDetails({ endpoint: target.endpoint, keys: { p256dh: target.p256dh, auth: target.auth } }, JSON.stringify(notification), {
      vapidDetails: vapid,
      TTL: this.opts.config.webPush.ttlSeconds,
      urgency: notification.mention || notification.convKind === 'direct' ? 'high' : 'normal',
      // a push service replaces an undelivered push of the same topic: one per conversation
      topic: createHash('sha256').update(notification.conv).digest('base64url').slice(0, 32)
    })
    const headers: Record<string, string> = {}
    for (const [k, v] of Object.entries(details.headers)) headers[k] = String(v)
    const res = await fetch(details.endpoint, {
      method: 'POST',
      headers,
      body: details.body === null ? undefined : new Uint8Array(details.body),
      redirect: 'manual',
      signal: AbortSignal.timeout(this.opts.config.timeoutMs)
    })
    await res.body?.cancel().catch(() => {})
    return { status: res.status }
  }

  private async sendGateway (job: Job, data: PushJobData, target: Extract<PushTarget, { kind: 'gateway' }>): Promise<{ status: number } | { error: string }> {
    const gateway = this.opts.config.gateways.find(g => g.name === target.gateway)
    if (gateway === undefined) return { error: `no gateway ${target.gateway}` }
    const body = JSON.stringify({ id: job.id, at: job.at, user: data.user, device: data.device, token: target.token, platform: target.platform, notification: data.notification })
    const res = await fetch(gateway.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-mqim-delivery': job.id, 'x-mqim-signature': signature(gateway.secret, body, this.now()) },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(this.opts.config.timeoutMs)
    })
    await res.body?.cancel().catch(() => {})
    return { status: res.status }
  }

  /** Pushes waiting to be decided (conversations). */
  get pendingConversations (): number {
    return this.pending.size
  }

  close (): void {
    this.closed = true
    this.runner.close()
    for (const t of this.timers.values()) clearTimeout(t)
    this.timers.clear()
    this.pending.clear()
    for (const resolve of this.waiting.splice(0)) resolve()
  }
}

/** The first `max` characters of a text, whole code points, with an ellipsis when cut. */
function preview (text: string, max: number): string {
  const chars = [...text]
  return chars.length <= max ? text : chars.slice(0, max).join('') + '…'
}
