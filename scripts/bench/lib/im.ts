/**
 * mqim helpers for the runner: accounts through the admin HTTP API (the only way into the
 * embedded in-memory store from outside the server), and a small request/reply client for setup
 * (direct, create-group) and for the sync scenario.
 */
import mqtt, { type MqttClient } from 'mqtt'
import type { Target } from './targets.js'

async function admin (target: Target, route: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(`http://127.0.0.1:${target.httpPort}/admin/${route}`, {
    method: 'POST',
    headers: { authorization: `Bearer ${target.adminToken}`, 'content-type': 'application/json' },
    body: JSON.stringify(body)
  })
  const json = await res.json() as Record<string, unknown>
  if (res.status !== 201 && res.status !== 200) throw new Error(`admin ${route}: HTTP ${res.status} ${JSON.stringify(json)}`)
  return json
}

/** One result per item: a tuple of the same length when the items are a tuple. */
type EachOf<T extends readonly unknown[], R> = { -readonly [K in keyof T]: R }

async function inParallel<const T extends readonly unknown[], R> (items: T, concurrency: number, fn: (item: T[number]) => Promise<R>): Promise<EachOf<T, R>> {
  const out = new Array<R>(items.length)
  const queue = items.entries() // shared by the workers: each item is taken by one of them
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    for (const [i, item] of queue) out[i] = await fn(item)
  }))
  return out as EachOf<T, R>
}

export interface Account { id: string, secret: string }

/**
 * Bots: accounts whose secret is an API key (SHA-256), cheap to create and verify, so load
 * scenarios can have hundreds of accounts. They chat exactly like users.
 */
export async function createBots<const T extends readonly string[]> (target: Target, ids: T): Promise<EachOf<T, Account>> {
  return await inParallel(ids, 16, async id => ({ id, secret: (await admin(target, 'bots', { id })).apiKey as string }))
}

/** Users with passwords (scrypt hashed by the server: about 50 ms of server CPU each). */
export async function createUsers<const T extends readonly string[]> (target: Target, ids: T): Promise<EachOf<T, Account>> {
  return await inParallel(ids, 4, async id => {
    const password = `pw-${id}-bench`
    await admin(target, 'users', { id, password })
    return { id, secret: password }
  })
}

export interface Reply<T = unknown> { id: string | null, op: string, ok: boolean, result?: T, error?: { code: string, message: string } }

export class ImClient {
  private readonly pending = new Map<string, (r: Reply) => void>()
  private nextId = 1
  /** Message envelopes received on im/u/<user>/m. */
  messages = 0

  private constructor (readonly client: MqttClient, readonly userId: string, readonly deviceId: string) {}

  static async connect (target: Target, account: Account, deviceId: string, clean = true): Promise<ImClient> {
    const client = await mqtt.connectAsync(target.mqttUrl, {
      clientId: `${account.id}:${deviceId}`,
      username: account.id,
      password: account.secret,
      protocolVersion: 4,
      clean,
      reconnectPeriod: 0,
      connectTimeout: 30_000
    })
    const stream = client.stream as { setNoDelay?: (v: boolean) => void }
    stream.setNoDelay?.(true)
    const im = new ImClient(client, account.id, deviceId)
    const replyTopic = `im/u/${account.id}/r/${deviceId}`
    client.on('message', (topic, payload) => {
      if (topic === replyTopic) {
        const reply = JSON.parse(payload.toString('utf8')) as Reply
        const waiter = typeof reply.id === 'string' ? im.pending.get(reply.id) : undefined
        if (waiter !== undefined) {
          im.pending.delete(reply.id as string)
          waiter(reply)
        }
      } else if (topic.endsWith('/m')) {
        im.messages++
      }
    })
    const granted = await client.subscribeAsync([`im/u/${account.id}/m`, replyTopic], { qos: 1 })
    if (granted.some(g => g.qos === 128)) throw new Error('subscription refused')
    return im
  }

  async request<T = unknown> (op: string, body: Record<string, unknown>, timeoutMs = 60_000): Promise<T> {
    const id = `q${this.nextId++}`
    const reply = new Promise<Reply<T>>((resolve, reject) => {
      const timer = setTimeout(() => { this.pending.delete(id); reject(new Error(`no reply to ${op} within ${timeoutMs} ms`)) }, timeoutMs)
      this.pending.set(id, (r) => { clearTimeout(timer); resolve(r as Reply<T>) })
    })
    this.client.publish(`im/req/${op}`, JSON.stringify({ id, ...body }), { qos: 1 })
    const r = await reply
    if (!r.ok) throw new Error(`${op} failed: ${r.error?.code}: ${r.error?.message}`)
    return r.result as T
  }

  async end (): Promise<void> {
    await this.client.endAsync(true)
  }
}

/** Opens direct conversations a[i] <-> b[i] (a[i] asks); returns their ids. */
export async function openDirects<const T extends ReadonlyArray<readonly [Account, Account]>> (target: Target, pairs: T): Promise<EachOf<T, string>> {
  let n = 0
  return await inParallel(pairs, 16, async ([a, b]) => {
    const im = await ImClient.connect(target, a, `setup${n++}`)
    try {
      return (await im.request<{ conv: string }>('direct', { user: b.id })).conv
    } finally {
      await im.end()
    }
  })
}

/** A channel every member may post in (the bench's senders are members), the members added in requests of 1,000. */
export async function createChannel (target: Target, owner: Account, members: string[], name: string): Promise<string> {
  const im = await ImClient.connect(target, owner, 'setup')
  try {
    const { conv } = await im.request<{ conv: string }>('create-channel', { name, postPolicy: 'members' })
    for (let i = 0; i < members.length; i += 1000) await im.request('add-members', { conv, members: members.slice(i, i + 1000) })
    return conv
  } finally {
    await im.end()
  }
}

export async function createGroup (target: Target, owner: Account, members: string[], name: string): Promise<string> {
  const im = await ImClient.connect(target, owner, 'setup')
  try {
    return (await im.request<{ conv: string }>('create-group', { name, members })).conv
  } finally {
    await im.end()
  }
}
