/**
 * Where connections come in: MQTT over TCP and TLS, and MQTT over WebSocket upgraded on the HTTP
 * listener at /mqtt. Every socket is counted per source address (at most
 * `connectionsPerAddress`, HTTP sockets included: closed at once beyond it), gets TCP_NODELAY,
 * and is tracked so that stop() can end it; an MQTT connection from an address in login backoff
 * is held unread for a while and closed (the tarpit, bounded: refuseInBackoff). Every MQTT connection handed to the broker gets the
 * per-connection guards of upstream.ts: a maximum packet size (a small one for CONNECT), SUBACK
 * QoS at most 1, writes that never hold the broker's shared delivery slots (the session bounds
 * what waits to be written instead), and no delivery before the CONNACK.
 */
import net from 'node:net'
import tls from 'node:tls'
import type { IncomingMessage, Server as HttpServer } from 'node:http'
import type { Duplex } from 'node:stream'
import type { Aedes, Client } from 'aedes'
import { WebSocketServer, createWebSocketStream } from 'ws'
import type { Logger } from '../log.js'
import { rawAnswer } from '../http/app.js'
import { addressKey } from '../auth/login-guard.js'
import { answerFailedConnect, connackFirst, dropQueueReplays, grantAtMostQos1, keepConnectPacket, limitPacketSize, neverWaitForDrain } from '../broker/upstream.js'

export interface ListenerLimits {
  connectionsPerAddress: number
  maxConnectPacketBytes: number
  maxPacketBytes: number
}

/** How connections from an address in login backoff are held before they are closed (config auth.tarpit*). */
export interface TarpitLimits {
  tarpitMs: number
  tarpitPerAddress: number
  tarpitConnections: number
}

/** The source address of a client's connection (for WebSocket, of the HTTP request's socket). */
export function addressOf (client: Client): string {
  const conn = client.conn
  return client.req?.socket.remoteAddress ?? ('remoteAddress' in conn ? conn.remoteAddress : undefined) ?? 'unknown'
}

/**
 * What is wrong with a WebSocket upgrade request (RFC 6455 section 4.2.1), answered as
 * {code, message} here rather than by the ws library's plain-text page; null if nothing.
 */
export function upgradeProblem (req: IncomingMessage): { status: number, reason: string, message: string } | null {
  const bad = (message: string): { status: number, reason: string, message: string } => ({ status: 400, reason: 'Bad Request', message })
  if (req.method !== 'GET') return { status: 405, reason: 'Method Not Allowed', message: 'a WebSocket upgrade is a GET' }
  if ((req.headers.upgrade ?? '').toLowerCase() !== 'websocket') return bad('only "Upgrade: websocket" is served here')
  const key = req.headers['sec-websocket-key']
  if (key === undefined || !/^[A-Za-z0-9+/]{22}==$/.test(key.trim())) return bad('Sec-WebSocket-Key must be 16 bytes in base64')
  if (req.headers['sec-websocket-version'] !== '13') return bad('Sec-WebSocket-Version must be 13')
  // (ws refuses a malformed list itself, with a text/html answer)
  const protocols = req.headers['sec-websocket-protocol']
  if (protocols !== undefined) {
    const list = protocols.split(',').map(p => p.trim())
    if (list.some(p => !/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(p)) || new Set(list).size !== list.length) return bad('Sec-WebSocket-Protocol must be a list of distinct tokens, e.g. "mqtt"')
  }
  return null
}

/** How an MQTT connection reached the broker. */
export type Transport = 'tcp' | 'tls' | 'ws'

export class Listeners {
  private readonly sockets = new Set<Duplex>()
  private readonly perAddress = new Map<string, number>()
  private readonly servers: net.Server[] = []
  private readonly wss: WebSocketServer
  /** Sockets held unread (per address key, and in all) because their address is in login backoff. */
  private readonly held = new Map<string, number>()
  private heldTotal = 0
  /** Sockets closed (at once, or after being held) because their address had too many, or is in login backoff. */
  refused = 0

  constructor (
    private readonly broker: Aedes,
    private readonly limits: ListenerLimits,
    private readonly onBackpressure: (client: Client) => void,
    /** Milliseconds an address stays in failed-login backoff (0: it is not): its MQTT connections are refused. */
    private readonly loginBackoffMs: (address: string) => number,
    private readonly tarpit: TarpitLimits,
    private readonly logger: Logger
  ) {
    // a frame may carry one whole MQTT packet; the packet limit itself is enforced by the parser
    this.wss = new WebSocketServer({ noServer: true, maxPayload: limits.maxPacketBytes + 16 })
  }

  /**
   * An MQTT connection from an address in failed-login backoff is refused before anything is spent
   * on it (no CONNECT is read: its answer would be CONNACK 3 anyway). It is held unread until the
   * backoff ends or auth.tarpitMs has passed, then closed: a guessing client that keeps a fixed
   * number of logins in parallel waits that long per attempt instead of reconnecting as fast as
   * the machine can accept. Held sockets are bounded per address and in all; beyond either they
   * are closed at once. `hold` false (TLS, where the handshake would go on regardless): closed at once.
   */
  private refuseInBackoff (socket: net.Socket, hold = true): boolean {
    const address = socket.remoteAddress ?? 'unknown'
    const ms = this.loginBackoffMs(address)
    if (ms <= 0) return false
    this.refused++
    const key = addressKey(address)
    const n = this.held.get(key) ?? 0
    const { tarpitMs, tarpitPerAddress, tarpitConnections } = this.tarpit
    if (!hold || tarpitMs === 0 || n >= tarpitPerAddress || this.heldTotal >= tarpitConnections) {
      socket.destroy()
      return true
    }
    this.held.set(key, n + 1)
    this.heldTotal++
    this.sockets.add(socket)
    socket.pause()
    socket.on('error', () => {})
    const timer = setTimeout(() => socket.destroy(), Math.min(ms, tarpitMs))
    socket.once('close', () => {
      clearTimeout(timer)
      this.sockets.delete(socket)
      this.heldTotal--
      const left = (this.held.get(key) ?? 1) - 1
      if (left <= 0) this.held.delete(key)
      else this.held.set(key, left)
    })
    return true
  }

  /** Connections held unread because their address is in login backoff (see refuseInBackoff). */
  /** MQTT connections handed to the broker and not closed yet, by transport (metrics). */
  readonly open: Record<Transport, number> = { tcp: 0, tls: 0, ws: 0 }

  get tarpitted (): number {
    return this.heldTotal
  }

  /** Counts the socket against its address; false (and the socket is destroyed) over the limit. */
  admit (socket: net.Socket): boolean {
    const address = socket.remoteAddress ?? 'unknown'
    const n = (this.perAddress.get(address) ?? 0) + 1
    if (n > this.limits.connectionsPerAddress) {
      this.refused++
      this.logger.debug({ address }, 'connection refused: too many from this address')
      socket.destroy()
      return false
    }
    this.perAddress.set(address, n)
    this.sockets.add(socket)
    socket.setNoDelay(true) // replies and deliveries are small writes that must not wait for delayed ACKs
    socket.once('close', () => {
      this.sockets.delete(socket)
      const left = (this.perAddress.get(address) ?? 1) - 1
      if (left <= 0) this.perAddress.delete(address)
      else this.perAddress.set(address, left)
    })
    return true
  }

  /**
   * Hands a connection to the broker with the per-connection guards. The listeners call it for
   * every admitted socket; in-process tests call it with an in-memory duplex, as Aedes' own do.
   */
  attach (stream: Duplex, req?: IncomingMessage, transport: Transport = 'tcp'): void {
    this.open[transport]++
    stream.once('close', () => { this.open[transport]-- })
    const client = this.broker.handle(stream, req)
    limitPacketSize(client, this.limits.maxConnectPacketBytes, this.limits.maxPacketBytes)
    grantAtMostQos1(client)
    keepConnectPacket(client)
    neverWaitForDrain(client, this.onBackpressure)
    dropQueueReplays(client)
    connackFirst(client)
    answerFailedConnect(client)
  }

  async listenTcp (port: number, host: string): Promise<number> {
    return await this.listen(net.createServer(socket => { if (!this.refuseInBackoff(socket) && this.admit(socket)) this.attach(socket) }), port, host)
  }

  async listenTls (options: tls.TlsOptions, port: number, host: string): Promise<number> {
    // counted at the TCP level, before the TLS handshake costs anything
    const server = tls.createServer(options, socket => this.attach(socket, undefined, 'tls'))
    server.on('connection', (socket: net.Socket) => { if (!this.refuseInBackoff(socket, false)) this.admit(socket) })
    server.on('tlsClientError', () => {})
    return await this.listen(server, port, host)
  }

  /** Serves MQTT over WebSocket on an HTTP server at /mqtt; its sockets are admitted here too. */
  acceptWebSocket (http: HttpServer): void {
    http.on('connection', (socket: net.Socket) => { this.admit(socket) })
    http.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if ((req.url ?? '').split('?')[0] !== '/mqtt') {
        rawAnswer(socket, 404, 'Not Found', { code: 'NOT_FOUND', message: 'MQTT over WebSocket is at /mqtt' })
        return
      }
      const problem = upgradeProblem(req)
      if (problem !== null) {
        rawAnswer(socket, problem.status, problem.reason, { code: 'BAD_REQUEST', message: problem.message })
        return
      }
      if (this.refuseInBackoff(req.socket)) return
      // from here on MQTT keepalive decides when the connection is idle, not the HTTP timeouts
      ;(socket as net.Socket).setTimeout(0)
      this.wss.handleUpgrade(req, socket, head, ws => {
        const stream = createWebSocketStream(ws)
        stream.on('error', () => stream.destroy())
        this.attach(stream, req, 'ws')
      })
    })
  }

  private async listen (server: net.Server, port: number, host: string): Promise<number> {
    this.servers.push(server)
    return await new Promise((resolve, reject) => {
      server.once('error', reject)
      server.listen(port, host, () => {
        server.off('error', reject)
        resolve((server.address() as net.AddressInfo).port)
      })
    })
  }

  /** Stops accepting; stopSockets() ends what is still open. */
  async close (): Promise<void> {
    await Promise.all(this.servers.map(async s => await new Promise<void>(resolve => s.close(() => resolve()))))
  }

  stopSockets (): void {
    this.wss.close()
    for (const s of this.sockets) s.destroy()
  }
}
