/**
 * GET /healthz: every dependency answers a cheap query, all asked at once, within one deadline
 * (2 s), or it is reported as down. 200 {"status":"ok"} when all are up, else 503 "degraded".
 */
import type { Redis } from 'ioredis'
import type { MessageStore, MetadataStore } from '../store/types.js'

const DEADLINE_MS = 2000

export interface HealthDeps { meta: MetadataStore, messages: MessageStore, redis: Redis | null }

export async function checkHealth (deps: HealthDeps, info: Record<string, unknown>, deadlineMs = DEADLINE_MS): Promise<{ ok: boolean, body: Record<string, unknown> }> {
  const probes: Record<string, () => Promise<unknown>> = {
    // a primary-key read on every MongoDB-compatible server (by key it would scan FerretDB)
    messageStore: async () => await deps.messages.latestMany(['health']),
    metadataStore: async () => await deps.meta.userGet('health')
  }
  const redis = deps.redis
  if (redis !== null) probes.redis = async () => await redis.ping()
  let timer: NodeJS.Timeout | undefined
  const deadline = new Promise<'down'>(resolve => { timer = setTimeout(() => resolve('down'), deadlineMs) })
  try {
    const results = await Promise.all(Object.entries(probes).map(async ([name, probe]) => {
      const outcome = await Promise.race([probe().then(() => 'ok' as const, () => 'down' as const), deadline])
      return [name, outcome] as const
    }))
    const checks = Object.fromEntries(results)
    const ok = results.every(([, outcome]) => outcome === 'ok')
    return { ok, body: { status: ok ? 'ok' : 'degraded', ...info, checks } }
  } finally {
    clearTimeout(timer)
  }
}
