/**
 * Composition root: stores -> broker -> IM services -> hooks -> listeners.
 * Start-up is a named series of steps; stop() is the reverse, draining the sequencer before
 * clients are disconnected so nothing acknowledged is lost.
 */
import net from 'node:net'
import http from 'node:http'
import tls from 'node:tls'
import { readFileSync, mkdirSync, writeFileSync, chmodSync } from 'node:fs'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import type { Duplex } from 'node:stream'
import { Aedes } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'
import { isClustered, type Config } from './config.js'
import { createLogger, type Logger } from './log.js'
import type { MessageStore, MetadataStore } from './store/types.js'
import { createMessageStore, createMetadataStore } from './store/index.js'
import { Sequencer } from './im/sequencer.js'
import { ConversationDirectory } from './im/directory.js'
import { Publisher } from './im/publisher.js'
import { ReceiptAggregator } from './im/receipts.js'
import { Dispatcher } from './im/dispatcher.js'
import type { Services } from './im/context.js'
import { BrokerHooks } from './broker/hooks.js'
import { AdminApi } from './admin/http.js'
import { serveStatic } from './http/static.js'
import { createBrokerBackends, type BrokerBackends } from './broker/backends.js'
import { MemoryPresenceStore, PresenceService, RedisPresenceStore } from './im/presence.js'
import { INVALIDATE_TOPIC, SEQ_TOPIC } from './protocol/topics.js'
import type { Redis } from 'ioredis'
import mqemitter from 'mqemitter'

export interface StartOptions {
  config: Config
  logger?: Logger
  /** Inject stores (tests of the broker on the embedded default share them with the test). */
  stores?: { meta: MetadataStore, messages: MessageStore }
}

export interface Ports { mqtt: number, http: number, tls: number | null }

function listen (server: net.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(port, host, () => {
      server.off('error', reject)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
}

function closeServer (server: net.Server): Promise<void> {
  return new Promise(resolve => server.close(() => resolve()))
}

export class MqimServer {
  readonly ports: Ports
  readonly adminToken: string
  readonly services: Services
  private stopping: Promise<void> | null = null

  private constructor (
    ports: Ports,
    adminToken: string,
    services: Services,
    private readonly broker: Aedes,
    private readonly servers: net.Server[],
    private readonly wss: WebSocketServer,
    private readonly sockets: Set<Duplex>,
    private readonly backends: BrokerBackends,
    readonly nodeId: string
  ) {
    this.ports = ports
    this.adminToken = adminToken
    this.services = services
  }

  static async start (options: StartOptions): Promise<MqimServer> {
    const { config } = options
    const logger = options.logger ?? createLogger(config.log.level)

    // 1. stores: connect, migrate / ensure indexes
    const meta = options.stores?.meta ?? createMetadataStore(config.metadataStore)
    const messages = options.stores?.messages ?? createMessageStore(config.messageStore, logger)
    if (options.stores === undefined) {
      await initStore('metadataStore', config.metadataStore.adapter, () => meta.init())
      await initStore('messageStore', config.messageStore.adapter, () => messages.init())
    }

    // 2. broker (in-memory, or sessions and routing shared through Redis)
    const nodeId = config.nodeId ?? `node-${randomBytes(4).toString('hex')}`
    const backends = createBrokerBackends(config.broker.persistence, logger)
    const broker = await Aedes.createBroker({
      id: nodeId,
      persistence: backends.persistence,
      mq: backends.mq ?? mqemitter({ concurrency: config.broker.concurrency }),
      drainTimeout: config.broker.drainTimeoutMs,
      concurrency: config.broker.concurrency,
      connectTimeout: config.broker.connectTimeoutMs,
      heartbeatInterval: 60_000
    })

    // 3. IM services
    const publisher = new Publisher(broker, logger, backends.available)
    const directory = new ConversationDirectory(meta)
    const receipts = new ReceiptAggregator(directory, meta, messages, publisher, logger)
    const presence = new PresenceService({
      store: backends.redis === null ? new MemoryPresenceStore() : new RedisPresenceStore(backends.redis),
      meta,
      directory,
      publisher,
      logger,
      ...config.presence
    })
    // membership changes made on any node invalidate every node's cached copy
    directory.broadcast = (conv) => publisher.control(INVALIDATE_TOPIC, conv)
    await new Promise<void>(resolve => broker.subscribe(INVALIDATE_TOPIC, (packet, cb) => {
      directory.invalidateLocal(packet.payload.toString())
      cb()
    }, () => resolve()))
    const sequencer = new Sequencer(messages, {
      ...config.sequencer,
      // the in-memory store finds a resent msgId as fast as a cache would
      recentMax: config.messageStore.adapter === 'memory' ? 0 : undefined,
      logger,
      onCommitted: async (stored) => {
        for (const m of stored) {
          const entry = directory.peek(m.conversationId) ?? await directory.get(m.conversationId)
          if (entry !== null) publisher.message(m, entry.memberIds)
        }
        // other nodes writing these conversations advance their cached lastSeq (fewer seq conflicts)
        if (backends.redis !== null) {
          const seqs: Record<string, number> = {}
          for (const m of stored) seqs[m.conversationId] = Math.max(m.seq, seqs[m.conversationId] ?? 0)
          publisher.control(SEQ_TOPIC, JSON.stringify({ node: nodeId, seqs }))
        }
      }
    })
    if (backends.redis !== null) {
      await new Promise<void>(resolve => broker.subscribe(SEQ_TOPIC, (packet, cb) => {
        try {
          const { node, seqs } = JSON.parse(packet.payload.toString()) as { node: string, seqs: Record<string, number> }
          if (node !== nodeId) for (const [conv, seq] of Object.entries(seqs)) sequencer.observe(conv, seq)
        } catch {}
        cb()
      }, () => resolve()))
    }
    const services: Services = { config, logger, meta, messages, sequencer, directory, publisher, receipts, presence, now: Date.now }
    const dispatcher = new Dispatcher(services)

    // 4. hooks
    const hooks = new BrokerHooks({
      meta,
      dispatcher,
      publisher,
      logger,
      requestsPerSecond: config.limits.requestsPerSecond,
      requestBurst: config.limits.requestBurst,
      clustered: isClustered(config),
      onSessionStart: (caller, connId) => { void presence.connected(caller.userId, connId) },
      onSessionEnd: (caller, connId) => { void presence.disconnected(caller.userId, connId) }
    })
    hooks.install(broker)
    broker.on('clientError', (client, err) => logger.debug('client error', { clientId: client.id, err: err.message }))
    broker.on('connectionError', (client, err) => logger.debug('connection error', { clientId: client?.id, err: err.message }))

    // 5. admin token
    mkdirSync(config.dataDir, { recursive: true })
    const adminToken = randomBytes(24).toString('base64url')
    const tokenFile = path.join(config.dataDir, 'admin-token')
    writeFileSync(tokenFile, adminToken + '\n', { mode: 0o600 })
    chmodSync(tokenFile, 0o600)
    const admin = new AdminApi(meta, adminToken, logger, (userId) => { hooks.disconnectUser(userId) })

    // 6. listeners
    const sockets = new Set<Duplex>()
    const track = (s: Duplex): void => { sockets.add(s); s.once('close', () => sockets.delete(s)) }
    // no Nagle: replies and deliveries are small writes that must not wait for delayed ACKs
    const mqttServer = net.createServer(socket => { socket.setNoDelay(true); track(socket); broker.handle(socket) })
    const wss = new WebSocketServer({ noServer: true, maxPayload: config.limits.maxPayloadBytes + 64 * 1024 })
    const httpServer = http.createServer((req, res) => {
      const url = req.url ?? '/'
      if (url === '/healthz') {
        void health({ meta, messages, redis: backends.redis }).then(checks => {
          const ok = Object.values(checks).every(c => c === 'ok')
          res.writeHead(ok ? 200 : 503, { 'content-type': 'application/json' })
          res.end(JSON.stringify({ status: ok ? 'ok' : 'degraded', node: nodeId, clients: broker.connectedClients, messageStore: config.messageStore.adapter, metadataStore: config.metadataStore.adapter, broker: config.broker.persistence.adapter, checks }))
        })
        return
      }
      if (url.startsWith('/admin/')) {
        void admin.handle(req, res)
        return
      }
      if (serveStatic(req, res)) return
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ code: 'NOT_FOUND', message: 'no such page; MQTT over WebSocket is at /mqtt' }))
    })
    httpServer.on('connection', (socket: net.Socket) => { socket.setNoDelay(true); track(socket) })
    httpServer.on('upgrade', (req, socket, head) => {
      if ((req.url ?? '').split('?')[0] !== '/mqtt') {
        socket.end('HTTP/1.1 404 Not Found\r\nconnection: close\r\n\r\n')
        return
      }
      wss.handleUpgrade(req, socket, head, ws => {
        const stream = createWebSocketStream(ws)
        stream.on('error', () => stream.destroy())
        broker.handle(stream, req)
      })
    })
    const servers: net.Server[] = [mqttServer, httpServer]
    const ports: Ports = {
      mqtt: await listen(mqttServer, config.mqtt.port, config.host),
      http: await listen(httpServer, config.http.port, config.host),
      tls: null
    }
    if (config.tls.cert !== null && config.tls.key !== null) {
      const tlsServer = tls.createServer({ cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) }, socket => { socket.setNoDelay(true); track(socket); broker.handle(socket) })
      servers.push(tlsServer)
      ports.tls = await listen(tlsServer, config.tls.port, config.host)
    }
    logger.info('mqim listening', { mqtt: ports.mqtt, http: ports.http, websocket: `/mqtt`, tls: ports.tls, messageStore: config.messageStore.adapter, metadataStore: config.metadataStore.adapter })
    return new MqimServer(ports, adminToken, services, broker, servers, wss, sockets, backends, nodeId)
  }

  /** Graceful stop: stop accepting, finish in-flight writes, disconnect clients, close stores. */
  stop (): Promise<void> {
    this.stopping ??= this.doStop()
    return this.stopping
  }

  private async doStop (): Promise<void> {
    const { sequencer, receipts, presence, meta, messages, logger } = this.services
    // 1. stop accepting; 2. finish in-flight writes (and their deliveries); 3. disconnect
    // clients so they reconnect elsewhere; 4. close stores and Redis
    const closing = this.servers.map(closeServer)
    receipts.close()
    await sequencer.close()
    await presence.close()
    await new Promise<void>(resolve => this.broker.close(() => resolve()))
    this.wss.close()
    for (const s of this.sockets) s.destroy()
    await Promise.all(closing)
    await Promise.allSettled([meta.close(), messages.close(), this.backends.close()])
    logger.info('mqim stopped')
  }
}

/** Each dependency answers a cheap query within 2 s, or it is reported as down. */
async function health (deps: { meta: MetadataStore, messages: MessageStore, redis: Redis | null }): Promise<Record<string, 'ok' | 'down'>> {
  const check = async (fn: () => Promise<unknown>): Promise<'ok' | 'down'> => {
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([fn(), new Promise((_resolve, reject) => { timer = setTimeout(() => reject(new Error('timeout')), 2000) })])
      return 'ok'
    } catch {
      return 'down'
    } finally {
      clearTimeout(timer)
    }
  }
  const checks: Record<string, 'ok' | 'down'> = {
    messageStore: await check(async () => await deps.messages.findByClientMsgId('health', 'health', 'health')),
    metadataStore: await check(async () => await deps.meta.userGet('health'))
  }
  if (deps.redis !== null) {
    const redis = deps.redis
    checks.redis = await check(async () => await redis.ping())
  }
  return checks
}

async function initStore (field: string, adapter: string, init: () => Promise<void>): Promise<void> {
  try {
    await init()
  } catch (err) {
    throw new Error(`${field} (${adapter}) failed to start: ${(err as Error).message}`, { cause: err })
  }
}
