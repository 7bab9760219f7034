/**
 * Configuration: config/default.json, then the JSON file named by MQIM_CONFIG (deep-merged),
 * then environment overrides. Validated by zod; an invalid value stops start-up with a
 * message naming the field and the expected form.
 */
import { createPublicKey, type KeyObject } from 'node:crypto'
import { existsSync, readFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import path from 'node:path'
import { z } from 'zod'
import { FilesConfigSchema, filesEnvOverrides } from './files/config.js'

/** An http(s) URL (webhook receivers). */
const httpUrl = z.string().url().refine(u => /^https?:\/\//.test(u), 'an http:// or https:// URL')

const port = z.number().int().min(0).max(65535)

/** What a token of `admin.tokens` may do on the admin HTTP API (src/admin/http.ts). */
export const ADMIN_SCOPES = ['users:read', 'users:write', 'conversations:read', 'conversations:write', 'messages:send'] as const
export type AdminScope = typeof ADMIN_SCOPES[number]
/** One token of `admin.tokens`. */
export const AdminTokenSchema = z.object({
  /** Who holds it (logs). */
  name: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, '1-64 of A-Z a-z 0-9 _ . -'),
  /** Hex SHA-256 of the token (e.g. `printf %s "$TOKEN" | sha256sum`); the token itself is never stored. */
  tokenSha256: z.string().regex(/^[0-9a-fA-F]{64}$/, '64 hex digits: the SHA-256 of the token').transform(h => h.toLowerCase()),
  scopes: z.array(z.enum(ADMIN_SCOPES, { error: `one of ${ADMIN_SCOPES.join(', ')}` })).min(1)
}).strict()

/** A Redis URL's database, where it gives one (the path, or `?db=`), is a whole number. */
function redisDatabaseValid (url: string): boolean {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return false
  }
  const path = parsed.pathname
  const db = parsed.searchParams.get('db')
  return (path === '' || path === '/' || /^\/\d{1,5}$/.test(path)) && (db === null || /^\d{1,5}$/.test(db))
}

const MemoryAdapter = z.object({ adapter: z.literal('memory') }).strict()
const MongoAdapter = z.object({
  adapter: z.literal('mongodb'),
  /** mongodb://host:port/ (MongoDB 6+, or FerretDB in tests) */
  url: z.string().regex(/^mongodb(\+srv)?:\/\//, 'a mongodb:// or mongodb+srv:// URL'),
  database: z.string().regex(/^[A-Za-z0-9_-]{1,63}$/, 'a database name of letters, digits, _ or -').default('mqim')
}).strict()
const MySqlAdapter = z.object({
  adapter: z.literal('mysql'),
  /** mysql://user:password@host:port/database (MySQL 8 or MariaDB 10.11+) */
  url: z.string().regex(/^mysql:\/\/.+\/[A-Za-z0-9_]+(\?.*)?$/, 'a mysql://user:password@host:port/database URL (optionally ?ssl=true or ?ssl-ca=/path/ca.pem)'),
  poolSize: z.number().int().min(1).max(200).default(10)
}).strict()

/** JWS algorithms a JWT login may be signed with; `none` is not one of them. */
export const JWT_ALGORITHMS = ['RS256', 'RS384', 'RS512', 'PS256', 'PS384', 'PS512', 'ES256', 'ES384', 'ES512', 'EdDSA', 'Ed25519', 'HS256', 'HS384', 'HS512'] as const
/** Shortest `auth.jwt.secret` (UTF-8 bytes) per HMAC algorithm: the size of its hash (RFC 7518 3.2). */
const HS_SECRET_MIN_BYTES: Record<string, number> = { HS256: 32, HS384: 48, HS512: 64 }

/** The curve of each ECDSA algorithm, as node:crypto names it. */
const EC_CURVES: Record<string, string> = { ES256: 'prime256v1', ES384: 'secp384r1', ES512: 'secp521r1' }

/** Why a PEM public key cannot verify every one of `algorithms` (null: it can). */
function publicKeyProblem (pem: string, algorithms: readonly string[]): string | null {
  let key: KeyObject
  try {
    key = createPublicKey(pem)
  } catch (err) {
    return `not a readable PEM public key or certificate (${(err as Error).message})`
  }
  const type = key.asymmetricKeyType ?? 'unknown'
  const { namedCurve, modulusLength } = key.asymmetricKeyDetails ?? {}
  if (type === 'rsa' && (modulusLength ?? 0) < 2048) return 'an RSA key must have at least 2048 bits'
  const fits = (alg: string): boolean => /^(RS|PS)/.test(alg) ? type === 'rsa' : alg.startsWith('ES') ? type === 'ec' && namedCurve === EC_CURVES[alg] : type === 'ed25519'
  const misfits = algorithms.filter(a => !fits(a))
  return misfits.length === 0 ? null : `a ${type}${namedCurve === undefined ? '' : ' ' + namedCurve} key cannot verify ${misfits.join(', ')}`
}

/**
 * JWT login (src/auth/jwt.ts): off unless `enabled`; then issuer, audience, algorithms and exactly
 * one key source (jwksUrl, publicKeyPem, or secret for HS*) are required.
 */
const JwtConfigSchema = z.object({
  enabled: z.boolean(),
  /** The `iss` a token must carry. */
  issuer: z.string().min(1).optional(),
  /** The `aud` a token must carry (one of them, if a list). */
  audience: z.union([z.string().min(1), z.array(z.string().min(1)).min(1)]).optional(),
  /** Allow-list of JWS algorithms. */
  algorithms: z.array(z.enum(JWT_ALGORITHMS, { error: `one of ${JWT_ALGORITHMS.join(', ')} ("none" is never accepted)` })).min(1).optional(),
  /** Keys from a JSON Web Key Set at this URL (asymmetric algorithms only). */
  jwksUrl: z.url({ protocol: /^https?$/, error: 'an http:// or https:// URL' }).optional(),
  /** A static public key (SPKI "BEGIN PUBLIC KEY" or an X.509 "BEGIN CERTIFICATE" PEM), for RS/PS/ES/EdDSA. */
  publicKeyPem: z.string().regex(/-----BEGIN (PUBLIC KEY|CERTIFICATE)-----/, 'a PEM public key (BEGIN PUBLIC KEY) or certificate (BEGIN CERTIFICATE)').optional(),
  /** A shared secret for HS256/384/512: at least 32/48/64 bytes. */
  secret: z.string().optional(),
  /** Leeway for exp, nbf (and the session's end) against clock skew. */
  clockToleranceSec: z.number().int().min(0).max(300),
  /** The claim that holds the user id. */
  userClaim: z.string().min(1).max(64),
  /** Create an account (kind user, no usable password) on the first login of an unknown user id. */
  createUsers: z.boolean(),
  /** Longest token accepted (a JWT-shaped password beyond it is refused unread). */
  maxTokenBytes: z.number().int().min(256).max(65536),
  /** A JWKS fetch is given up after this long (the login gets CONNACK 3). */
  jwksTimeoutMs: z.number().int().min(100).max(60_000),
  /** After a successful fetch, a token with an unknown `kid` refetches the JWKS only after this long. */
  jwksCooldownMs: z.number().int().min(0),
  /** Cached keys are refetched before use once they are this old. */
  jwksCacheMaxAgeMs: z.number().int().min(1000),
  /** Largest JWKS answer read (bytes, streamed); a larger one is refused (the login gets CONNACK 3). */
  jwksMaxBytes: z.number().int().min(1024).max(16 * 1024 * 1024),
  /** Most keys a JWKS may hold; one with more is refused (the login gets CONNACK 3). */
  jwksMaxKeys: z.number().int().min(1).max(10_000)
}).strict().superRefine((j, ctx) => {
  if (!j.enabled) return
  const need = (field: 'issuer' | 'audience' | 'algorithms'): void => {
    if (j[field] === undefined) ctx.addIssue({ code: 'custom', message: 'required when auth.jwt.enabled is true', path: [field] })
  }
  need('issuer')
  need('audience')
  need('algorithms')
  const sources = (['jwksUrl', 'publicKeyPem', 'secret'] as const).filter(k => j[k] !== undefined)
  if (sources.length !== 1) {
    ctx.addIssue({ code: 'custom', message: `set exactly one of jwksUrl, publicKeyPem, secret (got ${sources.length === 0 ? 'none' : sources.join(', ')})`, path: ['jwksUrl'] })
    return
  }
  const hs = (j.algorithms ?? []).filter(a => a.startsWith('HS'))
  const asymmetric = (j.algorithms ?? []).filter(a => !a.startsWith('HS'))
  if (j.secret !== undefined) {
    if (asymmetric.length > 0) ctx.addIssue({ code: 'custom', message: `a secret verifies HS256/HS384/HS512 only, not ${asymmetric.join(', ')}`, path: ['algorithms'] })
    const min = Math.max(32, ...hs.map(a => HS_SECRET_MIN_BYTES[a] ?? 32))
    if (Buffer.byteLength(j.secret, 'utf8') < min) ctx.addIssue({ code: 'custom', message: `at least ${min} bytes for ${hs.join(', ') || 'HS256'}`, path: ['secret'] })
  } else if (hs.length > 0) {
    ctx.addIssue({ code: 'custom', message: `${hs.join(', ')} need a shared secret (auth.jwt.secret); they are refused with ${j.jwksUrl !== undefined ? 'jwksUrl' : 'publicKeyPem'}`, path: ['algorithms'] })
  }
  const keyProblem = j.publicKeyPem === undefined ? null : publicKeyProblem(j.publicKeyPem, asymmetric)
  if (keyProblem !== null) ctx.addIssue({ code: 'custom', message: keyProblem, path: ['publicKeyPem'] })
})

export const ConfigSchema = z.object({
  /** Interface the listeners bind to. */
  host: z.string().min(1),
  /** MQTT over TCP. 0 = pick a free port. */
  mqtt: z.object({ port }).strict(),
  /** HTTP: the chat page, MQTT over WebSocket at /mqtt, /healthz, /metrics, and the admin API at /admin. */
  http: z.object({
    port,
    /** A request must arrive whole (headers and body) within this time; also the idle time of a socket before its first request. */
    requestTimeoutMs: z.number().int().min(100).max(600_000),
    /** An idle keep-alive socket (between requests) is closed after this time. */
    keepAliveTimeoutMs: z.number().int().min(100).max(600_000),
    /** Largest request body (admin API JSON). */
    bodyLimitBytes: z.number().int().min(1024).max(16 * 1024 * 1024),
    /** Largest total size of the request line and headers. */
    maxHeaderBytes: z.number().int().min(1024).max(1024 * 1024)
  }).strict(),
  /** MQTT over TLS; enabled when both cert and key (PEM file paths) are set. */
  tls: z.object({ port, cert: z.string().min(1).nullable(), key: z.string().min(1).nullable() }).strict()
    .refine(t => (t.cert === null) === (t.key === null), { message: 'set both tls.cert and tls.key, or neither' }),
  /** Attachments (src/files/): the object store and the limits of uploads. */
  files: FilesConfigSchema,
  /** Signed HTTP callbacks to other services (see src/im/webhooks.ts). */
  webhooks: z.object({
    endpoints: z.array(z.object({
      url: httpUrl,
      /** HMAC-SHA256 key of the x-mqim-signature header. */
      secret: z.string().min(32, 'at least 32 characters'),
      events: z.array(z.enum(['message.stored', 'member.changed', 'user.online', 'user.offline'])).min(1)
    }).strict()).max(20),
    /** A delivery attempt waits this long for an answer. */
    timeoutMs: z.number().int().min(100).max(60_000),
    /** Retries stop this long after the event; the delivery is then dropped (logged). */
    retryForMs: z.number().int().min(0),
    /** Deliveries waiting per node; beyond, new ones are dropped (counted). */
    queueMax: z.number().int().min(1).max(10_000_000),
    /** Requests in flight at once per node. */
    concurrency: z.number().int().min(1).max(1000),
    /** null: none. Else every send is first asked about (allow, rewrite the body, or refuse). */
    beforeSend: z.object({
      url: httpUrl,
      secret: z.string().min(32, 'at least 32 characters'),
      timeoutMs: z.number().int().min(10).max(10_000).default(500),
      /** On a timeout or an error: true stores the message as sent, false refuses it (REFUSED). */
      failOpen: z.boolean().default(true),
      /** Sends waiting for the hook at once; beyond, failOpen decides at once. */
      concurrency: z.number().int().min(1).max(10_000).default(64)
    }).strict().nullable()
  }).strict(),
  /** Offline push: Web Push to browsers, a push gateway for mobile apps (see src/im/push.ts). */
  push: z.object({
    /** false: no pushes, and the push-* requests answer FORBIDDEN. */
    enabled: z.boolean(),
    /** A conversation's first push waits this long (a device coming online or a read meanwhile stops it). */
    delayMs: z.number().int().min(0).max(60_000),
    /** At most one push per conversation per user this often; the latest message wins. */
    collapseMs: z.number().int().min(0).max(600_000),
    /** false: pushes carry the sender and the conversation, never message text. */
    includeText: z.boolean(),
    /** The longest text preview, in characters (a Web Push payload holds about 3,000 bytes). */
    previewChars: z.number().int().min(0).max(500),
    /** Devices with a push target per user; beyond, push-register answers LIMIT_REACHED. */
    targetsPerUser: z.number().int().min(1).max(100),
    /** Conversations with messages waiting to be pushed, per node; beyond, pushes are dropped (counted). */
    pendingMax: z.number().int().min(1).max(1_000_000),
    /** Pushes waiting to be sent (in Redis when clustered); beyond, new ones are dropped (counted). */
    queueMax: z.number().int().min(1).max(10_000_000),
    /** Push requests in flight at once per node. */
    concurrency: z.number().int().min(1).max(1000),
    /** A push request waits this long for an answer. */
    timeoutMs: z.number().int().min(100).max(60_000),
    /** Retries stop this long after the push was queued; it is then dropped (logged, counted). */
    retryForMs: z.number().int().min(0),
    /** The badge (total unread) counts at most this many of the user's conversations. */
    badgeConversationsMax: z.number().int().min(0).max(10_000),
    webPush: z.object({
      enabled: z.boolean(),
      /** The VAPID contact the push services see: a mailto: or https: URL. */
      subject: z.string().regex(/^(mailto:|https:\/\/)\S+$/, 'a mailto: or https: URL'),
      /**
       * The VAPID key pair (base64url, as `npx web-push generate-vapid-keys` prints). null: generated
       * on first start into <dataDir>/vapid.json, or into Redis when clustered (every node must sign
       * with the same key: set them here in production).
       */
      publicKey: z.string().regex(/^[A-Za-z0-9_-]{87}$/, 'a base64url P-256 public key (87 characters)').nullable(),
      privateKey: z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'a base64url P-256 private key (43 characters)').nullable(),
      /** How long a push service keeps an undelivered push, seconds. */
      ttlSeconds: z.number().int().min(0).max(2_419_200),
      /**
       * Hosts a subscription's endpoint may be at: exact names, or `*.` + a domain for its
       * subdomains, on the scheme's default port unless `:port` (or `:*`, any port) is written.
       * mqim POSTs to these hosts only (a client cannot make it call anywhere else).
       */
      allowedHosts: z.array(z.string().regex(/^(\*\.)?[A-Za-z0-9.-]+(:(\d+|\*))?$/, 'a host name, *.domain, host:port or host:*')).max(100),
      /** true: http:// endpoints too (tests, a push service on a private network). */
      allowHttp: z.boolean()
    }).strict().refine(w => (w.publicKey === null) === (w.privateKey === null), 'publicKey and privateKey: both or neither'),
    /** Push gateways of mobile apps (they hold the FCM/APNs credentials); a device names one. */
    gateways: z.array(z.object({
      name: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, '1-32 of a-z 0-9 _ . -'),
      url: httpUrl,
      /** HMAC-SHA256 key of the x-mqim-signature header. */
      secret: z.string().min(32, 'at least 32 characters')
    }).strict()).max(20).refine(gs => new Set(gs.map(g => g.name)).size === gs.length, 'each gateway name at most once')
  }).strict(),
  /** Prometheus metrics at GET /metrics on the HTTP listener (see src/metrics.ts). */
  metrics: z.object({
    /** false: nothing is counted, /metrics answers 404. */
    enabled: z.boolean(),
    /**
     * null: only loopback clients may scrape. Set: clients elsewhere may too, with
     * `Authorization: Bearer <token>` (at least 16 characters).
     */
    token: z.string().min(16).nullable()
  }).strict(),
  /**
   * The admin HTTP API at /admin (src/admin/http.ts). The token the server writes to
   * <dataDir>/admin-token works from loopback with every scope; `tokens` are for other services,
   * from any address, each with its scopes. The file holds only SHA-256 hashes of the tokens.
   */
  admin: z.object({
    tokens: z.array(AdminTokenSchema).max(100)
      .refine(ts => new Set(ts.map(t => t.name)).size === ts.length, 'each token name at most once')
      .refine(ts => new Set(ts.map(t => t.tokenSha256)).size === ts.length, 'each token at most once'),
    /** The account (a bot) that sends when a request names no sender (announcements); null: none. */
    systemUser: z.string().regex(/^[a-z0-9][a-z0-9_.-]{0,31}$/, 'a user id').nullable(),
    /** Largest page of a paged list (users, members); larger `limit`s are clamped. */
    pageMax: z.number().int().min(1).max(10_000),
    /** Requests per second each token may make (a token bucket per token; beyond: 429 RATE_LIMITED). */
    requestsPerSecond: z.number().int().min(1).max(1_000_000),
    /** Requests a token may make at once after being idle (the bucket's size). */
    requestBurst: z.number().int().min(1).max(1_000_000)
  }).strict(),
  /** This node's name in a cluster (logs, presence); null = a random id per start. */
  nodeId: z.string().regex(/^[A-Za-z0-9_.-]{1,64}$/, '1-64 of A-Z a-z 0-9 _ . -').nullable(),
  /** Where the server keeps its admin token (and nothing else on the embedded default). */
  dataDir: z.string().min(1),
  messageStore: z.discriminatedUnion('adapter', [MemoryAdapter, MongoAdapter]),
  metadataStore: z.discriminatedUnion('adapter', [MemoryAdapter, MySqlAdapter]),
  broker: z.object({
    /** memory: one process (embedded default). redis: sessions, queues and routing shared by every node. */
    persistence: z.discriminatedUnion('adapter', [
      z.object({ adapter: z.literal('memory') }).strict(),
      z.object({
        adapter: z.literal('redis'),
        /** The database is the path's number (none: 0), or `?db=`; it also names the nodes' pub/sub channels (README, "One Redis database per deployment"). */
        url: z.string().regex(/^rediss?:\/\//, 'a redis:// or rediss:// URL').refine(redisDatabaseValid, 'the database (the path, or ?db=) must be a whole number, as in redis://host:6379/2'),
        /** Offline QoS 1 messages older than this are dropped from session queues (clients sync by seq). */
        packetTTLSeconds: z.number().int().min(1).default(7 * 24 * 3600),
        /** At most this many queued messages are delivered on reconnect; the rest comes from history. */
        maxSessionDelivery: z.number().int().min(1).default(100),
        /** How often each node tells the others which users it has reply watchers and connections for (a node routes every reply copy and read event for this long plus a second after it starts). */
        watchersListMs: z.number().int().min(100).max(600_000).default(10_000),
        /**
         * A Redis connection that has a command waiting and receives nothing for this long is
         * closed and opened again (a Redis stuck, or cut off by a network that drops packets, would
         * otherwise hold it for the kernel's ~15 minutes; after a failover the node finds the new
         * primary). Each connection is pinged every half of it, so an idle one is checked too.
         */
        socketTimeoutMs: z.number().int().min(1000).max(600_000).default(10_000)
      }).strict()
    ]),
    /** A connection that has had bytes waiting to be written for this long (its reader stopped) is disconnected. */
    drainTimeoutMs: z.number().int().min(100),
    /** A new connection must send CONNECT within this time. */
    connectTimeoutMs: z.number().int().min(100)
  }).strict(),
  limits: z.object({
    /** Largest accepted request payload in bytes (default 64 KiB); larger ones get TOO_LARGE. */
    maxPayloadBytes: z.number().int().min(256).max(16 * 1024 * 1024),
    /** Largest MQTT packet after CONNECT, checked from its length field before it is buffered; larger ones close the connection. */
    maxPacketBytes: z.number().int().min(1024).max(64 * 1024 * 1024),
    /** Largest first packet (CONNECT) of a connection. */
    maxConnectPacketBytes: z.number().int().min(256).max(1024 * 1024),
    /** Deepest nesting of arrays and objects in a request (BAD_REQUEST beyond). */
    maxJsonDepth: z.number().int().min(2).max(1000),
    /** Largest history page in messages; larger requests are clamped. */
    historyPageMax: z.number().int().min(1).max(10000),
    /** A history or list page stops before its reply reaches this many bytes (one message or conversation at least). */
    pageBytes: z.number().int().min(1024),
    /** Largest list page in conversations; larger requests are clamped. */
    listPageMax: z.number().int().min(1).max(10000),
    groupMembersMax: z.number().int().min(2),
    /** Conversations one user may belong to; joining more is refused with LIMIT_REACHED. */
    conversationsPerUser: z.number().int().min(1),
    /** Groups one user may create per rolling hour (RATE_LIMITED beyond). */
    groupsCreatedPerHour: z.number().int().min(1),
    /** Users one user may block (LIMIT_REACHED beyond). */
    blocksPerUser: z.number().int().min(1).max(100_000),
    /** How long after sending a message its sender may edit it (NOT_EDITABLE after). */
    editWindowMs: z.number().int().min(0),
    /** Different emojis one message may carry as reactions (LIMIT_REACHED for a new one beyond). */
    reactionsPerMessage: z.number().int().min(1).max(1000),
    /** `typing` is sent to the other members only in conversations of at most this many members. */
    typingMembersMax: z.number().int().min(2),
    /** Token bucket per user, across all of the user's connections (and nodes): sustained requests per second. */
    requestsPerSecond: z.number().positive(),
    /** Token bucket size per user (burst). */
    requestBurst: z.number().int().min(1),
    /** A request costs one token more per this many bytes of its payload (a 60 KB message: 14 more). */
    requestBytesPerToken: z.number().int().min(256).max(16 * 1024 * 1024),
    /** Subscription filters one connection may hold (SUBACK 0x80 beyond). */
    subscriptionsPerConnection: z.number().int().min(1).max(100_000),
    /** Open connections per user on one node (CONNACK 3 beyond). */
    connectionsPerUser: z.number().int().min(1),
    /** `history` and `list` requests (page replies) running at once on the node; the rest wait. */
    pagesInFlight: z.number().int().min(1).max(10_000),
    /** Of those, at once for one user. */
    pagesInFlightPerUser: z.number().int().min(1).max(10_000),
    /** Persistent sessions (clean=false clientIds) kept per user; a device beyond it gets a clean session. */
    persistentSessionsPerUser: z.number().int().min(1).max(10_000),
    /** Open sockets (MQTT over TCP/TLS, HTTP and WebSocket) per source address (closed at once beyond). */
    connectionsPerAddress: z.number().int().min(1),
    /** Bytes waiting to be written to one connection; a connection beyond it (its reader is too slow) is disconnected. */
    outboundBufferBytes: z.number().int().min(64 * 1024),
    /** Embedded broker: queued messages kept per offline persistent session (newer ones are not queued; clients sync by seq). */
    sessionQueueMessages: z.number().int().min(1),
    /** Embedded broker: queued payload bytes kept per offline persistent session. */
    sessionQueueBytes: z.number().int().min(64 * 1024)
  }).strict()
    .refine(l => l.maxPacketBytes >= l.maxPayloadBytes + 1024, { message: 'must be at least maxPayloadBytes + 1024', path: ['maxPacketBytes'] })
    // a whole page (a reply) plus a packet must fit in what may wait for one connection
    .refine(l => l.outboundBufferBytes >= l.pageBytes + 2 * l.maxPacketBytes, { message: 'must be at least pageBytes + 2 * maxPacketBytes', path: ['outboundBufferBytes'] }),
  auth: z.object({
    /** Password hashes (scrypt) computed at once; the rest wait in line. */
    maxConcurrentHashes: z.number().int().min(1).max(64),
    /** Logins waiting for a hash; beyond it a login gets CONNACK 3 at once. */
    maxQueuedLogins: z.number().int().min(0),
    /** Password checks one source address (an IPv6 /64) may have running or waiting, unless its user logged in from it before. */
    loginsPerAddress: z.number().int().min(1),
    /** Failed logins of one user id or one source address before backoff starts. */
    failuresBeforeBackoff: z.number().int().min(1),
    /** First backoff after too many failures; doubles with each further failure. */
    backoffBaseMs: z.number().int().min(1),
    /** Longest backoff. */
    backoffMaxMs: z.number().int().min(1),
    /**
     * An MQTT connection from an address in backoff is held unread for up to this long (never
     * past the backoff) and then closed, so that a guessing client with a fixed number of
     * connections in parallel waits instead of reconnecting thousands of times a second; 0 closes
     * it at once.
     */
    tarpitMs: z.number().int().min(0).max(60_000),
    /** Connections held so from one address (an IPv6 /64); beyond it they are closed at once. */
    tarpitPerAddress: z.number().int().min(0),
    /** Connections held so in all; beyond it they are closed at once. */
    tarpitConnections: z.number().int().min(0),
    /** How often the server looks for accounts disabled or reset in the metadata store by someone else. */
    revocationPollMs: z.number().int().min(100),
    /** JWT as the MQTT password; absent or enabled: false = off. */
    jwt: JwtConfigSchema.optional()
  }).strict(),
  sequencer: z.object({
    /** Group commit: at most this many messages per MongoDB insert. */
    batchMaxMessages: z.number().int().min(1).max(10000),
    /** Group commit: wait up to this long for more messages before writing (0 = at the end of the current event-loop turn). */
    batchDelayMs: z.number().min(0).max(1000),
    /** How long a failing write is retried before the senders get UNAVAILABLE. */
    writeRetryMs: z.number().int().min(0)
  }).strict(),
  /**
   * Retention (src/im/retention.ts): messages older than this are removed, per conversation kind;
   * null keeps them forever (the default). Days may be fractions (0.5 = 12 hours). A conversation's
   * latest message (and the changes after it) stays until a newer message arrives.
   */
  retention: z.object({
    directDays: z.number().positive().max(100_000).nullable(),
    groupDays: z.number().positive().max(100_000).nullable(),
    /** Pause between two sweeps of the conversations that found nothing more to remove. */
    intervalMs: z.number().int().min(100).max(24 * 3600 * 1000),
    /** Messages removed per step at most (a step that reaches it is followed by the next a second later). */
    maxPerRun: z.number().int().min(1).max(100_000),
    /** Conversations looked at per step at most. */
    conversationsPerRun: z.number().int().min(1).max(1_000_000)
  }).strict(),
  presence: z.object({
    /** A connection counts as online this long after its node last refreshed it (a dead node's lapse). */
    ttlMs: z.number().int().min(3000),
    /** At most one presence event per user per interval (the latest state wins). */
    notifyIntervalMs: z.number().int().min(0),
    /** Going offline is told once the user has been gone this long (a reconnect within it causes no events). */
    offlineGraceMs: z.number().int().min(0).max(3_600_000),
    /** Members of conversations larger than this get no presence events of each other. */
    maxAudience: z.number().int().min(2)
  }).strict(),
  channels: z.object({
    /** Most members a channel may have (add-members and join beyond it: LIMIT_REACHED). */
    membersMax: z.number().int().min(2).max(10_000_000),
    /** (channel, user) memberships cached per node for subscribe checks and requests (least recently used evicted). */
    membershipCacheMax: z.number().int().min(100).max(10_000_000),
    /** Largest `members` page of a channel; larger requests are clamped. */
    membersPageMax: z.number().int().min(1).max(10_000),
    /** Channel topics one connection may subscribe (beyond limits.subscriptionsPerConnection; SUBACK 0x80 beyond). */
    subscriptionsPerConnection: z.number().int().min(1).max(100_000),
    /** Live invite codes one channel may have (create-invite beyond it: LIMIT_REACHED). */
    invitesPerChannel: z.number().int().min(1).max(10_000),
    /** How long an invite code works when create-invite gives no expiresInMs. */
    inviteTtlMs: z.number().int().min(1000).max(366 * 24 * 3600 * 1000),
    /** The longest expiresInMs create-invite accepts (beyond: BAD_REQUEST). */
    inviteTtlMaxMs: z.number().int().min(1000).max(366 * 24 * 3600 * 1000)
  }).strict().refine(c => c.inviteTtlMs <= c.inviteTtlMaxMs, { message: 'must be at most channels.inviteTtlMaxMs', path: ['inviteTtlMs'] }),
  log: z.object({ level: z.enum(['debug', 'info', 'warn', 'error', 'silent']) }).strict()
}).strict()

export type Config = z.infer<typeof ConfigSchema>
export type JwtConfig = z.infer<typeof JwtConfigSchema>

export class ConfigError extends Error {
  constructor (message: string) {
    super(message)
    this.name = 'ConfigError'
  }
}

/** config/default.json of the package: found upwards from this file (src/ when run by tsx, dist/ when built). */
function findDefaultConfig (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 4; i++) {
    const candidate = path.join(dir, 'config', 'default.json')
    if (existsSync(candidate)) return candidate
    dir = path.dirname(dir)
  }
  return path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'config', 'default.json')
}
export const DEFAULT_CONFIG_PATH = findDefaultConfig()

type Json = Record<string, unknown>

function isObject (v: unknown): v is Json {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function deepMerge (base: Json, over: Json): Json {
  const out: Json = { ...base }
  for (const [k, v] of Object.entries(over)) {
    const b = out[k]
    // a store section replaces the default wholesale when the adapter changes
    out[k] = isObject(b) && isObject(v) && !('adapter' in v && v.adapter !== b.adapter) ? deepMerge(b, v) : v
  }
  return out
}

function readJson (file: string): Json {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as Error).message}`)
  }
  try {
    const parsed: unknown = JSON.parse(text)
    if (!isObject(parsed)) throw new Error('top level must be a JSON object')
    return parsed
  } catch (err) {
    throw new ConfigError(`config file ${file} is not valid JSON: ${(err as Error).message}`)
  }
}

function envPort (env: NodeJS.ProcessEnv, name: string): number | undefined {
  const raw = env[name]
  if (raw === undefined || raw === '') return undefined
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) throw new ConfigError(`${name}: expected a port number 0-65535, got "${raw}"`)
  return Number(raw)
}

/** Environment overrides, documented in README "Configuration". */
export function envOverrides (env: NodeJS.ProcessEnv): Json {
  const o: Json = {}
  if (env.MQIM_HOST) o.host = env.MQIM_HOST
  const mqttPort = envPort(env, 'MQIM_MQTT_PORT')
  if (mqttPort !== undefined) o.mqtt = { port: mqttPort }
  const httpPort = envPort(env, 'MQIM_HTTP_PORT')
  if (httpPort !== undefined) o.http = { port: httpPort }
  const tls: Json = {}
  const tlsPort = envPort(env, 'MQIM_TLS_PORT')
  if (tlsPort !== undefined) tls.port = tlsPort
  if (env.MQIM_TLS_CERT) tls.cert = env.MQIM_TLS_CERT
  if (env.MQIM_TLS_KEY) tls.key = env.MQIM_TLS_KEY
  if (Object.keys(tls).length > 0) o.tls = tls
  if (env.MQIM_DATA_DIR) o.dataDir = env.MQIM_DATA_DIR
  if (env.MQIM_MONGO_URL) {
    o.messageStore = { adapter: 'mongodb', url: env.MQIM_MONGO_URL, ...(env.MQIM_MONGO_DB ? { database: env.MQIM_MONGO_DB } : {}) }
  }
  if (env.MQIM_MYSQL_URL) o.metadataStore = { adapter: 'mysql', url: env.MQIM_MYSQL_URL }
  if (env.MQIM_REDIS_URL) o.broker = { persistence: { adapter: 'redis', url: env.MQIM_REDIS_URL } }
  if (env.MQIM_NODE_ID) o.nodeId = env.MQIM_NODE_ID
  if (env.MQIM_LOG_LEVEL) o.log = { level: env.MQIM_LOG_LEVEL }
  const files = filesEnvOverrides(env)
  if (files !== undefined) o.files = files
  return o
}

function describeIssue (issue: z.core.$ZodIssue): string {
  const field = issue.path.length > 0 ? issue.path.join('.') : '(top level)'
  return `${field}: ${issue.message}`
}

/** Validates a raw config object; throws ConfigError naming every bad field. */
export function parseConfig (raw: unknown): Config {
  const result = ConfigSchema.safeParse(raw)
  if (!result.success) {
    throw new ConfigError('invalid configuration:\n  ' + result.error.issues.map(describeIssue).join('\n  '))
  }
  return result.data
}

export interface LoadOptions {
  env?: NodeJS.ProcessEnv
  /** Extra values merged last (tests use this for ports 0 and stores). */
  overrides?: Json
}

/** True when nodes share the broker through Redis: other nodes may hold connections and write conversations. */
export function isClustered (config: Config): boolean {
  return config.broker.persistence.adapter !== 'memory'
}

export function loadConfig (options: LoadOptions = {}): Config {
  const env = options.env ?? process.env
  let raw = readJson(DEFAULT_CONFIG_PATH)
  if (env.MQIM_CONFIG) raw = deepMerge(raw, readJson(env.MQIM_CONFIG))
  raw = deepMerge(raw, envOverrides(env))
  if (options.overrides) raw = deepMerge(raw, options.overrides)
  return parseConfig(raw)
}
