/**
 * Crash drill: mqim runs as a child process on MongoDB (FerretDB) + MySQL (MariaDB). Two senders
 * pipeline messages into one group over real MQTT; after ~1,000 acks the server gets SIGKILL.
 * It is restarted on the same ports and databases, and then:
 *   - every acknowledged message is in history under the seq its ack carried;
 *   - history is seq 1..M with no gap and no msgId twice;
 *   - resending every unacknowledged message with its msgId gives duplicate=true (with the stored
 *     seq) for those that were stored, and M+1, M+2 ... with no gap for the others;
 *   - new messages continue after that, and a member online after the restart receives exactly
 *     the messages stored after it: nothing the resends found already stored is delivered again.
 * Head records (messages-mongo.ts, layout 2), read from MongoDB directly:
 *   - at the SIGKILL, no conversation's head is ahead of its stored messages (it may be behind:
 *     it is written after them; it may also have caught up already). One that caught up is set
 *     back to an earlier stored message (what a crash some flush rounds earlier leaves), so the
 *     repair is exercised on every run;
 *   - the restarted store repairs the head from the messages past it, before any request touches
 *     the conversation, and `list` then reports the last stored message;
 *   - once the resends and new messages are done, every head equals the highest stored seq,
 *     and `list` reports lastSeq and last.seq equal to it.
 *
 * Needs MQIM_MONGO_URL and MQIM_MYSQL_URL (npm test starts the services).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { randomUUID } from 'node:crypto'
import mqtt, { type MqttClient } from 'mqtt'
import { MongoClient } from 'mongodb'
import { MySqlMetadataStore } from '../src/store/metadata-mysql.js'
import { createUser } from '../src/admin/accounts.js'
import type { MessageEnvelope, Reply } from '../src/protocol/schemas.js'
import { freePort, sleep, waitUntil } from '../scripts/lib/procs.js'
import { dropMongo, dropMysql, freshMongo, freshMysqlUrl } from './helpers/db.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const SENDERS = ['alice', 'bob'] as const
const RECEIVER = 'carol'
/** Messages each sender may send before the crash. */
const PER_SENDER = 1500
/** SIGKILL once this many sends are acknowledged. */
const KILL_AFTER_ACKS = 1000
/** Sends in flight per sender (QoS 1 pipelining). */
const WINDOW = 100
/** New messages each sender sends after the restart. */
const AFTER = 50
const TIMEOUT_MS = 180_000
/** A head that caught up at the kill is set back this many messages (see step 1c). */
const REWIND = 100

/** mqim as a child process: `node --import tsx src/main.ts` (so the pid is the server's own). */
class ServerProcess {
  private child: ChildProcess | null = null
  private output = ''

  constructor (private readonly env: NodeJS.ProcessEnv, private readonly httpPort: number) {}

  async start (): Promise<void> {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env: this.env, stdio: ['ignore', 'pipe', 'pipe'] })
    this.child = child
    const keep = (chunk: Buffer): void => { this.output = (this.output + chunk.toString('utf8')).slice(-20_000) }
    child.stdout?.on('data', keep)
    child.stderr?.on('data', keep)
    const deadline = Date.now() + 60_000
    for (;;) {
      if (child.exitCode !== null || child.signalCode !== null) throw new Error(`mqim exited during start-up (${child.exitCode ?? child.signalCode}):\n${this.output}`)
      if (Date.now() > deadline) throw new Error(`mqim did not answer /healthz within 60 s:\n${this.output}`)
      try {
        const res = await fetch(`http://127.0.0.1:${this.httpPort}/healthz`)
        if (res.ok) return
      } catch {}
      await sleep(100)
    }
  }

  /** SIGKILL, and wait until the process is gone. */
  async kill (): Promise<void> {
    const child = this.child
    if (child === null || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }

  get log (): string {
    return this.output
  }
}

/** A device of one user over MQTT/TCP, with replies matched to requests by id. */
class Device {
  readonly messages: MessageEnvelope[] = []
  closed = false
  private readonly waiting = new Map<string, { resolve: (r: Reply) => void, reject: (e: Error) => void }>()

  private constructor (readonly userId: string, readonly deviceId: string, private readonly client: MqttClient) {
    client.on('error', () => {})
    client.on('close', () => {
      this.closed = true
      for (const w of this.waiting.values()) w.reject(new Error('connection closed'))
      this.waiting.clear()
    })
    client.on('message', (topic, payload) => {
      const json = JSON.parse(payload.toString('utf8'))
      if (topic === `im/u/${userId}/m`) {
        this.messages.push(json as MessageEnvelope)
      } else if (topic === `im/u/${userId}/r/${deviceId}`) {
        const reply = json as Reply
        const w = reply.id === null ? undefined : this.waiting.get(reply.id)
        if (w !== undefined) {
          this.waiting.delete(reply.id as string)
          w.resolve(reply)
        }
      }
    })
  }

  static async connect (port: number, userId: string, deviceId: string): Promise<Device> {
    const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, {
      clientId: `${userId}:${deviceId}`,
      username: userId,
      password: `password-${userId}`,
      protocolVersion: 4,
      clean: true,
      reconnectPeriod: 0,
      connectTimeout: 10_000
    })
    const device = new Device(userId, deviceId, client)
    const granted = await client.subscribeAsync([`im/u/${userId}/m`, `im/u/${userId}/r/${deviceId}`], { qos: 1 })
    if (granted.some(g => g.qos === 128)) throw new Error('subscription refused')
    return device
  }

  /** Publishes a request (QoS 1) and resolves with its reply; rejects if the connection drops. */
  async requestRaw (op: string, body: Record<string, unknown>, timeoutMs = 30_000): Promise<Reply> {
    if (this.closed) throw new Error('connection closed')
    const id = randomUUID()
    return await new Promise<Reply>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id)
        reject(new Error(`no reply to ${op} within ${timeoutMs} ms`))
      }, timeoutMs)
      this.waiting.set(id, {
        resolve: (r) => { clearTimeout(timer); resolve(r) },
        reject: (e) => { clearTimeout(timer); reject(e) }
      })
      this.client.publish(`im/req/${op}`, JSON.stringify({ id, ...body }), { qos: 1 }, () => {})
    })
  }

  async request<T> (op: string, body: Record<string, unknown>): Promise<T> {
    const reply = await this.requestRaw(op, body)
    if (!reply.ok) throw new Error(`${op} failed: ${reply.error.code}: ${reply.error.message}`)
    return reply.result as T
  }

  async end (): Promise<void> {
    if (!this.closed) await this.client.endAsync(true)
  }
}

interface SendResult { conv: string, seq: number, msgId: string, duplicate: boolean }

function body (msgId: string): string {
  return `body of ${msgId}`
}

async function send (device: Device, conv: string, msgId: string): Promise<SendResult> {
  return await device.request<SendResult>('send', { conv, msgId, kind: 'text', body: body(msgId) })
}

/** Runs `task` over `items` with at most `window` in flight. */
async function pipelined<T> (items: T[], window: number, task: (item: T) => Promise<void>): Promise<void> {
  const queue = items.values() // shared by the workers: each item is taken by one of them
  const worker = async (): Promise<void> => {
    for (const item of queue) await task(item)
  }
  await Promise.all(Array.from({ length: window }, worker))
}

async function fullHistory (device: Device, conv: string): Promise<MessageEnvelope[]> {
  const out: MessageEnvelope[] = []
  for (;;) {
    const page = await device.request<{ messages: MessageEnvelope[], hasMore: boolean }>('history', { conv, after: out.at(-1)?.seq ?? 0, limit: 1000 })
    out.push(...page.messages)
    if (!page.hasMore || page.messages.length === 0) return out
  }
}

function expectGapless (history: MessageEnvelope[]): void {
  expect(history.map(m => m.seq)).toEqual(Array.from({ length: history.length }, (_, i) => i + 1))
  expect(new Set(history.map(m => `${m.from}/${m.msgId}`)).size).toBe(history.length)
}

interface HeadState {
  conv: string
  /** h.s of the conversation's head record, 0 when it has none. */
  head: number
  /** Highest stored seq and number of stored messages. */
  maxSeq: number
  count: number
}

/**
 * Every conversation's head against its stored messages, read from MongoDB directly (the
 * messages collection `messages`: fields c, s; heads in `messages_heads`: {_id: conv, h: {s}}).
 */
async function headsVsMessages (mongo: { url: string, dbName: string }): Promise<HeadState[]> {
  const client = new MongoClient(mongo.url)
  try {
    await client.connect()
    const db = client.db(mongo.dbName)
    const stored = new Map<string, { maxSeq: number, count: number }>()
    for await (const doc of db.collection<{ c: string, s: number }>('messages').find({}, { projection: { _id: 0, c: 1, s: 1 } })) {
      const known = stored.get(doc.c) ?? { maxSeq: 0, count: 0 }
      stored.set(doc.c, { maxSeq: Math.max(known.maxSeq, doc.s), count: known.count + 1 })
    }
    const heads = new Map<string, number>()
    for (const doc of await db.collection<{ _id: string, h?: { s: number } }>('messages_heads').find({}).toArray()) {
      if (doc._id !== '$layout') heads.set(doc._id, doc.h?.s ?? 0)
    }
    return [...new Set([...stored.keys(), ...heads.keys()])].sort().map(conv => ({ conv, head: heads.get(conv) ?? 0, maxSeq: stored.get(conv)?.maxSeq ?? 0, count: stored.get(conv)?.count ?? 0 }))
  } finally {
    await client.close()
  }
}

/**
 * Sets the conversation's head back to its stored message `seq`, as the store writes heads:
 * `h` = the message's fields without _id and c, `s` first (see headFields in messages-mongo.ts).
 */
async function rewindHead (mongo: { url: string, dbName: string }, conv: string, seq: number): Promise<number> {
  const client = new MongoClient(mongo.url)
  try {
    await client.connect()
    const db = client.db(mongo.dbName)
    const doc = await db.collection<Record<string, unknown> & { _id: string }>('messages').findOne({ _id: `${conv}:${seq}` })
    if (doc === null) throw new Error(`message ${conv}:${seq} is not stored`)
    const h: Record<string, unknown> = { s: doc.s, t: doc.t, u: doc.u, m: doc.m, k: doc.k, b: doc.b, r: doc.r }
    if (doc.bj === true) h.bj = true
    await db.collection<{ _id: string, h?: unknown }>('messages_heads').updateOne({ _id: conv }, { $set: { h } }, { upsert: true })
    return seq
  } finally {
    await client.close()
  }
}

interface ListSummary { conv: string, lastSeq: number, last: MessageEnvelope | null, unread: number }

async function listed (device: Device, conv: string): Promise<ListSummary | undefined> {
  const page = await device.request<{ conversations: ListSummary[], next: string | null }>('list', {})
  return page.conversations.find(c => c.conv === conv)
}

function range (from: number, to: number): number[] {
  return Array.from({ length: Math.max(0, to - from + 1) }, (_, i) => from + i)
}

describe('crash drill: SIGKILL under load, restart, resend', () => {
  let mysqlUrl: string
  let mongo: { url: string, dbName: string }
  let dataDir: string
  let server: ServerProcess
  let mqttPort: number
  const devices: Device[] = []

  beforeAll(async () => {
    mysqlUrl = await freshMysqlUrl()
    mongo = freshMongo()
    const meta = new MySqlMetadataStore({ url: mysqlUrl })
    await meta.init()
    try {
      for (const id of [...SENDERS, RECEIVER]) await createUser(meta, { id, password: `password-${id}` })
    } finally {
      await meta.close()
    }
    dataDir = mkdtempSync(path.join(tmpdir(), 'mqim-crash-'))
    // Pipelining senders would hit the default per-connection request rate limit.
    const configFile = path.join(dataDir, 'config.json')
    writeFileSync(configFile, JSON.stringify({ limits: { requestsPerSecond: 100_000, requestBurst: 100_000, historyPageMax: 1000 } }))
    mqttPort = await freePort()
    const httpPort = await freePort()
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      MQIM_CONFIG: configFile,
      MQIM_HOST: '127.0.0.1',
      MQIM_MONGO_URL: mongo.url,
      MQIM_MONGO_DB: mongo.dbName,
      MQIM_MYSQL_URL: mysqlUrl,
      MQIM_MQTT_PORT: String(mqttPort),
      MQIM_HTTP_PORT: String(httpPort),
      MQIM_DATA_DIR: dataDir,
      MQIM_LOG_LEVEL: 'warn'
    }
    delete env.NODE_OPTIONS
    // A single node on purpose. npm test exports MQIM_REDIS_URL, which would make this server a
    // cluster node on Redis db 0, and Redis pub/sub is not scoped by database: cluster.test.ts's
    // messages for alice/bob/carol (running in parallel) then reach this server's clients.
    delete env.MQIM_REDIS_URL
    server = new ServerProcess(env, httpPort)
    await server.start()
  }, TIMEOUT_MS)

  afterAll(async () => {
    await Promise.allSettled(devices.map(async d => await d.end()))
    await server?.kill()
    if (mongo !== undefined) await dropMongo(mongo)
    if (mysqlUrl !== undefined) await dropMysql(mysqlUrl)
    if (dataDir !== undefined) rmSync(dataDir, { recursive: true, force: true })
  }, TIMEOUT_MS)

  test('acked messages survive, history stays gapless, resends are idempotent', async () => {
    const connect = async (userId: string, deviceId: string): Promise<Device> => {
      const d = await Device.connect(mqttPort, userId, deviceId)
      devices.push(d)
      return d
    }

    // 1. before the crash: a group, two senders pipelining until the server is killed
    const [alice, bob] = await Promise.all([connect(SENDERS[0], 'before'), connect(SENDERS[1], 'before')])
    const { conv } = await alice.request<{ conv: string }>('create-group', { name: 'crash drill', members: ['bob', RECEIVER] })
    /** msgId -> sender, for every send that was published */
    const attempted = new Map<string, string>()
    /** msgId -> seq, for every send answered OK */
    const acked = new Map<string, number>()
    let killing: Promise<void> | null = null
    const load = async (device: Device): Promise<void> => {
      const ids = Array.from({ length: PER_SENDER }, (_, i) => `${device.userId}-${i}`)
      await pipelined(ids, WINDOW, async (msgId) => {
        // Keep sending until the connection drops, so that sends are in flight at the kill.
        if (device.closed) return
        attempted.set(msgId, device.userId)
        let r: SendResult
        try {
          r = await send(device, conv, msgId)
        } catch (err) {
          if (killing !== null || device.closed) return
          throw err
        }
        expect(r.duplicate).toBe(false)
        acked.set(msgId, r.seq)
        if (acked.size >= KILL_AFTER_ACKS && killing === null) killing = server.kill()
      })
    }
    await Promise.all([load(alice), load(bob)])
    expect(killing).not.toBeNull()
    await killing
    await waitUntil(() => alice.closed && bob.closed, 10_000, 'the senders to see the connection drop')
    const ackedAtKill = acked.size
    expect(ackedAtKill).toBeGreaterThanOrEqual(KILL_AFTER_ACKS)
    expect(new Set(acked.values()).size).toBe(acked.size)

    // 1b. the heads at the kill (the server is gone: nothing moves them now): never ahead of the
    // messages; the seqs of each conversation are 1..count
    // (a command the server sent just before it died may still be running: read until it settles)
    let atKill = await headsVsMessages(mongo)
    for (let settled = false; !settled;) {
      await sleep(300)
      const again = await headsVsMessages(mongo)
      settled = JSON.stringify(again) === JSON.stringify(atKill)
      atKill = again
    }
    expect(atKill.map(h => h.conv)).toEqual([conv])
    for (const h of atKill) {
      expect(h.maxSeq).toBe(h.count)
      expect(h.head).toBeLessThanOrEqual(h.maxSeq)
    }
    const headAtKill = atKill[0] as HeadState

    // 1c. When the flush won the race (the head is at the last stored message), the head is set
    // back to the stored message REWIND seqs earlier: what a process that died before its last few
    // flush rounds leaves. So the repair checked below (the restarted store looks past every head
    // and writes it) is exercised on every run, not only when the kill catches a head behind.
    const headAtRestart = headAtKill.head < headAtKill.maxSeq ? headAtKill.head : await rewindHead(mongo, conv, Math.max(1, headAtKill.maxSeq - REWIND))

    // 2. restart on the same ports and databases
    await server.start()
    const [alice2, bob2] = await Promise.all([connect(SENDERS[0], 'after'), connect(SENDERS[1], 'after')])
    const carol = await connect(RECEIVER, 'after')
    const sender = (userId: string): Device => (userId === 'alice' ? alice2 : bob2)
    // at once, whether or not the check below has run yet: list asks the store past the head while it may lag
    const listedAtOnce = await listed(carol, conv)
    // the restarted store checks every head against the messages past it and repairs it, with no
    // request touching the conversation: healed on restart
    let repaired: HeadState[] = []
    await waitUntil(async () => {
      repaired = await headsVsMessages(mongo)
      return repaired.every(h => h.head === h.maxSeq)
    }, 10_000, 'the restarted store to repair the head', 100)
      .catch((err: Error) => { throw new Error(`${err.message} (head at restart ${headAtRestart}): ${JSON.stringify(repaired)}`) })
    const listedAtRestart = await listed(carol, conv)

    // 3. history: every acked message under its seq; 1..M gapless; nothing never sent
    const history = await fullHistory(carol, conv)
    expectGapless(history)
    const M = history.length
    expect(M).toBe(headAtKill.maxSeq)
    expect(repaired).toEqual([{ conv, head: M, maxSeq: M, count: M }])
    expect(listedAtRestart).toMatchObject({ lastSeq: M, unread: M, last: history[M - 1] })
    expect(listedAtOnce).toMatchObject({ lastSeq: M, unread: M })
    const stored = new Map(history.map(m => [m.msgId, m]))
    for (const [msgId, seq] of acked) {
      expect(stored.get(msgId)).toMatchObject({ seq, from: attempted.get(msgId), body: body(msgId) })
    }
    for (const m of history) expect(attempted.get(m.msgId)).toBe(m.from)

    // 4. resend everything that was not acked, with the same msgId, from both senders at once
    const unacked = [...attempted.keys()].filter(id => !acked.has(id))
    const storedUnacked = unacked.filter(id => stored.has(id))
    const resent = new Map<string, SendResult>()
    await Promise.all(SENDERS.map(async u => {
      await pipelined(unacked.filter(id => attempted.get(id) === u), WINDOW, async (msgId) => {
        resent.set(msgId, await send(sender(u), conv, msgId))
      })
    }))
    const newSeqs: number[] = []
    const wrong: string[] = []
    for (const msgId of unacked) {
      const r = resent.get(msgId) as SendResult
      const before = stored.get(msgId)
      if (before !== undefined) {
        if (r.seq !== before.seq || !r.duplicate) wrong.push(`${msgId} is stored at ${before.seq}; its resend got ${JSON.stringify(r)}`)
      } else {
        if (r.duplicate) wrong.push(`${msgId} was not stored at the restart (M = ${M}); its resend got ${JSON.stringify(r)}`)
        newSeqs.push(r.seq)
      }
    }
    expect(wrong).toEqual([])
    const U = newSeqs.length
    expect(newSeqs.sort((a, b) => a - b)).toEqual(range(M + 1, M + U))

    // 5. new messages continue after that
    const fresh: SendResult[] = []
    for (let i = 0; i < AFTER; i++) {
      for (const u of SENDERS) fresh.push(await send(sender(u), conv, `${u}-new-${i}`))
    }
    expect(fresh.map(r => r.seq)).toEqual(range(M + U + 1, M + U + fresh.length))
    expect(fresh.every(r => !r.duplicate)).toBe(true)
    const last = M + U + fresh.length

    // 5b. heads healed: equal to the highest stored seq (written by the background flush, some
    // ms after the last send), and list reports it
    let healed: HeadState[] = []
    await waitUntil(async () => {
      healed = await headsVsMessages(mongo)
      return healed.every(h => h.head === h.maxSeq)
    }, 10_000, 'the heads to reach the stored messages', 100)
      .catch((err: Error) => { throw new Error(`${err.message}: ${JSON.stringify(healed)}`) })
    expect(healed).toEqual([{ conv, head: last, maxSeq: last, count: last }])
    const listedAfter = await listed(carol, conv)
    expect(listedAfter).toMatchObject({ lastSeq: last, unread: last })
    expect(listedAfter?.last).toMatchObject({ seq: last, msgId: `${SENDERS[SENDERS.length - 1]}-new-${AFTER - 1}`, from: SENDERS[SENDERS.length - 1] })

    // 6. the final history, and what a member online since the restart received
    const final = await fullHistory(carol, conv)
    expectGapless(final)
    expect(final.length).toBe(last)
    expect(final.slice(0, M)).toEqual(history)
    await waitUntil(() => carol.messages.length >= U + fresh.length, 20_000, 'carol to receive the messages stored after the restart')
    await sleep(300)
    expect(carol.messages.map(m => m.seq).sort((a, b) => a - b)).toEqual(range(M + 1, last))

    console.log(`crash drill: head at SIGKILL ${headAtKill.head} of ${headAtKill.maxSeq} stored (${headAtRestart === headAtKill.head ? 'behind' : `caught up: set back to ${headAtRestart}`}); ` +
      `${attempted.size} sent before SIGKILL, ${ackedAtKill} acked, ${M} stored ` +
      `(${storedUnacked.length} stored but not acked), ${unacked.length} resent -> ${storedUnacked.length} duplicates + ${U} new at ${M + 1}..${M + U}; ` +
      `${fresh.length} new sends at ${M + U + 1}..${last}`)
  }, TIMEOUT_MS)
})
