/**
 * Webhooks against local HTTP receivers written here: signed callbacks for stored messages,
 * member changes and users going online/offline; a receiver that is down and one that is slow leave
 * sends as fast as without them (measured), with retries until the receiver is back; the
 * before-send hook allows, rewrites and refuses, and fails open or closed on a timeout.
 */
import http from 'node:http'
import { createHmac } from 'node:crypto'
import type { AddressInfo } from 'node:net'
import { startServer, addUser, connect, waitUntil, type ImClient } from './helpers/im.js'

const SECRET = 'webhook-secret-0123456789-abcdefghij'
const HOOK_SECRET = 'before-send-secret-0123456789-abcdefgh'

interface Received { event: string, delivery: string, body: { id: string, event: string, at: number, data: Record<string, unknown> }, signatureOk: boolean }

/** A receiver: records what it gets (checking the signature), answers with `status()` after `delayMs()`. */
async function receiver (secret: string, behaviour: { status?: () => number, delayMs?: () => number, answer?: (body: Received['body']) => unknown } = {}): Promise<{ url: string, got: Received[], close: () => Promise<void> }> {
  const got: Received[] = []
  const timers = new Set<NodeJS.Timeout>()
  const server = http.createServer((req, res) => {
    let text = ''
    req.setEncoding('utf8')
    req.on('data', (c: string) => { text += c })
    req.on('end', () => {
      const header = String(req.headers['x-mqim-signature'] ?? '')
      const match = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(header)
      const signatureOk = match !== null && createHmac('sha256', secret).update(`${match[1] ?? ''}.${text}`).digest('hex') === match[2] && Math.abs(Date.now() - Number(match[1])) < 60_000
      const body = JSON.parse(text) as Received['body']
      got.push({ event: String(req.headers['x-mqim-event']), delivery: String(req.headers['x-mqim-delivery']), body, signatureOk })
      const timer = setTimeout(() => {
        timers.delete(timer)
        if (res.destroyed) return
        res.writeHead(behaviour.status?.() ?? 200, { 'content-type': 'application/json' })
        res.end(JSON.stringify(behaviour.answer?.(body) ?? {}))
      }, behaviour.delayMs?.() ?? 0)
      timers.add(timer)
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as AddressInfo
  return {
    url: `http://127.0.0.1:${port}/hook`,
    got,
    close: async () => {
      for (const t of timers) clearTimeout(t)
      server.closeAllConnections()
      await new Promise(resolve => server.close(resolve))
    }
  }
}

/** The median of the time 20 sends take, one at a time, in ms. */
async function sendLatency (c: ImClient, conv: string, tag: string): Promise<number> {
  const times: number[] = []
  for (let i = 0; i < 20; i++) {
    const t0 = performance.now()
    await c.request('send', { conv, msgId: `${tag}${i}`, kind: 'text', body: `${tag} ${i}` })
    times.push(performance.now() - t0)
  }
  times.sort((a, b) => a - b)
  return times[10] as number
}

describe('webhooks', () => {
  const closers: Array<() => Promise<void>> = []
  afterAll(async () => { for (const c of closers) await c() })

  test('signed callbacks for messages, member changes and online/offline, each event once per endpoint', async () => {
    const r = await receiver(SECRET)
    const other = await receiver(SECRET)
    closers.push(r.close, other.close)
    const server = await startServer({ webhooks: { endpoints: [{ url: r.url, secret: SECRET, events: ['message.stored', 'member.changed', 'user.online', 'user.offline'] }, { url: other.url, secret: SECRET, events: ['user.online'] }] } })
    closers.push(async () => await server.stop())
    for (const u of ['alice', 'bob']) await addUser(server, u)
    const alice = await connect(server, 'alice', 'a')
    await waitUntil(() => r.got.some(g => g.event === 'user.online'), 5000, 'user.online')
    const { conv } = await alice.request('direct', { user: 'bob' })
    const sent = await alice.request('send', { conv, msgId: 'w1', kind: 'text', body: 'hello hooks' })
    await alice.request('react', { conv, msgId: 'w2', target: sent.seq, emoji: '👍' })
    await alice.end()
    await waitUntil(() => r.got.some(g => g.event === 'user.offline'), 5000, 'user.offline')
    await waitUntil(() => r.got.filter(g => g.event === 'message.stored').length === 2, 5000, 'two stored entries')
    expect(r.got.every(g => g.signatureOk)).toBe(true)
    expect(r.got.every(g => g.body.event === g.event && g.body.id === g.delivery)).toBe(true)
    const stored = r.got.filter(g => g.event === 'message.stored').map(g => g.body.data)
    expect(stored[0]).toMatchObject({ conv, seq: sent.seq, msgId: 'w1', from: 'alice', kind: 'text', body: 'hello hooks' })
    expect(stored[1]).toMatchObject({ conv, kind: 'react', target: sent.seq, body: { emoji: '👍', remove: false } })
    expect(r.got.find(g => g.event === 'member.changed')?.body.data).toMatchObject({ type: 'member', conv, action: 'added', users: ['alice', 'bob'] })
    expect(r.got.filter(g => g.event === 'user.online').map(g => g.body.data)).toEqual([{ user: 'alice' }])
    // the second endpoint asked for user.online only
    expect(other.got.map(g => g.event)).toEqual(['user.online'])
    expect(server.services.webhooks?.dropped).toBe(0)
  })

  test('a receiver that is down, then back: sends as fast as without webhooks; every event arrives once the receiver is up', async () => {
    let up = false
    const r = await receiver(SECRET, { status: () => up ? 200 : 503 })
    closers.push(r.close)
    const plain = await startServer({})
    const hooked = await startServer({ webhooks: { endpoints: [{ url: r.url, secret: SECRET, events: ['message.stored'] }], timeoutMs: 1000 } })
    closers.push(async () => await plain.stop(), async () => await hooked.stop())
    const latencies: number[] = []
    for (const server of [plain, hooked]) {
      for (const u of ['alice', 'bob']) await addUser(server, u)
      const alice = await connect(server, 'alice', 'a')
      const { conv } = await alice.request('direct', { user: 'bob' })
      latencies.push(await sendLatency(alice, conv, 'down'))
      await alice.end()
    }
    console.log(`webhooks: median send latency ${latencies[0]?.toFixed(1) ?? '?'} ms without, ${latencies[1]?.toFixed(1) ?? '?'} ms with a receiver answering 503`)
    // the same order of magnitude: the receiver is not on the send path (the floor allows for a
    // loaded machine during one of the two runs only)
    expect(latencies[1]).toBeLessThan(Math.max(100, 3 * (latencies[0] ?? 0)))
    await waitUntil(() => r.got.length >= 20, 5000, 'first attempts')
    expect(hooked.services.webhooks?.delivered).toBe(0)
    up = true
    // retried after 1 s, 2 s, ...: all 20 delivered, each retry with the same delivery id
    await waitUntil(() => hooked.services.webhooks?.delivered === 20, 10_000, 'all 20 delivered after the receiver came back')
    const ids = new Set(r.got.map(g => g.delivery))
    expect(ids.size).toBe(20)
  }, 30_000)

  test('a slow receiver (3 s per answer) and one that refuses connections: sends unaffected, retries bounded by the queue', async () => {
    const slow = await receiver(SECRET, { delayMs: () => 3000 })
    closers.push(slow.close)
    const server = await startServer({ webhooks: { endpoints: [{ url: slow.url, secret: SECRET, events: ['message.stored'] }, { url: 'http://127.0.0.1:1/nobody', secret: SECRET, events: ['message.stored'] }], timeoutMs: 500, queueMax: 30, concurrency: 2 } })
    closers.push(async () => await server.stop())
    for (const u of ['alice', 'bob']) await addUser(server, u)
    const alice = await connect(server, 'alice', 'a')
    const { conv } = await alice.request('direct', { user: 'bob' })
    const median = await sendLatency(alice, conv, 'slow')
    console.log(`webhooks: median send latency ${median.toFixed(1)} ms with a slow and a refusing receiver`)
    expect(median).toBeLessThan(400) // (on the send path, each send would wait for the 500 ms timeout)
    // 40 deliveries asked for (20 messages x 2 endpoints), at most 30 waiting and 2 in flight: the
    // rest dropped, counted
    expect(await server.services.webhooks?.waiting()).toBeLessThanOrEqual(30)
    expect(server.services.webhooks?.dropped).toBeGreaterThanOrEqual(8)
    await alice.end()
  }, 30_000)

  test('before-send: allow, rewrite, refuse; a timeout fails open or closed as configured', async () => {
    const hook = await receiver(HOOK_SECRET, {
      delayMs: () => 0,
      answer: (b) => {
        const text = String(b.data.body)
        if (text.includes('spam')) return { allow: false, reason: 'looks like spam' }
        if (text.includes('darn')) return { allow: true, body: text.replace('darn', 'd**n') }
        if (text.includes('slow')) return undefined
        return { allow: true }
      }
    })
    closers.push(hook.close)
    const slowHook = await receiver(HOOK_SECRET, { delayMs: () => 2000, answer: () => ({ allow: true }) })
    closers.push(slowHook.close)
    const open = await startServer({ webhooks: { beforeSend: { url: hook.url, secret: HOOK_SECRET, timeoutMs: 300 } } })
    const closed = await startServer({ webhooks: { beforeSend: { url: slowHook.url, secret: HOOK_SECRET, timeoutMs: 300, failOpen: false } } })
    closers.push(async () => await open.stop(), async () => await closed.stop())
    for (const server of [open, closed]) for (const u of ['alice', 'bob']) await addUser(server, u)
    const alice = await connect(open, 'alice', 'a')
    const { conv } = await alice.request('direct', { user: 'bob' })
    expect(await alice.request('send', { conv, msgId: 'ok', kind: 'text', body: 'hello' })).toMatchObject({ seq: 1 })
    expect(await alice.request('send', { conv, msgId: 'rw', kind: 'text', body: 'darn it' })).toMatchObject({ seq: 2 })
    const refused = await alice.requestRaw('send', { conv, msgId: 'sp', kind: 'text', body: 'buy spam' })
    expect(refused.ok ? 'ok' : refused.error).toMatchObject({ code: 'REFUSED', message: expect.stringContaining('looks like spam') })
    const page = await alice.request('history', { conv, after: 0 }) as { messages: Array<{ body: unknown }>, lastSeq: number }
    expect(page.messages.map(m => m.body)).toEqual(['hello', 'd**n it'])
    expect(hook.got.every(g => g.signatureOk && g.event === 'message.before-send')).toBe(true)
    expect(hook.got[0]?.body.data).toMatchObject({ conv, from: 'alice', msgId: 'ok', kind: 'text', body: 'hello' })
    await alice.end()
    // failing closed on a hook that takes 2 s: refused after ~300 ms, nothing stored
    const bob = await connect(closed, 'alice', 'b')
    const c2 = (await bob.request('direct', { user: 'bob' })).conv
    const t0 = performance.now()
    const late = await bob.requestRaw('send', { conv: c2, msgId: 'late', kind: 'text', body: 'x' })
    const waited = performance.now() - t0
    expect(late.ok ? 'ok' : late.error.code).toBe('REFUSED')
    expect(waited).toBeLessThan(1500)
    expect((await bob.request('history', { conv: c2 }) as { lastSeq: number }).lastSeq).toBe(0)
    await bob.end()
  }, 30_000)

  test('hostile: one user\'s burst neither switches the check off nor blocks others; resends skip the hook; answers are held to the request limits', async () => {
    let mode = 'normal'
    const hook = await receiver(HOOK_SECRET, {
      delayMs: () => 300,
      answer: (b) => {
        const text = String(b.data.body)
        if (text.includes('bad')) return { allow: false, reason: 'bad word' }
        if (mode === 'huge') return { allow: true, body: 'y'.repeat(200_000) }
        if (mode === 'deep') return { allow: true, body: JSON.parse('['.repeat(40) + ']'.repeat(40)) as unknown }
        return { allow: true }
      }
    })
    closers.push(hook.close)
    const server = await startServer({ webhooks: { beforeSend: { url: hook.url, secret: HOOK_SECRET, timeoutMs: 2000 } } })
    closers.push(async () => await server.stop())
    for (const u of ['mallory', 'bob']) await addUser(server, u)
    const mallory = await connect(server, 'mallory', 'm')
    const bob = await connect(server, 'bob', 'b')
    const { conv } = await mallory.request('direct', { user: 'bob' })
    // 40 at once, one of them bad: at most 4 of hers wait for the hook, the rest are refused for
    // the rate (never stored unchecked), and bob's bad message in the middle is still checked
    const burst = Promise.all(Array.from({ length: 40 }, async (_, i) => await mallory.requestRaw('send', { conv, msgId: `b${i}`, kind: 'text', body: i === 39 ? 'bad hidden in burst' : `fine ${i}` })))
    const bobs = await bob.requestRaw('send', { conv, msgId: 'bob-bad', kind: 'text', body: 'a bad word from bob' })
    const replies = await burst
    expect(bobs.ok ? 'ok' : bobs.error.code).toBe('REFUSED')
    expect(replies.every(r => r.ok || r.error.code === 'RATE_LIMITED' || r.error.code === 'REFUSED')).toBe(true)
    expect(replies.filter(r => !r.ok && r.error.code === 'RATE_LIMITED').length).toBeGreaterThanOrEqual(30)
    const page = await bob.request('history', { conv, after: 0 }) as { messages: Array<{ body: unknown }> }
    expect(page.messages.map(m => String(m.body)).some(b => b.includes('bad'))).toBe(false)
    // a resend of a stored message: a duplicate at once, the hook not asked (it would refuse now)
    const first = await mallory.request('send', { conv, msgId: 'again', kind: 'text', body: 'fine' })
    const asked = hook.got.length
    expect(await mallory.request('send', { conv, msgId: 'again', kind: 'text', body: 'bad now' })).toMatchObject({ seq: first.seq, duplicate: true })
    expect(hook.got.length).toBe(asked)
    // a rewritten body beyond the request limits (size, nesting) is not stored: fail open keeps the message as sent
    mode = 'huge'
    const huge = await mallory.request('send', { conv, msgId: 'h', kind: 'text', body: 'as sent 1' })
    mode = 'deep'
    const deep = await mallory.request('send', { conv, msgId: 'd', kind: 'custom', body: { as: 'sent' } })
    const after = await bob.request('history', { conv, after: huge.seq - 1 }) as { messages: Array<{ seq: number, body: unknown }> }
    expect(after.messages.filter(m => m.seq === huge.seq || m.seq === deep.seq).map(m => m.body)).toEqual(['as sent 1', { as: 'sent' }])
    await mallory.end()
    await bob.end()
  }, 30_000)

  test('bad webhook configuration fails at start-up naming the field', async () => {
    await expect(startServer({ webhooks: { endpoints: [{ url: 'ftp://x', secret: SECRET, events: ['message.stored'] }] } })).rejects.toThrow(/webhooks\.endpoints\.0\.url/)
    await expect(startServer({ webhooks: { endpoints: [{ url: 'http://x', secret: 'short', events: ['message.stored'] }] } })).rejects.toThrow(/webhooks\.endpoints\.0\.secret/)
    await expect(startServer({ webhooks: { endpoints: [{ url: 'http://x', secret: SECRET, events: ['message.sent'] }] } })).rejects.toThrow(/webhooks\.endpoints\.0\.events/)
  })
})
