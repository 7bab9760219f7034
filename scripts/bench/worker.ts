/**
 * Load-generator worker: a child process of the runner that holds many mqtt.js clients
 * (MQTT 3.1.1 over TCP, TCP_NODELAY), sends with a bounded in-flight window (optionally paced),
 * and measures send -> deliver latency from the timestamp at the start of each text body.
 * Commands arrive over IPC (see lib/protocol.ts); the worker exits when the runner goes away.
 */
import mqtt, { type MqttClient } from 'mqtt'
import { Histogram } from './lib/hist.js'
import { serveIpc } from './lib/ipc.js'
import type { ClientSpec, Command, ConnectResult, Counters, Report, SenderSpec } from './lib/protocol.js'

const nowMs = (): number => performance.timeOrigin + performance.now()

function newCounters (): Counters {
  return { sent: 0, acked: 0, failed: 0, failedCodes: {}, publishErrors: 0, received: 0, peerReceived: 0, clientErrors: 0, latency: new Histogram().toData() }
}

class Tally {
  c = newCounters()
  hist = new Histogram()
  snapshot (): Counters { return { ...this.c, failedCodes: { ...this.c.failedCodes }, latency: this.hist.toData() } }
}

const totals = new Tally()
let windowTally = new Tally()
let windowStart = performance.now()
const both = (f: (t: Tally) => void): void => { f(totals); f(windowTally) }

interface Live { spec: ClientSpec, client: MqttClient, replyPrefix: string, fromNeedle: Buffer, ended: boolean, sender: Sender | null }
const clients = new Map<string, Live>()
let closing = false

const BODY = Buffer.from('"body":"')
const OK_FALSE = Buffer.from('"ok":false')
const CODE = Buffer.from('"code":"')
const MSG_ID = Buffer.from('"msgId":"')
const REQ_ID = Buffer.from('"id":"')
const SEQ = Buffer.from('"seq":')
const TEXT_KIND = Buffer.from('"kind":"text"')

/** The number after "seq": in an envelope. */
function seqOf (payload: Buffer): number {
  const at = payload.indexOf(SEQ)
  if (at < 0) return 0
  const start = at + SEQ.length
  let end = start
  while (end < payload.length && payload[end] !== undefined && (payload[end] as number) >= 0x30 && (payload[end] as number) <= 0x39) end++
  const n = Number(payload.toString('latin1', start, end))
  return Number.isSafeInteger(n) ? n : 0
}

/** The number n of "<prefix>-<n>" or "<n>" in the JSON string field starting after `needle`. */
function numberAfter (payload: Buffer, needle: Buffer): number {
  const at = payload.indexOf(needle)
  if (at < 0) return NaN
  const start = at + needle.length
  const end = payload.indexOf(0x22, start)
  if (end < 0) return NaN
  const text = payload.toString('latin1', start, end)
  return Number(text.slice(text.lastIndexOf('-') + 1))
}

function onMessage (live: Live, topic: string, payload: Buffer): void {
  if (topic.startsWith(live.replyPrefix)) {
    // a reply to one of our requests: only failures matter here
    if (payload.indexOf(OK_FALSE) >= 0) {
      const at = payload.indexOf(CODE)
      const code = at < 0 ? 'UNKNOWN' : payload.toString('latin1', at + CODE.length, payload.indexOf(0x22, at + CODE.length))
      both(t => { t.c.failed++; t.c.failedCodes[code] = (t.c.failedCodes[code] ?? 0) + 1 })
      // a failed send is never delivered: it leaves the window now
      if (live.sender !== null) release(live.sender, numberAfter(payload, REQ_ID), 'echo')
    }
    return
  }
  const echo = payload.indexOf(live.fromNeedle) >= 0
  both(t => { t.c.received++ })
  if (echo) {
    const s = live.sender
    if (s !== null) {
      release(s, numberAfter(payload, MSG_ID), 'echo')
      if (s.spec.changeEvery != null && payload.indexOf(TEXT_KIND) >= 0) s.lastOwnSeq = Math.max(s.lastOwnSeq, seqOf(payload))
    }
    return
  }
  const at = payload.indexOf(BODY)
  const sentAt = at < 0 ? NaN : parseFloat(payload.toString('latin1', at + BODY.length, at + BODY.length + 24))
  const lat = nowMs() - sentAt
  both(t => {
    t.c.peerReceived++
    if (Number.isFinite(lat)) t.hist.add(lat)
  })
}

function connectOne (spec: ClientSpec): Promise<void> {
  return new Promise((resolve, reject) => {
    const client = mqtt.connect(spec.url, {
      clientId: spec.clientId,
      username: spec.username,
      password: spec.password,
      protocolVersion: 4,
      clean: spec.clean,
      reconnectPeriod: 0,
      connectTimeout: 60_000,
      keepalive: 120,
      resubscribe: false
    })
    let settled = false
    const fail = (err: Error): void => {
      if (!settled) { settled = true; client.end(true); reject(err) }
    }
    client.once('error', fail)
    client.once('connect', () => {
      const stream = client.stream as { setNoDelay?: (v: boolean) => void }
      stream.setNoDelay?.(true)
      const device = spec.clientId.slice(spec.clientId.indexOf(':') + 1)
      const live: Live = { spec, client, replyPrefix: `im/u/${spec.me}/r/${device}`, fromNeedle: Buffer.from(`"from":"${spec.me}"`), ended: false, sender: null }
      client.on('message', (topic, payload) => onMessage(live, topic, payload))
      const done = (): void => {
        settled = true
        client.off('error', fail)
        client.on('error', () => { if (!closing && !live.ended) both(t => { t.c.clientErrors++ }) })
        client.on('close', () => { if (!closing && !live.ended) both(t => { t.c.clientErrors++ }) })
        clients.set(spec.key, live)
        resolve()
      }
      if (spec.subscribe.length === 0) { done(); return }
      client.subscribe(spec.subscribe, { qos: spec.subscribeQos ?? 1 }, (err, granted) => {
        if (err) { fail(err); return }
        if (granted?.some(g => g.qos === 128)) { fail(new Error(`subscription refused for ${spec.clientId}`)); return }
        done()
      })
    })
  })
}

async function connectAll (specs: ClientSpec[], concurrency: number): Promise<ConnectResult> {
  const started = performance.now()
  const hist = new Histogram()
  const errors: string[] = []
  let failed = 0
  const queue = specs.values() // shared by the lanes: each spec is taken by one of them
  const lane = async (): Promise<void> => {
    for (const spec of queue) {
      const t0 = performance.now()
      try {
        await connectOne(spec)
        hist.add(performance.now() - t0)
      } catch (err) {
        failed++
        if (errors.length < 5) errors.push(`${spec.clientId}: ${(err as Error).message}`)
      }
    }
  }
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, specs.length)) }, lane))
  return { connected: specs.length - failed, failed, errors, elapsedMs: performance.now() - started, connectLatency: hist.toData() }
}

interface Sender {
  spec: SenderSpec
  live: Live
  n: number
  /** numbers of the messages in flight */
  outstanding: Set<number>
  tokens: number
  pad: string
  /** The seq of the latest own message seen come back (a target for changes); 0: none yet. */
  lastOwnSeq: number
  /** Changes sent so far (alternating edit, react, edit, unreact ...). */
  changes: number
}

const senders: Sender[] = []
let sending = false
let pacer: NodeJS.Timeout | null = null
let lastTick = 0
let idleWaiters: Array<() => void> = []

function inflightTotal (): number {
  let n = 0
  for (const s of senders) n += s.outstanding.size
  return n
}

function senderDone (s: Sender): boolean {
  return s.spec.count !== null && s.n >= s.spec.count && s.outstanding.size === 0
}

function checkIdle (): void {
  if (idleWaiters.length === 0) return
  const idle = sending ? senders.every(senderDone) : inflightTotal() === 0
  if (!idle) return
  const w = idleWaiters
  idleWaiters = []
  for (const f of w) f()
}

function release (s: Sender, n: number, how: 'echo' | 'ack' | 'error'): void {
  if (how !== 'error' && how !== s.spec.release) return
  if (!s.outstanding.delete(n)) return
  pump(s)
  checkIdle()
}

function sendOne (s: Sender): void {
  const n = ++s.n
  const spec = s.spec
  const body = nowMs().toFixed(3) + '|' + s.pad
  let topic = spec.topic
  let payload = spec.mode === 'mqim'
    ? `{"id":"${n}","conv":"${spec.conv}","msgId":"${spec.idPrefix}-${n}","kind":"text","body":"${body}"}`
    : `{"conv":"${spec.conv}","seq":${n},"msgId":"${spec.idPrefix}-${n}","from":"${spec.from}","ts":${Date.now()},"kind":"text","body":"${body}"}`
  if (spec.mode === 'mqim' && spec.changeEvery != null && n % spec.changeEvery === 0 && s.lastOwnSeq > 0) {
    // a change of my latest message: edit, react, edit, take the reaction back, ...
    const k = s.changes++
    const head = `{"id":"${n}","conv":"${spec.conv}","msgId":"${spec.idPrefix}-${n}","target":${s.lastOwnSeq}`
    topic = k % 2 === 0 ? 'im/req/edit' : 'im/req/react'
    payload = k % 2 === 0 ? `${head},"body":"${body}"}` : `${head},"emoji":"👍","remove":${k % 4 === 3}}`
  }
  s.outstanding.add(n)
  both(t => { t.c.sent++ })
  s.live.client.publish(topic, payload, { qos: 1 }, (err) => {
    if (err) {
      both(t => { t.c.publishErrors++ })
      release(s, n, 'error')
    } else {
      both(t => { t.c.acked++ })
      release(s, n, 'ack')
    }
  })
}

function pump (s: Sender): void {
  if (!sending) return
  const spec = s.spec
  while (s.outstanding.size < spec.window && (spec.count === null || s.n < spec.count)) {
    if (spec.rate !== null) {
      if (s.tokens < 1) return
      s.tokens -= 1
    }
    sendOne(s)
  }
}

function start (specs: SenderSpec[]): void {
  for (const spec of specs) {
    const live = clients.get(spec.key)
    if (live === undefined) throw new Error(`no connected client ${spec.key}`)
    const padLen = Math.max(0, spec.bodyBytes - 15)
    // paced senders start at a random phase, so that they do not all send in the same tick
    const s: Sender = { spec, live, n: 0, outstanding: new Set(), tokens: spec.rate !== null ? Math.random() : 0, pad: 'x'.repeat(padLen), lastOwnSeq: 0, changes: 0 }
    live.sender = s
    senders.push(s)
  }
  sending = true
  if (senders.some(s => s.spec.rate !== null)) {
    lastTick = performance.now()
    pacer = setInterval(() => {
      const t = performance.now()
      const dt = (t - lastTick) / 1000
      lastTick = t
      for (const s of senders) {
        if (s.spec.rate === null) continue
        // at most 100 ms of backlog: a sender that fell behind does not burst to catch up
        s.tokens = Math.min(s.tokens + s.spec.rate * dt, Math.max(1, s.spec.rate * 0.1))
        pump(s)
      }
    }, 2)
  }
  // spread the first sends over a few ms so that the clients do not all fire at once
  senders.forEach((s, i) => setTimeout(() => pump(s), i % 20))
}

function report (): Report {
  return { window: windowTally.snapshot(), totals: totals.snapshot(), inflight: inflightTotal(), elapsedMs: performance.now() - windowStart }
}

async function waitIdle (timeoutMs: number): Promise<void> {
  await new Promise<void>(resolve => {
    const timer = setTimeout(() => { idleWaiters = idleWaiters.filter(f => f !== done); resolve() }, timeoutMs)
    const done = (): void => { clearTimeout(timer); resolve() }
    idleWaiters.push(done)
    checkIdle()
  })
}

async function handle (c: Command): Promise<unknown> {
  switch (c.cmd) {
    case 'connect': return await connectAll(c.clients, c.concurrency)
    case 'start': start(c.senders); return null
    case 'mark':
      windowTally = new Tally()
      windowStart = performance.now()
      return null
    case 'report': return report()
    case 'waitDone':
      await waitIdle(c.timeoutMs)
      return report()
    case 'stop': {
      sending = false
      if (pacer !== null) { clearInterval(pacer); pacer = null }
      await waitIdle(c.drainMs)
      const r = report()
      for (const x of senders) x.live.sender = null
      senders.length = 0
      return r
    }
    case 'reset':
      // end every client and forget all state; the process stays for the next measurement
      closing = true
      sending = false
      if (pacer !== null) { clearInterval(pacer); pacer = null }
      senders.length = 0
      await Promise.all([...clients.values()].map(l => new Promise<void>(resolve => {
        l.ended = true
        const timer = setTimeout(resolve, 5000)
        l.client.end(true, {}, () => { clearTimeout(timer); resolve() })
      })))
      clients.clear()
      totals.c = newCounters()
      totals.hist = new Histogram()
      windowTally = new Tally()
      closing = false
      return null
  }
}

serveIpc('worker.ts', handle)
