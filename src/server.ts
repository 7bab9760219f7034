/**
 * Composition root: it builds each module, lower ones first, and passes them in by constructor.
 * It holds no logic of its own. The send path then reads one way (ARCHITECTURE.md):
 * hooks -> dispatcher -> op -> sequencer -> delivery -> publisher -> sessions.
 *
 * Start-up is a named series of steps; stop() is the reverse, draining the sequencer before
 * clients are disconnected so nothing acknowledged is lost.
 */
// first: before Aedes loads mqtt-packet (workaround 17, see the file)
import './broker/quiet-debug.js'
import { readFileSync, mkdirSync, writeFileSync, chmodSync } from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { Aedes } from 'aedes'
import type { FastifyInstance } from 'fastify'
import { isClustered, type Config } from './config.js'
import { createLogger, type Logger } from './log.js'
import type { MessageStore, MetadataStore, StoredMessage } from './store/types.js'
import { createMessageStore, createMetadataStore } from './store/index.js'
import { Sequencer } from './im/sequencer.js'
import { ConversationDirectory } from './im/directory.js'
import { ChannelSubscriptions } from './gateway/channels.js'
import { Publisher } from './im/publisher.js'
import { Delivery, claimsIn } from './im/delivery.js'
import { Metrics } from './metrics.js'
import { Webhooks } from './im/webhooks.js'
import { MentionLog } from './im/mentions.js'
import { PushService, PushTargetCache, loadVapidKeys } from './im/push.js'
import { MemoryJobQueue, RedisJobQueue } from './im/jobs.js'
import { RetentionJob, retentionMs } from './im/retention.js'
import { ReadCursors } from './im/read-cursors.js'
import { localReceiptWindows, ReceiptAggregator, RedisReceiptWindows } from './im/receipts.js'
import { Dispatcher } from './im/dispatcher.js'
import type { Services } from './im/context.js'
import { MemoryPresenceStore, PresenceService, RedisPresenceStore } from './im/presence.js'
import { BrokerHooks } from './gateway/hooks.js'
import { Sessions } from './broker/sessions.js'
import { Listeners } from './gateway/listeners.js'
import { ClusterBus } from './broker/bus.js'
import { UsersElsewhere } from './broker/users-elsewhere.js'
import { UserRateLimiter } from './broker/rate-limit.js'
import { MemorySessionQuota, RedisSessionQuota } from './broker/session-quota.js'
import { PageGate } from './gateway/page-gate.js'
import { EnvelopeCache } from './im/envelopes.js'
import { BlockService } from './im/blocks.js'
import { createBrokerBackends, type BrokerBackends } from './broker/backends.js'
import { FanOut } from './broker/fanout.js'
import { CONNECTED_TOPIC, SEQ_TOPIC, WATCHERS_TOPIC, userOfTopic } from './protocol/topics.js'
import { unregisterClosedClients } from './broker/upstream.js'
import { LoginGuard } from './auth/login-guard.js'
import { Revocations } from './auth/revocation.js'
import { JwtLogin } from './auth/jwt.js'
import { createHttpApp } from './http/app.js'
import { checkHealth, sharedCheck } from './http/health.js'
import { createObjectStore, fileOrigins } from './files/index.js'
import { FileService, FileSweeper } from './files/service.js'
import { MemoryUploadQuota, RedisUploadQuota } from './files/quota.js'

export interface StartOptions {
  config: Config
  logger?: Logger
  /** Inject stores (tests of the broker on the embedded default share them with the test). */
  stores?: { meta: MetadataStore, messages: MessageStore }
}

export interface Ports { mqtt: number, http: number, tls: number | null }

/** The running modules a test or an operator may look at. */
export interface Internals {
  sessions: Sessions
  listeners: Listeners
  logins: LoginGuard
  revocations: Revocations
  backends: BrokerBackends
  /** Mention records waiting to be written (unread mention counts of `list`). */
  mentions: MentionLog
  /** Removes expired messages in the background (idle when retention is off). */
  retention: RetentionJob
  /** Removes uploads no message refers to, in the background. */
  fileSweeper: FileSweeper
  /** Which users have reply watchers on other nodes (clustered). */
  replyWatchers: UsersElsewhere
  connectedUsers: UsersElsewhere
  /** What follows a commit (the sequencer's listener): its last store writes are waited for at stop. */
  delivery: Delivery
}

/**
 * The Aedes broker id of one start of a node: its node id and a random part. Queued QoS 1 packets
 * are kept in Redis under (broker id, counter), and Aedes counts from 0 at every start: with the
 * node id alone, a node restarted under a fixed MQIM_NODE_ID wrote its new packets over packets it
 * had queued before (kept for packetTTLSeconds), and a session that reconnected could be sent, in
 * place of its own message, what was queued for someone else.
 */
export function brokerIdFor (nodeId: string): string {
  return `${nodeId}.${randomBytes(6).toString('hex')}`
}

export class MqimServer {
  private stopping: Promise<void> | null = null

  private constructor (
    readonly ports: Ports,
    readonly adminToken: string,
    readonly services: Services,
    readonly internals: Internals,
    readonly nodeId: string,
    private readonly broker: Aedes,
    private readonly http: FastifyInstance,
    private readonly rates: UserRateLimiter
  ) {}

  static async start (options: StartOptions): Promise<MqimServer> {
    const { config } = options
    const nodeId = config.nodeId ?? `node-${randomBytes(4).toString('hex')}`
    const logger = (options.logger ?? createLogger(config.log.level)).child({ node: nodeId })
    const clustered = isClustered(config)

    // 1. stores: connect, migrate / ensure indexes (timed for the metrics)
    const metrics = new Metrics(config.metrics)
    const meta = metrics.instrumentStore(options.stores?.meta ?? await createMetadataStore(config.metadataStore), 'meta')
    const messages = metrics.instrumentStore(options.stores?.messages ?? await createMessageStore(config.messageStore, logger, { clustered }), 'messages')
    // the object store (local disk under dataDir, or S3) is made here, with the other stores, so that
    // its module loads before anything is started; it is initialised with the attachments below
    const objects = await createObjectStore(config.files, config.dataDir)
    if (options.stores === undefined) {
      await initStore('metadataStore', config.metadataStore.adapter, () => meta.init())
      await initStore('messageStore', config.messageStore.adapter, () => messages.init())
    }

    // 2. broker (in-memory, or sessions and routing shared through Redis) and the cluster bus
    const backends = createBrokerBackends(config.broker.persistence, config.limits, logger)
    const broker = await Aedes.createBroker({
      id: brokerIdFor(nodeId),
      persistence: backends.persistence,
      mq: backends.mq,
      drainTimeout: config.broker.drainTimeoutMs,
      connectTimeout: config.broker.connectTimeoutMs,
      heartbeatInterval: 60_000
    })
    unregisterClosedClients(broker)
    backends.brokerStarted()
    broker.on('clientError', (client, err) => logger.debug({ client: client.id, err }, 'client error'))
    broker.on('connectionError', (_client, err) => logger.debug({ err }, 'connection error'))
    const bus = await ClusterBus.create(broker, { nodeId, clustered, available: backends.available, logger })

    // 3. sessions, then the IM services from the bottom of the send path up
    const { outboundBufferBytes, pageBytes, maxPacketBytes } = config.limits
    const sessions = new Sessions({ outboundBufferBytes, drainTimeoutMs: config.broker.drainTimeoutMs, replyBytes: pageBytes + maxPacketBytes }, logger)
    const envelopes = new EnvelopeCache()
    const webhooks = new Webhooks({
      ...config.webhooks,
      limits: config.limits,
      logger,
      metrics,
      ...(backends.redis === null ? {} : { queue: new RedisJobQueue(backends.redis, 'webhooks', config.webhooks.queueMax), pollMs: 250 })
    })
    const persistence = config.broker.persistence
    const listMs = persistence.adapter === 'redis' ? persistence.watchersListMs : 10_000
    const replyWatchers = new UsersElsewhere(bus, { users: () => sessions.watchedUsers(), count: () => sessions.watchedCount }, { topic: WATCHERS_TOPIC, periodMs: listMs, linkSince: backends.linkUpSince })
    sessions.onWatching((userId, on) => replyWatchers.changed(userId, on))
    const connectedUsers = new UsersElsewhere(bus, { users: () => sessions.connectedUsers(), count: () => sessions.connectedCount }, { topic: CONNECTED_TOPIC, periodMs: listMs, linkSince: backends.linkUpSince })
    sessions.onConnected((userId, on) => connectedUsers.changed(userId, on))
    const fan = await FanOut.create(broker, backends.mq, backends.persistence, {
      clustered,
      logger,
      beforeDeliver: (topics) => { sessions.hold(topics.map(userOfTopic).filter((u): u is string => u !== null)) },
      onDropped: (qos) => { metrics.publishDropped(qos) }
    })
    const publisher = new Publisher(sessions, fan, { clustered, available: backends.available, envelopes, logger, metrics, webhooks, watchedElsewhere: (u) => replyWatchers.elsewhere(u), connectedElsewhere: (u) => connectedUsers.elsewhere(u) })
    const directory = new ConversationDirectory(meta, bus, undefined, config.channels.membershipCacheMax)
    const channels = new ChannelSubscriptions(sessions, directory, bus, logger, config.channels)
    const mentions = new MentionLog(meta, logger)
    mkdirSync(config.dataDir, { recursive: true })
    const push = new PushService({
      config: config.push,
      queue: backends.redis === null ? new MemoryJobQueue(config.push.queueMax) : new RedisJobQueue(backends.redis, 'push', config.push.queueMax),
      targets: new PushTargetCache(meta, bus),
      redis: backends.redis,
      vapid: config.push.enabled && config.push.webPush.enabled ? await loadVapidKeys(config.push.webPush, config.dataDir, backends.redis, logger) : null,
      logger,
      metrics
    })
    const delivery = new Delivery(directory, publisher, bus, {
      mentions,
      webhooks,
      push,
      metrics,
      logger,
      messages,
      // (the sequencer is made next: called only after both exist)
      applyChange: async (change: StoredMessage): Promise<unknown> => await sequencer.applyChange(change),
      order: { listeningSince: backends.connectedSince },
      // one node fills what a dead node stored and never delivered, not every node that heard of it
      claims: backends.redis === null ? null : claimsIn(backends.redis, nodeId)
    })
    // a change FerretDB lost and had applied again: the other nodes drop what they cached of its
    // target meanwhile (as after any change: src/im/sequencer.ts, the `changed` of a notice)
    if (clustered && 'onChangeLost' in messages) {
      messages.onChangeLost = (change) => {
        if (change.target !== undefined) bus.publish(SEQ_TOPIC, { seqs: {}, tails: {}, changed: [[change.conversationId, change.target]] })
      }
    }
    const sequencer = new Sequencer(messages, delivery, {
      ...config.sequencer,
      // the in-memory store finds a resent msgId as fast as a cache would
      recentMax: config.messageStore.adapter === 'memory' ? 0 : undefined,
      peers: clustered ? bus : null,
      peersSince: backends.linkUpSince,
      logger,
      metrics
    })
    // (a fan-out whose commit notice did not come first: history asks the store, see noteMarked)
    if (clustered) publisher.onPublished((conv, seq) => { sequencer.noteMarked(conv, seq) })
    const blocks = new BlockService(meta, bus, { maxPerUser: config.limits.blocksPerUser })
    const receipts = new ReceiptAggregator(directory, meta, async (conv, atLeast) => await sequencer.lastSeqFor(conv, atLeast), publisher, logger, 1000, undefined,
      backends.redis === null ? localReceiptWindows : new RedisReceiptWindows(backends.redis))
    const presence = new PresenceService({
      store: backends.redis === null ? new MemoryPresenceStore() : new RedisPresenceStore(backends.redis),
      meta,
      directory,
      blocks,
      publisher,
      logger,
      onChange: (userId, online) => { webhooks.emit(online ? 'user.online' : 'user.offline', { user: userId }) },
      ...config.presence
    })
    sessions.on('started', s => { void presence.connected(s.userId, s.connId) })
    sessions.on('ended', s => { void presence.disconnected(s.userId, s.connId) })
    // attachments: the object store (local disk under dataDir, or S3) and what uses it
    await initStore('files.store', config.files.store.adapter, () => objects.store.init())
    const files = new FileService({
      store: objects.store,
      config: config.files,
      quota: backends.redis === null ? new MemoryUploadQuota() : new RedisUploadQuota(backends.redis),
      logger,
      now: Date.now,
      messageStored: async (conv, senderId, msgId) => (await messages.findByClientMsgId(conv, senderId, msgId)) !== null
    })
    const fileSweeper = new FileSweeper(files, config.files.sweepIntervalMs, logger)
    const services: Services = { config, logger, meta, messages, sequencer, directory, publisher, receipts, presence, readCursors: new ReadCursors(meta), envelopes, blocks, metrics, webhooks, push, files, channels, now: Date.now }
    const dispatcher = new Dispatcher(services)
    const { directDays, groupDays, ...sweep } = config.retention
    const retention = new RetentionJob(messages, meta, { directMs: retentionMs(directDays), groupMs: retentionMs(groupDays), ...sweep, logger })

    // 4. login defence, rate limits, revocation, hooks
    const logins = new LoginGuard(config.auth)
    const jwt = config.auth.jwt?.enabled === true ? await JwtLogin.create(config.auth.jwt, { meta, sessions, logger }) : null
    const rates = new UserRateLimiter(config.limits.requestsPerSecond, config.limits.requestBurst, Date.now,
      backends.redis === null ? null : { redis: backends.redis, logger })
    const revocations = new Revocations(sessions, meta, bus, logger, config.auth.revocationPollMs)
    await revocations.start()
    const quota = backends.redis === null
      ? new MemorySessionQuota(config.limits.persistentSessionsPerUser)
      : new RedisSessionQuota(backends.redis, config.limits.persistentSessionsPerUser)
    const pages = new PageGate(config.limits.pagesInFlight, config.limits.pagesInFlightPerUser)
    new BrokerHooks({ meta, sessions, dispatcher, publisher, logins, jwt, rates, quota, pages, channels, logger, metrics, limits: config.limits, brokerAvailable: backends.available }).install(broker)

    // 5. admin token
    const adminToken = randomBytes(24).toString('base64url')
    const tokenFile = path.join(config.dataDir, 'admin-token')
    writeFileSync(tokenFile, adminToken + '\n', { mode: 0o600 })
    chmodSync(tokenFile, 0o600)

    // 6. listeners: MQTT over TCP (and TLS), HTTP with MQTT over WebSocket at /mqtt
    const listeners = new Listeners(broker, config.limits, sessions.backpressure, (address) => logins.addressBackoffMs(address), config.auth, logger)
    metrics.watch({
      connections: () => ({ ...listeners.open }),
      sessions: () => sessions.size,
      slowConsumersCut: () => sessions.slowConsumersCut,
      floodsCut: () => sessions.floodsCut,
      tarpitted: () => listeners.tarpitted,
      subscriptionRepair: backends.matcherStats,
      ...(backends.redis === null ? {} : { clockOffset: backends.clockOffset })
    })
    const http = await createHttpApp({ ...config.http, ...(objects.routes === null ? {} : { bodyTimeoutMs: config.files.uploadTimeoutMs }) }, {
      logger,
      routes: objects.routes === null ? [] : [objects.routes],
      fileOrigins: fileOrigins(config.files),
      metrics: { registry: metrics, enabled: config.metrics.enabled, token: config.metrics.token },
      admin: { services, token: adminToken, revoke: (userId, reason) => { revocations.revoke(userId, reason) } },
      health: sharedCheck(async () => await checkHealth({ meta, messages, redis: backends.redis, node: nodeId, redisRouting: backends.available }, {
        node: nodeId,
        clients: broker.connectedClients,
        messageStore: config.messageStore.adapter,
        metadataStore: config.metadataStore.adapter,
        broker: config.broker.persistence.adapter
      }))
    })
    listeners.acceptWebSocket(http.server)
    const ports: Ports = {
      mqtt: await listeners.listenTcp(config.mqtt.port, config.host),
      http: await listenHttp(http, config.http.port, config.host),
      tls: null
    }
    if (config.tls.cert !== null && config.tls.key !== null) {
      ports.tls = await listeners.listenTls({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }, config.tls.port, config.host)
    }
    logger.info({ mqtt: ports.mqtt, http: ports.http, websocket: '/mqtt', tls: ports.tls, messageStore: config.messageStore.adapter, metadataStore: config.metadataStore.adapter }, 'mqim listening')
    retention.start()
    push.start(services)
    fileSweeper.start()
    return new MqimServer(ports, adminToken, services, { sessions, listeners, logins, revocations, backends, mentions, retention, fileSweeper, replyWatchers, connectedUsers, delivery }, nodeId, broker, http, rates)
  }

  /** Graceful stop: stop accepting, finish in-flight writes, disconnect clients, close stores. */
  async stop (): Promise<void> {
    this.stopping ??= this.doStop()
    await this.stopping
  }

  private async doStop (): Promise<void> {
    const { sequencer, receipts, presence, publisher, meta, messages, logger } = this.services
    const { listeners, revocations, backends } = this.internals
    // 1. stop accepting; 2. finish in-flight writes (and their deliveries); 3. disconnect
    // clients so they reconnect elsewhere; 4. close stores and Redis
    const closing = Promise.all([listeners.close(), this.http.close()])
    receipts.close()
    this.rates.close()
    await revocations.close()
    await sequencer.close()
    await this.internals.delivery.close()
    await this.internals.retention.close()
    await this.internals.fileSweeper.close()
    this.internals.replyWatchers.close()
    this.internals.connectedUsers.close()
    await this.internals.mentions.close()
    await presence.close()
    await publisher.close()
    this.services.webhooks?.close()
    this.services.push?.close()
    await new Promise<void>(resolve => this.broker.close(() => resolve()))
    listeners.stopSockets()
    await closing
    await Promise.allSettled([meta.close(), messages.close(), backends.close(), this.services.files?.store.close()])
    logger.info('mqim stopped')
  }
}

async function listenHttp (app: FastifyInstance, port: number, host: string): Promise<number> {
  await app.listen({ port, host })
  const address = app.server.address()
  if (address === null || typeof address === 'string') throw new Error('HTTP listener has no port')
  return address.port
}

async function initStore (field: string, adapter: string, init: () => Promise<void>): Promise<void> {
  try {
    await init()
  } catch (err) {
    throw new Error(`${field} (${adapter}) failed to start: ${(err as Error).message}`, { cause: err })
  }
}
