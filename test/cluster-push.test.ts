/**
 * Offline push on two nodes (Redis + MongoDB + MySQL): one push per stored message however many
 * nodes there are, the collapse window held across nodes, one VAPID key for all nodes, and pushes
 * queued by a node that stops are sent by the other (the queue is in Redis).
 */
import { clusterOverrides } from './helpers/cluster.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import { GatewayReceiver } from './helpers/push-service.js'
import type { MqimServer } from '../src/server.js'

const SECRET = 'cluster-gateway-secret-0123456789-abcdef'
const HOOK_SECRET = 'cluster-webhook-secret-0123456789-abcdef'
const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

describe('offline push on two nodes', () => {
  let n1: MqimServer
  let n2: MqimServer
  let gateway: GatewayReceiver
  let hooks: GatewayReceiver
  const clients: ImClient[] = []
  beforeAll(async () => {
    gateway = await GatewayReceiver.start(SECRET)
    // webhooks are signed the same way as gateway pushes: the same receiver checks them
    hooks = await GatewayReceiver.start(HOOK_SECRET)
    // (Redis database 21: no other test file uses it; subscription-repair.test.ts empties 11)
    const overrides = await clusterOverrides(21, {
      webhooks: { endpoints: [{ url: hooks.url, secret: HOOK_SECRET, events: ['message.stored'] }], timeoutMs: 500 },
      push: { delayMs: 100, collapseMs: 1500, timeoutMs: 500, webPush: { allowedHosts: ['127.0.0.1:*'], allowHttp: true }, gateways: [{ name: 'app', url: gateway.url, secret: SECRET }] }
    })
    n1 = await startServer({ ...overrides, nodeId: 'p1' })
    n2 = await startServer({ ...overrides, nodeId: 'p2' })
    for (const u of ['cp.alice', 'cp.bob', 'cp.carol', 'cp.dave']) await addUser(n1, u)
  }, 60000)
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await Promise.allSettled([n1.stop(), n2.stop()])
    await gateway.close()
    await hooks.close()
  })

  async function online (server: MqimServer, user: string, device: string): Promise<ImClient> {
    const c = await connect(server, user, device)
    clients.push(c)
    return c
  }

  test('every node signs with one VAPID key; a message stored on one node is pushed once; bursts from both nodes respect one window', async () => {
    const bob = await online(n2, 'cp.bob', 'phone')
    const probe = await online(n1, 'cp.dave', 'k')
    const k1 = (await probe.request('push-targets', {})).vapidPublicKey
    await probe.end()
    expect((await bob.request('push-targets', {})).vapidPublicKey).toBe(k1)
    await bob.request('push-register', { gateway: { name: 'app', token: 'bob-token', platform: 'android' } })
    await bob.end()
    const alice = await online(n1, 'cp.alice', 'a')
    const carol = await online(n2, 'cp.carol', 'c')
    const { conv: direct } = await alice.request('direct', { user: 'cp.bob' })
    await alice.request('send', { conv: direct, msgId: 'one', kind: 'text', body: 'just one' })
    await gateway.waitFor(1)
    await sleep(1500)
    expect(gateway.received.map(r => r.body.notification)).toMatchObject([{ conv: direct, text: 'just one' }])

    // alice (n1) and carol (n2) send to the group at once: at most one push per window
    const { conv } = await alice.request('create-group', { name: 'Both nodes', members: ['cp.bob', 'cp.carol'] })
    const before = gateway.received.length
    const arrivals: number[] = []
    const watch = setInterval(() => { while (arrivals.length < gateway.received.length - before) arrivals.push(Date.now()) }, 5)
    const sentAt = Date.now()
    await Promise.all([
      ...[1, 2, 3].map(async i => await alice.request('send', { conv, msgId: `a${i}`, kind: 'text', body: `alice ${i}` })),
      ...[1, 2, 3].map(async i => await carol.request('send', { conv, msgId: `c${i}`, kind: 'text', body: `carol ${i}` }))
    ])
    await sleep(4000)
    clearInterval(watch)
    const group = gateway.received.slice(before).map(r => r.body.notification as { conv: string, seq: number })
    expect(group.length).toBeGreaterThanOrEqual(1)
    expect(group.length).toBeLessThanOrEqual(2)
    expect(group.every(n => n.conv === conv)).toBe(true)
    // a second push waits for the window (1.5 s), which the first one's flush opened after the sends
    // (measured from the sends, not the first push, whose delivery may itself have been slow)
    if (arrivals.length === 2) expect((arrivals[1] as number) - sentAt).toBeGreaterThanOrEqual(1500)
    // every push was one gateway request: no node repeated another's
    expect(new Set(gateway.received.map(r => r.delivery)).size).toBe(gateway.received.length)
    expect(gateway.received.every(r => r.verified)).toBe(true)
  })

  test('pushes and webhook deliveries queued by a node that stops are made by the other node once their receivers are back', async () => {
    const dave = await online(n1, 'cp.dave', 'phone')
    await dave.request('push-register', { gateway: { name: 'app', token: 'dave-token', platform: 'ios' } })
    await dave.end()
    gateway.status = () => 503
    hooks.status = () => 503
    const alice = await online(n1, 'cp.alice', 'a2')
    const { conv } = await alice.request('direct', { user: 'cp.dave' })
    const attemptsBefore = gateway.attempts
    await alice.request('send', { conv, msgId: 'queued', kind: 'text', body: 'sent while the gateway is down' })
    const deadline = Date.now() + 5000
    while (gateway.attempts === attemptsBefore && Date.now() < deadline) await sleep(50)
    expect(gateway.attempts).toBeGreaterThan(attemptsBefore)
    await alice.end()
    await n1.stop()
    const before = gateway.received.length
    const hooksBefore = hooks.received.length
    gateway.status = () => 200
    hooks.status = () => 200
    const [got] = (await gateway.waitFor(before + 1, 20_000)).slice(before)
    await hooks.waitFor(hooksBefore + 1, 20_000)
    const stored = hooks.received.slice(hooksBefore).map(r => r.body as { event: string, data: { conv: string, msgId: string } })
    expect(stored.filter(r => r.data.msgId === 'queued')).toMatchObject([{ event: 'message.stored', data: { conv, msgId: 'queued' } }])
    expect(hooks.received.every(r => r.verified)).toBe(true)
    expect(got?.body).toMatchObject({ user: 'cp.dave', token: 'dave-token', notification: { conv, text: 'sent while the gateway is down' } })
    await sleep(1000)
    expect(gateway.received.filter(r => (r.body.user === 'cp.dave'))).toHaveLength(1)
  }, 40_000)
})
