/**
 * The hostile scenario's attacker: a child process of the runner (scripts/bench/hostile.ts) that
 * runs one attack at a time over raw MQTT connections (scripts/lib/raw-mqtt.ts) from its own
 * loopback source address, so that the server's per-address limits see it apart from the bystander.
 * Commands arrive over IPC (lib/protocol.ts: AttackCommand).
 *
 *   stuck-subscriber  a victim device subscribes im/u/<victim>/# at QoS 1 and stops reading its
 *                     socket (reconnecting if the server drops it); 3 devices of another user
 *                     send it 60 KB texts, each as soon as the previous reply came back
 *   wrong-passwords   200 connections at a time log in with a wrong password; each is retried
 *                     on a fresh connection as soon as it is refused
 *   subscriptions     one device subscribes as many filters of its own subtree as SUBACK grants
 *                     (100 per SUBSCRIBE, up to 50,000) and holds them while a second device of
 *                     the same user sends requests
 *   big-pages         6 users each keep 22 history requests in flight for a page of ~1 MiB
 *   request-flood     16 devices of one user write chunks of 200 small QoS 0 publishes (half
 *                     presence requests, half to a topic that is not a request) as fast as their
 *                     sockets take them, reading (and dropping) whatever comes back
 */
import { randomBytes } from 'node:crypto'
import { replyTopic, userPrefix } from '../../src/protocol/topics.js'
import { sleep } from '../lib/procs.js'
import mqttPacket from 'mqtt-packet'
import { RawClient } from '../lib/raw-mqtt.js'
import { serveIpc } from './lib/ipc.js'
import type { AttackAccount, AttackCommand, AttackReport, AttackSpec } from './lib/protocol.js'

/** The server's MQTT port on 127.0.0.1, and the loopback address the attacker connects from. */
interface Endpoint { port: number, localAddress: string }

const REQUEST_TIMEOUT_MS = 30_000
const CONNACK_TIMEOUT_MS = 30_000

class Attack {
  running = true
  readonly counters: Record<string, number> = {}
  readonly live = new Set<RawClient>()
  readonly tasks: Array<Promise<void>> = []
  readonly started = performance.now()
  setupMs = 0

  constructor (readonly at: Endpoint) {}

  count (key: string, n = 1): void {
    this.counters[key] = (this.counters[key] ?? 0) + n
  }

  /** A connection (still opening) tracked for `stop`. */
  open (): RawClient {
    const conn = new RawClient(this.at.port, { localAddress: this.at.localAddress })
    this.live.add(conn)
    void conn.whenClosed.then(() => this.live.delete(conn))
    return conn
  }

  /** Opens a connection and waits for its CONNACK: the connection if accepted, else null (counted; a short pause when the server refuses TCP). */
  async login (account: AttackAccount, device: string): Promise<RawClient | null> {
    const conn = this.open()
    try {
      const rc = await conn.connect(account.id, device, account.secret, CONNACK_TIMEOUT_MS)
      if (rc === 0) return conn
      this.count(`${device.replace(/\d+$/, '')} CONNACK ${rc}`)
    } catch {
      this.count(`connect failed: ${await noConnack(conn)}`)
    }
    conn.end()
    await sleep(200)
    return null
  }

  async stop (): Promise<AttackReport> {
    this.running = false
    for (const c of this.live) c.end()
    await Promise.allSettled(this.tasks)
    return { setupMs: this.setupMs, seconds: (performance.now() - this.started) / 1000, counters: this.counters }
  }
}

/** Why a login got no CONNACK, as the counters name it: the socket's error code, 'closed', or 'CONNACK timeout'. */
async function noConnack (conn: RawClient): Promise<string> {
  return conn.closed ? await conn.whenClosed : 'CONNACK timeout'
}

/**
 * Sends `op` requests on `conn` (logged in as `user`:`device`) with `window` in flight, each
 * followed by the next as soon as its reply arrives, until the attack stops or the connection
 * closes. Replies are read as they come, nothing is kept.
 */
async function requestLoop (attack: Attack, conn: RawClient, user: string, device: string, bodyOf: (n: number) => Record<string, unknown>, window: number, op = 'send'): Promise<void> {
  const waiting = new Map<string, (code: string) => void>()
  const topic = replyTopic(user, device)
  conn.onPacket = p => {
    if (p.cmd !== 'publish' || p.topic !== topic) return
    let reply: { id?: unknown, ok?: boolean, error?: { code?: string } }
    try { reply = JSON.parse(p.payload.toString()) } catch { return }
    const done = typeof reply.id === 'string' ? waiting.get(reply.id) : undefined
    if (done === undefined) return
    waiting.delete(reply.id as string)
    done(reply.ok === true ? 'ok' : reply.error?.code ?? 'UNKNOWN')
  }
  let n = 0
  const lane = async (): Promise<void> => {
    while (attack.running && !conn.closed) {
      const id = String(++n)
      const outcome = new Promise<string>(resolve => waiting.set(id, resolve))
      conn.request(op, bodyOf(n))
      attack.count('requests')
      const code = await Promise.race([outcome, conn.whenClosed.then(() => 'connection closed'), sleep(REQUEST_TIMEOUT_MS).then(() => 'no reply within 30 s')])
      waiting.delete(id)
      if (attack.running) attack.count(code === 'ok' ? 'replies ok' : `replies ${code}`)
    }
  }
  await Promise.all(Array.from({ length: window }, lane))
}

const sendBody = (conv: string, msgId: string, n: number, body: string): Record<string, unknown> =>
  ({ id: String(n), conv, msgId, kind: 'text', body })

function stuckSubscriber (attack: Attack, spec: Extract<AttackSpec, { attack: 'stuck-subscriber' }>): Promise<void> {
  let ready: () => void = () => {}
  const victimReady = new Promise<void>(resolve => { ready = resolve })
  attack.tasks.push((async () => {
    while (attack.running) {
      const conn = await attack.login(spec.victim, 'stuck')
      if (conn === null) continue
      const granted = await conn.subscribe([`${userPrefix(spec.victim.id)}#`], 1).catch(() => [])
      if (granted[0] !== 0 && granted[0] !== 1) attack.count(`victim SUBACK ${granted[0] ?? 'none'}`)
      conn.stopReading()
      attack.count('victim connections')
      ready()
      // a write to a connection the server has dropped fails: reconnect then
      const probe = setInterval(() => conn.send({ cmd: 'pingreq' }), 1000)
      await conn.whenClosed
      clearInterval(probe)
      if (attack.running) attack.count('victim dropped by the server')
    }
  })())
  const body = 'x'.repeat(spec.bodyBytes)
  const tag = randomBytes(3).toString('hex')
  for (let i = 1; i <= spec.connections; i++) {
    attack.tasks.push((async () => {
      await victimReady
      while (attack.running) {
        const conn = await attack.login(spec.sender, `flood${i}`)
        if (conn === null) continue
        await requestLoop(attack, conn, spec.sender.id, `flood${i}`, n => sendBody(spec.conv, `f${i}-${tag}-${n}`, n, body), 1)
        conn.end()
        if (attack.running) attack.count('sender connections lost')
      }
    })())
  }
  return victimReady
}

function wrongPasswords (attack: Attack, spec: Extract<AttackSpec, { attack: 'wrong-passwords' }>): Promise<void> {
  for (let i = 0; i < spec.parallel; i++) {
    attack.tasks.push((async () => {
      let n = 0
      while (attack.running) {
        const conn = attack.open()
        attack.count('attempts')
        let refusedTcp = false
        try {
          const rc = await conn.connect(spec.user, `w${i}`, `wrong-${i}-${n++}`, spec.attemptTimeoutMs)
          if (attack.running) attack.count(`CONNACK ${rc}`)
        } catch {
          const why = await noConnack(conn)
          if (attack.running) attack.count(`no CONNACK: ${why}`)
          refusedTcp = why === 'ECONNREFUSED' || why === 'EADDRNOTAVAIL'
        }
        conn.end()
        await conn.whenClosed
        if (refusedTcp) await sleep(100) // nobody listens (the server is gone): do not spin
      }
    })())
  }
  return Promise.resolve()
}

async function subscriptions (attack: Attack, spec: Extract<AttackSpec, { attack: 'subscriptions' }>): Promise<void> {
  const filter = (k: number): string => `${userPrefix(spec.user.id)}x/${k}`
  /** Subscribes filters [0, upTo) on a fresh connection; returns the connection and what SUBACK granted. */
  const hold = async (upTo: number): Promise<{ conn: RawClient | null, granted: number }> => {
    const conn = await attack.login(spec.user, 'holder')
    if (conn === null) return { conn: null, granted: 0 }
    let granted = 0
    for (let i = 0; i < upTo && attack.running; i += spec.filtersPerPacket) {
      let codes: number[]
      try {
        codes = await conn.subscribe(Array.from({ length: Math.min(spec.filtersPerPacket, upTo - i) }, (_, j) => filter(i + j)), 1)
      } catch (err) {
        attack.count(conn.closed ? 'holder dropped by the server while subscribing' : `holder: ${(err as Error).message}`)
        conn.end()
        return { conn: null, granted }
      }
      const ok = codes.filter(c => c === 0 || c === 1).length
      granted += ok
      attack.count('filters granted', ok)
      attack.count('filters refused', codes.length - ok)
    }
    return { conn, granted }
  }
  attack.count('filters requested', spec.maxFilters)
  let held = await hold(spec.maxFilters)
  if (held.conn === null && held.granted > spec.filtersPerPacket && attack.running) {
    // the server closed the connection at some count: hold somewhat fewer than that on a new one
    held = await hold(held.granted - spec.filtersPerPacket)
  }
  attack.count('filters held', held.conn === null ? 0 : held.granted)
  const tag = randomBytes(3).toString('hex')
  attack.tasks.push((async () => {
    while (attack.running) {
      const conn = await attack.login(spec.user, 'dev2')
      if (conn === null) continue
      await requestLoop(attack, conn, spec.user.id, 'dev2', n => sendBody(spec.conv, `s-${tag}-${n}`, n, 'x'.repeat(100)), spec.window)
      conn.end()
      if (attack.running) attack.count('second device connections lost')
    }
  })())
}

function bigPages (attack: Attack, spec: Extract<AttackSpec, { attack: 'big-pages' }>): Promise<void> {
  for (const { account, conv } of spec.users) {
    attack.tasks.push((async () => {
      while (attack.running) {
        const conn = await attack.login(account, 'pager')
        if (conn === null) continue
        await requestLoop(attack, conn, account.id, 'pager', n => ({ id: String(n), conv, after: 0 }), spec.window, 'history')
        conn.end()
        if (attack.running) attack.count('pager connections lost')
      }
    })())
  }
  return Promise.resolve()
}

function requestFlood (attack: Attack, spec: Extract<AttackSpec, { attack: 'request-flood' }>): Promise<void> {
  const pub = (topic: string, body: string): Buffer => mqttPacket.generate({ cmd: 'publish', topic, payload: Buffer.from(body), qos: 0, retain: false, dup: false, messageId: 0 })
  const chunk = Buffer.concat(Array.from({ length: spec.packetsPerChunk }, (_, k) => k % 2 === 1
    ? pub('im/req/presence', JSON.stringify({ id: `x${k}`, users: [spec.user.id] }))
    : pub('junk/topic', 'x')))
  for (let i = 1; i <= spec.connections; i++) {
    attack.tasks.push((async () => {
      while (attack.running) {
        const conn = await attack.login(spec.user, `flood${i}`)
        if (conn === null) continue
        conn.onPacket = () => {}
        while (attack.running && await conn.writeRaw(chunk)) attack.count('packets written', spec.packetsPerChunk)
        conn.end()
        if (attack.running) attack.count('flood connections lost')
      }
    })())
  }
  return Promise.resolve()
}

let current: Attack | null = null

async function handle (c: AttackCommand): Promise<unknown> {
  switch (c.cmd) {
    case 'start': {
      if (current !== null) throw new Error('an attack is running')
      const attack = current = new Attack({ port: c.port, localAddress: c.localAddress })
      const spec = c.spec
      const ready = spec.attack === 'stuck-subscriber'
        ? stuckSubscriber(attack, spec)
        : spec.attack === 'wrong-passwords'
          ? wrongPasswords(attack, spec)
          : spec.attack === 'subscriptions'
            ? subscriptions(attack, spec)
            : spec.attack === 'big-pages' ? bigPages(attack, spec) : requestFlood(attack, spec)
      await ready
      attack.setupMs = performance.now() - attack.started
      return { setupMs: attack.setupMs }
    }
    case 'stop': {
      const attack = current
      current = null
      if (attack === null) throw new Error('no attack is running')
      return await attack.stop()
    }
  }
}

serveIpc('attacker.ts', handle)
