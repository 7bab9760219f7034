/**
 * Topic layout (documented in topics.md). Plain MQTT 3.1.1 topics, JSON payloads.
 *
 *   im/req/<op>              client -> server requests (publish only)
 *   im/u/<user>/m            messages of all the user's conversations (server -> every device)
 *   im/u/<user>/e            events: membership, read-cursor moves, receipts (server -> every device)
 *   im/u/<user>/r/<device>   replies to requests made by one device (server -> that device)
 *   im/c/<conv>/m            messages of one channel (server -> every subscribed member, QoS 0)
 *
 * A client may subscribe to filters inside its own im/u/<user>/ subtree, and to the topic of each
 * channel it is a member of (no wildcards).
 */
export const REQUEST_PREFIX = 'im/req/'
/** Requests are re-pointed here after handling so that Aedes routes them nowhere. `$` topics never match `#` [MQTT-4.7.2-1]. */
export const SINK_TOPIC = '$mqim/sink'
/** Server-to-server notices (src/broker/bus.ts), JSON with the sending node's id in `node`. */
export const CONTROL_FILTER = '$mqim/+'
/** {conv}: a conversation's cached membership changed. */
export const INVALIDATE_TOPIC = '$mqim/invalidate'
/** {seqs: {conversation: highest seq just stored}} after each commit. */
export const SEQ_TOPIC = '$mqim/seq'
/** {user, reason}: end every session of this account (disabled, or its secret reset). */
export const REVOKE_TOPIC = '$mqim/revoke'
/** {user}: whom this user blocks changed (drop the cached list). */
export const BLOCKS_TOPIC = '$mqim/blocks'
/** {user, on} | {users} | {bloom, bits, k} | {hello}: which users have reply watchers on the sending node (src/broker/users-elsewhere.ts). */
export const WATCHERS_TOPIC = '$mqim/watchers'
/** {user, on} | {users} | {bloom, bits, k} | {hello}: which users have connections on the sending node (the same module). */
export const CONNECTED_TOPIC = '$mqim/connected'
/** {users}: these users' push targets changed (drop the cached targets). */
export const PUSH_TARGETS_TOPIC = '$mqim/push-targets'
/**
 * One payload to many users' topics, once across the cluster (src/broker/fanout.ts). Outside
 * CONTROL_FILTER (each Redis message would otherwise arrive twice: by pattern and by channel).
 */
export const FAN_TOPIC = '$mqim-fan'

export const USER_ID_PATTERN = /^[a-z0-9][a-z0-9_.-]{0,31}$/
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/
/** The longest clientId the two patterns allow: `<user>:<device>`, 32 + 1 + 64 characters. */
export const CLIENT_ID_MAX = 32 + 1 + 64

export function userPrefix (userId: string): string {
  return `im/u/${userId}/`
}
export function messageTopic (userId: string): string {
  return `im/u/${userId}/m`
}
export function eventTopic (userId: string): string {
  return `im/u/${userId}/e`
}
/** The user of a topic in a user's subtree (`im/u/<user>/...`), else null. */
export function userOfTopic (topic: string): string | null {
  if (!topic.startsWith('im/u/')) return null
  const end = topic.indexOf('/', 5)
  return end > 5 ? topic.slice(5, end) : null
}
export function replyTopic (userId: string, deviceId: string): string {
  return `im/u/${userId}/r/${deviceId}`
}

/** Channel messages: published once per message, fanned out by the broker to subscribed members. */
export const CHANNEL_PREFIX = 'im/c/'
const CHANNEL_TOPIC = /^im\/c\/([A-Za-z0-9_-]{1,40})\/m$/
export function channelTopic (conversationId: string): string {
  return `${CHANNEL_PREFIX}${conversationId}/m`
}
/** The conversation id of a channel topic `im/c/<conv>/m` (no wildcards), else null. */
export function parseChannelTopic (topic: string): string | null {
  return CHANNEL_TOPIC.exec(topic)?.[1] ?? null
}
/** {conv, users, action: 'joined' | 'left'}: channel memberships changed (subscribe or unsubscribe these users' sessions). */
export const CHANNEL_MEMBERS_TOPIC = '$mqim/channel-members'

/** The MQTT clientId of a user's device (see parseClientId). */
export function clientIdOf (userId: string, deviceId: string): string {
  return `${userId}:${deviceId}`
}

/** clientId scheme: `<user>:<device>`. Binds every session to the authenticated user. */
export function parseClientId (clientId: string): { userId: string, deviceId: string } | null {
  const i = clientId.indexOf(':')
  if (i < 0) return null
  const userId = clientId.slice(0, i)
  const deviceId = clientId.slice(i + 1)
  if (!USER_ID_PATTERN.test(userId) || !DEVICE_ID_PATTERN.test(deviceId)) return null
  return { userId, deviceId }
}

/**
 * True if `filter` (an MQTT subscription filter) can only match topics inside the user's own
 * subtree. Wildcards are fine inside it; `#`, `+` in the user level, `$SYS` and everything else
 * are refused.
 */
export function isOwnFilter (filter: string, userId: string): boolean {
  // U+0000 is not allowed in a topic filter [MQTT-4.7.3-2]
  if (filter.includes('\u0000')) return false
  const prefix = userPrefix(userId)
  if (filter === `im/u/${userId}/#`) return true
  if (!filter.startsWith(prefix)) return false
  const rest = filter.slice(prefix.length)
  return rest.length > 0
}

/** True if the MQTT filter matches the topic (`+` one level, `#` this level and everything below). */
export function filterMatches (filter: string, topic: string): boolean {
  if (filter === topic) return true
  const f = filter.split('/')
  const t = topic.split('/')
  for (let i = 0; i < f.length; i++) {
    if (f[i] === '#') return true
    if (i >= t.length) return false
    if (f[i] !== '+' && f[i] !== t[i]) return false
  }
  return f.length === t.length
}
