/** Public types of the client SDK. Wire payload types come from src/protocol/schemas.ts (one source of truth). */
import type { ConversationSummary, ImEvent, MessageEnvelope } from '../protocol/schemas.js'
import type { ImClientError } from './errors.js'
import type { Uploader, UploadProgress } from './files.js'

export type { ConversationSummary, ImEvent, MessageEnvelope }

/**
 * Key/value persistence for the SDK's state (synced seq per conversation, outbox of unacked sends),
 * stored as one JSON value under the key `mqim:<user>:<device>`. `set` calls must take effect in the
 * order they are made. A storage that writes synchronously inside `set` (all three shipped ones do)
 * has an unacknowledged send stored before `send()` returns. The SDK coalesces the other writes
 * (`saveIntervalMs`).
 */
export interface ClientStorage {
  get(key: string): Promise<string | null>
  set(key: string, value: string): Promise<void>
}

export interface ImClientOptions {
  /** `mqtt://host:1883` (Node) or `ws://host:8080/mqtt` (Node and browser). */
  url: string
  userId: string
  /** Password, or a bot's API key (`mqk_…`). */
  password: string
  /** Device id (1-64 of A-Z a-z 0-9 _ -). The MQTT clientId is `${userId}:${deviceId}`, with clean: false. */
  deviceId: string
  /** Where the synced seq per conversation and the outbox live. Default: a MemoryStorage (nothing survives a restart). */
  storage?: ClientStorage
  /**
   * Runs mqtt.js's keepalive interval. Default: the runtime's setInterval (never mqtt.js's own worker,
   * which it builds from a blob: URL that a Content-Security-Policy without `worker-src blob:` blocks,
   * and then no ping is ever sent). Browsers slow a hidden tab's timers down to once a minute, which
   * can delay pings past the server's keepalive limit; a page can pass intervals run by a Worker script
   * of its own origin instead (web/src/timers.ts).
   */
  keepaliveTimer?: IntervalTimer
  /** How long a request waits for its reply before it rejects with TIMEOUT. Default 10000. */
  requestTimeoutMs?: number
  /** markRead calls within this window are merged into one `read` request per conversation. Default 500. */
  readDebounceMs?: number
  /** Delay between reconnect attempts. Default 1000. */
  reconnectPeriodMs?: number
  /** How long `ImClient.connect` waits to be online and synced before it rejects with TIMEOUT. Default 10000. */
  connectTimeoutMs?: number
  /**
   * A conversation this device meets after its first sync, other than by being added to it while
   * connected (e.g. it shows up in `list` after a reconnect), replays at most this many of its latest
   * messages as `message` events. Default 100.
   */
  maxBackfill?: number
  /**
   * Sync progress (and settled sends) is written to `storage` at most once per this many ms, the first
   * change after a quiet interval at once; after a crash the messages of the last interval are emitted
   * again. Unacknowledged sends are always written before they are published. Default 200.
   */
  saveIntervalMs?: number
  /**
   * Listeners attached before the first connection. Messages missed while offline are emitted during
   * the initial sync, i.e. before `ImClient.connect` resolves: listen here to see them.
   */
  on?: Partial<ImClientEvents>
  /**
   * The server's HTTP address (http://host:8080), against which file URLs that are paths are resolved.
   * Default: derived from a ws:// or wss:// `url`, or the page's origin.
   */
  httpUrl?: string
  /** Uploads a file's bytes (sendFile). Default: XMLHttpRequest in browsers, else fetch; in Node use `nodeUploader` (./node.ts) for progress. */
  uploader?: Uploader
}

/** setInterval/clearInterval, the shape mqtt.js takes as `timerVariant`. */
export interface IntervalTimer {
  set (fn: () => void, ms: number): number
  clear (id: number): void
}

export type ConnectionState = 'connecting' | 'online' | 'offline' | 'closed'

export type MemberEvent = Extract<ImEvent, { type: 'member' }>
export type ReadEvent = Extract<ImEvent, { type: 'read' }>
export type ReceiptEvent = Extract<ImEvent, { type: 'receipt' }>
export type PresenceEvent = Extract<ImEvent, { type: 'presence' }>
export type TypingEvent = Extract<ImEvent, { type: 'typing' }>
export type MentionEvent = Extract<ImEvent, { type: 'mention' }>

export interface ImClientEvents {
  /** Progress of a file being uploaded by sendFile. */
  upload: (p: UploadProgress) => void
  /** Each message exactly once per conversation, in seq order (gaps are filled first). */
  message: (m: MessageEnvelope) => void
  state: (s: ConnectionState) => void
  member: (e: MemberEvent) => void
  /**
   * My own read cursor moved: on another device of mine (the server's `read` event), or on this one
   * (from the reply to its `read` request; also when that moved nothing: keep the highest).
   */
  read: (e: ReadEvent) => void
  /** Other members' reading progress. */
  receipt: (e: ReceiptEvent) => void
  /** A contact went online or offline (rate-limited by the server). */
  presence: (e: PresenceEvent) => void
  /**
   * A message of the local copy changed: an edit, delete or reaction was applied to it (also
   * optimistically by this device's own edit/deleteMessage/react, and back when the server refused).
   */
  updated: (m: MessageEnvelope) => void
  /** Another member is typing (typing: true) or stopped; show it for `ttlMs` unless renewed. */
  typing: (e: TypingEvent) => void
  /** I was mentioned (also in a muted conversation). */
  mention: (e: MentionEvent) => void
  /** A conversation is now contiguous up to lastSeq (after a gap fill or a reconnect sync). */
  synced: (conv: string, lastSeq: number) => void
  /** A send was acknowledged: also for sends restored from storage after a restart, which have no promise. */
  sent: (r: SendResult) => void
  /** Background failures (sync, read flush, a send that failed for good) that have no promise to reject. */
  error: (err: ImClientError) => void
}

export type Role = 'owner' | 'admin' | 'member'

export interface SendOptions {
  /** The seq of an earlier message of the conversation. */
  replyTo?: number
  /** Client message id (1-64 of A-Z a-z 0-9 _ -). Default: a random one. */
  msgId?: string
  /** Members mentioned (user ids), or '@all' (groups; admins and the owner). */
  mentions?: string[]
}

export interface BlockResult { user: string, blocked: boolean }
export interface BlocksResult { blocks: Array<{ user: string, at: number }> }

/** Where a device gets pushes while its user is offline: a browser's PushSubscription, or a token at a push gateway. */
export type PushTargetInput =
  | { webPush: { endpoint: string, expirationTime?: number | null, keys: { p256dh: string, auth: string } } }
  | { gateway: { name: string, token: string, platform: 'ios' | 'android' | 'other' } }
export interface PushRegisterResult { device: string, registered: 'added' | 'replaced' }
export interface PushUnregisterResult { device: string, removed: boolean }
export interface PushTargetsResult {
  targets: Array<{ device: string, kind: 'webpush' | 'gateway', endpoint?: string, gateway?: string, platform?: string, token?: string, at: number }>
  /** The applicationServerKey for PushManager.subscribe, or null when the server has no Web Push. */
  vapidPublicKey: string | null
  gateways: string[]
}

export interface SendResult { conv: string, seq: number, msgId: string, ts: number, duplicate: boolean }
export interface HistoryQuery { after?: number, before?: number, limit?: number }
/** `firstSeq`: present when retention removed messages of the range asked for; the lowest seq the server still holds. */
export interface HistoryResult { conv: string, messages: MessageEnvelope[], lastSeq: number, hasMore: boolean, limit: number, firstSeq?: number }
export interface DirectResult { conv: string, peer: string, created: boolean }
export interface CreateGroupResult { conv: string, name: string, members: string[] }
export interface AddMembersResult { conv: string, added: string[] }
export interface RemoveMemberResult { conv: string, removed: string }
export interface LeaveResult { conv: string, newOwner?: string }
export interface RenameResult { conv: string, name: string }
export interface SetRoleResult { conv: string, user: string, role: Role }
/** Channels answer one page (`after`/`limit`) with `count` (all members) and `next` (null: the last page). */
export interface MembersResult { conv: string, kind: 'direct' | 'group' | 'channel', name: string | null, members: Array<{ user: string, role: Role }>, count?: number, next?: string | null }
export type PostPolicy = 'admins' | 'members'
export interface CreateChannelResult { conv: string, name: string, public: boolean, postPolicy: PostPolicy, topic: string }
/** joined: false when already a member; lastSeq read after the subscription (pull history {after} from here). */
export interface JoinResult { conv: string, name: string | null, joined: boolean, topic: string, lastSeq: number }
/** An invite of a channel as `invites` lists it: codeId names it for revoke-invite (it is not the code). */
export interface InviteSummary { codeId: string, createdBy: string, createdAt: number, expiresAt: number, maxUses: number | null, uses: number }
/** A new invite: `code` is shown this once (the server keeps only its hash); joinByInvite(code) joins. */
export interface CreateInviteResult extends InviteSummary { code: string, conv: string }
export interface InvitesResult { conv: string, invites: InviteSummary[] }
export interface RevokeInviteResult { conv: string, codeId: string }
export interface ChannelInfoResult { conv: string, name: string | null, public: boolean, postPolicy: PostPolicy, members: number, lastSeq: number, role: Role | null, canPost: boolean, topic: string }
export interface MuteResult { conv: string, muted: boolean }
export interface ReadResult { conv: string, readSeq: number, unread: number }
/** typing: sent false when not sent (more than one a second, or a conversation above limits.typingMembersMax). */
export interface TypingResult { conv: string, sent: boolean }
export interface ReceiptsResult { conv: string, seq: number, readBy: number, members: number }
export interface PresenceResult { users: Array<{ user: string, online: boolean, lastSeen: number | null }> }
