/**
 * `npm run drill`: the crash drill (and the outage drill) at full size, printing its figures.
 *
 *   npm run drill [-- --messages 10000 --conversations 8 --nodes 2]
 *   npm run drill -- --signal SIGTERM                 graceful shutdown instead of SIGKILL
 *   npm run drill -- --outage mongo|mysql|redis [--outage-seconds 10 --rate 100]
 *
 * Crash drill: starts MariaDB, FerretDB and Redis (scripts/services.sh, in a temporary directory;
 * or uses MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL when all three are set), fresh
 * databases, N mqim nodes as child processes, users, group conversations, senders and receivers
 * spread over the nodes. Under a sustained load it sends SIGKILL to node 1 after ~40% of the
 * acks; node 1's clients reconnect to another node, senders resend every unacknowledged message
 * with the same msgId, receivers sync by history. Then it verifies every conversation and every
 * receiver, prints the figures and ends with one line `lost=L duplicated=D gaps=G acked=N`.
 * Exit status 0 only when L, D and G are 0 and nothing else failed.
 *
 * Outage drill: the same cluster under a steady load; the service is stopped for 10 s
 * (services.sh stop-one) and started again (start-one). Checks: no acknowledged message lost,
 * sends resume without restarting mqim (same node pids), /healthz 503 degraded during the
 * outage and 200 after. Needs services.sh's directory: it starts its own services unless
 * MQIM_SERVICES_DIR is set along with the three URLs.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { describeCrash, describeOutage, OutageDrill, runCrashDrill } from './lib/drills.js'
import { intOption, oneOf, positiveNumber } from './lib/cli.js'
import { exitStatus, installSignalHandlers, onCleanup, runCleanups, sleep } from './lib/procs.js'
import { installServices, servicesFromEnv, startServices, stopServices, SERVICE_NAMES, type ServiceName, type ServiceUrls } from './lib/services.js'
import { finalLine } from './lib/verify.js'

const USAGE = `usage: npm run drill [-- options]
  --messages N         messages in the crash drill (default 10000)
  --conversations N    group conversations (default 8)
  --nodes N            mqim nodes, >= 2 (default 2)
  --senders N          sending users (default 2 per node)
  --receivers N        receiving users with persistent sessions (default 2 per node)
  --window N           sends in flight per sender (default 32)
  --kill-at F          kill node 1 after this fraction of the acks (default 0.4)
  --signal SIG         SIGKILL (default) or SIGTERM
  --outage SERVICE     outage drill instead: mongo, mysql or redis
  --outage-seconds S   how long the service is down (default 10)
  --rate N             outage drill: messages per second per sender (default 100)
  --keep               keep the databases and the services' directory`

async function services (keep: boolean, log: (s: string) => void): Promise<ServiceUrls> {
  const given = servicesFromEnv()
  if (given !== null) {
    log(`using the services of MQIM_MYSQL_URL, MQIM_MONGO_URL, MQIM_REDIS_URL${given.dir === null ? '' : ` (services.sh directory ${given.dir})`}`)
    return given
  }
  log('installing/checking the services (scripts/services.sh install)')
  await installServices()
  // short path: MariaDB's socket path is limited
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-drill-'))
  onCleanup(async () => {
    await stopServices(dir)
    if (keep) log(`services' data and logs kept in ${dir}`)
    else rmSync(dir, { recursive: true, force: true })
  })
  const urls = await startServices(dir)
  log(`services started in ${dir}`)
  return urls
}

async function main (): Promise<number> {
  const { values } = parseArgs({
    options: {
      messages: { type: 'string' },
      conversations: { type: 'string' },
      nodes: { type: 'string' },
      senders: { type: 'string' },
      receivers: { type: 'string' },
      window: { type: 'string' },
      'kill-at': { type: 'string' },
      signal: { type: 'string' },
      outage: { type: 'string' },
      'outage-seconds': { type: 'string' },
      rate: { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) {
    process.stdout.write(USAGE + '\n')
    return 0
  }
  const started = Date.now()
  const log = (s: string): void => { process.stderr.write(`drill: [${((Date.now() - started) / 1000).toFixed(1)}s] ${s}\n`) }
  const nodes = intOption('nodes', values.nodes, 2)
  if (nodes < 2) throw new Error('--nodes: at least 2 (one is killed)')
  const common = {
    nodes,
    conversations: intOption('conversations', values.conversations, 8),
    senders: intOption('senders', values.senders, 2 * nodes),
    receivers: intOption('receivers', values.receivers, 2 * nodes),
    log
  }
  const keep = values.keep === true
  installSignalHandlers('drill')
  const workDir = mkdtempSync(path.join(tmpdir(), 'mqim-drill-nodes-'))
  onCleanup(() => rmSync(workDir, { recursive: true, force: true }))
  const urls = await services(keep, log)

  if (values.outage !== undefined) {
    const service = oneOf<ServiceName>('outage', values.outage, SERVICE_NAMES, 'mongo')
    if (urls.dir === null) throw new Error('--outage with MQIM_*_URL given needs MQIM_SERVICES_DIR too (the services.sh directory), to stop and start the service')
    const seconds = positiveNumber('outage-seconds', values['outage-seconds'], 10)
    const drill = await OutageDrill.start({ ...common, services: urls, workDir, ratePerSender: intOption('rate', values.rate, 100), window: intOption('window', values.window, 16) })
    let figures
    let result
    const t0 = Date.now()
    try {
      await sleep(3000)
      result = await drill.outage(service, seconds * 1000)
      await sleep(3000)
      log('stopping the load; verifying')
      figures = await drill.finish()
      if (process.env.DRILL_DEBUG === '1') {
        const ports = new Map(drill.cluster.nodes.map(n => [n.mqttPort, n.id]))
        for (const a of drill.rec.attempts.filter(a => a.outcome !== 'ok').slice(0, 100)) {
          log(`  ${a.msgId} ${a.outcome} via ${ports.get(a.port)}: published ${a.t0 - result.stoppingAt} ms after stop-one began, failed after ${a.t1 - a.t0} ms; later acked ${JSON.stringify(drill.rec.acked.get(a.msgId))}`)
        }
        for (const n of drill.cluster.nodes) log(`--- ${n.id} output ---\n${n.log.slice(-5000)}`)
      }
    } finally {
      await drill.close(keep)
    }
    const lines = [
      ...describeOutage(result),
      `sent        ${figures.sent} messages (${figures.publishes} publishes, ${figures.resent} resent)`,
      `acked       ${figures.acked}`,
      `stored      ${figures.stored}`,
      `delivered   ${figures.delivered} of ${figures.expectedDeliveries} to receivers (${figures.pushes} pushed, ${figures.fromHistory} fetched by history sync)`,
      `lost        ${figures.lost}`,
      `duplicated  ${figures.duplicated}`,
      `gaps        ${figures.gaps}`,
      `failed      ${Object.entries(figures.errors).map(([k, v]) => `${k} ${v}`).join(', ') || 'none'}`,
      `time        ${((Date.now() - t0) / 1000).toFixed(1)} s`,
      ...figures.problems.slice(0, 30).map(p => `PROBLEM     ${p}`),
      finalLine(figures)
    ]
    process.stdout.write(lines.join('\n') + '\n')
    const ok = figures.lost === 0 && figures.duplicated === 0 && figures.gaps === 0 && figures.problems.length === 0 && result.problems.length === 0
    return ok ? 0 : 1
  }

  const signal = oneOf('signal', values.signal?.toUpperCase(), ['SIGKILL', 'SIGTERM'] as const, 'SIGKILL')
  const messages = intOption('messages', values.messages, 10_000)
  log(`crash drill: ${messages} messages, ${common.conversations} conversations, ${nodes} nodes, ${common.senders} senders, ${common.receivers} receivers; ${signal} to node 1`)
  const report = await runCrashDrill({
    ...common,
    services: urls,
    workDir,
    messages,
    window: intOption('window', values.window, 32),
    killAt: positiveNumber('kill-at', values['kill-at'], 0.4),
    signal,
    keep
  })
  process.stdout.write([...describeCrash(report, signal), finalLine(report)].join('\n') + '\n')
  return report.ok ? 0 : 1
}

let status = 1
try {
  status = await main()
} catch (err) {
  process.stderr.write(`drill: FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.stdout.write('lost=? duplicated=? gaps=? acked=0\n')
  status = 1
} finally {
  await runCleanups()
}
process.exit(exitStatus(status))
