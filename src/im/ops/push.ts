/**
 * push-register / push-unregister / push-targets: where my devices get pushes while I am offline
 * (topics.md, "Push"). Sending them is src/im/push.ts.
 */
import { ECDH } from 'node:crypto'
import { ImError } from '../../errors.js'
import type { RequestOf } from '../../protocol/schemas.js'
import type { PushTarget } from '../../store/types.js'
import type { Caller, Services } from '../context.js'
import { webPushEndpointProblem, type PushService } from '../push.js'

export interface PushRegisterResult { device: string, registered: 'added' | 'replaced' }
export interface PushUnregisterResult { device: string, removed: boolean }
export interface PushTargetView {
  device: string
  kind: 'webpush' | 'gateway'
  /** webpush: where the push service takes pushes for the browser. */
  endpoint?: string
  /** gateway: its name, the platform and the token. */
  gateway?: string
  platform?: string
  token?: string
  at: number
}
export interface PushTargetsResult {
  targets: PushTargetView[]
  /** What browsers subscribe with (PushManager.subscribe applicationServerKey), or null: no Web Push. */
  vapidPublicKey: string | null
  /** The push gateways a device may name. */
  gateways: string[]
}

function requirePush (services: Services): PushService {
  const push = services.push
  if (push === undefined || !push.enabled) throw new ImError('FORBIDDEN', 'push is switched off on this server (push.enabled)')
  return push
}

/** base64url (padding allowed) → bytes, or null. */
function fromBase64Url (s: string): Buffer | null {
  const bare = s.replace(/=+$/, '')
  const bytes = Buffer.from(bare, 'base64url')
  return bytes.toString('base64url') === bare ? bytes : null
}

/** The target of a request, checked: an allowed endpoint with a P-256 key, or a configured gateway. */
function targetOf (req: RequestOf<'push-register'>, services: Services, push: PushService): PushTarget {
  const config = services.config.push
  if (req.gateway !== undefined) {
    const names = config.gateways.map(g => g.name)
    if (!names.includes(req.gateway.name)) {
      throw new ImError('BAD_REQUEST', `gateway.name: no push gateway named ${req.gateway.name} (this server has ${names.length === 0 ? 'none' : names.join(', ')})`)
    }
    return { kind: 'gateway', gateway: req.gateway.name, token: req.gateway.token, platform: req.gateway.platform }
  }
  const sub = req.webPush
  if (sub === undefined) throw new ImError('BAD_REQUEST', 'exactly one of webPush and gateway')
  if (!config.webPush.enabled || push.vapidPublicKey === null) throw new ImError('FORBIDDEN', 'Web Push is switched off on this server (push.webPush.enabled)')
  const problem = webPushEndpointProblem(sub.endpoint, config.webPush)
  if (problem !== null) throw new ImError('BAD_REQUEST', `webPush.endpoint: ${problem}`)
  const key = fromBase64Url(sub.keys.p256dh)
  let valid = key !== null && key.length === 65 && key[0] === 4
  if (valid && key !== null) {
    try {
      ECDH.convertKey(key, 'prime256v1')
    } catch {
      valid = false
    }
  }
  if (!valid) throw new ImError('BAD_REQUEST', 'webPush.keys.p256dh: not an uncompressed P-256 public key (65 bytes, base64url)')
  if (fromBase64Url(sub.keys.auth)?.length !== 16) throw new ImError('BAD_REQUEST', 'webPush.keys.auth: not 16 bytes, base64url')
  return { kind: 'webpush', endpoint: sub.endpoint, p256dh: sub.keys.p256dh.replace(/=+$/, ''), auth: sub.keys.auth.replace(/=+$/, '') }
}

export async function pushRegister (caller: Caller, req: RequestOf<'push-register'>, services: Services): Promise<PushRegisterResult> {
  const push = requirePush(services)
  const target = targetOf(req, services, push)
  const device = req.device ?? caller.deviceId
  const max = services.config.push.targetsPerUser
  const { outcome, moved } = await services.meta.pushTargetPut({ userId: caller.userId, device, target, at: services.now() }, max)
  if (outcome === 'full') throw new ImError('LIMIT_REACHED', `you have push targets on ${max} devices (the most per user); push-unregister one first`)
  push.targets.changed([caller.userId, ...moved.map(m => m.userId).filter(u => u !== caller.userId)])
  return { device, registered: outcome }
}

export async function pushUnregister (caller: Caller, req: RequestOf<'push-unregister'>, services: Services): Promise<PushUnregisterResult> {
  const device = req.device ?? caller.deviceId
  const removed = await services.meta.pushTargetRemove(caller.userId, device)
  if (removed) services.push?.targets.changed([caller.userId])
  return { device, removed }
}

export async function pushTargets (caller: Caller, _req: RequestOf<'push-targets'>, services: Services): Promise<PushTargetsResult> {
  const push = requirePush(services)
  const targets = (await services.meta.pushTargetsOf([caller.userId])).map((r): PushTargetView => r.target.kind === 'webpush'
    ? { device: r.device, kind: 'webpush', endpoint: r.target.endpoint, at: r.at }
    : { device: r.device, kind: 'gateway', gateway: r.target.gateway, platform: r.target.platform, token: r.target.token, at: r.at })
  return { targets, vapidPublicKey: services.config.push.webPush.enabled ? push.vapidPublicKey : null, gateways: services.config.push.gateways.map(g => g.name) }
}
