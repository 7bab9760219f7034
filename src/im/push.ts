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
import { lruCache, lruCacheSized } from '../lru.js'
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { Metrics } from '../metrics.js'
import type { ClusterBus } from '../broker/bus.js'
import { PUSH_TARGETS_TOPIC } from '../protocol/topics.js'
import { isChangeKind, pushTargetKey, type MetadataStore, type PushTarget, type PushTargetRecord, type StoredMessage } from '../store/types.js'
import { MENTION_ALL } from '../protocol/schemas.js'
import type { Services } from './context.js'
import type { ConversationEntry } from './directory.js'
import { JobRunner, type Job, type JobOutcome, type JobQueue } from './jobs.js'
import { totalUnread } from './unread.js'
import { signature } from './webhooks.js'

export type PushConfig = Config['push']

/** A target that no push can be made for (its keys or endpoint do not work): removed, not retried. */
class UnsendableTarget extends Error {}

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
  /** This push's id: the gateway's x-mqim-delivery, the same on every retry of it. */
  id: string
  /** When it was queued. */
  at: number
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

/**
 * Whether mqim may POST to a Web Push endpoint: a URL in canonical form (as browsers give it: no
 * percent-encoded or upper-case host, no default port written out, so that one endpoint has one
 * spelling) on an allowed host. A rule `host` or `*.domain` allows the scheme's default port only;
 * `host:port` that port, `host:*` any.
 */
export function webPushEndpointProblem (endpoint: string, config: PushConfig['webPush']): string | null {
  let url: URL
  try {
    url = new URL(endpoint)
  } catch {
    return 'not a URL'
  }
  if (url.href !== endpoint) return 'not a URL in canonical form (send the endpoint as the browser gives it)'
  if (url.protocol !== 'https:' && !(config.allowHttp && url.protocol === 'http:')) return config.allowHttp ? 'not an http(s) URL' : 'not an https URL'
  if (url.username !== '' || url.password !== '') return 'a URL with credentials'
  const host = url.hostname
  const hostPort = url.port === '' ? host : `${host}:${url.port}`
  const allowed = config.allowedHosts.some(rule => {
    const r = rule.toLowerCase()
    const colon = r.lastIndexOf(':')
    const ruleHost = colon === -1 ? r : r.slice(0, colon)
    const rulePort = colon === -1 ? '' : r.slice(colon + 1)
    if (rulePort !== '*' && rulePort !== url.port) return false
    return ruleHost.startsWith('*.') ? host.endsWith(ruleHost.slice(1)) : ruleHost === host
  })
  return allowed ? null : `the host ${hostPort} is not one of push.webPush.allowedHosts`
}

/**
 * Users' push targets, cached: deciding who gets a push reads the targets of every member of a
 * conversation, and most members have none. A change made on this node drops the users' entries
 * here and, over the cluster bus, on the other nodes; entries also expire after a minute (a missed
 * notice). A read that raced a change caches nothing. Bounded by entries and by targets held.
 */
export class PushTargetCache {
  private readonly byUser = lruCacheSized<string, PushTargetRecord[]>(100_000, 200_000, (list) => list.length + 1, { ttl: 60_000 })
  private generation = 0

  constructor (private readonly meta: MetadataStore, private readonly bus: ClusterBus) {
    bus.on(PUSH_TARGETS_TOPIC, (notice) => {
      if (Array.isArray(notice.users)) for (const u of notice.users) if (typeof u === 'string') this.dropLocal(u)
    })
  }

  /** The targets of these users: cached ones, and the others in one store read. */
  async of (userIds: readonly string[]): Promise<PushTargetRecord[]> {
    const out: PushTargetRecord[] = []
    const missing: string[] = []
    for (const u of userIds) {
      const hit = this.byUser.get(u)
      if (hit === undefined) missing.push(u)
      else out.push(...hit)
    }
    if (missing.length === 0) return out
    const started = this.generation
    const loaded = await this.meta.pushTargetsOf(missing)
    const cache = this.generation === started
    const byUser = new Map<string, PushTargetRecord[]>(missing.map(u => [u, []]))
    for (const r of loaded) byUser.get(r.userId)?.push(r)
    for (const [u, list] of byUser) {
      if (cache) this.byUser.set(u, list)
      out.push(...list)
    }
    return out
  }

  /** These users' targets changed: dropped here and on every other node. */
  changed (userIds: readonly string[]): void {
    if (userIds.length === 0) return
    for (const u of userIds) this.dropLocal(u)
    this.bus.publish(PUSH_TARGETS_TOPIC, { users: userIds })
  }

  private dropLocal (userId: string): void {
    this.byUser.delete(userId)
    this.generation++
  }
}

export interface PushServiceOptions {
  config: PushConfig
  queue: JobQueue
  targets: PushTargetCache
  /** Clustered: the collapse bound per user and conversation holds across nodes. */
  redis: Redis | null
  vapid: VapidKeys | null
  logger: Logger
  metrics?: Metrics
  now?: () => number
}

/** Flushes (store reads to decide who gets a push) in progress at once. */
const FLUSHES_AT_ONCE = 4
/** Badges (total unread) computed at once per flush. */
const BADGES_AT_ONCE = 8
/** A host that failed is rested this long, doubling while it keeps failing, up to the max. */
const HOST_PAUSE_MIN_MS = 500
const HOST_PAUSE_MAX_MS = 30_000

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
  private warnedFullAt = 0
  /** Push services and gateways that failed just now: left alone until `until` (bounded). */
  private readonly resting = lruCache<string, { until: number, pauseMs: number }>(10_000)

  constructor (private readonly opts: PushServiceOptions) {
    this.now = opts.now ?? Date.now
    this.lastFlush = lruCache(opts.config.pendingMax * 2, { ttl: Math.max(1, opts.config.collapseMs) })
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

  /** Registered and removed targets go through here, so that the cache follows. */
  get targets (): PushTargetCache {
    return this.opts.targets
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
    const targets = await this.opts.targets.of([...who.keys()])
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
    // badges (a few store reads per user), BADGES_AT_ONCE users at a time
    const users = [...byUser.keys()].filter(u => who.has(u))
    const badges = new Map<string, number>()
    for (let i = 0; i < users.length; i += BADGES_AT_ONCE) {
      const chunk = users.slice(i, i + BADGES_AT_ONCE)
      const counted = await Promise.all(chunk.map(async u => await totalUnread(services, u, this.opts.config.badgeConversationsMax)))
      chunk.forEach((u, n) => badges.set(u, counted[n] ?? 0))
    }
    const jobs: Array<{ id: string, data: string }> = []
    for (const user of users) {
      const pick = who.get(user)
      if (pick === undefined) continue
      const notification = this.notification(entry, pick.message, pick.mention, badges.get(user) ?? 0)
      // one job per target: a newer push replaces one still waiting (a device that cannot be reached
      // holds one push, the latest, and a user at most targetsPerUser)
      for (const t of byUser.get(user) ?? []) jobs.push({ id: jobIdOf(user, t.device, t.target), data: JSON.stringify({ id: randomUUID(), at: this.now(), user, device: t.device, target: t.target, notification } satisfies PushJobData) })
    }
    const added = await this.opts.queue.add(jobs, this.now())
    this.opts.metrics?.push('any', 'queued', added)
    if (added < jobs.length) {
      this.opts.metrics?.push('any', 'dropped', jobs.length - added)
      if (this.now() - this.warnedFullAt > 10_000) {
        this.warnedFullAt = this.now()
        this.opts.logger.warn({ conv, dropped: jobs.length - added }, 'push: the queue is full (push.queueMax); pushes dropped (warned at most every 10 s)')
      }
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
    // a file: its name (the kind says it is one)
    const name = (m.body as { name?: unknown } | null)?.name
    if (this.opts.config.includeText && m.kind === 'file' && typeof name === 'string') n.text = preview(name, this.opts.config.previewChars)
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
    // a push service or gateway that could not be reached just now is left alone for a moment: its
    // pushes wait for their next turn without a request each (the attempt not counted)
    const host = this.hostOf(data.target)
    const now = this.now()
    const resting = this.resting.get(host)
    if (resting !== undefined && resting.until > now) return { deferUntil: resting.until }
    let outcome: { status: number } | { error: string }
    try {
      outcome = data.target.kind === 'webpush' ? await this.sendWebPush(data.target, data.notification) : await this.sendGateway(data, data.target)
    } catch (err) {
      if (err instanceof UnsendableTarget) {
        // the target itself is at fault (it cannot be encrypted for or addressed): removed
        this.opts.metrics?.push(kind, 'rejected')
        this.opts.logger.warn({ user: data.user, device: data.device, kind, problem: err.message }, 'push target unusable: removed')
        if (await this.services?.meta.pushTargetRemove(data.user, data.device, data.target) === true) this.opts.targets.changed([data.user])
        return 'drop'
      }
      outcome = { error: (err as Error).name === 'TimeoutError' ? `no answer within ${this.opts.config.timeoutMs} ms` : String((err as Error).message ?? err) }
    }
    if ('error' in outcome) {
      // unreachable (no connection, no answer): the host rests, doubling while it stays so
      const pause = Math.min((resting?.pauseMs ?? HOST_PAUSE_MIN_MS / 2) * 2, HOST_PAUSE_MAX_MS)
      this.resting.set(host, { until: this.now() + pause, pauseMs: pause })
      this.opts.metrics?.push(kind, 'retry')
      this.opts.logger.debug({ user: data.user, device: data.device, kind, problem: outcome.error, pauseMs: pause }, 'push service unreachable; retrying')
      return 'retry'
    }
    if (outcome.status === 429 || outcome.status >= 500) {
      // an answer about this push (a quota, a failure of this token): this target backs off alone
      this.opts.metrics?.push(kind, 'retry')
      this.opts.logger.debug({ user: data.user, device: data.device, kind, status: outcome.status }, 'push failed; retrying')
      return 'retry'
    }
    this.resting.delete(host)
    const { status } = outcome
    if (status >= 200 && status < 300) {
      this.opts.metrics?.push(kind, 'delivered')
      return 'done'
    }
    if (status === 404 || status === 410) {
      this.opts.metrics?.push(kind, 'gone')
      this.opts.logger.info({ user: data.user, device: data.device, kind, status }, 'push target gone: removed')
      if (await this.services?.meta.pushTargetRemove(data.user, data.device, data.target) === true) this.opts.targets.changed([data.user])
      return 'drop'
    }
    this.opts.metrics?.push(kind, 'rejected')
    this.opts.logger.warn({ user: data.user, device: data.device, kind, status }, 'push refused by the push service; not retried')
    return 'drop'
  }

  /** Where a target's pushes go: its gateway, or its push service's origin. */
  private hostOf (target: PushTarget): string {
    if (target.kind === 'gateway') return `gateway ${target.gateway}`
    try {
      return new URL(target.endpoint).origin
    } catch {
      return target.endpoint
    }
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
    let details: ReturnType<typeof webpush.generateRequestDetails>
    try {
      details = webpush.generateRequestDetails({ endpoint: target.endpoint, keys: { p256dh: target.p256dh, auth: target.auth } }, JSON.stringify(notification), {
        vapidDetails: vapid,
        TTL: this.opts.config.webPush.ttlSeconds,
        urgency: notification.mention || notification.convKind === 'direct' ? 'high' : 'normal',
        // a push service replaces an undelivered push of the same topic: one per conversation
        topic: createHash('sha256').update(notification.conv).digest('base64url').slice(0, 32)
      })
    } catch (err) {
      throw new UnsendableTarget(String((err as Error).message ?? err))
    }
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

  private async sendGateway (data: PushJobData, target: Extract<PushTarget, { kind: 'gateway' }>): Promise<{ status: number } | { error: string }> {
    const gateway = this.opts.config.gateways.find(g => g.name === target.gateway)
    if (gateway === undefined) return { error: `no gateway ${target.gateway}` }
    const body = JSON.stringify({ id: data.id, at: data.at, user: data.user, device: data.device, token: target.token, platform: target.platform, notification: data.notification })
    const res = await fetch(gateway.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', 'x-mqim-delivery': data.id, 'x-mqim-signature': signature(gateway.secret, body, this.now()) },
      body,
      redirect: 'manual',
      signal: AbortSignal.timeout(this.opts.config.timeoutMs)
    })
    await res.body?.cancel().catch(() => {})
    return { status: res.status }
  }

  /** Pushes queued to be sent (waiting, backing off, or being sent); in Redis: the cluster's. */
  async queued (): Promise<number> {
    return await this.opts.queue.size()
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

/** The queue id of a target's push: the same for every push to it (see JobQueue.add). */
function jobIdOf (user: string, device: string, target: PushTarget): string {
  return createHash('sha256').update(`${user}\u0000${device}\u0000${pushTargetKey(target)}`).digest('base64url')
}

/**
 * The first `max` characters of a text, whole code points, with an ellipsis when cut; control
 * characters (which JSON writes as 6 bytes each) become spaces, so the payload stays small.
 */
function preview (text: string, max: number): string {
  const chars = [...text.replace(/\p{Cc}/gu, ' ')]
  return chars.length <= max ? chars.join('') : chars.slice(0, max).join('') + '…'
}
