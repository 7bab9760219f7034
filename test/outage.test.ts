/**
 * Dependency outages: MongoDB (FerretDB), MySQL (MariaDB) and Redis are each stopped for ~5 s
 * (scripts/services.sh stop-one) under a light, steady load and started again (start-one), one
 * after the other, while the same mqim node keeps running; then Redis is frozen (SIGSTOP) for 15 s
 * and thawed (SIGCONT). For each outage:
 *   - the server process stays up (same pid);
 *   - every send published during the outage is either acknowledged (and is then in history under
 *     that seq) or answered with an error (UNAVAILABLE or INTERNAL): no silence, no other error;
 *   - /healthz answers 503 "degraded" with that dependency "down" during the outage;
 *   - after the restart /healthz is 200 again and sends are acknowledged again within 30 s,
 *     without restarting mqim.
 * At the end every acknowledged message is in history, gapless, stored once, and every receiver
 * holds every message once, in order.
 *
 * Stopping the shared test services would break the test files that run in parallel, so this file
 * starts its OWN MariaDB, FerretDB and Redis (services.sh start <tmpdir>) and stops them after.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { OutageDrill, describeOutage, type OutageResult } from '../scripts/lib/drills.js'
import { startServices, stopServices, HEALTH_CHECK_OF, type ServiceName } from '../scripts/lib/services.js'
import { killAllChildren } from '../scripts/lib/procs.js'
import { finalLine } from '../scripts/lib/verify.js'

const OUTAGE_MS = 5000
/** Longer than the drill's request timeout (12 s). */
const HANG_MS = 15_000
const RECOVERY_MS = 30_000
const ALLOWED = new Set(['ok', 'error:UNAVAILABLE', 'error:INTERNAL'])

describe('dependency outages under load (private services)', () => {
  let servicesDir: string | undefined
  let workDir: string
  let drill: OutageDrill | undefined
  const lines: string[] = []
  const log = (s: string): void => { lines.push(s) }

  beforeAll(async () => {
    // short path: MariaDB's socket path under it is limited
    servicesDir = mkdtempSync(path.join(tmpdir(), 'mqim-out-'))
    workDir = mkdtempSync(path.join(tmpdir(), 'mqim-outage-nodes-'))
    let urls
    try {
      urls = await startServices(servicesDir)
    } catch (err) {
      throw new Error(`could not start private services with scripts/services.sh (run "bash scripts/services.sh install" first): ${(err as Error).message}`)
    }
    drill = await OutageDrill.start({
      services: urls,
      nodes: 1,
      senders: 2,
      receivers: 2,
      conversations: 2,
      ratePerSender: 40,
      window: 8,
      requestTimeoutMs: 12_000,
      workDir,
      log
    })
  }, 90_000)

  afterAll(async () => {
    await drill?.close().catch(() => {})
    killAllChildren('SIGKILL')
    if (servicesDir !== undefined) {
      await stopServices(servicesDir).catch(() => {})
      rmSync(servicesDir, { recursive: true, force: true })
    }
    if (workDir !== undefined) rmSync(workDir, { recursive: true, force: true })
  }, 60_000)

  function check (r: OutageResult): void {
    const svc = r.service
    const detail = r.problems.length === 0 ? [] : [...describeOutage(r), ...lines.splice(0)]
    expect({ problems: r.problems, detail }).toEqual({ problems: [], detail: [] })
    // the server stayed up: the same process throughout
    expect(r.nodes.every(n => n.running && n.pidBefore === n.pidAfter)).toBe(true)
    // health: 503 degraded with this dependency down during the outage, 200 after it
    expect(r.degradedSamples).toBeGreaterThan(0)
    expect(r.healthyAfterMs).not.toBeNull()
    // sends during the outage: acknowledged (verified against history at the end) or refused
    // with UNAVAILABLE/INTERNAL; never left without an answer
    expect({ svc, outcomes: Object.keys(r.outcomesDuring).filter(o => !ALLOWED.has(o)) }).toEqual({ svc, outcomes: [] })
    // sends resume without restarting mqim
    expect(r.resumedAfterMs).not.toBeNull()
    expect(r.resumedAfterMs as number).toBeLessThanOrEqual(RECOVERY_MS)
    lines.length = 0
  }

  const outage = (svc: ServiceName): void => {
    test(`${svc} stopped for ${OUTAGE_MS / 1000} s: ${HEALTH_CHECK_OF[svc]} degraded, sends acked or refused, recovery without restart`, async () => {
      if (drill === undefined) throw new Error('the drill did not start')
      check(await drill.outage(svc, OUTAGE_MS, RECOVERY_MS))
    }, 90_000)
  }
  outage('mongo')
  outage('mysql')
  outage('redis')

  // Redis frozen (SIGSTOP) longer than a device waits for an answer: its sockets stay open and
  // nothing is answered, as when it is stuck or a network drops packets. The node must notice
  // (health, UNAVAILABLE) rather than wait on it, and lose nothing.
  test(`redis frozen for ${HANG_MS / 1000} s: redis degraded, sends acked or refused, never unanswered, recovery without restart`, async () => {
    if (drill === undefined) throw new Error('the drill did not start')
    check(await drill.outage('redis', HANG_MS, RECOVERY_MS, 'hang'))
  }, 120_000)

  test('after the outages: every acknowledged message is in history under its seq; no gap, no duplicate', async () => {
    if (drill === undefined) throw new Error('the drill did not start')
    // fail before jest's own timeout, with what the drill logged on the way
    let timer: NodeJS.Timeout | undefined
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => reject(new Error(`the final verification took more than 80 s:\n${lines.join('\n')}`)), 80_000)
    })
    const f = await Promise.race([drill.finish(), deadline]).finally(() => clearTimeout(timer))
    const detail = f.problems.length === 0 ? [] : [finalLine(f), ...lines.splice(0)]
    expect({ problems: f.problems, detail }).toEqual({ problems: [], detail: [] })
    expect(f).toMatchObject({ lost: 0, duplicated: 0, gaps: 0 })
    expect(f.acked).toBe(f.sent)
    expect(f.stored).toBe(f.acked)
    expect(f.delivered).toBe(f.expectedDeliveries)
  }, 90_000)
})
