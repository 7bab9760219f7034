/**
 * Outgoing work that must survive a slow or dead receiver (pushes): a bounded queue of jobs, each
 * leased to one worker at a time, retried with back-off until a deadline.
 *
 * Two queues behind one interface: in memory (one process; jobs waiting when it stops are lost),
 * and in Redis when clustered, so that a node's death loses nothing: a job claimed by a node is
 * only leased to it (its due time moves `leaseMs` ahead); if the node dies before it reports the
 * outcome, the lease runs out and another node claims it. Delivery is therefore at least once: a
 * node that stalls past its lease may see its job sent twice (receivers dedupe by job id).
 *
 * JobRunner drives a queue: it claims what is due (at most `concurrency` at once per node), hands
 * each job to the handler, and marks it done, due again after a back-off (1 s doubling, at most
 * 60 s apart), or dropped once retrying would pass `retryForMs` after the job was added.
 */
import type { Redis } from 'ioredis'
import type { Logger } from '../log.js'

export interface Job {
  /** Unique per queue; receivers see it as the delivery id (the same on every retry). */
  id: string
  data: string
  /** When it was added (epoch ms): retries stop retryForMs after it. */
  at: number
  /** Attempts made so far (claims that ended, or whose lease ran out). */
  attempts: number
}

export interface JobQueue {
  /**
   * Adds jobs, due now, while the queue holds fewer than its bound. A job whose id is queued
   * already replaces its data (the latest wins; its due time, first time and attempts stay), so a
   * caller that names jobs after what they are for (a push target) holds at most one each. Returns
   * how many were taken (added or replaced).
   */
  add (jobs: ReadonlyArray<{ id: string, data: string }>, now: number): Promise<number>
  /** Up to `max` jobs due at `now`, each leased until now + leaseMs (claimed by no one else till then). */
  claim (max: number, now: number, leaseMs: number): Promise<Job[]>
  /**
   * The job is finished (delivered, or given up): removed, unless its data was replaced since it
   * was claimed (`data`: what was claimed); then the new data is due at once.
   */
  done (id: string, data: string, now: number): Promise<void>
  /** The job is due again at `due`, with `attempts` (its data as it is now). */
  retry (job: Job, due: number): Promise<void>
  /** Jobs waiting or leased. */
  size (): Promise<number>
}

export class MemoryJobQueue implements JobQueue {
  private readonly jobs = new Map<string, { job: Job, due: number }>()

  constructor (private readonly max: number) {}

  async add (jobs: ReadonlyArray<{ id: string, data: string }>, now: number): Promise<number> {
    let taken = 0
    for (const j of jobs) {
      const held = this.jobs.get(j.id)
      if (held !== undefined) {
        held.job.data = j.data
        taken++
        continue
      }
      if (this.jobs.size >= this.max) continue
      this.jobs.set(j.id, { job: { id: j.id, data: j.data, at: now, attempts: 0 }, due: now })
      taken++
    }
    return taken
  }

  async claim (max: number, now: number, leaseMs: number): Promise<Job[]> {
    const out: Job[] = []
    for (const entry of this.jobs.values()) {
      if (out.length >= max) break
      if (entry.due > now) continue
      entry.due = now + leaseMs
      entry.job.attempts++
      out.push({ ...entry.job })
    }
    return out
  }

  async done (id: string, data: string, now: number): Promise<void> {
    const entry = this.jobs.get(id)
    if (entry === undefined) return
    if (entry.job.data === data) this.jobs.delete(id)
    else entry.due = now
  }

  async retry (job: Job, due: number): Promise<void> {
    const entry = this.jobs.get(job.id)
    if (entry === undefined) return
    entry.due = due
    entry.job.attempts = job.attempts
  }

  async size (): Promise<number> {
    return this.jobs.size
  }
}

/**
 * Redis: a sorted set of job ids by due time and a hash of id → `{data, at, attempts}`. Claiming
 * moves the due time of what it takes `leaseMs` ahead in the same script, so two nodes never
 * claim one job at once, and a claim whose node died comes due again by itself.
 */
export class RedisJobQueue implements JobQueue {
  private readonly due: string
  private readonly data: string

  constructor (private readonly redis: Redis, name: string, private readonly max: number, prefix = 'mqim:') {
    this.due = `${prefix}jobs:${name}:due`
    this.data = `${prefix}jobs:${name}:data`
  }

  async add (jobs: ReadonlyArray<{ id: string, data: string }>, now: number): Promise<number> {
    if (jobs.length === 0) return 0
    const args = jobs.flatMap(j => [j.id, j.data])
    return Number(await this.redis.eval(ADD_SCRIPT, 2, this.due, this.data, String(this.max), String(now), ...args))
  }

  async claim (max: number, now: number, leaseMs: number): Promise<Job[]> {
    const found = await this.redis.eval(CLAIM_SCRIPT, 2, this.due, this.data, String(now), String(max), String(now + leaseMs)) as string[]
    const out: Job[] = []
    for (let i = 0; i + 1 < found.length; i += 2) {
      const id = found[i] as string
      try {
        const stored = JSON.parse(found[i + 1] as string) as { data: unknown, at: unknown, attempts: unknown }
        if (typeof stored.data === 'string' && typeof stored.at === 'number' && typeof stored.attempts === 'number') {
          out.push({ id, data: stored.data, at: stored.at, attempts: stored.attempts })
          continue
        }
      } catch {
        // not ours: dropped below
      }
      await this.redis.multi().zrem(this.due, id).hdel(this.data, id).exec()
    }
    return out
  }

  async done (id: string, data: string, now: number): Promise<void> {
    await this.redis.eval(DONE_SCRIPT, 2, this.due, this.data, id, data, String(now))
  }

  async retry (job: Job, due: number): Promise<void> {
    await this.redis.eval(RETRY_SCRIPT, 2, this.due, this.data, job.id, String(job.attempts), String(due))
  }

  async size (): Promise<number> {
    return await this.redis.zcard(this.due)
  }
}

/**
 * KEYS due, data; ARGV max, now, then id, data pairs. A queued id gets the new data (its time and
 * attempts stay); a new one is added while the queue is below max. Returns how many were taken.
 */
const ADD_SCRIPT = `
local size = redis.call('ZCARD', KEYS[1])
local max = tonumber(ARGV[1])
local taken = 0
for i = 3, #ARGV, 2 do
  local raw = redis.call('HGET', KEYS[2], ARGV[i])
  local ok, rec = false, nil
  if raw then ok, rec = pcall(cjson.decode, raw) end
  if ok and type(rec) == 'table' then
    rec.data = ARGV[i + 1]
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode(rec))
    taken = taken + 1
  elseif size < max then
    redis.call('HSET', KEYS[2], ARGV[i], cjson.encode({ data = ARGV[i + 1], at = tonumber(ARGV[2]), attempts = 0 }))
    if redis.call('ZADD', KEYS[1], ARGV[2], ARGV[i]) == 1 then size = size + 1 end
    taken = taken + 1
  end
end
return taken`

/**
 * KEYS due, data; ARGV now, max, leased-until. Takes up to max due ids, moves them to
 * leased-until, counts the attempt, and returns id, record pairs. An id without a readable record
 * is removed.
 */
const CLAIM_SCRIPT = `
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, id in ipairs(ids) do
  local raw = redis.call('HGET', KEYS[2], id)
  local ok, rec = false, nil
  if raw then ok, rec = pcall(cjson.decode, raw) end
  if ok and type(rec) == 'table' and type(rec.attempts) == 'number' then
    rec.attempts = rec.attempts + 1
    raw = cjson.encode(rec)
    redis.call('HSET', KEYS[2], id, raw)
    redis.call('ZADD', KEYS[1], ARGV[3], id)
    out[#out + 1] = id
    out[#out + 1] = raw
  else
    redis.call('ZREM', KEYS[1], id)
    redis.call('HDEL', KEYS[2], id)
  end
end
return out`

/** KEYS due, data; ARGV id, claimed data, now. Removed if its data is still what was claimed; else due now. */
const DONE_SCRIPT = `
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return 0
end
local ok, rec = pcall(cjson.decode, raw)
if ok and type(rec) == 'table' and rec.data ~= ARGV[2] then
  redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
return 0`

/** KEYS due, data; ARGV id, attempts, due. Only a job still queued (not done meanwhile) comes back, with its data as it is now. */
const RETRY_SCRIPT = `
local raw = redis.call('HGET', KEYS[2], ARGV[1])
if not raw then return 0 end
local ok, rec = pcall(cjson.decode, raw)
if not ok or type(rec) ~= 'table' then return 0 end
rec.attempts = tonumber(ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], cjson.encode(rec))
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
return 1`

/**
 * What a handler says about one attempt: done, retry (after a back-off), drop (give up), or
 * `{deferUntil}`: not attempted (the receiver is resting): due again then, the attempt not counted.
 */
export type JobOutcome = 'done' | 'retry' | 'drop' | { deferUntil: number }

export interface JobRunnerOptions {
  /** For logs. */
  name: string
  /** Jobs handled at once by this node. */
  concurrency: number
  /** A claimed job is another node's to take after this long (longer than an attempt can take). */
  leaseMs: number
  /** How often to look for jobs added by other nodes or come due (a local add looks at once). */
  pollMs: number
  /** Retries stop this long after the job was added; it is then dropped. */
  retryForMs: number
  handle: (job: Job) => Promise<JobOutcome>
  /** Each attempt's outcome ('expired' when retries ran out), for metrics. */
  onOutcome?: (outcome: 'done' | 'retry' | 'drop' | 'defer' | 'expired') => void
  logger: Logger
  now?: () => number
}

const BACKOFF_BASE_MS = 1000
const BACKOFF_MAX_MS = 60_000

export class JobRunner {
  private inFlight = 0
  private pumping = false
  private again = false
  private timer: NodeJS.Timeout | null = null
  private closed = false
  private readonly now: () => number

  constructor (private readonly queue: JobQueue, private readonly opts: JobRunnerOptions) {
    this.now = opts.now ?? Date.now
  }

  start (): void {
    this.schedule(0)
  }

  /** Looks for due jobs now (after a local add). */
  kick (): void {
    this.schedule(0)
  }

  private schedule (delayMs: number): void {
    if (this.closed) return
    if (this.timer !== null) {
      if (delayMs > 0) return
      clearTimeout(this.timer)
    }
    this.timer = setTimeout(() => { this.timer = null; void this.pump() }, delayMs)
    this.timer.unref()
  }

  private async pump (): Promise<void> {
    if (this.closed) return
    if (this.pumping) { this.again = true; return }
    this.pumping = true
    try {
      do {
        this.again = false
        const room = this.opts.concurrency - this.inFlight
        if (room <= 0) break
        const jobs = await this.queue.claim(room, this.now(), this.opts.leaseMs)
        for (const job of jobs) this.run(job)
        if (jobs.length === room) this.again = true
      } while (this.again && !this.closed)
    } catch (err) {
      this.opts.logger.warn({ err, queue: this.opts.name }, 'job queue unavailable; trying again')
    } finally {
      this.pumping = false
    }
    // due jobs of other nodes, back-offs and lapsed leases are found by polling
    this.schedule(this.opts.pollMs)
  }

  private run (job: Job): void {
    this.inFlight++
    void this.attempt(job).finally(() => {
      this.inFlight--
      this.kick()
    })
  }

  private async attempt (job: Job): Promise<void> {
    let outcome: JobOutcome
    try {
      outcome = await this.opts.handle(job)
    } catch (err) {
      this.opts.logger.warn({ err, queue: this.opts.name, job: job.id }, 'job failed')
      outcome = 'retry'
    }
    try {
      const now = this.now()
      if (outcome === 'done' || outcome === 'drop') {
        this.opts.onOutcome?.(outcome)
        await this.queue.done(job.id, job.data, now)
        return
      }
      const deferred = typeof outcome === 'object'
      const due = typeof outcome === 'object' ? outcome.deferUntil : now + Math.min(BACKOFF_BASE_MS * 2 ** Math.max(0, job.attempts - 1), BACKOFF_MAX_MS)
      if (due - job.at > this.opts.retryForMs) {
        this.opts.onOutcome?.('expired')
        this.opts.logger.warn({ queue: this.opts.name, job: job.id, attempts: job.attempts }, 'job given up: retries ran out')
        await this.queue.done(job.id, job.data, now)
        return
      }
      this.opts.onOutcome?.(deferred ? 'defer' : 'retry')
      await this.queue.retry(deferred ? { ...job, attempts: job.attempts - 1 } : job, due)
    } catch (err) {
      // the lease runs out and the job comes due again by itself
      this.opts.logger.warn({ err, queue: this.opts.name, job: job.id }, 'job outcome not recorded')
    }
  }

  close (): void {
    this.closed = true
    if (this.timer !== null) clearTimeout(this.timer)
    this.timer = null
  }
}
