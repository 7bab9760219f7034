/**
 * Stream 1 inputs: MQTT packets a client could send (and a few only a server sends), generated
 * with mqtt-packet (the broker's own codec), then mutated at the byte level. A case is one
 * connection: TCP or WebSocket, logged in first (a real CONNECT of the fuzz bot) or not, then
 * 1-4 packets, each with 0-3 mutations, written in one or several chunks.
 *
 * Cases are plain data (no bytes): the secret of the fuzz bot is only known once the server
 * runs, so `encode` builds the bytes at execution time. The same seed gives the same cases.
 */
import fc from 'fast-check'
import mqttPacket, { type Packet } from 'mqtt-packet'
import { fixedHeader } from '../lib/raw-mqtt.js'
import { OPS } from './requests.js'

/** Where a CONNECT's credentials come from; resolved against the live accounts by `encode`. */
export type Secret = { kind: 'valid' } | { kind: 'wrong-key', flip: number } | { kind: 'password', text: string } | { kind: 'bytes', bytes: number[] }

export type BasePacket =
  | { cmd: 'connect', protocolId: string, protocolVersion: number, clean: boolean, clientId: string, keepalive: number, username: string | null, secret: Secret | null, will: { topic: string, payload: string, qos: 0 | 1 | 2, retain: boolean } | null }
  | { cmd: 'subscribe', messageId: number, subscriptions: Array<{ topic: string, qos: 0 | 1 | 2 }> }
  | { cmd: 'unsubscribe', messageId: number, unsubscriptions: string[] }
  | { cmd: 'publish', topic: string, payload: string, qos: 0 | 1 | 2, messageId: number, retain: boolean, dup: boolean }
  | { cmd: 'puback' | 'pubrec' | 'pubrel' | 'pubcomp' | 'unsuback', messageId: number }
  | { cmd: 'pingreq' | 'disconnect' | 'pingresp' }
  | { cmd: 'connack', returnCode: number, sessionPresent: boolean }
  | { cmd: 'suback', messageId: number, granted: number[] }

export type Mutation =
  | { kind: 'flip', at: number, bit: number }
  | { kind: 'truncate', keep: number }
  | { kind: 'insert', at: number, bytes: number[] }
  | { kind: 'duplicate', at: number, len: number }
  | { kind: 'remove', at: number, len: number }
  /** Re-encodes the remaining-length field with this value (up to 268,435,455, the largest MQTT allows). */
  | { kind: 'length', value: number }
  /** A remaining-length field of 5 bytes, all with the continuation bit (malformed). */
  | { kind: 'bad-length' }
  | { kind: 'flags', nibble: number }
  | { kind: 'type', type: number }
  /** CONNECT's protocol level byte (a no-op on other packets). */
  | { kind: 'level', level: number }
  /** The whole packet replaced by random bytes. */
  | { kind: 'random', bytes: number[] }

export interface PacketCase {
  transport: 'tcp' | 'ws'
  /** Log in with a valid CONNECT before the fuzzed packets. */
  login: boolean
  packets: Array<{ base: BasePacket, mutations: Mutation[] }>
  /** Write the bytes in this many chunks (1 = one write). */
  chunks: number
}

/** The accounts the fuzzed CONNECTs may name. */
export const RAW_USER = 'fzraw'

/**
 * Most wills are this request: if the server ever published a will, RAW_USER's invitation
 * setting would turn to 'contacts' (nothing else in stream 1 changes it), which the run checks
 * at the end [topics.md: "the will is never published"].
 */
export const WILL_TOPIC = 'im/req/settings'
export const WILL_PAYLOAD = '{"id":"will","groupInvites":"contacts"}'

// ------------------------------------------------------------------------------------------------
// generators
// ------------------------------------------------------------------------------------------------

const messageId = fc.oneof({ arbitrary: fc.integer({ min: 1, max: 20 }), weight: 3 }, { arbitrary: fc.integer({ min: 1, max: 65535 }), weight: 1 })
const qos = fc.constantFrom<0 | 1 | 2>(0, 1, 2)
const smallText = fc.string({ maxLength: 24, unit: 'binary' })

/** Filters and topics: the caller's own subtree, others', wildcards, $SYS, and noise. */
const filter = fc.oneof(
  fc.constantFrom(`im/u/${RAW_USER}/#`, `im/u/${RAW_USER}/m`, `im/u/${RAW_USER}/r/+`, `im/u/${RAW_USER}/+/#`, '#', '+/#', 'im/u/+/m', 'im/u/bya/#', '$SYS/#', 'im/req/send', '$mqim/+', `im/u/${RAW_USER}`),
  smallText.map(s => `im/u/${RAW_USER}/${s}`),
  smallText,
  // Aedes refuses more than 100 levels (its router would throw on them)
  fc.integer({ min: 98, max: 130 }).map(n => `im/u/${RAW_USER}/` + 'a/'.repeat(n - 4) + '#')
)
const topic = fc.oneof(
  { arbitrary: fc.constantFrom(...OPS).map(op => `im/req/${op}`), weight: 4 },
  { arbitrary: fc.constantFrom('im/req/nope', 'im/u/bya/m', `im/u/${RAW_USER}/r/x`, '$mqim/revoke', '$mqim/sink', '$SYS/x', 'a', 'im/req/', '#', 'a/+/b', ''), weight: 2 },
  { arbitrary: smallText, weight: 1 },
  { arbitrary: fc.integer({ min: 98, max: 130 }).map(n => 'im/req/' + 'a/'.repeat(n - 3) + 'send'), weight: 1 }
)
/** Request-like payloads (some valid) and noise. */
const payload = fc.oneof(
  fc.constantFrom('{"id":"p1"}', '{"id":"p2","conv":"nope","seq":1}', '{"id":"p3","user":"bya"}', '{"id":"p4","name":"g","members":[]}', '', 'null', '{', '[]'),
  fc.string({ maxLength: 40 }),
  fc.integer({ min: 1000, max: 12_000 }).map(n => `{"id":"big","body":"${'x'.repeat(n)}"}`)
)

const secret: fc.Arbitrary<Secret> = fc.oneof(
  { arbitrary: fc.constant<Secret>({ kind: 'valid' }), weight: 4 },
  { arbitrary: fc.nat().map<Secret>(flip => ({ kind: 'wrong-key', flip })), weight: 3 },
  // not of the API-key shape: one scrypt each on the server (bounded by its login line)
  { arbitrary: fc.string({ maxLength: 16 }).map<Secret>(text => ({ kind: 'password', text })), weight: 1 },
  { arbitrary: fc.array(fc.integer({ min: 0, max: 255 }), { maxLength: 16 }).map<Secret>(bytes => ({ kind: 'bytes', bytes })), weight: 1 }
)

const connect: fc.Arbitrary<BasePacket> = fc.record({
  cmd: fc.constant('connect' as const),
  protocolId: fc.oneof({ arbitrary: fc.constant('MQTT'), weight: 8 }, { arbitrary: fc.constantFrom('MQIsdp', 'MQTX', ''), weight: 1 }),
  // other levels come from the 'level' mutation: mqtt-packet writes only 3, 4 and 5
  protocolVersion: fc.oneof({ arbitrary: fc.constant(4), weight: 8 }, { arbitrary: fc.constantFrom(3, 5), weight: 1 }),
  clean: fc.boolean(),
  // devices m0-m9 never clash with the executor's own r<n> devices
  clientId: fc.oneof(
    { arbitrary: fc.integer({ min: 0, max: 9 }).map(n => `${RAW_USER}:m${n}`), weight: 4 },
    { arbitrary: fc.constantFrom('', `${RAW_USER}`, `${RAW_USER}:`, 'bya:m0', `${RAW_USER}:a/b`, `${RAW_USER}:${'d'.repeat(65)}`), weight: 1 },
    { arbitrary: smallText, weight: 1 }
  ),
  keepalive: fc.oneof(fc.constantFrom(0, 1, 60, 65535), fc.integer({ min: 0, max: 65535 })),
  username: fc.option(fc.oneof({ arbitrary: fc.constant(RAW_USER), weight: 5 }, { arbitrary: fc.constantFrom('bya', 'ghost', 'BYA', ''), weight: 1 }, { arbitrary: smallText, weight: 1 }), { freq: 8 }),
  secret: fc.option(secret, { freq: 8 }),
  will: fc.option(fc.record({
    topic: fc.oneof({ arbitrary: fc.constant(WILL_TOPIC), weight: 2 }, { arbitrary: topic, weight: 1 }),
    payload: fc.oneof({ arbitrary: fc.constant(WILL_PAYLOAD), weight: 2 }, { arbitrary: smallText, weight: 1 }),
    qos,
    retain: fc.boolean()
  }), { freq: 3 })
}).map(p => ({
  ...p,
  // what mqtt-packet refuses to write (a password without a user name, an empty client id
  // without a clean session or before 3.1.1, an empty will topic) is left to the mutations
  secret: p.username === null ? null : p.secret,
  clean: p.clientId === '' ? true : p.clean,
  clientId: p.clientId === '' && p.protocolVersion === 3 ? 'x' : p.clientId,
  will: p.will !== null && p.will.topic === '' ? { ...p.will, topic: 'x' } : p.will
}))

const basePacket: fc.Arbitrary<BasePacket> = fc.oneof(
  { arbitrary: connect, weight: 3 },
  { arbitrary: fc.record({ cmd: fc.constant('subscribe' as const), messageId, subscriptions: fc.array(fc.record({ topic: filter, qos }), { minLength: 1, maxLength: 4 }) }), weight: 2 },
  { arbitrary: fc.record({ cmd: fc.constant('unsubscribe' as const), messageId, unsubscriptions: fc.array(filter, { minLength: 1, maxLength: 3 }) }), weight: 1 },
  { arbitrary: fc.record({ cmd: fc.constant('publish' as const), topic, payload, qos, messageId, retain: fc.boolean(), dup: fc.boolean() }), weight: 4 },
  { arbitrary: fc.record({ cmd: fc.constantFrom('puback' as const, 'pubrec' as const, 'pubrel' as const, 'pubcomp' as const, 'unsuback' as const), messageId }), weight: 2 },
  { arbitrary: fc.record({ cmd: fc.constantFrom('pingreq' as const, 'disconnect' as const, 'pingresp' as const) }), weight: 2 },
  { arbitrary: fc.record({ cmd: fc.constant('connack' as const), returnCode: fc.integer({ min: 0, max: 255 }), sessionPresent: fc.boolean() }), weight: 1 },
  { arbitrary: fc.record({ cmd: fc.constant('suback' as const), messageId, granted: fc.array(fc.constantFrom(0, 1, 2, 128), { minLength: 1, maxLength: 3 }) }), weight: 1 }
)

const bytes = (max: number): fc.Arbitrary<number[]> => fc.array(fc.integer({ min: 0, max: 255 }), { minLength: 1, maxLength: max })

const mutation: fc.Arbitrary<Mutation> = fc.oneof(
  { arbitrary: fc.record({ kind: fc.constant('flip' as const), at: fc.nat(), bit: fc.integer({ min: 0, max: 7 }) }), weight: 4 },
  { arbitrary: fc.record({ kind: fc.constant('truncate' as const), keep: fc.nat() }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('insert' as const), at: fc.nat(), bytes: bytes(16) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('duplicate' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 32 }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('remove' as const), at: fc.nat(), len: fc.integer({ min: 1, max: 8 }) }), weight: 2 },
  {
    arbitrary: fc.record({
      kind: fc.constant('length' as const),
      value: fc.oneof(fc.integer({ min: 0, max: 300 }), fc.integer({ min: 0, max: 268_435_455 }), fc.constantFrom(0, 127, 128, 16_383, 16_384, 131_072, 131_073, 268_435_455))
    }),
    weight: 3
  },
  { arbitrary: fc.constant<Mutation>({ kind: 'bad-length' }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('flags' as const), nibble: fc.integer({ min: 0, max: 15 }) }), weight: 2 },
  { arbitrary: fc.record({ kind: fc.constant('type' as const), type: fc.integer({ min: 0, max: 15 }) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('level' as const), level: fc.oneof(fc.constantFrom(0, 3, 4, 5, 6), fc.integer({ min: 0, max: 255 })) }), weight: 1 },
  { arbitrary: fc.record({ kind: fc.constant('random' as const), bytes: bytes(64) }), weight: 1 }
)

const mutations = (unmutatedWeight: number): fc.Arbitrary<Mutation[]> =>
  fc.oneof({ arbitrary: fc.constant<Mutation[]>([]), weight: unmutatedWeight }, { arbitrary: fc.array(mutation, { minLength: 1, maxLength: 3 }), weight: 3 })
const fuzzedPacket = fc.record({ base: basePacket, mutations: mutations(1) })
const fuzzedConnect = fc.record({ base: connect, mutations: mutations(3) })

// one packet in half of the cases: a broken packet after a CONNECT often closes the connection
// before the login completes, so a CONNECT alone reaches the hooks more often
const packets = fc.oneof(
  { arbitrary: fc.array(fuzzedPacket, { minLength: 1, maxLength: 1 }), weight: 1 },
  { arbitrary: fc.array(fuzzedPacket, { minLength: 2, maxLength: 4 }), weight: 1 }
)

export const packetCase: fc.Arbitrary<PacketCase> = fc.record({
  transport: fc.constantFrom<'tcp' | 'ws'>('tcp', 'ws'),
  login: fc.boolean(),
  packets,
  // before a login, most cases start with a CONNECT (mutated in half of them)
  connectFirst: fc.oneof({ arbitrary: fuzzedConnect, weight: 3 }, { arbitrary: fc.constant(null), weight: 1 }),
  chunks: fc.oneof({ arbitrary: fc.constant(1), weight: 3 }, { arbitrary: fc.integer({ min: 2, max: 4 }), weight: 1 })
}).map(({ connectFirst, ...c }) => ({
  ...c,
  packets: !c.login && connectFirst !== null ? [connectFirst, ...c.packets.slice(0, Math.max(0, c.packets.length - 1))] : c.packets
}))

// ------------------------------------------------------------------------------------------------
// classification and encoding
// ------------------------------------------------------------------------------------------------

/** Aedes' maxTopicLevels (its default; mqim keeps it): a topic or filter with more closes the connection. */
const MAX_TOPIC_LEVELS = 100

const VALID_FILTER = (f: string): boolean => {
  if (f.length === 0 || f.includes('\u0000')) return false
  const levels = f.split('/')
  if (levels.length > MAX_TOPIC_LEVELS) return false
  return levels.every((l, i) => (l === '#' ? i === levels.length - 1 : l === '+' || (!l.includes('#') && !l.includes('+'))))
}

/**
 * True if a logged-in MQTT 3.1.1 client may send this packet unchanged and keep its connection:
 * a PUBLISH to a valid topic, SUBSCRIBE/UNSUBSCRIBE with valid filters, PINGREQ, and the
 * acknowledgements. (DISCONNECT, a second CONNECT, packets only a server sends, and topics of
 * more than 100 levels end it.)
 */
export function keepsConnection (p: BasePacket): boolean {
  switch (p.cmd) {
    case 'publish': return p.topic.length > 0 && !p.topic.includes('+') && !p.topic.includes('#') && !p.topic.includes('\u0000') && p.topic.split('/').length <= MAX_TOPIC_LEVELS
    case 'subscribe': return p.subscriptions.every(s => VALID_FILTER(s.topic))
    case 'unsubscribe': return p.unsubscriptions.every(VALID_FILTER)
    case 'pingreq': case 'puback': case 'pubrec': case 'pubrel': case 'pubcomp': return true
    default: return false
  }
}

/** The packet as mqtt-packet's input; `key` is the fuzz bot's API key. */
function toPacket (p: BasePacket, key: string): Packet {
  if (p.cmd === 'connect') {
    const password = p.secret === null
      ? undefined
      : p.secret.kind === 'valid'
        ? Buffer.from(key)
        : p.secret.kind === 'wrong-key'
          ? flipChar(key, p.secret.flip)
          : p.secret.kind === 'password' ? Buffer.from(p.secret.text) : Buffer.from(p.secret.bytes)
    return {
      cmd: 'connect',
      protocolId: p.protocolId as 'MQTT',
      protocolVersion: p.protocolVersion as 4,
      clean: p.clean,
      clientId: p.clientId,
      keepalive: p.keepalive,
      ...(p.username !== null ? { username: p.username } : {}),
      ...(password !== undefined ? { password } : {}),
      ...(p.will !== null ? { will: { topic: p.will.topic, payload: Buffer.from(p.will.payload), qos: p.will.qos, retain: p.will.retain } } : {})
    }
  }
  if (p.cmd === 'publish') {
    return { cmd: 'publish', topic: p.topic, payload: Buffer.from(p.payload), qos: p.qos, retain: p.retain, dup: p.dup, ...(p.qos > 0 ? { messageId: p.messageId } : {}) }
  }
  return p as unknown as Packet
}

/** The key with one character changed, still of the API-key shape (mqk_…): a wrong key. */
function flipChar (key: string, n: number): Buffer {
  const i = 4 + (n % (key.length - 4))
  const c = key.charCodeAt(i)
  return Buffer.from(key.slice(0, i) + String.fromCharCode(c === 0x41 ? 0x42 : 0x41) + key.slice(i + 1))
}

/** Offset of the first byte after the fixed header (type byte + remaining length), if well formed. */
function headerEnd (b: Buffer): number | null {
  for (let i = 1; i < Math.min(b.length, 5); i++) if ((b.readUInt8(i) & 0x80) === 0) return i + 1
  return null
}

export function mutate (input: Buffer, m: Mutation): Buffer {
  const b = Buffer.from(input)
  const len = b.length
  switch (m.kind) {
    case 'flip': {
      if (len === 0) return b
      const at = m.at % len
      b[at] = b.readUInt8(at) ^ (1 << m.bit)
      return b
    }
    case 'truncate': return b.subarray(0, m.keep % (len + 1))
    case 'insert': {
      const at = m.at % (len + 1)
      return Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)])
    }
    case 'duplicate': {
      if (len === 0) return b
      const at = m.at % len
      return Buffer.concat([b.subarray(0, at + m.len), b.subarray(at, at + m.len), b.subarray(at + m.len)])
    }
    case 'remove': {
      const at = m.at % (len + 1)
      return Buffer.concat([b.subarray(0, at), b.subarray(at + m.len)])
    }
    case 'length': {
      const end = headerEnd(b)
      if (end === null) return b
      return Buffer.concat([fixedHeader(b.readUInt8(0), m.value), b.subarray(end)])
    }
    case 'bad-length': {
      const end = headerEnd(b) ?? Math.min(len, 1)
      return Buffer.concat([b.subarray(0, 1), Buffer.from([0xff, 0xff, 0xff, 0xff, 0x7f]), b.subarray(end)])
    }
    case 'flags': {
      if (len === 0) return b
      b[0] = (b.readUInt8(0) & 0xf0) | m.nibble
      return b
    }
    case 'type': {
      if (len === 0) return b
      b[0] = (m.type << 4) | (b.readUInt8(0) & 0x0f)
      return b
    }
    case 'level': {
      // CONNECT: fixed header, protocol name (2-byte length + name), then the level
      const end = headerEnd(b)
      if (end === null || (b.readUInt8(0) >> 4) !== 1 || len < end + 2) return b
      const at = end + 2 + b.readUInt16BE(end)
      if (at < len) b[at] = m.level
      return b
    }
    case 'random': return Buffer.from(m.bytes)
  }
}

/** The bytes of one fuzzed packet. mqtt-packet cannot fail on what the generators make. */
export function encode (p: { base: BasePacket, mutations: Mutation[] }, key: string): Buffer {
  let b = mqttPacket.generate(toPacket(p.base, key))
  for (const m of p.mutations) b = mutate(b, m)
  return b
}

export const PINGREQ = mqttPacket.generate({ cmd: 'pingreq' })
