/**
 * Stream 2 inputs: request payloads for every operation of REQUESTS (src/protocol/schemas.ts),
 * and the payloads and topics around them.
 *
 * The fields of each operation are read from its zod schema's shape, and every field name has a
 * generator of valid and of bad values below (FIELDS): a field added to a schema without one
 * stops the fuzzer at start-up instead of going unfuzzed. A request is a list of key/value pairs
 * (so duplicate keys and `__proto__` keys survive), each field valid (mostly), bad (wrong type,
 * out of range, too long, unicode edge cases, lone surrogates, NUL), or left out, plus now and
 * then unknown keys (prototype-pollution names among them). Around requests: other operations'
 * topics, any JSON value, text that is not JSON, deep nesting, invalid UTF-8, payloads over the
 * size limit, and topics outside im/req/.
 *
 * Conversation ids are references (`{t: 'conv', n}`) resolved at execution time against the
 * conversations the fuzz user has seen so far, so that requests reach the operations' logic
 * rather than stopping at NOT_MEMBER; cases are plain data and the same seed gives the same cases.
 */
import fc from 'fast-check'
import { REQUESTS, type OpName } from '../../src/protocol/schemas.js'

export const OPS = Object.keys(REQUESTS) as OpName[]

type Json = null | boolean | number | string | Json[] | { [k: string]: Json }

/** A value as the fuzzer writes it. */
export type Val =
  /** JSON.stringify'd (lone surrogates come out as \ud800 escapes) */
  | { t: 'json', v: Json }
  /** spliced in as is: number literals JSON.stringify would not write (1e400, -0, 1.0), nesting */
  | { t: 'raw', text: string }
  /** a string of `unit` repeated `n` times (payloads near and over the size limits) */
  | { t: 'rep', unit: string, n: number }
  /** an array of `n` copies of a user id */
  | { t: 'rep-array', item: string, n: number }
  /** the n-th conversation the fuzz user knows (modulo their number) */
  | { t: 'conv', n: number }

export type Entries = Array<[string, Val]>

export type Payload =
  | { kind: 'request', op: OpName, entries: Entries }
  | { kind: 'json', value: Json }
  | { kind: 'text', text: string }
  /** the serialized request cut after `keep` characters */
  | { kind: 'truncated', inner: Payload, keep: number }
  /** `depth` levels of arrays or objects, alone or as the value of an extra field of a request */
  | { kind: 'deep', depth: number, shape: '[' | '{', inner: Payload | null }
  /** the serialized payload with bytes that are not UTF-8 inserted */
  | { kind: 'bad-utf8', inner: Payload, at: number, bytes: number[] }

export interface RequestCase {
  topic: { kind: 'op', op: string } | { kind: 'raw', topic: string }
  payload: Payload
  qos: 0 | 1 | 2
  retain: boolean
  /** MQTT DUP flag: a redelivery, which the server may answer from its reply cache */
  dup: boolean
}

/**
 * The users a request may name; the fuzz executor creates every one of them. fzshy only accepts
 * group invitations from people it shares a conversation with (REFUSED otherwise).
 */
export const FUZZ_USER = 'fz'
export const SHY_USER = 'fzshy'
export const KNOWN_USERS = [FUZZ_USER, 'fzpeer', 'fzpeer2', SHY_USER, 'bya', 'byb']

// ------------------------------------------------------------------------------------------------
// building blocks
// ------------------------------------------------------------------------------------------------

/** Characters that have broken parsers, regexes, normalizers and terminals before. */
const EDGE_CHARS = [
  '\u0000', '\u0001', '\u001f', '\u007f', '\ud800', '\udbff', '\udc00', '\udfff', '\ufeff', '\ufffe', '\uffff',
  '\u202e', '\u200b', '\u200d', '\u0301', '\u2028', '\u2029', '\u{1f600}', '\u{10ffff}', '\u212a', '\u0130', 'ß',
  '"', '\\', '/', '\n', '\t', ' ', '%', '$', '.', '+', '#', '{', '}'
]
const edgeChar = fc.constantFrom(...EDGE_CHARS)
const anyChar = fc.oneof({ arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }), weight: 3 }, { arbitrary: edgeChar, weight: 1 }, { arbitrary: fc.string({ unit: 'grapheme-ascii', minLength: 1, maxLength: 1 }), weight: 3 })
const weird = (min: number, max: number): fc.Arbitrary<string> => fc.string({ unit: anyChar, minLength: min, maxLength: max })

const json = (v: Json): Val => ({ t: 'json', v })
const raw = (text: string): Val => ({ t: 'raw', text })
const j = <T extends Json>(a: fc.Arbitrary<T>): fc.Arbitrary<Val> => a.map(json)

/** Values of the wrong type for any field. */
const wrongType: fc.Arbitrary<Val> = fc.oneof(
  j(fc.constantFrom<Json>(null, true, false, 0, -1, 1.5, '', [], {}, [null], { a: 1 }, '0', 'null')),
  j(fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>),
  fc.constantFrom(raw('1e400'), raw('-1e400'), raw('-0'), raw('1.0'), raw('1E2'), raw('123456789012345678901234567890'), raw('0.1e1'))
)

/** A string of about `bytes` bytes once serialized, of one repeated unit (ASCII, a 4-byte emoji, or a lone surrogate written as a 6-byte escape). */
const sized = (bytes: number): fc.Arbitrary<Val> => fc.constantFrom<Val>(
  { t: 'rep', unit: 'a', n: bytes },
  { t: 'rep', unit: '\u{1f600}', n: Math.ceil(bytes / 4) },
  { t: 'rep', unit: '\ud800', n: Math.ceil(bytes / 6) }
)
const LONG = (n: number): fc.Arbitrary<Val> => fc.constantFrom<Val>({ t: 'rep', unit: 'a', n }, { t: 'rep', unit: '\u{1f600}', n }, { t: 'rep', unit: '\ud800', n })

const USER_ID = /^[a-z0-9][a-z0-9_.-]{0,31}$/
const validUser = fc.oneof(
  { arbitrary: fc.constantFrom(...KNOWN_USERS), weight: 6 },
  { arbitrary: fc.stringMatching(USER_ID), weight: 2 },
  { arbitrary: fc.constantFrom('ghost', 'a', 'z'.repeat(32), '0', 'a.b-c_d'), weight: 1 }
)
const badUser = fc.oneof(
  fc.constantFrom('', 'Bya', 'BYA', 'bya ', ' bya', '.bya', '-bya', '_x', 'a'.repeat(33), 'by\u0000a', 'b\u212aa', 'bya/x', '#', '+', 'ünï'),
  weird(1, 12)
)
const userVal = fc.oneof({ arbitrary: j(validUser), weight: 12 }, { arbitrary: j(badUser), weight: 2 }, { arbitrary: wrongType, weight: 1 })

const seqVal = fc.oneof(
  // most conversations hold a few messages
  { arbitrary: j(fc.integer({ min: 0, max: 4 })), weight: 8 },
  { arbitrary: j(fc.integer({ min: 5, max: 30 })), weight: 2 },
  { arbitrary: j(fc.constantFrom(Number.MAX_SAFE_INTEGER, 2 ** 31, 2 ** 32, 1000)), weight: 2 }
)
const badSeq = fc.oneof(
  j(fc.constantFrom<Json>(-1, 1.5, Number.MAX_SAFE_INTEGER + 1, 2 ** 60, 1e300, -0.0001, '1', '')),
  fc.constantFrom(raw('1e400'), raw('-0'), raw('9007199254740993'), raw('1.0')),
  wrongType
)

const CONV_ID = /^[A-Za-z0-9_-]{1,40}$/
const convVal = fc.oneof(
  // the pool starts with the direct conversation, which the fuzz user can never leave
  { arbitrary: fc.constant<Val>({ t: 'conv', n: 0 }), weight: 4 },
  { arbitrary: fc.nat().map<Val>(n => ({ t: 'conv', n })), weight: 8 },
  { arbitrary: j(fc.stringMatching(CONV_ID)), weight: 2 },
  { arbitrary: j(fc.constantFrom('__proto__', 'constructor', 'toString', 'hasOwnProperty', 'a'.repeat(40))), weight: 1 }
)
const badConv = fc.oneof(j(fc.constantFrom('', 'a'.repeat(41), 'a/b', 'a b', 'ä', '../x', 'a\u0000')), j(weird(1, 20)), wrongType)

const text = fc.oneof({ arbitrary: fc.string({ minLength: 1, maxLength: 40 }), weight: 6 }, { arbitrary: weird(1, 40), weight: 3 })
const body = fc.oneof(
  { arbitrary: j(text), weight: 300 },
  { arbitrary: j(fc.jsonValue({ maxDepth: 4 }) as fc.Arbitrary<Json>), weight: 80 },
  { arbitrary: j(fc.constantFrom<Json>('', null, ['x'])), weight: 20 },
  { arbitrary: fc.constantFrom(raw('{"__proto__":{"polluted":true},"constructor":{"prototype":{"polluted":true}}}'), raw('{"a":1,"a":2}')), weight: 20 },
  { arbitrary: fc.integer({ min: 25, max: 40 }).map(d => raw('['.repeat(d) + ']'.repeat(d))), weight: 20 },
  // around and over limits.maxPayloadBytes (64 KiB: TOO_LARGE), under limits.maxPacketBytes (128 KiB)
  { arbitrary: fc.oneof(fc.integer({ min: 1, max: 2000 }), fc.integer({ min: 64_000, max: 70_000 }), fc.integer({ min: 70_000, max: 125_000 })).chain(sized), weight: 30 },
  // over the MQTT packet limit (128 KiB): the server closes the connection
  { arbitrary: fc.integer({ min: 140_000, max: 150_000 }).map<Val>(n => ({ t: 'rep', unit: 'x', n })), weight: 3 }
)

const groupName = fc.oneof({ arbitrary: fc.string({ minLength: 1, maxLength: 30 }), weight: 6 }, { arbitrary: weird(1, 100), weight: 2 }, { arbitrary: fc.constantFrom(' x ', 'x'.repeat(100), ' '.repeat(50) + 'x'), weight: 1 })
const badGroupName = fc.oneof(j(fc.constantFrom('', ' ', '\t\n ', 'x'.repeat(101))), LONG(101), wrongType)

const members = (min: number): fc.Arbitrary<Val> => fc.oneof(
  { arbitrary: j(fc.array(validUser, { minLength: min, maxLength: 6 })), weight: 10 },
  { arbitrary: fc.constantFrom<Val>({ t: 'rep-array', item: 'fzpeer', n: 50 }, { t: 'rep-array', item: 'ghost', n: 1001 }), weight: 1 }
)
const badMembers = (min: number): fc.Arbitrary<Val> => fc.oneof(
  j(fc.array(badUser, { minLength: 1, maxLength: 3 })),
  fc.constantFrom<Val>({ t: 'rep-array', item: 'a', n: 10_001 }, json('fzpeer'), ...(min > 0 ? [json([])] : [])),
  wrongType
)

interface FieldGen { valid: fc.Arbitrary<Val>, bad: fc.Arbitrary<Val> }

/**
 * Every field name any request schema uses. Valid values satisfy the schema (but may still be
 * refused by the operation: unknown users, conversations the user left, seqs beyond the last).
 */
const FIELDS: Record<string, FieldGen> = {
  id: {
    valid: fc.oneof({ arbitrary: fc.nat().map(n => json(`r${n}`)), weight: 6 }, { arbitrary: j(weird(1, 64)), weight: 2 }, { arbitrary: fc.constant(json('x'.repeat(64))), weight: 1 }),
    bad: fc.oneof(j(fc.constantFrom('', 'x'.repeat(65))), LONG(65), wrongType)
  },
  conv: { valid: convVal, bad: badConv },
  cursor: { valid: convVal, bad: badConv },
  msgId: {
    valid: fc.oneof({ arbitrary: fc.nat().map(n => json(`m${n}`)), weight: 4 }, { arbitrary: j(fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/)), weight: 1 }),
    bad: fc.oneof(j(fc.constantFrom('', 'a b', 'm'.repeat(65), 'ü', 'a/b', 'a\u0000')), wrongType)
  },
  kind: { valid: j(fc.constantFrom('text', 'custom', 'file')), bad: fc.oneof(j(fc.constantFrom('TEXT', '', 'image', 'text ')), wrongType) },
  body: { valid: body, bad: body },
  replyTo: { valid: fc.oneof({ arbitrary: j(fc.integer({ min: 1, max: 3 })), weight: 3 }, { arbitrary: seqVal, weight: 1 }), bad: badSeq },
  seq: { valid: seqVal, bad: badSeq },
  after: { valid: seqVal, bad: badSeq },
  before: { valid: seqVal, bad: badSeq },
  limit: { valid: j(fc.oneof(fc.integer({ min: 1, max: 300 }), fc.constantFrom(1_000_000, Number.MAX_SAFE_INTEGER))), bad: fc.oneof(j(fc.constantFrom<Json>(0, -5, 2.5, '10')), wrongType) },
  muted: { valid: j(fc.boolean()), bad: fc.oneof(j(fc.constantFrom<Json>('true', 1, 0)), wrongType) },
  user: { valid: userVal, bad: j(badUser) },
  name: { valid: j(groupName), bad: badGroupName },
  members: { valid: members(0), bad: badMembers(0) },
  role: { valid: j(fc.constantFrom('owner', 'admin', 'member')), bad: fc.oneof(j(fc.constantFrom('Owner', 'root', '', 'admin ')), wrongType) },
  users: {
    valid: fc.oneof({ arbitrary: j(fc.array(validUser, { minLength: 1, maxLength: 8 })), weight: 10 }, { arbitrary: fc.constant<Val>({ t: 'rep-array', item: 'bya', n: 500 }), weight: 1 }),
    bad: fc.oneof(fc.constantFrom<Val>(json([]), { t: 'rep-array', item: 'bya', n: 501 }), j(fc.array(badUser, { minLength: 1, maxLength: 3 })), wrongType)
  },
  groupInvites: { valid: j(fc.constantFrom('anyone', 'contacts')), bad: fc.oneof(j(fc.constantFrom('everyone', 'ANYONE', '')), wrongType) },
  target: { valid: fc.oneof({ arbitrary: j(fc.integer({ min: 1, max: 4 })), weight: 8 }, { arbitrary: seqVal, weight: 1 }), bad: fc.oneof(badSeq, j(fc.constant(0))) },
  emoji: {
    valid: j(fc.constantFrom('👍', '❤️', '🎉', '👨‍👩‍👧', '🇫🇷', '👍🏽')),
    bad: fc.oneof(j(fc.constantFrom('', 'a', ':+1:', '👍👍', '👍 ', '\u200d', '$', '.', '🇫🇷🇩', '👍'.repeat(17))), j(weird(1, 10)), wrongType)
  },
  mentions: {
    valid: fc.oneof(
      { arbitrary: j(fc.uniqueArray(validUser, { minLength: 1, maxLength: 5 })), weight: 6 },
      { arbitrary: j(fc.constant(['@all'])), weight: 2 },
      { arbitrary: fc.constant<Val>({ t: 'rep-array', item: 'bya', n: 1 }), weight: 1 }
    ),
    bad: fc.oneof(
      j(fc.constantFrom<Json>([], ['bya', 'bya'], ['@everyone'], ['@ALL'], 'bya', [null])),
      fc.constant<Val>({ t: 'rep-array', item: 'bya', n: 51 }),
      j(fc.array(badUser, { minLength: 1, maxLength: 3 })),
      wrongType
    )
  },
  remove: { valid: j(fc.boolean()), bad: fc.oneof(j(fc.constantFrom<Json>('true', 1, 0)), wrongType) },
  typing: { valid: j(fc.boolean()), bad: fc.oneof(j(fc.constantFrom<Json>('false', 1, null)), wrongType) },
  device: {
    valid: j(fc.oneof(fc.constantFrom('phone', 'web1'), fc.stringMatching(/^[A-Za-z0-9_-]{1,64}$/))),
    bad: fc.oneof(j(fc.constantFrom('', 'a b', 'd'.repeat(65), '../x', 'a/b', '+', '#')), wrongType)
  },
  // the fuzzer's server allows no Web Push host: a valid subscription is refused (BAD_REQUEST), which the
  // oracle accepts for a request without schema faults
  webPush: {
    valid: j(fc.record({
      endpoint: fc.constantFrom('https://push.example.invalid/s/1', 'http://127.0.0.1:1/push', 'https://169.254.169.254/'),
      keys: fc.record({ p256dh: fc.constantFrom('BNcRdreALRFXTkOOUHK1EtK2wtaz5Ry4YfYCA_0QTpQtUbVlUls0VJXg7A8u-Ts1XbjhazAkj7I99e8QcYP7DkM', 'AAAA'), auth: fc.constantFrom('tBHItJI5svbpez7KI4CCXg', 'x') })
    })),
    bad: fc.oneof(j(fc.constantFrom<Json>({}, { endpoint: 'x' }, { endpoint: 'x', keys: {} }, { endpoint: 'x'.repeat(3000), keys: { p256dh: 'a', auth: 'b' } }, 'https://x')), wrongType)
  },
  gateway: {
    valid: j(fc.record({ name: fc.constantFrom('app', 'gw'), token: fc.stringMatching(/^[!-~]{1,40}$/), platform: fc.constantFrom('ios', 'android', 'other') })),
    bad: fc.oneof(j(fc.constantFrom<Json>({}, { name: 'app', token: 'a b', platform: 'ios' }, { name: 'app', token: 't', platform: 'web' }, { name: 'APP', token: 't', platform: 'ios' })), wrongType)
  },
  // upload and file-url (attachments)
  size: {
    valid: fc.oneof({ arbitrary: j(fc.integer({ min: 1, max: 5000 })), weight: 6 }, { arbitrary: j(fc.constantFrom(104_857_600, 104_857_601, 2 ** 40, Number.MAX_SAFE_INTEGER)), weight: 1 }),
    bad: fc.oneof(j(fc.constantFrom<Json>(0, -1, 2.5, '10', Number.MAX_SAFE_INTEGER + 2)), fc.constant(raw('1e400')), wrongType)
  },
  mime: {
    valid: j(fc.constantFrom('text/plain', 'image/png', 'image/jpeg', 'application/pdf', 'application/x-msdownload', 'text/html', 'video/mp4')),
    bad: fc.oneof(j(fc.constantFrom('TEXT/PLAIN', 'text', 'text/plain; charset=utf-8', '', '/', 'text/plain\r\nx: 1', 'a'.repeat(300) + '/b')), j(weird(1, 20)), wrongType)
  },
  sha256: { valid: j(fc.stringMatching(/^[0-9a-f]{64}$/)), bad: fc.oneof(j(fc.constantFrom('abc', 'z'.repeat(64), 'a'.repeat(65))), wrongType) },
  file: {
    valid: j(fc.stringMatching(/^[A-Za-z0-9_-]{22}$/)),
    bad: fc.oneof(j(fc.constantFrom('', '../../etc/passwd', 'f/' + 'a'.repeat(20), 'a'.repeat(23), 'a'.repeat(21))), j(weird(1, 30)), wrongType)
  },
  variant: { valid: j(fc.constantFrom('original', 'thumb')), bad: fc.oneof(j(fc.constantFrom('raw', 'THUMB', '')), wrongType) },
  // create-channel
  public: { valid: j(fc.boolean()), bad: fc.oneof(j(fc.constantFrom<Json>('true', 1, 0, null)), wrongType) },
  postPolicy: { valid: j(fc.constantFrom('admins', 'members')), bad: fc.oneof(j(fc.constantFrom<Json>('everyone', 'Admins', '', null)), wrongType) },
  // join {invite}, create-invite, revoke-invite: codes that exist are never guessed (NOT_FOUND)
  invite: {
    valid: j(fc.stringMatching(/^[A-Za-z0-9_-]{24}$/)),
    bad: fc.oneof(j(fc.constantFrom('', 'a'.repeat(23), 'a'.repeat(25), 'a'.repeat(23) + '=', 'a'.repeat(23) + '+', 'a'.repeat(23) + '/', ' '.repeat(24))), LONG(10_000), j(weird(1, 30)), wrongType)
  },
  maxUses: {
    valid: j(fc.oneof(fc.integer({ min: 1, max: 5 }), fc.constantFrom(100_000))),
    bad: fc.oneof(j(fc.constantFrom<Json>(0, -1, 1.5, 100_001, 2 ** 53, '3', null)), fc.constant(raw('1e400')), wrongType)
  },
  expiresInMs: {
    valid: j(fc.oneof(fc.integer({ min: 1, max: 2_592_000_000 }), fc.constantFrom(2_592_000_001, Number.MAX_SAFE_INTEGER))),
    bad: fc.oneof(j(fc.constantFrom<Json>(0, -1, -1000, 0.5, 1000.5, Number.MAX_SAFE_INTEGER + 2, '1000', null)), fc.constant(raw('1e400')), wrongType)
  },
  codeId: {
    valid: j(fc.stringMatching(/^[0-9a-f]{8}$/)),
    bad: fc.oneof(j(fc.constantFrom('', 'ABCDEF12', 'abcdef1', 'abcdef123', 'ghijklmn', '0x123456')), j(weird(1, 12)), wrongType)
  }
}

/** Keys no request has, prototype-pollution names first. */
const extraKey = fc.oneof(
  { arbitrary: fc.constantFrom('__proto__', 'constructor', 'prototype', 'toString', 'hasOwnProperty', 'valueOf', '__defineGetter__', 'then'), weight: 3 },
  { arbitrary: fc.constantFrom('', '\u0000', 'id', 'op', 'ok', 'ID', 'conv '), weight: 1 },
  { arbitrary: weird(1, 10), weight: 1 }
)
const extraValue = fc.oneof(
  { arbitrary: j(fc.constantFrom<Json>({ polluted: true }, { prototype: { polluted: true } }, null, 1, 'x')), weight: 3 },
  { arbitrary: j(fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json>), weight: 3 },
  // a request over limits.maxPayloadBytes
  { arbitrary: fc.integer({ min: 64_000, max: 125_000 }).chain(sized), weight: 2 }
)

function fieldEntry (key: string, optional: boolean): fc.Arbitrary<Array<[string, Val]>> {
  const gen = FIELDS[key]
  if (gen === undefined) throw new Error(`scripts/fuzz/requests.ts has no generator for ${key}`)
  return fc.oneof(
    { arbitrary: gen.valid.map(v => [[key, v]] as Array<[string, Val]>), weight: 60 },
    { arbitrary: gen.bad.map(v => [[key, v]] as Array<[string, Val]>), weight: 2 },
    { arbitrary: fc.constant([] as Array<[string, Val]>), weight: optional ? 40 : 1 }
  )
}

function shapeOf (op: OpName): Array<{ key: string, optional: boolean }> {
  const shape = (REQUESTS[op] as unknown as { shape: Record<string, { safeParse: (v: unknown) => { success: boolean } }> }).shape
  return Object.entries(shape).map(([key, schema]) => ({ key, optional: schema.safeParse(undefined).success }))
}

/** Fails at start-up when a schema has a field FIELDS cannot fuzz. */
export function checkFieldCoverage (): void {
  const missing = OPS.flatMap(op => shapeOf(op).filter(f => FIELDS[f.key] === undefined).map(f => `${op}.${f.key}`))
  if (missing.length > 0) throw new Error(`scripts/fuzz/requests.ts has no generator for ${missing.join(', ')}: add them to FIELDS`)
}

const requestOf = (op: OpName): fc.Arbitrary<Payload> => fc.tuple(
  fc.tuple(...shapeOf(op).map(f => fieldEntry(f.key, f.optional))),
  fc.oneof({ arbitrary: fc.constant([] as Array<[string, Val]>), weight: 9 }, { arbitrary: fc.array(fc.tuple(extraKey, extraValue), { minLength: 1, maxLength: 2 }), weight: 1 }),
  fc.boolean()
).map(([fields, extras, extrasFirst]) => {
  const own = fields.flat()
  return { kind: 'request' as const, op, entries: extrasFirst ? [...extras, ...own] : [...own, ...extras] }
})

const anyRequest: fc.Arbitrary<Payload> = fc.constantFrom(...OPS).chain(requestOf)

const payload: fc.Arbitrary<Payload> = fc.oneof(
  { arbitrary: anyRequest, weight: 80 },
  { arbitrary: j(fc.jsonValue({ maxDepth: 3 }) as fc.Arbitrary<Json>).map<Payload>(v => ({ kind: 'json', value: (v as { v: Json }).v })), weight: 4 },
  { arbitrary: fc.oneof(fc.string({ maxLength: 40 }), weird(1, 30), fc.constantFrom('', ' ', 'null', '{', '{"id":"r1",}', "{'id':'r1'}", '{"id":"r1"}{"id":"r2"}', '\ufeff{"id":"r1"}', 'NaN')).map<Payload>(t => ({ kind: 'text', text: t })), weight: 4 },
  { arbitrary: fc.tuple(anyRequest, fc.nat()).map<Payload>(([inner, keep]) => ({ kind: 'truncated', inner, keep })), weight: 2 },
  {
    arbitrary: fc.tuple(fc.oneof(fc.integer({ min: 28, max: 40 }), fc.integer({ min: 41, max: 5000 })), fc.constantFrom<'[' | '{'>('[', '{'), fc.option(anyRequest, { freq: 2 }))
      .map<Payload>(([depth, shape, inner]) => ({ kind: 'deep', depth, shape, inner })),
    weight: 4
  },
  {
    arbitrary: fc.tuple(anyRequest, fc.nat(), fc.constantFrom<number[]>([0xff], [0xfe], [0xc0, 0x80], [0xed, 0xa0, 0x80], [0xf4, 0x90, 0x80, 0x80], [0xe2, 0x82], [0x80], [0xf8, 0x88, 0x80, 0x80, 0x80]))
      .map<Payload>(([inner, at, bytes]) => ({ kind: 'bad-utf8', inner, at, bytes })),
    weight: 4
  }
)

/** Topics outside the operations: other im/ topics, $ topics, unknown operations, noise. */
const rawTopic = fc.oneof(
  {
    arbitrary: fc.constantFrom(
      'im/req', 'im/req/', 'im/req/Send', 'im/req/send/x', 'im/req/__proto__', 'im/req/constructor', 'im/req/hasOwnProperty', 'im/req/toString',
    `im/u/${FUZZ_USER}/m`, `im/u/${FUZZ_USER}/r/c0`, 'im/u/bya/m', 'im/u/bya/e', '$SYS/broker', '$mqim/revoke', '$mqim/sink', '$mqim/invalidate', '$mqim/seq',
    'im', '/', '//', 'x', 'IM/req/send', ' im/req/send'
    ),
    weight: 4
  },
  { arbitrary: weird(1, 20).map(s => 'im/req/' + s.replace(/[+#]/g, '_')), weight: 3 },
  { arbitrary: weird(1, 30).map(s => s.replace(/[+#]/g, '_')), weight: 3 },
  // 100 levels is Aedes' maximum: more closes the connection
  { arbitrary: fc.integer({ min: 97, max: 102 }).map(n => 'im/req/' + 'a/'.repeat(n - 3) + 'send'), weight: 1 }
)

export const requestCase: fc.Arbitrary<RequestCase> = fc.tuple(
  payload,
  fc.oneof({ arbitrary: fc.constant(null), weight: 84 }, { arbitrary: fc.constantFrom(...OPS).map(op => ({ kind: 'op' as const, op })), weight: 4 }, { arbitrary: rawTopic.map(topic => ({ kind: 'raw' as const, topic })), weight: 12 }),
  fc.constantFrom<0 | 1 | 2>(0, 1, 1, 1, 2),
  fc.boolean(),
  fc.oneof({ arbitrary: fc.constant(false), weight: 19 }, { arbitrary: fc.constant(true), weight: 1 })
).map(([payload, topic, qos, retain, dup]) => ({
  // a request goes to its own operation's topic unless another topic was drawn
  topic: topic ?? { kind: 'op' as const, op: opOf(payload) ?? 'list' },
  payload,
  qos,
  retain,
  dup
}))

function opOf (p: Payload): OpName | null {
  switch (p.kind) {
    case 'request': return p.op
    case 'truncated': case 'bad-utf8': return opOf(p.inner)
    case 'deep': return p.inner === null ? null : opOf(p.inner)
    default: return null
  }
}

// ------------------------------------------------------------------------------------------------
// serialization
// ------------------------------------------------------------------------------------------------

function valText (v: Val, convs: readonly string[]): string {
  switch (v.t) {
    case 'json': return JSON.stringify(v.v)
    case 'raw': return v.text
    case 'rep': return JSON.stringify(v.unit.repeat(v.n))
    case 'rep-array': return JSON.stringify(new Array<string>(v.n).fill(v.item))
    case 'conv': return JSON.stringify(convs.length === 0 ? 'none' : convs[v.n % convs.length])
  }
}

function entriesText (entries: Entries, convs: readonly string[]): string {
  return '{' + entries.map(([k, v]) => `${JSON.stringify(k)}:${valText(v, convs)}`).join(',') + '}'
}

function nest (depth: number, shape: '[' | '{', inner: string): string {
  return shape === '['
    ? '['.repeat(depth) + inner + ']'.repeat(depth)
    : '{"a":'.repeat(depth) + (inner === '' ? '1' : inner) + '}'.repeat(depth)
}

/** The bytes of a payload; conversation references are resolved against `convs`. */
export function payloadBytes (p: Payload, convs: readonly string[]): Buffer {
  switch (p.kind) {
    case 'request': return Buffer.from(entriesText(p.entries, convs))
    case 'json': return Buffer.from(JSON.stringify(p.value))
    case 'text': return Buffer.from(p.text)
    case 'truncated': {
      const whole = payloadBytes(p.inner, convs)
      return whole.subarray(0, p.keep % Math.max(1, whole.length))
    }
    case 'deep': {
      if (p.inner === null) return Buffer.from(nest(p.depth, p.shape, ''))
      const whole = payloadBytes(p.inner, convs).toString('utf8')
      // the nesting as one more field of the request (the request stays an object)
      return Buffer.from(whole.replace(/^\{/, `{"deep":${nest(p.depth, p.shape, '')}${whole.length > 2 ? ',' : ''}`))
    }
    case 'bad-utf8': {
      const whole = payloadBytes(p.inner, convs)
      const at = p.at % (whole.length + 1)
      return Buffer.concat([whole.subarray(0, at), Buffer.from(p.bytes), whole.subarray(at)])
    }
  }
}

export function topicOf (c: RequestCase): string {
  return c.topic.kind === 'op' ? `im/req/${c.topic.op}` : c.topic.topic
}

/** A short printable form of a case (long strings cut), for reports. */
export function describeCase (c: RequestCase): string {
  return JSON.stringify(c, (_k, v: unknown) => (typeof v === 'string' && v.length > 200 ? `${v.slice(0, 200)}…(${v.length} chars)` : v))
}
