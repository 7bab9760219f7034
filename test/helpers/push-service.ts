/**
 * A local Web Push service (RFC 8030) for tests: it takes mqim's POSTs, checks the VAPID JWT
 * (RFC 8292: ES256 signed by the key in `k`, audience = this service's origin, expiry within 24
 * hours, a contact subject) and decrypts the payload (RFC 8291 aes128gcm) with the private key of
 * the subscription it handed out. And a push gateway receiver that checks mqim's signature.
 */
import { createECDH, createHmac, createDecipheriv, hkdfSync, randomBytes, timingSafeEqual, type ECDH } from 'node:crypto'
import { createServer, type IncomingMessage, type Server } from 'node:http'
import type { AddressInfo } from 'node:net'
import { importJWK, jwtVerify } from 'jose'

export interface ReceivedPush {
  subscription: string
  /** The decrypted payload, parsed. */
  payload: Record<string, unknown>
  headers: Record<string, string | string[] | undefined>
  /** The VAPID public key that signed it (base64url). */
  vapidKey: string
  jwt: { aud: unknown, exp: unknown, sub: unknown }
}

interface Subscriber { ecdh: ECDH, publicKey: Buffer, auth: Buffer }

async function bodyOf (req: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of req) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** RFC 8291 §3.4 / RFC 8188: the plaintext of one aes128gcm record for this subscriber. */
export function decryptAes128gcm (body: Buffer, sub: Subscriber): Buffer {
  const salt = body.subarray(0, 16)
  const idLength = body.readUInt8(20)
  const serverKey = body.subarray(21, 21 + idLength)
  const record = body.subarray(21 + idLength)
  const secret = sub.ecdh.computeSecret(serverKey)
  const keyInfo = Buffer.concat([Buffer.from('WebPush: info\0'), sub.publicKey, serverKey])
  const ikm = Buffer.from(hkdfSync('sha256', secret, sub.auth, keyInfo, 32))
  const cek = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: aes128gcm\0'), 16))
  const nonce = Buffer.from(hkdfSync('sha256', ikm, salt, Buffer.from('Content-Encoding: nonce\0'), 12))
  const decipher = createDecipheriv('aes-128-gcm', cek, nonce)
  decipher.setAuthTag(record.subarray(record.length - 16))
  const padded = Buffer.concat([decipher.update(record.subarray(0, record.length - 16)), decipher.final()])
  // the last record ends with the delimiter 2, then zero padding
  let end = padded.length - 1
  while (end >= 0 && padded[end] === 0) end--
  if (padded[end] !== 2) throw new Error('no last-record delimiter')
  return padded.subarray(0, end)
}

export class LocalPushService {
  readonly received: ReceivedPush[] = []
  /** Problems found in requests (bad JWT, undecryptable body): a test expects none. */
  readonly problems: string[] = []
  private readonly subscribers = new Map<string, Subscriber>()
  /** subscription id → the status to answer (default 201). */
  readonly statusFor = new Map<string, number>()
  private waiters: Array<() => void> = []

  private constructor (private readonly server: Server, readonly origin: string) {}

  static async start (): Promise<LocalPushService> {
    let self: LocalPushService | null = null
    const server = createServer((req, res) => {
      void self?.handle(req).then(status => { res.writeHead(status); res.end() }, (err: unknown) => {
        self?.problems.push(String(err))
        res.writeHead(400)
        res.end()
      })
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    self = new LocalPushService(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}`)
    return self
  }

  /** A new subscription as a browser's PushSubscription.toJSON() gives it. */
  subscribe (id = randomBytes(6).toString('hex')): { id: string, json: { endpoint: string, expirationTime: null, keys: { p256dh: string, auth: string } } } {
    const ecdh = createECDH('prime256v1')
    const publicKey = ecdh.generateKeys()
    const auth = randomBytes(16)
    this.subscribers.set(id, { ecdh, publicKey, auth })
    return { id, json: { endpoint: `${this.origin}/push/${id}`, expirationTime: null, keys: { p256dh: publicKey.toString('base64url'), auth: auth.toString('base64url') } } }
  }

  private async handle (req: IncomingMessage): Promise<number> {
    const body = await bodyOf(req)
    const id = /^\/push\/([a-z0-9-]+)$/.exec(req.url ?? '')?.[1]
    const sub = id === undefined ? undefined : this.subscribers.get(id)
    if (req.method !== 'POST' || id === undefined || sub === undefined) return 404
    const status = this.statusFor.get(id) ?? 201
    if (status !== 201) return status
    const auth = /^vapid t=([^,\s]+),\s*k=([A-Za-z0-9_-]+)$/.exec(String(req.headers.authorization ?? ''))
    if (auth === null) throw new Error(`no vapid authorization: ${String(req.headers.authorization)}`)
    const [, token, k] = auth as unknown as [string, string, string]
    const raw = Buffer.from(k, 'base64url')
    const key = await importJWK({ kty: 'EC', crv: 'P-256', x: raw.subarray(1, 33).toString('base64url'), y: raw.subarray(33, 65).toString('base64url') }, 'ES256')
    const { payload } = await jwtVerify(token, key, { algorithms: ['ES256'], audience: this.origin })
    const now = Math.floor(Date.now() / 1000)
    if (typeof payload.exp !== 'number' || payload.exp <= now || payload.exp > now + 24 * 3600) throw new Error(`bad exp ${String(payload.exp)}`)
    if (typeof payload.sub !== 'string' || !/^(mailto:|https:)/.test(payload.sub)) throw new Error(`bad sub ${String(payload.sub)}`)
    if (req.headers['content-encoding'] !== 'aes128gcm') throw new Error(`content-encoding ${String(req.headers['content-encoding'])}`)
    if (req.headers.ttl === undefined) throw new Error('no TTL header')
    const plain = decryptAes128gcm(body, sub)
    this.received.push({ subscription: id, payload: JSON.parse(plain.toString('utf8')) as Record<string, unknown>, headers: req.headers, vapidKey: k, jwt: { aud: payload.aud, exp: payload.exp, sub: payload.sub } })
    for (const w of this.waiters.splice(0)) w()
    return 201
  }

  /** Waits until `n` pushes arrived (or throws after timeoutMs). */
  async waitFor (n: number, timeoutMs = 10_000): Promise<ReceivedPush[]> {
    const deadline = Date.now() + timeoutMs
    while (this.received.length < n) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${this.received.length} pushes arrived, expected ${n}`)
      await new Promise<void>(resolve => {
        const t = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(t); resolve() })
      })
    }
    return this.received
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>(resolve => this.server.close(() => resolve()))
  }
}

export interface GatewayRequest {
  body: Record<string, unknown>
  delivery: string
  /** The signature checked with the gateway's secret, and its time within 5 minutes. */
  verified: boolean
}

/** A push gateway receiver: answers `status()` (default 200), records what came, checks signatures. */
export class GatewayReceiver {
  readonly received: GatewayRequest[] = []
  /** Requests seen, whatever was answered. */
  attempts = 0
  status: () => number = () => 200
  private waiters: Array<() => void> = []

  private constructor (private readonly server: Server, readonly url: string, private readonly secret: string) {}

  static async start (secret: string, port = 0): Promise<GatewayReceiver> {
    let self: GatewayReceiver | null = null
    const server = createServer((req, res) => {
      void bodyOf(req).then(body => {
        if (self === null) return
        self.attempts++
        const status = self.status()
        if (status >= 200 && status < 300) self.record(req, body)
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end('{}')
      })
    })
    await new Promise<void>(resolve => server.listen(port, '127.0.0.1', resolve))
    self = new GatewayReceiver(server, `http://127.0.0.1:${(server.address() as AddressInfo).port}/push`, secret)
    return self
  }

  private record (req: IncomingMessage, body: Buffer): void {
    const sig = /^t=(\d+),v1=([0-9a-f]{64})$/.exec(String(req.headers['x-mqim-signature'] ?? ''))
    let verified = false
    if (sig !== null) {
      const [, t, v1] = sig as unknown as [string, string, string]
      const want = createHmac('sha256', this.secret).update(`${t}.${body.toString('utf8')}`).digest()
      verified = timingSafeEqual(want, Buffer.from(v1, 'hex')) && Math.abs(Date.now() - Number(t)) < 300_000
    }
    this.received.push({ body: JSON.parse(body.toString('utf8')) as Record<string, unknown>, delivery: String(req.headers['x-mqim-delivery']), verified })
    for (const w of this.waiters.splice(0)) w()
  }

  async waitFor (n: number, timeoutMs = 10_000): Promise<GatewayRequest[]> {
    const deadline = Date.now() + timeoutMs
    while (this.received.length < n) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`${this.received.length} gateway pushes arrived, expected ${n}`)
      await new Promise<void>(resolve => {
        const t = setTimeout(resolve, left)
        this.waiters.push(() => { clearTimeout(t); resolve() })
      })
    }
    return this.received
  }

  get port (): number {
    return (this.server.address() as AddressInfo).port
  }

  async close (): Promise<void> {
    this.server.closeAllConnections()
    await new Promise<void>(resolve => this.server.close(() => resolve()))
  }
}
