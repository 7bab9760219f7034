/**
 * Bad input: every ordinary mistake gets a {code, message} reply on the device's reply topic,
 * nothing is stored, and the connection stays up.
 */
import { MEMORY } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import type { Reply } from '../src/protocol/schemas.js'

describe('bad input', () => {
  let server: MqimServer
  let alice: ImClient
  let bob: ImClient
  let conv: string
  beforeAll(async () => {
    server = await startServer({ limits: { maxPayloadBytes: 4096 } }, await MEMORY.make())
    await addUser(server, 'alice')
    await addUser(server, 'bob')
    alice = await connect(server, 'alice', 'a')
    bob = await connect(server, 'bob', 'b')
    conv = (await alice.request('direct', { user: 'bob' })).conv
  })
  afterAll(async () => {
    await Promise.allSettled([alice.end(), bob.end()])
    await server.stop()
  })

  /** Publishes a raw payload and returns the reply that follows it. */
  async function raw (op: string, payload: string | Buffer): Promise<Reply> {
    const before = alice.replies.length
    await alice.mqtt.publishAsync(`im/req/${op}`, payload, { qos: 1 })
    await alice.waitFor(() => alice.replies.length > before, 5000, `reply to raw ${op}`)
    const reply = alice.replies[before]
    if (reply === undefined) throw new Error(`no reply to raw ${op}`)
    return reply
  }

  const cases: Array<[string, string, string, string | Buffer]> = [
    ['not JSON', 'send', 'BAD_JSON', '{"id":"1",'],
    ['invalid UTF-8', 'send', 'BAD_JSON', Buffer.from([0x7b, 0xff, 0xfe, 0x7d])],
    ['JSON but not an object', 'send', 'BAD_REQUEST', '[1,2]'],
    ['missing fields', 'send', 'BAD_REQUEST', '{"id":"2"}'],
    ['unknown field', 'list', 'BAD_REQUEST', '{"id":"3","extra":true}'],
    ['unknown kind', 'send', 'BAD_REQUEST', '{"id":"4","conv":"CONV","msgId":"k","kind":"image","body":"x"}'],
    ['text kind with non-string body', 'send', 'BAD_REQUEST', '{"id":"5","conv":"CONV","msgId":"k","kind":"text","body":{"a":1}}'],
    ['empty text', 'send', 'BAD_REQUEST', '{"id":"6","conv":"CONV","msgId":"k","kind":"text","body":""}'],
    ['bad msgId', 'send', 'BAD_REQUEST', '{"id":"7","conv":"CONV","msgId":"has space","kind":"text","body":"x"}'],
    ['replyTo beyond the last message', 'send', 'BAD_REQUEST', '{"id":"8","conv":"CONV","msgId":"k","kind":"text","body":"x","replyTo":999}'],
    ['negative seq', 'read', 'BAD_REQUEST', '{"id":"9","conv":"CONV","seq":-1}'],
    ['unknown operation', 'fly', 'UNKNOWN_OP', '{"id":"10"}'],
    ['a group name with a NUL', 'create-group', 'BAD_REQUEST', '{"id":"12","name":"a\\u0000b","members":[]}'],
    ['a group name with a right-to-left override', 'create-group', 'BAD_REQUEST', '{"id":"13","name":"evil\\u202egpj.exe","members":[]}'],
    ['a group name of control characters only', 'create-group', 'BAD_REQUEST', '{"id":"14","name":"\\u0007\\u001b","members":[]}'],
    ['a group name with a line separator', 'create-group', 'BAD_REQUEST', '{"id":"15","name":"two\\u2028lines","members":[]}'],
    ['oversize payload', 'send', 'TOO_LARGE', JSON.stringify({ id: '11', conv: 'CONV', msgId: 'big', kind: 'text', body: 'x'.repeat(5000) })]
  ]

  test.each(cases)('%s (im/req/%s) -> %s, nothing stored, still connected', async (_name, op, code, payload) => {
    const body = typeof payload === 'string' ? payload.replace('CONV', conv) : payload
    const reply = await raw(op, body)
    expect(reply.ok).toBe(false)
    if (!reply.ok) {
      expect(reply.error.code).toBe(code)
      expect(reply.error.message.length).toBeGreaterThan(0)
    }
    expect(reply.op).toBe(op)
    expect(alice.mqtt.connected).toBe(true)
    const h = await alice.request('history', { conv })
    expect(h.lastSeq).toBe(0)
  })

  test.each([
    ['a missing body (a field of several forms)', 'send', '{"id":"m1","conv":"CONV","msgId":"k","kind":"text"}', 'body: required'],
    ['a missing conv', 'send', '{"id":"m2","msgId":"k","kind":"text","body":"x"}', 'conv: required'],
    ['a missing seq', 'read', '{"id":"m3","conv":"CONV"}', 'seq: required'],
    ['two missing fields', 'read', '{"id":"m4"}', 'conv: required; seq: required'],
    ['a group name of spaces only', 'create-group', '{"id":"m5","name":"   ","members":[]}', 'name: empty (white space only)'],
    ['an empty group name', 'create-group', '{"id":"m6","name":"","members":[]}', 'name: empty'],
    ['a null conv (present, wrong type)', 'read', '{"id":"m7","conv":null,"seq":1}', 'conv: Invalid input: expected string, received null']
  ])('%s (im/req/%s) is named plainly', async (_name, op, payload, message) => {
    const reply = await raw(op, payload.replace('CONV', conv))
    expect(reply).toMatchObject({ ok: false, op, error: { code: 'BAD_REQUEST', message } })
    expect(alice.mqtt.connected).toBe(true)
  })

  test('the request id is echoed when it can be read, so clients can correlate errors', async () => {
    const reply = await raw('send', '{"id":"corr-1","conv":"x"}')
    expect(reply).toMatchObject({ id: 'corr-1', ok: false, op: 'send' })
    const unparsable = await raw('send', 'nope')
    expect(unparsable.id).toBeNull()
  })

  test('a good send after all that works and is seq 1; bob got exactly it', async () => {
    const r = await alice.request('send', { conv, msgId: 'good', kind: 'text', body: 'finally' })
    expect(r.seq).toBe(1)
    await bob.waitFor(() => bob.messages.length === 1)
    expect(bob.messages.map(m => m.body)).toEqual(['finally'])
  })

  test('custom kind carries any JSON value for bots', async () => {
    const bodies = [{ card: { title: 't', buttons: ['a', 'b'] }, '$weird.key': 1 }, [1, 'two', null], 42, true, null, 'plain']
    for (const [i, body] of bodies.entries()) await alice.request('send', { conv, msgId: `c${i}`, kind: 'custom', body })
    const h = await bob.request('history', { conv, after: 1 })
    expect(h.messages.map((m: { body: unknown }) => m.body)).toEqual(bodies)
  })

  test('a request redelivered by MQTT (DUP flag) is answered again, not run again', async () => {
    const body = JSON.stringify({ id: 'grp-dup', name: 'once', members: ['bob'] })
    const first = await raw('create-group', body)
    const before = alice.replies.length
    await alice.mqtt.publishAsync('im/req/create-group', body, { qos: 1, dup: true })
    await alice.waitFor(() => alice.replies.length > before, 5000, 'reply to the redelivery')
    expect(alice.replies[before]).toEqual(first)
    const groups = (await alice.request('list', {})).conversations.filter((c: { name: string | null }) => c.name === 'once')
    expect(groups).toHaveLength(1)
  })

  test('a redelivered read runs again: answered with the cursor as it is now, the other member told once per move', async () => {
    const seqs: number[] = []
    for (const n of [1, 2, 3]) seqs.push((await bob.request('send', { conv, msgId: `dup-read-${n}`, kind: 'text', body: `read me ${n}` })).seq)
    const [s1, s2, s3] = seqs as [number, number, number]
    const receipts = (): number[] => bob.events.filter(e => e.type === 'receipt' && e.conv === conv && e.user === 'alice').map(e => e.readSeq as number)
    const told = receipts().length
    const body = JSON.stringify({ id: 'read-dup', conv, seq: s1 })
    expect(await raw('read', body)).toMatchObject({ id: 'read-dup', ok: true, result: { conv, readSeq: s1 } })
    await alice.request('read', { conv, seq: s2 })
    // MQTT redelivers the first read: not the first reply (readSeq s1), the cursor now
    const before = alice.replies.length
    await alice.mqtt.publishAsync('im/req/read', body, { qos: 1, dup: true })
    await alice.waitFor(() => alice.replies.length > before, 5000, 'reply to the redelivery')
    expect(alice.replies[before]).toMatchObject({ id: 'read-dup', ok: true, result: { conv, readSeq: s2, unread: 1 } })
    // a later move is told after anything the redelivery could have told: nothing was
    await alice.request('read', { conv, seq: s3 })
    await bob.waitFor(() => receipts().includes(s3), 5000, 'the receipt of the last read')
    expect(receipts().slice(told)).toEqual([s1, s2, s3])
  })

  test('over the rate limit: RATE_LIMITED with the request id, connection kept', async () => {
    const limited = await startServer({ limits: { requestsPerSecond: 1, requestBurst: 3 } }, await MEMORY.make())
    await addUser(limited, 'zoe')
    const zoe = await connect(limited, 'zoe', 'z')
    // (a small request: `list` and `history` are charged a whole page up front, see hostile-accounts)
    const replies = await Promise.all(Array.from({ length: 6 }, (_, i) => zoe.requestRaw('presence', { id: `r${i}`, users: ['zoe'] })))
    const codes = replies.map(r => (r.ok ? 'ok' : r.error.code))
    expect(codes.filter(c => c === 'ok').length).toBeGreaterThanOrEqual(3)
    expect(codes.filter(c => c === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(2)
    expect(zoe.mqtt.connected).toBe(true)
    await zoe.end()
    await limited.stop()
  })
})
