/**
 * The hostile scenario's attacker: a child process of the runner (scripts/bench/hostile.ts) that
 * runs one attack at a time over raw MQTT connections (lib/raw-mqtt.ts) from its own loopback
 * source address, so that the server's per-address limits see it apart from the bystander.
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
 */
import { randomBytes } from 'node:crypto'
import { sleep } from '../lib/procs.js'
import { serveIpc } from './lib/ipc.js'
import { RawMqtt, type RawOptions } from './lib/raw-mqtt.js'
import type { AttackAccount, AttackCommand, AttackReport, AttackSpec } from './lib/protocol.js'

type Endpoint = Pick<RawOptions, 'host' | 'port' | 'localAddress'>

const REQUEST_TIMEOUT_MS = 30_000

class Attack {
  running = true
  readonly counters: Record<string, number> = {}
  readonly live = new Set<RawMqtt>()
  readonly tasks: Array<Promise<void>> = []
  readonly started = performance.now()
  setupMs = 0

  constructor (readonly at: Endpoint) {}

  count (key: string, n = 1): void {
    this.counters[key] = (this.counters[key] ?? 0) + n
  }

  /** A connection tracked for `stop`. */
  open (clientId: string, account: AttackAccount | { id: string, secret: string }, connectTimeoutMs?: number): RawMqtt {
    const conn = new RawMqtt({ ...this.at, clientId, username: account.id, password: account.secret, connectTimeoutMs })
    this.live.add(conn)
    void conn.closed.then(() => this.live.delete(conn))
    return conn
  }

  /** Opens a connection and waits for its CONNACK: the connection if accepted, else null (counted; a short pause when the server refuses TCP). */
  async login (clientId: string, account: AttackAccount): Promise<RawMqtt | null> {
    const conn = this.open(clientId, account)
    try {
      const rc = await conn.connack
      if (rc === 0) return conn
      this.count(`${(clientId.split(':')[1] ?? clientId).replace(/\d+$/, '')} CONNACK ${rc}`)
    } catch (err) {
      this.count(`connect failed: ${(err as Error).message}`)
    }
    conn.destroy()
    await sleep(200)
    return null
  }

  async stop (): Promise<AttackReport> {
    this.running = false
    for (const c of this.live) c.destroy()
    await Promise.allSettled(this.tasks)
    return { setupMs: this.setupMs, seconds: (performance.now() - this.started) / 1000, counters: this.counters }
  }
}

/**
 * Sends `send` requests on `conn` with `window` in flight, each followed by the next as soon as
 * its reply arrives, until the attack stops or the connection closes.
 */
async function requestLoop (attack: Attack, conn: RawMqtt, replyTopic: string, payloadOf: (n: number) => string, window: number): Promise<void> {
  const waiting = new Map<string, (code: string) => void>()
  conn.onPublish = (topic, payload) => {
    if (topic !== replyTopic) return
    let reply: { id?: unknown, ok?: boolean, error?: { code?: string } }
    try { reply = JSON.parse(payload.toString('utf8')) } catch { return }
    const done = typeof reply.id === 'string' ? waiting.get(reply.id) : undefined
    if (done === undefined) return
    waiting.delete(reply.id as string)
    done(reply.ok === true ? 'ok' : reply.error?.code ?? 'UNKNOWN')
  }
  let n = 0
  const lane = async (): Promise<void> => {
    while (attack.running && conn.isOpen) {
      const id = String(++n)
      const outcome = new Promise<string>(resolve => waiting.set(id, resolve))
      conn.publish('im/req/send', payloadOf(n))
      attack.count('requests')
      const code = await Promise.race([outcome, conn.closed.then(() => 'connection closed'), sleep(REQUEST_TIMEOUT_MS).then(() => 'no reply within 30 s')])
      waiting.delete(id)
      if (attack.running) attack.count(code === 'ok' ? 'replies ok' : `replies ${code}`)
    }
  }
  await Promise.all(Array.from({ length: window }, lane))
}

const sendPayload = (conv: string, msgId: string, n: number, body: string): string =>
  JSON.stringify({ id: String(n), conv, msgId, kind: 'text', body })

function stuckSubscriber (attack: Attack, spec: Extract<AttackSpec, { attack: 'stuck-subscriber' }>): Promise<void> {
  let ready: () => void = () => {}
  const victimReady = new Promise<void>(resolve => { ready = resolve })
  attack.tasks.push((async () => {
    while (attack.running) {
      const conn = await attack.login(`${spec.victim.id}:stuck`, spec.victim)
      if (conn === null) continue
      const granted = await conn.subscribe([`im/u/${spec.victim.id}/#`], 1)
      if (granted[0] !== 0 && granted[0] !== 1) attack.count(`victim SUBACK ${granted[0] ?? 'none'}`)
      conn.stopReading()
      attack.count('victim connections')
      ready()
      // a write to a connection the server has dropped fails: reconnect then
      const probe = setInterval(() => conn.ping(), 1000)
      await conn.closed
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
        const conn = await attack.login(`${spec.sender.id}:flood${i}`, spec.sender)
        if (conn === null) continue
        await requestLoop(attack, conn, `im/u/${spec.sender.id}/r/flood${i}`, n => sendPayload(spec.conv, `f${i}-${tag}-${n}`, n, body), 1)
        conn.destroy()
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
        const conn = attack.open(`${spec.user}:w${i}`, { id: spec.user, secret: `wrong-${i}-${n++}` }, spec.attemptTimeoutMs)
        attack.count('attempts')
        let refusedTcp = false
        try {
          const rc = await conn.connack
          if (attack.running) attack.count(`CONNACK ${rc}`)
        } catch (err) {
          const why = (err as Error).message
          if (attack.running) attack.count(`no CONNACK: ${why}`)
          refusedTcp = why === 'ECONNREFUSED' || why === 'EADDRNOTAVAIL'
        }
        conn.destroy()
        await conn.closed
        if (refusedTcp) await sleep(100) // nobody listens (the server is gone): do not spin
      }
    })())
  }
  return Promise.resolve()
}

async function subscriptions (attack: Attack, spec: Extract<AttackSpec, { attack: 'subscriptions' }>): Promise<void> {
  const filter = (k: number): string => `im/u/${spec.user.id}/x/${k}`
  /** Subscribes filters [0, upTo) on a fresh connection; returns the connection and what SUBACK granted. */
  const hold = async (upTo: number): Promise<{ conn: RawMqtt | null, granted: number }> => {
    const conn = await attack.login(`${spec.user.id}:holder`, spec.user)
    if (conn === null) return { conn: null, granted: 0 }
    let granted = 0
    for (let i = 0; i < upTo && attack.running; i += spec.filtersPerPacket) {
      const codes = await conn.subscribe(Array.from({ length: Math.min(spec.filtersPerPacket, upTo - i) }, (_, j) => filter(i + j)), 1)
      if (codes.length === 0) {
        attack.count('holder dropped by the server while subscribing')
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
      const conn = await attack.login(`${spec.user.id}:dev2`, spec.user)
      if (conn === null) continue
      await requestLoop(attack, conn, `im/u/${spec.user.id}/r/dev2`, n => sendPayload(spec.conv, `s-${tag}-${n}`, n, 'x'.repeat(100)), spec.window)
      conn.destroy()
      if (attack.running) attack.count('second device connections lost')
    }
  })())
}

let current: Attack | null = null

async function handle (c: AttackCommand): Promise<unknown> {
  switch (c.cmd) {
    case 'start': {
      if (current !== null) throw new Error('an attack is running')
      const attack = current = new Attack({ host: c.host, port: c.port, localAddress: c.localAddress })
      const spec = c.spec
      const ready = spec.attack === 'stuck-subscriber'
        ? stuckSubscriber(attack, spec)
        : spec.attack === 'wrong-passwords' ? wrongPasswords(attack, spec) : subscriptions(attack, spec)
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
