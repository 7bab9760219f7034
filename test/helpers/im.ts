/** Integration-test helpers: a real server on port 0 and real mqtt.js clients over TCP or WebSocket. */
import mqtt, { type MqttClient } from 'mqtt'
import { spawn } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { deepMerge, loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import { MqimServer } from '../../src/server.js'
import { createUser } from '../../src/admin/accounts.js'
import type { MessageStore, MetadataStore } from '../../src/store/types.js'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..', '..')
import type { MessageEnvelope, OpName, Reply } from '../../src/protocol/schemas.js'
import type { Results } from '../../src/client/client.js'
import { waitUntil } from '../../scripts/lib/procs.js'

export async function startServer (overrides: Record<string, unknown> = {}, stores?: { meta: MetadataStore, messages: MessageStore }): Promise<MqimServer> {
  // a data dir of its own unless the test gives one; removed when the server stops
  const ownDir = overrides.dataDir === undefined ? mkdtempSync(path.join(tmpdir(), 'mqim-')) : undefined
  const config = loadConfig({
    env: {},
    // merged key by key: a test's own http or mqtt settings keep the free ports (port 0)
    overrides: deepMerge({ host: '127.0.0.1', mqtt: { port: 0 }, http: { port: 0 }, dataDir: ownDir, log: { level: 'warn' } }, overrides)
  })
  let server: MqimServer
  try {
    server = await MqimServer.start({ config, logger: createLogger(config.log.level), stores })
  } catch (err) {
    if (ownDir !== undefined) rmSync(ownDir, { recursive: true, force: true })
    throw err
  }
  if (ownDir !== undefined) {
    const stop = server.stop.bind(server)
    server.stop = async () => {
      try { await stop() } finally { rmSync(ownDir, { recursive: true, force: true }) }
    }
  }
  return server
}

export async function addUser (server: MqimServer, id: string, password = 'password-' + id): Promise<string> {
  await createUser(server.services.meta, { id, password })
  return password
}

/** The `result` of a successful reply: typed for the protocol's operations (topics.md, "Operations"). */
export type ResultOf<K extends string> = K extends OpName ? Results[K] : unknown

export type Transport = 'tcp' | 'ws'

export interface ImClient {
  mqtt: MqttClient
  userId: string
  deviceId: string
  messages: MessageEnvelope[]
  events: Array<Record<string, unknown>>
  replies: Reply[]
  request: <K extends string>(op: K, body: Record<string, unknown>, timeoutMs?: number) => Promise<ResultOf<K>>
  requestRaw: (op: string, body: Record<string, unknown>, timeoutMs?: number) => Promise<Reply>
  waitFor: (predicate: () => boolean, timeoutMs?: number, what?: string) => Promise<void>
  end: () => Promise<void>
}

export function url (server: MqimServer, transport: Transport): string {
  return transport === 'tcp' ? `mqtt://127.0.0.1:${server.ports.mqtt}` : `ws://127.0.0.1:${server.ports.http}/mqtt`
}

export { waitUntil }

export interface ConnectOptions {
  transport?: Transport
  password?: string
  clean?: boolean
  subscribe?: boolean
}

export async function connect (server: MqimServer, userId: string, deviceId: string, options: ConnectOptions = {}): Promise<ImClient> {
  const client = await mqtt.connectAsync(url(server, options.transport ?? 'tcp'), {
    clientId: `${userId}:${deviceId}`,
    username: userId,
    password: options.password ?? 'password-' + userId,
    protocolVersion: 4,
    clean: options.clean ?? true,
    reconnectPeriod: 0,
    connectTimeout: 10000
  })
  // Like every latency-sensitive MQTT client should: no Nagle on TCP (see topics.md).
  const stream = client.stream as { setNoDelay?: (v: boolean) => void }
  stream.setNoDelay?.(true)
  const pending = new Map<string, (r: Reply) => void>()
  const im: ImClient = {
    mqtt: client,
    userId,
    deviceId,
    messages: [],
    events: [],
    replies: [],
    request: async (op, body, timeoutMs) => {
      const reply = await im.requestRaw(op, body, timeoutMs)
      if (!reply.ok) throw Object.assign(new Error(`${op} failed: ${reply.error.code}: ${reply.error.message}`), { code: reply.error.code })
      return reply.result as ResultOf<typeof op>
    },
    requestRaw: async (op, body, timeoutMs = 20000) => {
      const id = typeof body.id === 'string' ? body.id : randomUUID()
      const payload = JSON.stringify({ id, ...body })
      const reply = new Promise<Reply>((resolve, reject) => {
        const timer = setTimeout(() => { pending.delete(id); reject(new Error(`timed out waiting for reply to ${op} ${id}`)) }, timeoutMs)
        pending.set(id, (r) => { clearTimeout(timer); resolve(r) })
      })
      await client.publishAsync(`im/req/${op}`, payload, { qos: 1 })
      return await reply
    },
    waitFor: async (predicate, timeoutMs = 20000, what = 'condition') => await waitUntil(predicate, timeoutMs, what),
    end: async () => { await client.endAsync() }
  }
  client.on('message', (topic, payload) => {
    const json = JSON.parse(payload.toString('utf8'))
    if (topic === `im/u/${userId}/m`) im.messages.push(json)
    else if (topic === `im/u/${userId}/e`) im.events.push(json)
    else if (topic === `im/u/${userId}/r/${deviceId}`) {
      im.replies.push(json)
      const waiter = typeof json.id === 'string' ? pending.get(json.id) : undefined
      if (waiter !== undefined) {
        pending.delete(json.id)
        waiter(json)
      }
    }
  })
  if (options.subscribe ?? true) {
    const granted = await client.subscribeAsync([`im/u/${userId}/m`, `im/u/${userId}/e`, `im/u/${userId}/r/${deviceId}`], { qos: 1 })
    if (granted.some(g => g.qos === 128)) throw new Error('subscription refused')
  }
  return im
}

/**
 * The CONNACK return code a login with these credentials gets over TCP (0: accepted; null: the
 * connection closed without a CONNACK). `clean` false logs in with a persistent session.
 */
export async function connackCode (port: number, username: string, password: string, device = 'probe', clean = true): Promise<number | null> {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: `${username}:${device}`, username, password, clean, protocolVersion: 4, reconnectPeriod: 0, connectTimeout: 20_000 })
  return await new Promise(resolve => {
    client.on('connect', () => { client.end(true); resolve(0) })
    client.on('error', (err: Error & { code?: number }) => { client.end(true); resolve(typeof err.code === 'number' ? err.code : null) })
    client.on('close', () => { resolve(null) })
  })
}

/** SUBACK return codes for one SUBSCRIBE (mqtt.js rejects on 0x80; the packet is on the error). */
export async function subackCodes (client: ImClient, filters: string[]): Promise<number[]> {
  try {
    const granted = await client.mqtt.subscribeAsync(filters, { qos: 1 })
    return granted.map(g => g.qos)
  } catch (err) {
    const packet = (err as { packet?: { granted?: number[] } }).packet
    if (packet?.granted === undefined) throw err
    return packet.granted
  }
}

/** The terminal client (src/client/cli-chat.ts) as a child process: type lines, wait for output. */
export function spawnChatCli (args: string[], password: string): { type: (line: string) => void, waitOut: (text: string, timeoutMs?: number) => Promise<void>, output: () => string, exited: Promise<number | null>, kill: () => void } {
  const proc = spawn(process.execPath, ['--import', 'tsx', 'src/client/cli-chat.ts', ...args], {
    cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '', MQIM_PASSWORD: password }, stdio: ['pipe', 'pipe', 'pipe']
  })
  let out = ''
  proc.stdout.on('data', (d: Buffer) => { out += d.toString() })
  proc.stderr.on('data', (d: Buffer) => { out += d.toString() })
  return {
    type: (line) => { proc.stdin.write(line + '\n') },
    waitOut: async (text, timeoutMs = 20_000) => { await waitUntil(() => out.includes(text), timeoutMs, `output "${text}" in:\n${out}`) },
    output: () => out,
    exited: new Promise<number | null>(resolve => proc.on('exit', resolve)),
    kill: () => { proc.kill() }
  }
}
