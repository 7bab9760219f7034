/**
 * Crash drill and graceful shutdown at a modest size, with the code of `npm run drill`
 * (scripts/lib/): two mqim node child processes on Redis + MongoDB (FerretDB) + MySQL (MariaDB),
 * senders and receivers spread over both, group conversations under a sustained load; node 1
 * gets SIGKILL (or SIGTERM) after ~40% of the acks. Its clients fail over to node 2, senders
 * resend every unacknowledged message with the same msgId, receivers sync by history. Then:
 * every acknowledged message is stored under its acked seq, seqs are 1..M per conversation,
 * nothing is stored twice, and every receiver holds every message once, in seq order.
 *
 * Needs MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL (npm test starts the services).
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describeCrash, runCrashDrill } from '../scripts/lib/drills.js'
import { servicesFromEnv, type ServiceUrls } from '../scripts/lib/services.js'
import { killAllChildren } from '../scripts/lib/procs.js'

function services (): ServiceUrls {
  const urls = servicesFromEnv()
  if (urls === null) throw new Error('MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL must be set. Run the tests with "npm test", which starts MariaDB, Redis and FerretDB on free ports.')
  return urls
}

const lines: string[] = []
const log = (s: string): void => { lines.push(s) }

describe('crash drill: 2 nodes under load, node 1 dies', () => {
  let workDir: string

  beforeAll(() => {
    workDir = mkdtempSync(path.join(tmpdir(), 'mqim-drill-test-'))
  })

  afterAll(() => {
    killAllChildren('SIGKILL')
    rmSync(workDir, { recursive: true, force: true })
  })

  test('SIGKILL: no acknowledged message lost, no duplicate, no gap; the survivor keeps serving', async () => {
    const report = await runCrashDrill({
      services: services(),
      redisDb: 16,
      messages: 2000,
      conversations: 4,
      nodes: 2,
      window: 16,
      killAt: 0.4,
      signal: 'SIGKILL',
      workDir: path.join(workDir, 'kill'),
      log,
      timeoutMs: 150_000
    })
    // on failure, the figures and the drill's log (node output included) are in the diff
    const detail = report.ok ? [] : [...describeCrash(report, 'SIGKILL'), ...lines.splice(0)]
    expect({ problems: report.problems, detail }).toEqual({ problems: [], detail: [] })
    lines.length = 0
    expect(report).toMatchObject({ lost: 0, duplicated: 0, gaps: 0, sent: 2000, acked: 2000, stored: 2000 })
    expect(report.delivered).toBe(report.expectedDeliveries)
    expect(report.victim.exit?.signal).toBe('SIGKILL')
    expect(report.ackedAtKill).toBeGreaterThanOrEqual(800)
    // the survivor kept serving: acks after node 1 had gone, through the same process
    expect(report.ackedAfterKill).toBeGreaterThan(0)
    expect(report.survivors).toEqual([expect.objectContaining({ running: true, pidUnchanged: true })])
    expect(report.failovers).toBeGreaterThan(0)
    expect(report.ok).toBe(true)
  }, 170_000)

  test('SIGTERM: the node exits 0, nothing acknowledged is lost, its clients continue on the other node', async () => {
    const report = await runCrashDrill({
      services: services(),
      redisDb: 17,
      messages: 1500,
      conversations: 4,
      nodes: 2,
      window: 16,
      killAt: 0.4,
      signal: 'SIGTERM',
      workDir: path.join(workDir, 'term'),
      log,
      timeoutMs: 150_000
    })
    // on failure, the figures and the drill's log (node output included) are in the diff
    const detail = report.ok ? [] : [...describeCrash(report, 'SIGTERM'), ...lines.splice(0)]
    expect({ problems: report.problems, detail }).toEqual({ problems: [], detail: [] })
    lines.length = 0
    expect(report.victim.exit).toEqual({ code: 0, signal: null })
    expect(report).toMatchObject({ lost: 0, duplicated: 0, gaps: 0, sent: 1500, acked: 1500, stored: 1500 })
    expect(report.delivered).toBe(report.expectedDeliveries)
    expect(report.ackedAfterKill).toBeGreaterThan(0)
    // node 1's clients were disconnected and went on through node 2
    expect(report.failovers).toBeGreaterThan(0)
    expect(report.recoveryMs).not.toBeNull()
    expect(report.survivors).toEqual([expect.objectContaining({ running: true, pidUnchanged: true })])
  }, 170_000)
})
