/**
 * Offline push against a local Web Push service written here (it checks the VAPID JWT and decrypts
 * the RFC 8291 payload with the subscription's private key) and a local push gateway (it checks
 * the signature): who gets a push and when (offline only, one per burst per conversation, muted
 * only when mentioned), targets pruned on 404/410, a dead gateway retried, and the push-* requests'
 * answers to bad and hostile input.
 */
import { startServer, addUser, connect, url, type ImClient } from './helpers/im.js'
import { ImClient as SdkClient } from '../src/client/index.js'
import { LocalPushService, GatewayReceiver } from './helpers/push-service.js'
import type { MqimServer } from '../src/server.js'

const GATEWAY_SECRET = 'gateway-secret-0123456789-abcdefghijkl'

/** Push settings for tests: quick windows, the local push service allowed. */
function pushConfig (extra: Record<string, unknown> = {}, webPush: Record<string, unknown> = {}, gateways: unknown[] = []): Record<string, unknown> {
  return { push: { delayMs: 150, collapseMs: 1500, ...extra, webPush: { allowedHosts: ['127.0.0.1:*'], allowHttp: true, ...webPush }, gateways } }
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

describe('offline push', () => {
  let service: LocalPushService
  let gateway: GatewayReceiver
  let server: MqimServer
  const clients: ImClient[] = []

  beforeAll(async () => {
    service = await LocalPushService.start()
    gateway = await GatewayReceiver.start(GATEWAY_SECRET)
    server = await startServer(pushConfig({}, {}, [{ name: 'app', url: gateway.url, secret: GATEWAY_SECRET }]))
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank', 'gina', 'hank']) await addUser(server, u)
  })
  afterAll(async () => {
    for (const c of clients) await c.end().catch(() => {})
    await server.stop()
    await service.close()
    await gateway.close()
  })

  async function online (user: string, device = 'd1'): Promise<ImClient> {
    const c = await connect(server, user, device)
    clients.push(c)
    return c
  }

  test('push-register answers bad and hostile targets with a clear error, and keeps nothing of them', async () => {
    const bob = await online('bob', 'probe')
    const good = service.subscribe().json
    const bad = async (body: Record<string, unknown>): Promise<{ code: string, message: string }> => {
      const r = await bob.requestRaw('push-register', body)
      if (r.ok) throw new Error(`accepted: ${JSON.stringify(body)}`)
      return r.error
    }
    // a host not allowed (mqim would POST there): https, other hosts, credentials, not URLs
    for (const endpoint of ['http://169.254.169.254/latest/meta-data', 'https://internal.example/push', 'http://user:pw@127.0.0.1/push/x', 'ftp://127.0.0.1/x', 'not a url', 'http://127.0.0.1.evil.example/x']) {
      const e = await bad({ webPush: { ...good, endpoint } })
      expect(e.code).toBe('BAD_REQUEST')
      expect(e.message).toMatch(/webPush\.endpoint/)
    }
    // keys: not a point on P-256, a compressed point, wrong lengths, not base64url
    const offCurve = Buffer.alloc(65, 7)
    offCurve[0] = 4
    for (const p256dh of [offCurve.toString('base64url'), Buffer.alloc(33, 2).toString('base64url'), 'AAAA', 'not base64!']) {
      const e = await bad({ webPush: { ...good, keys: { ...good.keys, p256dh } } })
      expect(e.code).toBe('BAD_REQUEST')
      expect(e.message).toMatch(/p256dh/)
    }
    expect((await bad({ webPush: { ...good, keys: { ...good.keys, auth: Buffer.alloc(15).toString('base64url') } } })).message).toMatch(/auth/)
    expect((await bad({ webPush: { ...good, extra: 1 } })).code).toBe('BAD_REQUEST')
    expect((await bad({ webPush: { ...good, endpoint: 'http://127.0.0.1/' + 'x'.repeat(3000) } })).code).toBe('BAD_REQUEST')
    // exactly one kind of target; a configured gateway; a token of printable ASCII
    expect((await bad({})).message).toMatch(/exactly one/)
    expect((await bad({ webPush: good, gateway: { name: 'app', token: 't', platform: 'ios' } })).message).toMatch(/exactly one/)
    expect((await bad({ gateway: { name: 'other', token: 't', platform: 'ios' } })).message).toMatch(/no push gateway named other \(this server has app\)/)
    expect((await bad({ gateway: { name: 'app', token: 'a b', platform: 'ios' } })).code).toBe('BAD_REQUEST')
    expect((await bad({ gateway: { name: 'app', token: 'x'.repeat(1025), platform: 'ios' } })).code).toBe('BAD_REQUEST')
    expect((await bad({ gateway: { name: 'app', token: 't', platform: 'windows-phone' } })).code).toBe('BAD_REQUEST')
    expect((await bad({ device: '../etc', gateway: { name: 'app', token: 't', platform: 'ios' } })).code).toBe('BAD_REQUEST')
    expect((await bad({ device: '__proto__x'.repeat(10), gateway: { name: 'app', token: 't', platform: 'ios' } })).code).toBe('BAD_REQUEST')
    const listed = await bob.request('push-targets', {})
    expect(listed.targets).toStrictEqual([])
    expect(listed.gateways).toStrictEqual(['app'])
    expect(listed.vapidPublicKey).toMatch(/^[A-Za-z0-9_-]{87}$/)
    // the connection survived every refusal
    expect((await bob.request('push-targets', {})).targets).toStrictEqual([])
    await bob.end()
  })

  test('targets per user are bounded; registering again replaces; unregister removes', async () => {
    const carol = await online('carol', 'probe')
    for (let i = 0; i < 10; i++) expect((await carol.request('push-register', { device: `dev${i}`, gateway: { name: 'app', token: `carol-token-${i}`, platform: 'android' } })).registered).toBe('added')
    const full = await carol.requestRaw('push-register', { device: 'dev10', gateway: { name: 'app', token: 'carol-token-10', platform: 'android' } })
    expect(full.ok ? null : full.error.code).toBe('LIMIT_REACHED')
    expect((await carol.request('push-register', { device: 'dev3', gateway: { name: 'app', token: 'carol-token-3b', platform: 'android' } })).registered).toBe('replaced')
    expect((await carol.request('push-targets', {})).targets).toHaveLength(10)
    for (let i = 0; i < 10; i++) expect((await carol.request('push-unregister', { device: `dev${i}` })).removed).toBe(true)
    expect((await carol.request('push-unregister', { device: 'dev0' })).removed).toBe(false)
    expect((await carol.request('push-targets', {})).targets).toStrictEqual([])
    await carol.end()
  })

  test('an offline member gets one push per burst per conversation: the latest message, VAPID-signed, encrypted, with the unread badge', async () => {
    const alice = await online('alice')
    const bob = await online('bob', 'phone')
    const sub = service.subscribe()
    expect((await bob.request('push-register', { webPush: sub.json })).device).toBe('phone')
    const { vapidPublicKey } = await bob.request('push-targets', {})
    await bob.end()
    const { conv } = await alice.request('direct', { user: 'bob' })
    const before = service.received.length
    // the five sent at once (one after another they could take longer than delayMs on a loaded
    // machine, and the push would go with the fourth): the push carries whichever got seq 5
    const sent = await Promise.all([1, 2, 3, 4, 5].map(async i => ({ i, seq: (await alice.request('send', { conv, msgId: `burst${i}`, kind: 'text', body: `burst message ${i}` })).seq })))
    const last = sent.find(x => x.seq === 5)?.i
    const [push] = (await service.waitFor(before + 1)).slice(before)
    await sleep(1000)
    // one push for the burst (within the collapse window), the latest message, the badge 5
    expect(service.received.length).toBe(before + 1)
    expect(service.problems).toStrictEqual([])
    expect(push?.subscription).toBe(sub.id)
    expect(push?.vapidKey).toBe(vapidPublicKey)
    expect(push?.jwt.sub).toBe('mailto:admin@localhost')
    expect(sent.map(x => x.seq).sort()).toEqual([1, 2, 3, 4, 5])
    expect(push?.payload).toMatchObject({ type: 'message', conv, convKind: 'direct', convName: null, seq: 5, from: 'alice', kind: 'text', text: `burst message ${last}`, mention: false, badge: 5 })
    expect(push?.headers.urgency).toBe('high')
    expect(String(push?.headers.topic)).toMatch(/^[A-Za-z0-9_-]{32}$/)
    // after the window, the next message is pushed again
    await sleep(600)
    await alice.request('send', { conv, msgId: 'after', kind: 'text', body: 'later' })
    const [later] = (await service.waitFor(before + 2)).slice(before + 1)
    expect(later?.payload).toMatchObject({ seq: 6, text: 'later', badge: 6 })
    // counted: the two pushes delivered, the four messages folded into the first
    const metrics = await (await fetch(`http://127.0.0.1:${server.ports.http}/metrics`)).text()
    expect(Number(/^mqim_push_total\{kind="webpush",outcome="delivered"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(2)
    expect(Number(/^mqim_push_total\{kind="any",outcome="collapsed"\} (\d+)$/m.exec(metrics)?.[1])).toBeGreaterThanOrEqual(4)
  })

  test('a member with a device online gets no push; once offline they do', async () => {
    const alice = await online('alice', 'd2')
    const dave = await online('dave', 'laptop')
    const sub = service.subscribe()
    await dave.request('push-register', { webPush: sub.json })
    const { conv } = await alice.request('direct', { user: 'dave' })
    await alice.request('send', { conv, msgId: 'seen1', kind: 'text', body: 'dave is here' })
    await dave.waitFor(() => dave.messages.some(m => m.msgId === 'seen1'), 5000, 'delivery')
    await sleep(800)
    expect(service.received.filter(r => r.subscription === sub.id)).toStrictEqual([])
    await dave.end()
    await sleep(100)
    await alice.request('send', { conv, msgId: 'seen2', kind: 'text', body: 'dave is gone' })
    await service.waitFor(service.received.filter(r => r.subscription !== sub.id).length + 1)
    expect(service.received.filter(r => r.subscription === sub.id).map(r => r.payload.text)).toStrictEqual(['dave is gone'])
  })

  test('a muted conversation gets no push unless the message mentions the member; mention pushes say so', async () => {
    const alice = await online('alice', 'd3')
    const erin = await online('erin', 'e1')
    const sub = service.subscribe()
    await erin.request('push-register', { webPush: sub.json })
    const { conv } = await alice.request('create-group', { name: 'Team', members: ['erin'] })
    await erin.request('mute', { conv, muted: true })
    await erin.end()
    await alice.request('send', { conv, msgId: 'm1', kind: 'text', body: 'nothing for erin' })
    await sleep(2000)
    expect(service.received.filter(r => r.subscription === sub.id)).toStrictEqual([])
    await alice.request('send', { conv, msgId: 'm2', kind: 'text', body: '@erin look', mentions: ['erin'] })
    await alice.request('send', { conv, msgId: 'm3', kind: 'text', body: 'and another plain one' })
    const deadline = Date.now() + 5000
    while (!service.received.some(r => r.subscription === sub.id) && Date.now() < deadline) await sleep(50)
    const mine = service.received.filter(r => r.subscription === sub.id)
    expect(mine).toHaveLength(1)
    // the mention is what is shown, though a later message came in the same burst; the muted
    // conversation does not count in the badge
    expect(mine[0]?.payload).toMatchObject({ conv, convKind: 'group', convName: 'Team', seq: 2, text: '@erin look', mention: true, badge: 0 })
    expect(mine[0]?.headers.urgency).toBe('high')
  })

  test('a subscription registered by another account moves there at once: the first account\'s messages no longer reach that browser', async () => {
    const alice = await online('alice', 'd5')
    const shared = service.subscribe()
    const dave = await online('dave', 'shared-browser')
    await dave.request('push-register', { webPush: shared.json })
    await dave.end()
    const { conv } = await alice.request('direct', { user: 'dave' })
    await alice.request('send', { conv, msgId: 'mv1', kind: 'text', body: 'for dave, before' })
    const deadline = Date.now() + 5000
    while (!service.received.some(r => r.subscription === shared.id) && Date.now() < deadline) await sleep(50)
    expect(service.received.filter(r => r.subscription === shared.id).map(r => r.payload.text)).toStrictEqual(['for dave, before'])
    // the same browser now logs in as erin and registers the same subscription
    const erin = await online('erin', 'shared-browser')
    expect(await erin.request('push-register', { webPush: shared.json })).toStrictEqual({ device: 'shared-browser', registered: 'added' })
    await erin.end()
    await sleep(1600)
    await alice.request('send', { conv, msgId: 'mv2', kind: 'text', body: 'for dave, after' })
    await sleep(1500)
    // dave's cached targets were dropped: nothing of his reaches erin's browser
    expect(service.received.filter(r => r.subscription === shared.id).map(r => r.payload.text)).toStrictEqual(['for dave, before'])
    expect((await server.services.meta.pushTargetsOf(['dave'])).map(t => t.device)).not.toContain('shared-browser')
    expect((await server.services.meta.pushTargetsOf(['erin'])).map(t => t.device)).toContain('shared-browser')
  })

  test('targets their push service refuses (500) back off alone: another user\'s push to the same service arrives at once, and the queue holds one push per target', async () => {
    const alice = await online('alice', 'd6')
    const gina = await online('gina', 'g')
    const failing = [0, 1, 2].map(() => service.subscribe())
    for (const [i, f] of failing.entries()) {
      service.statusFor.set(f.id, 500)
      await gina.request('push-register', { device: `g${i}`, webPush: f.json })
    }
    await gina.end()
    const hank = await online('hank', 'h')
    const ok = service.subscribe()
    await hank.request('push-register', { webPush: ok.json })
    await hank.end()
    // gina gets messages in five conversations, again and again; hank one message now and then
    const groups: string[] = []
    for (let i = 0; i < 5; i++) groups.push((await alice.request('create-group', { name: `busy ${i}`, members: ['gina'] })).conv)
    const { conv: toHank } = await alice.request('direct', { user: 'hank' })
    const latencies: number[] = []
    for (let round = 0; round < 4; round++) {
      for (const [i, conv] of groups.entries()) await alice.request('send', { conv, msgId: `busy${round}x${i}`, kind: 'text', body: 'for gina' })
      const before = service.received.filter(r => r.subscription === ok.id).length
      const t0 = Date.now()
      await alice.request('send', { conv: toHank, msgId: `hank${round}`, kind: 'text', body: `for hank ${round}` })
      const deadline = Date.now() + 5000
      while (service.received.filter(r => r.subscription === ok.id).length === before && Date.now() < deadline) await sleep(20)
      latencies.push(Date.now() - t0)
      await sleep(1600)
    }
    console.log(`push to hank while gina's three targets fail with 500: ${latencies.join(', ')} ms (delayMs 150)`)
    expect(Math.max(...latencies)).toBeLessThan(2000)
    // one job per target: gina's three (backing off) at most, whatever she was sent
    expect(await server.services.push?.queued()).toBeLessThanOrEqual(3)
    expect(service.received.some(r => failing.some(f => f.id === r.subscription))).toBe(false)
  })

  test('404 and 410 remove the target; a gateway push is signed; a gateway that is down is retried, sends unaffected', async () => {
    const alice = await online('alice', 'd4')
    const frank = await online('frank', 'phone2')
    const gone = service.subscribe()
    service.statusFor.set(gone.id, 410)
    await frank.request('push-register', { device: 'old-browser', webPush: gone.json })
    await frank.request('push-register', { device: 'phone2', gateway: { name: 'app', token: 'frank-apns-token', platform: 'ios' } })
    await frank.end()
    let down = true
    gateway.status = () => down ? 503 : 200
    const { conv } = await alice.request('create-group', { name: 'Gone', members: ['frank'] })
    const t0 = performance.now()
    await alice.request('send', { conv, msgId: 'g1', kind: 'text', body: 'to the gateway' })
    const sendMs = performance.now() - t0
    // the 410 removed the browser; the gateway was tried and refused (read from the store: a
    // connection of frank's would make him online)
    const devices = async (): Promise<string[]> => (await server.services.meta.pushTargetsOf(['frank'])).map(t => t.device)
    const deadline = Date.now() + 5000
    while (((await devices()).length > 1 || gateway.attempts === 0) && Date.now() < deadline) await sleep(100)
    expect(await devices()).toStrictEqual(['phone2'])
    expect(gateway.received).toStrictEqual([])
    expect(sendMs).toBeLessThan(2000)
    down = false
    const [got] = await gateway.waitFor(1, 10_000)
    expect(got?.verified).toBe(true)
    expect(got?.body).toMatchObject({ user: 'frank', device: 'phone2', token: 'frank-apns-token', platform: 'ios', notification: { conv, convName: 'Gone', text: 'to the gateway', from: 'alice' } })
    expect(got?.delivery).toBe(got?.body.id)
    expect(gateway.attempts).toBeGreaterThanOrEqual(2)
  })
})

describe('offline push: the SDK', () => {
  test('pushRegister, pushTargets and pushUnregister; a refusal is an ImClientError with the code', async () => {
    const service = await LocalPushService.start()
    const server = await startServer(pushConfig({}, {}, [{ name: 'app', url: 'http://127.0.0.1:1/unused', secret: GATEWAY_SECRET }]))
    try {
      await addUser(server, 'sdk')
      const client = await SdkClient.connect({ url: url(server, 'ws'), userId: 'sdk', password: 'password-sdk', deviceId: 'tab' })
      const sub = service.subscribe()
      expect(await client.pushRegister({ webPush: sub.json })).toStrictEqual({ device: 'tab', registered: 'added' })
      expect(await client.pushRegister({ gateway: { name: 'app', token: 'tok', platform: 'other' } }, 'phone')).toStrictEqual({ device: 'phone', registered: 'added' })
      const listed = await client.pushTargets()
      expect(listed.targets.map(t => [t.device, t.kind, t.endpoint ?? t.token])).toStrictEqual([['phone', 'gateway', 'tok'], ['tab', 'webpush', sub.json.endpoint]])
      expect(listed.gateways).toStrictEqual(['app'])
      await expect(client.pushRegister({ gateway: { name: 'nope', token: 'tok', platform: 'ios' } })).rejects.toMatchObject({ code: 'BAD_REQUEST' })
      expect(await client.pushUnregister('phone')).toStrictEqual({ device: 'phone', removed: true })
      expect(await client.pushUnregister()).toStrictEqual({ device: 'tab', removed: true })
      expect((await client.pushTargets()).targets).toStrictEqual([])
      await client.close()
    } finally {
      await server.stop()
      await service.close()
    }
  })
})

describe('offline push: switches', () => {
  test('includeText false sends no text; a server with push off refuses push-register', async () => {
    const service = await LocalPushService.start()
    const quiet = await startServer(pushConfig({ includeText: false }))
    const off = await startServer({ push: { enabled: false } })
    try {
      for (const s of [quiet, off]) for (const u of ['alice', 'bob']) await addUser(s, u)
      const bob = await connect(quiet, 'bob', 'b')
      const sub = service.subscribe()
      await bob.request('push-register', { webPush: sub.json })
      await bob.end()
      const alice = await connect(quiet, 'alice', 'a')
      const { conv } = await alice.request('direct', { user: 'bob' })
      await alice.request('send', { conv, msgId: 'secret', kind: 'text', body: 'the secret text' })
      const [push] = await service.waitFor(1)
      expect(push?.payload).toMatchObject({ conv, from: 'alice', seq: 1 })
      expect(push?.payload).not.toHaveProperty('text')
      await alice.end()
      const offBob = await connect(off, 'bob', 'b')
      const r = await offBob.requestRaw('push-register', { webPush: sub.json })
      expect(r.ok ? null : r.error.code).toBe('FORBIDDEN')
      await offBob.end()
    } finally {
      await quiet.stop()
      await off.stop()
      await service.close()
    }
  })
})
