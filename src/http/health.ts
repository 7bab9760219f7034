/**
 * GET /healthz: every dependency answers a cheap query, all asked at once, within one deadline
 * (2 s), or it is reported as down. 200 {"status":"ok"} when all are up, else 503 "degraded".
 */
import { ReplyError, type Redis } from 'ioredis'
import type { MessageStore, MetadataStore } from '../store/types.js'

const DEADLINE_MS = 2000

/** What a check can say: up, not answering (or not reachable), or (Redis) answering but refusing writes. */
export type CheckOutcome = 'ok' | 'down' | 'refuses writes'

export interface HealthDeps {
  meta: MetadataStore
  messages: MessageStore
  redis: Redis | null
  /** This node's id: the Redis probe writes a key of its own (`mqim:health:<node>`, gone after a minute). */
  node: string
  /** False while a Redis connection the broker routes through is down (sends are refused then): Redis is 'down'. */
  redisRouting?: () => boolean
}

/**
 * Redis is asked to write, not to PING: a Redis that answers but refuses writes (a replica after a
 * failover: READONLY; `min-replicas-to-write` unmet: NOREPLICAS; a failed save: MISCONF; full with
 * noeviction: OOM) queues no message for persistent sessions and releases no acknowledgement.
 */
const REFUSES_WRITES = /^(READONLY|NOREPLICAS|MISCONF|OOM)\b/

async function probeRedis (redis: Redis, node: string, routing: () => boolean): Promise<CheckOutcome> {
  // (not connected: down at once, no probe left waiting in the connection's offline queue)
  if (redis.status !== 'ready' || !routing()) return 'down'
  try {
    await redis.set(`mqim:health:${node}`, String(Date.now()), 'PX', 60_000)
    return 'ok'
  } catch (err) {
    return err instanceof ReplyError && REFUSES_WRITES.test((err as Error).message) ? 'refuses writes' : 'down'
  }
}

export async function checkHealth (deps: HealthDeps, info: Record<string, unknown>, deadlineMs = DEADLINE_MS): Promise<{ ok: boolean, body: Record<string, unknown> }> {
  const up = async (query: () => Promise<unknown>): Promise<CheckOutcome> => await query().then(() => 'ok' as const, () => 'down' as const)
  const probes: Record<string, () => Promise<CheckOutcome>> = {
    // a primary-key read on every MongoDB-compatible server (by key it would scan FerretDB)
    messageStore: async () => await up(async () => await deps.messages.latestMany(['health'])),
    metadataStore: async () => await up(async () => await deps.meta.userGet('health'))
  }
  const redis = deps.redis
  if (redis !== null) probes.redis = async () => await probeRedis(redis, deps.node, deps.redisRouting ?? (() => true))
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<'down'>(resolve => { timer = setTimeout(() => resolve('down'), deadlineMs) })
  try {
    const results = await Promise.all(Object.entries(probes).map(async ([name, probe]) => {
      const outcome = await Promise.race([probe(), deadline])
      return [name, outcome] as const
    }))
    const checks = Object.fromEntries(results)
    const ok = results.every(([, outcome]) => outcome === 'ok')
    return { ok, body: { status: ok ? 'ok' : 'degraded', ...info, checks } }
  } finally {
    clearTimeout(timer)
  }
}

/**
 * `check` shared: requests arriving while one runs get its result, and a result is reused for
 * `reuseMs` after it came; so that however often /healthz is asked (it answers anyone), the
 * dependencies are asked at most about once per `reuseMs` (a Redis write, two store reads).
 */
export function sharedCheck<T> (check: () => Promise<T>, reuseMs = 1000, now: () => number = () => performance.now()): () => Promise<T> {
  let running: Promise<T> | null = null
  let last: { value: T, at: number } | null = null
  return async () => {
    if (last !== null && now() - last.at < reuseMs) return last.value
    running ??= check().then(value => {
      last = { value, at: now() }
      return value
    }).finally(() => { running = null })
    return await running
  }
}
