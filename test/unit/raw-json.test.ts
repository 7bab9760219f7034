/**
 * Replies with pre-serialized bulk (protocol/raw-json.ts) are byte for byte what JSON.stringify
 * gives for the same reply with plain arrays; the envelope cache (im/envelopes.ts) is bounded by
 * bytes and serializes each message once.
 */
import fc from 'fast-check'
import { RawJsonArray, serializeReply } from '../../src/protocol/raw-json.js'
import { EnvelopeCache, toEnvelope } from '../../src/im/envelopes.js'
import type { Reply } from '../../src/protocol/schemas.js'
import type { StoredMessage } from '../../src/store/types.js'

const json = fc.jsonValue()

describe('serializeReply', () => {
  test('a result with raw arrays at its top level serializes exactly like JSON.stringify of the plain reply', () => {
    fc.assert(fc.property(
      fc.option(fc.string(), { nil: null }),
      fc.string(),
      fc.dictionary(fc.string(), fc.oneof(json, fc.array(json).map(items => ({ raw: items }))), { maxKeys: 6 }),
      (id, op, fields) => {
        const plain: Record<string, unknown> = {}
        const raw: Record<string, unknown> = {}
        for (const [k, v] of Object.entries(fields)) {
          const isRaw = v !== null && typeof v === 'object' && !Array.isArray(v) && 'raw' in v && Object.keys(v).length === 1 && Array.isArray(v.raw)
          // JSON.stringify turns -0 into 0: so does the raw element's own serialization
          plain[k] = isRaw ? v.raw : v
          raw[k] = isRaw ? new RawJsonArray((v.raw as unknown[]).map(x => Buffer.from(JSON.stringify(x)))) : v
        }
        const a = serializeReply({ id, op, ok: true, result: raw } satisfies Reply)
        const b = Buffer.from(JSON.stringify({ id, op, ok: true, result: plain }))
        expect(a.toString('utf8')).toBe(b.toString('utf8'))
        expect(JSON.parse(a.toString('utf8'))).toEqual(JSON.parse(b.toString('utf8')))
      }
    ), { seed: 20261130, numRuns: 500 })
  })

  test('an id or op that looks like JSON structure is still escaped; a key with undefined is left out', () => {
    const reply: Reply = { id: '"],"x":1,"y":["', op: 'history\u0001', ok: true, result: { a: undefined, messages: new RawJsonArray([Buffer.from('{"b":"\\u2028 é"}')]), n: 1 } }
    const text = serializeReply(reply).toString('utf8')
    expect(JSON.parse(text)).toEqual({ id: '"],"x":1,"y":["', op: 'history\u0001', ok: true, result: { messages: [{ b: '\u2028 é' }], n: 1 } })
  })

  test('an empty raw array, an error reply, and a result without raw arrays', () => {
    expect(serializeReply({ id: 'q', op: 'history', ok: true, result: { messages: new RawJsonArray([]) } }).toString()).toBe('{"id":"q","op":"history","ok":true,"result":{"messages":[]}}')
    const err: Reply = { id: null, op: 'x', ok: false, error: { code: 'BAD_REQUEST', message: 'm' } }
    expect(serializeReply(err).toString()).toBe(JSON.stringify(err))
    expect(serializeReply({ id: 'q', op: 'o', ok: true, result: [1, 2] }).toString()).toBe('{"id":"q","op":"o","ok":true,"result":[1,2]}')
    // JSON.stringify of a RawJsonArray anywhere else parses its elements back (slow, correct)
    expect(JSON.stringify({ deep: { m: new RawJsonArray([Buffer.from('[1,"a"]')]) } })).toBe('{"deep":{"m":[[1,"a"]]}}')
  })
})

describe('EnvelopeCache', () => {
  const message = (seq: number, body: string): StoredMessage => ({
    conversationId: 'c1', seq, clientMsgId: `m${seq}`, senderId: 'alice', ts: 1000 + seq, kind: 'text', body, replyTo: seq > 1 ? seq - 1 : null
  })

  test('the bytes are the envelope as JSON, made once per message', () => {
    const cache = new EnvelopeCache()
    const m = message(2, 'héllo "x"')
    const a = cache.of(m)
    expect(JSON.parse(a.toString('utf8'))).toEqual(toEnvelope(m))
    expect(cache.of({ ...m })).toBe(a)
  })

  test('bounded by bytes: old entries leave, the size never passes the bound', () => {
    const cache = new EnvelopeCache(100_000)
    for (let seq = 1; seq <= 200; seq++) {
      cache.of(message(seq, 'x'.repeat(5000)))
      expect(cache.size).toBeLessThanOrEqual(100_000)
    }
    // the first message was evicted: serialized again (a new Buffer)
    const first = message(1, 'x'.repeat(5000))
    const again = cache.of(first)
    expect(cache.of(first)).toBe(again)
    expect(cache.size).toBeGreaterThan(50_000)
  })

  test('cached envelopes live in the cache\'s own slabs, counted whole, never in the shared Buffer pool', () => {
    const cache = new EnvelopeCache()
    const poolSize = Buffer.poolSize
    const kept: Array<[Buffer, StoredMessage]> = []
    for (const body of ['hi', 'héllo', 'x'.repeat(3000), 'y'.repeat(40_000)]) {
      const m = message(body.length, body)
      const bytes = cache.of(m)
      kept.push([bytes, m])
      // a pool slice sits in an 8 KiB ArrayBuffer shared with unrelated short-lived buffers
      expect(bytes.buffer.byteLength).not.toBe(poolSize)
      expect(JSON.parse(bytes.toString('utf8'))).toEqual(toEnvelope(m))
    }
    // the three small ones share one 64 KiB slab; the large one has a buffer of its own
    expect(kept[1]?.[0].buffer).toBe(kept[0]?.[0].buffer)
    expect(kept[2]?.[0].buffer).toBe(kept[0]?.[0].buffer)
    expect(kept[0]?.[0].buffer.byteLength).toBe(64 * 1024)
    expect(kept[3]?.[0].buffer.byteLength).toBe(kept[3]?.[0].length)
    expect(cache.size).toBeGreaterThanOrEqual(64 * 1024 + 40_000)
    // neighbours in a slab do not overwrite each other
    for (const [bytes, m] of kept) expect(JSON.parse(bytes.toString('utf8'))).toEqual(toEnvelope(m))
  })

  test('an entry of the older generation is copied into the newer one, the same bytes', () => {
    const cache = new EnvelopeCache(64 * 1024)
    const first = message(1, 'f'.repeat(500))
    const before = cache.of(first)
    // enough others to start a new generation, not two
    let seq = 2
    while (cache.of(first) === before && seq < 1000) cache.of(message(seq++, 'x'.repeat(500)))
    const copied = cache.of(first)
    expect(copied).not.toBe(before)
    expect(copied.equals(before)).toBe(true)
    expect(cache.of(first)).toBe(copied)
    expect(cache.size).toBeLessThanOrEqual(64 * 1024)
  })
})
