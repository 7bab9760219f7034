/**
 * Cluster: this node's clock against the Redis server's, a reference every node shares. Delivery
 * order across nodes compares the time another node stored a seq with this node's clock (README,
 * "Delivery order across nodes"), so the nodes' clocks must agree within some 100 ms. Every
 * CLOCK_CHECK_MS the node asks Redis for its TIME a few times and keeps the answer with the
 * shortest round trip: offset = the middle of the round trip on this clock minus Redis' time, good
 * to half that round trip. A round trip over MAX_RTT_MS says nothing useful (a loaded machine or
 * network) and is not used; after STALE_CHECKS checks without a usable one the offset is unknown
 * again. The offset is on /metrics (`mqim_clock_offset_seconds`: the nodes' values should agree
 * with each other; the same offset on every node means the Redis host's clock is the one off,
 * which is harmless), and an offset beyond WARN_OFFSET_MS even at the edge of its error (half the
 * round trip) is logged (once a minute at most). One check at a time: one that has not finished
 * when the next is due (a stalled Redis) makes that one skip.
 */
import type { Logger } from '../log.js'
import { warnEveryMinute } from '../log.js'

export const CLOCK_CHECK_MS = 30_000
/** Samples per check; the one with the shortest round trip is kept. */
const SAMPLES = 3
/** A sample whose round trip is longer says too little about the offset. */
export const MAX_RTT_MS = 250
export const WARN_OFFSET_MS = 100
/** Checks in a row without a usable sample after which the offset is unknown (NaN on /metrics). */
export const STALE_CHECKS = 3

/** What the check needs of a Redis connection: TIME ([seconds, microseconds] as strings). */
export interface TimeSource {
  time: () => Promise<Array<string | number>>
}

export interface ClockCheck {
  /** This node's clock minus the Redis server's, in seconds; null before the first usable sample. */
  offsetSeconds: () => number | null
  /** One check now (also run every CLOCK_CHECK_MS); resolves when it is done. */
  check: () => Promise<void>
  close: () => void
}

export function startClockCheck (redis: TimeSource, logger: Logger, opts: { intervalMs?: number, now?: () => number } = {}): ClockCheck {
  const now = opts.now ?? Date.now
  const warn = warnEveryMinute(logger)
  let offsetMs: number | null = null
  let misses = 0
  let closed = false
  let running = false
  const check = async (): Promise<void> => {
    if (running) return
    running = true
    try {
      await measure()
    } catch (err) {
      miss()
      throw err
    } finally {
      running = false
    }
  }
  const miss = (): void => {
    if (++misses >= STALE_CHECKS) offsetMs = null
  }
  const measure = async (): Promise<void> => {
    let best: { rtt: number, offset: number } | null = null
    for (let i = 0; i < SAMPLES; i++) {
      if (closed) return
      const t0 = now()
      const [seconds, micros] = await redis.time()
      const t1 = now()
      const redisMs = Number(seconds) * 1000 + Number(micros) / 1000
      if (!Number.isFinite(redisMs)) continue
      const rtt = t1 - t0
      if (rtt <= MAX_RTT_MS && (best === null || rtt < best.rtt)) best = { rtt, offset: (t0 + t1) / 2 - redisMs }
    }
    if (closed) return
    if (best === null) {
      miss()
      return
    }
    misses = 0
    offsetMs = best.offset
    if (Math.abs(best.offset) - best.rtt / 2 > WARN_OFFSET_MS) {
      warn('clock', { offsetMs: Math.round(best.offset), rttMs: best.rtt },
        `this node's clock differs from the Redis server's by more than ${WARN_OFFSET_MS} ms: if the other nodes' do not differ as much, keep the nodes' clocks in sync (NTP); delivery order across nodes depends on it`)
    }
  }
  const run = (): void => {
    check().catch((err: unknown) => { logger.debug({ err }, 'clock check: Redis TIME failed') })
  }
  const timer = setInterval(run, opts.intervalMs ?? CLOCK_CHECK_MS)
  timer.unref()
  run()
  return {
    offsetSeconds: () => offsetMs === null ? null : offsetMs / 1000,
    check,
    close: () => {
      closed = true
      clearInterval(timer)
    }
  }
}
