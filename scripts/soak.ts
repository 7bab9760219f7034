/**
 * `npm run soak`: mqim under a steady, realistic mix for a fixed time, watching latency and memory.
 *
 *   npm run soak [-- options]
 *     --minutes N   how long the load runs (default 10)
 *     --quick       3 minutes
 *     --rate N      sends per second offered, in all (default 300)
 *     --users N     accounts, one device each, every 10th a bot (default 300)
 *     --cluster     two nodes sharing Redis, FerretDB and MariaDB (default: one node, no Redis)
 *     --seed N      the seed of the world and the mix's choices (default 1): runs with one seed
 *                   compare the same load (group sizes, who sends where)
 *     -h, --help
 *
 * It starts its own FerretDB, MariaDB (and Redis with --cluster) through scripts/services.sh on
 * free ports, fresh databases, the mqim node(s) with --trace-gc and the per-user request, connection
 * and login limits lifted, then makes the accounts, ~30 groups of 5-50 members and two direct chats
 * per account. The load is open loop (scripts/soak/mix.ts): sends at the offered rate to direct
 * chats (70 %) and groups (30 %) from a random online member (a device has at most 4 sends awaiting
 * their reply and 16 requests awaiting their PUBACK: a send due beyond that is not made, and counts
 * against the achieved rate), a `read` up to the highest seq for every batch of received messages
 * (at most one per conversation per 200 ms per device), 10 reconnects per second (half clean
 * sessions, half persistent; 1-5 s away) each followed by `list` (every page) and `history {after}`
 * of the conversations with news, and one conversation or membership change per second.
 *
 * Progress goes to stderr every 10 s, and whether each target is met. stdout gets ONE JSON line
 * (`npm run -s soak` leaves out npm's own banner): offered and achieved sends/s, send and read
 * p50/p99 of the first and the last minute, RSS and heap-after-GC slopes (MB/min, least squares
 * after the first minute; per node with its major GCs, their count and mean main-thread ms, pause
 * plus marking steps, from --trace-gc), errors by operation and code, reconnects, lists and histories,
 * per-minute figures, and what of the last minute's send latency (send_ms.last_minute: the
 * generator's end-to-end figure) was the server's own: `last_minute.server_send_commit_ms`, per node
 * {id, p50_ms, p99_ms, n, p99_above_buckets if over the highest finite bucket} from its
 * mqim_send_commit_seconds histogram (arrival at the sequencer to stored), scraped when the minute
 * began and when the load stopped (sends still in flight then are not counted), interpolated
 * inside a bucket (between 100 and 250 ms it only says "in that bucket");
 * `generator_loop_delay_p99_max_ms` (the largest 10 s p99 of the generator's event-loop delay);
 * `machine_pct` (mean CPU busy, % of all cores); `other_pct` and `steal_pct` (% of one core: the
 * machine busy with anything but the soak's processes, and the hypervisor's steal; the progress
 * lines and cpu_pct_mean have them too: a run whose `other` jumps was disturbed); `calibration`
 * {before, after}: the machine's own speed before the services start and after the nodes stop
 * (a fixed CPU workload in ms, loopback TCP round trips p50/p99 in µs: scripts/bench/lib/calibrate.ts),
 * to compare runs of different days. Latencies include
 * timed-out requests
 * at the timeout (10 s). Exit status 0 when the run completed, met or not; 1 when it failed; 2 on
 * a bad command line. Everything it starts is stopped on exit, Ctrl-C included.
 *
 * Environment: MQIM_SOAK_PROF_DIR=D writes each node's V8 CPU profile into D; MQIM_SOAK_LOG_DIR=D
 * appends each node's whole log (warnings and up) to D/node<N>.log and its V8 GC trace lines to
 * D/node<N>.gc.log, and writes its /metrics at the end of the load to D/node<N>.metrics.txt;
 * MQIM_SOAK_NODE_ARGS="..." adds node options to each node (e.g. --heapsnapshot-signal=SIGUSR2;
 * --trace-gc-nvp puts each GC's phases in the GC log, but the report's heap-after-GC figures and
 * major GC counts need --trace-gc's own lines, which it replaces).
 *
 * Targets: achieved >= 98 % of offered; last-minute send p99 <= 2x the first minute's and <= 100 ms;
 * heap-after-GC slope <= 1 MB/min on every node; no unexpected error (any error reply, timeout or
 * lost request but a NOT_MEMBER that raced the mix's own removal of the member).
 */
// first: mqtt-packet's debug() calls cost the load generator as they cost the server (see the module)
import '../src/broker/quiet-debug.js'
import { writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { headerComment, intOption, parseCommandLine, positiveNumber, printUsage } from './lib/cli.js'
import { exitStatus, installSignalHandlers, onCleanup, runCleanups, sleep } from './lib/procs.js'
import { REQUEST_TIMEOUT_MS } from './soak/device.js'
import { Metrics, Sampler, pct, round, type Sample } from './soak/metrics.js'
import { Mix } from './soak/mix.js'
import { seedRandom } from './lib/random.js'
import { calibrate, type Calibration } from './bench/lib/calibrate.js'
import { buildReport } from './soak/report.js'
import { setUp } from './soak/setup.js'

interface Options { minutes: number, rate: number, users: number, cluster: boolean, seed: number }

function options (argv: string[]): Options {
  const usage = headerComment(new URL(import.meta.url))
  return parseCommandLine(usage, () => {
    const { values } = parseArgs({
      args: argv,
      options: {
        minutes: { type: 'string' },
        quick: { type: 'boolean' },
        rate: { type: 'string' },
        users: { type: 'string' },
        cluster: { type: 'boolean' },
        seed: { type: 'string' },
        help: { type: 'boolean', short: 'h' }
      }
    })
    if (values.help === true) printUsage(usage)
    if (values.quick === true && values.minutes !== undefined) throw new Error('--quick and --minutes: give one of them')
    return {
      minutes: values.quick === true ? 3 : intOption('minutes', values.minutes, 10),
      rate: positiveNumber('rate', values.rate, 300),
      users: intOption('users', values.users, 300, 10),
      cluster: values.cluster === true,
      seed: intOption('seed', values.seed, 1, 0)
    }
  })
}

const MIX = { directShare: 0.7, reconnectsPerSecond: 10, changesPerSecond: 1, groupMin: 5, groupMaxDefault: 50, reconnectTimeoutMs: 15_000 }

async function main (): Promise<number> {
  const opts = options(process.argv.slice(2))
  const began = Date.now()
  const log = (s: string): void => { process.stderr.write(`soak: [${((Date.now() - began) / 1000).toFixed(1)}s] ${s}\n`) }
  installSignalHandlers('soak')
  seedRandom(opts.seed)
  const metrics = new Metrics()
  const groupMax = Math.min(MIX.groupMaxDefault, opts.users)
  const groups = Math.min(30, Math.floor(opts.users / 2))
  log(`${opts.cluster ? 'cluster of 2 nodes' : 'single node'}, ${opts.users} accounts, ${opts.rate} sends/s offered for ${opts.minutes} min, seed ${opts.seed}`)
  const measureMachine = async (when: string): Promise<Calibration | null> => {
    try {
      const c = await calibrate()
      log(`machine ${when}: CPU workload ${c.cpu_ms} ms (fastest ${c.cpu_ms_min} ms; the rest of the machine meanwhile ${c.cpu_others_pct ?? '-'}% of a core), loopback round trip p50/p99 ${c.loopback_rtt_us.p50}/${c.loopback_rtt_us.p99} µs`)
      return c
    } catch (err) {
      log(`machine ${when}: not measured (${err instanceof Error ? err.message : String(err)})`)
      return null
    }
  }
  // before anything of the soak runs: what this machine gives today
  const before = await measureMachine('before the services start')
  const soak = await setUp({
    users: opts.users,
    groups,
    groupMin: MIX.groupMin,
    groupMax,
    directs: 2 * opts.users,
    cluster: opts.cluster,
    botEvery: 10,
    metrics,
    log
  })
  const { world } = soak
  let report: ReturnType<typeof buildReport> | undefined
  // the one JSON line, once: after the last calibration, or by the clean-up of a run stopped
  // (Ctrl-C, a timeout) between the report and then, without that calibration
  let printed = false
  const print = (): void => {
    if (printed || report === undefined) return
    printed = true
    process.stdout.write(JSON.stringify(report) + '\n')
  }
  try {
    const mix = new Mix(world, metrics, { ...MIX, rate: opts.rate, groupMax })
    const t0 = Date.now()
    const sampler = new Sampler(soak.nodes.map((n, i) => ({ id: n.id, pid: () => n.pid, gc: soak.gcs[i] as typeof soak.gcs[number] })), soak.services, () => t0)
    world.loading = true
    metrics.begin(t0)
    mix.start(t0)
    let prevOk = 0
    const health = { samples: 0, not_ok: 0, first_not_ok: null as string | null }
    const progress = async (s: Sample): Promise<void> => {
      const w = metrics.takeWindow()
      const checks = await Promise.all(soak.nodes.map(async n => await n.health()))
      const states = checks.map(h => {
        health.samples++
        if (h.status === 200) return 'ok'
        health.not_ok++
        const what = h.status === 0 ? 'no answer' : `${h.status} ${JSON.stringify(h.body?.checks ?? {})}`
        health.first_not_ok ??= `t=${s.t}s ${h.node}: ${what}`
        return what
      })
      const ok = metrics.ok.send ?? 0
      const node = s.nodes.map(n => `${n.id.replace(/^soak-\w+-/, '')} rss ${n.rssMb} MB heap ${n.heapAfterGcMb ?? '-'} MB cpu ${n.cpuPct ?? '-'}%`).join(', ')
      log(`t=${s.t}s sends ${((ok - prevOk) / 10).toFixed(0)}/s ok (due ${mix.sendsDue}, not made ${mix.notSentNoMemberOnline + mix.notSentWindowFull}), ` +
        `send p50/p99 ${pct(w.get('send'), 50) ?? '-'}/${pct(w.get('send'), 99) ?? '-'} ms, reads ${((w.get('read')?.total ?? 0) / 10).toFixed(0)}/s p99 ${pct(w.get('read'), 99) ?? '-'} ms, ` +
        `reconnects ${metrics.counts.reconnects ?? 0}, lists ${metrics.counts.lists ?? 0}, errors ${metrics.unexpectedTotal()}; ${node}; ` +
        `ferretdb ${s.cpuPct.ferretdb ?? '-'}% mariadb ${s.cpuPct.mariadb ?? '-'}%${s.cpuPct.redis === undefined ? '' : ` redis ${s.cpuPct.redis ?? '-'}%`} generator ${s.cpuPct.generator}% (loop p99 ${s.loopP99Ms} ms), other ${s.otherPct ?? '-'}% (steal ${s.stealPct ?? '-'}%), machine ${s.machinePct ?? '-'}%; ` +
        `healthz ${states.join(', ')}`)
      prevOk = ok
    }
    sampler.start(10_000, (s: Sample) => { void progress(s) })
    const durationMs = opts.minutes * 60_000
    // the nodes' counters when the last minute begins: the report tells the server's own part of it
    await sleep(durationMs - 60_000 - (Date.now() - t0))
    const promTextLastMinute = await Promise.all(soak.nodes.map(async n => await n.metricsText()))
    await sleep(durationMs - (Date.now() - t0))
    mix.stop()
    const loadMs = Date.now() - t0
    const promText = await Promise.all(soak.nodes.map(async n => await n.metricsText()))
    const logDir = process.env.MQIM_SOAK_LOG_DIR
    if (logDir !== undefined) promText.forEach((text, i) => { if (text !== null) writeFileSync(path.join(logDir, `node${i + 1}.metrics.txt`), text) })
    if (Date.now() - t0 - ((sampler.samples.at(-1)?.t ?? 0) * 1000) > 5000) sampler.take()
    sampler.stop()
    log(`load stopped after ${(loadMs / 1000).toFixed(1)} s; waiting for the requests in flight (at most ${REQUEST_TIMEOUT_MS / 1000 + 2} s)`)
    const devices = [...world.devices.values()]
    const drainUntil = Date.now() + REQUEST_TIMEOUT_MS + 2000
    while (devices.some(d => d.inFlight > 0) && Date.now() < drainUntil) await sleep(50)
    world.loading = false
    report = buildReport({ opts, mix, metrics, samples: sampler.samples, loadMs, health, nodes: soak.nodes.map(n => n.id), nodeExits: soak.nodeExits, world, gcs: soak.gcs, promText, promTextLastMinute, calibration: { before, after: null } })
    onCleanup(print)
    for (const [name, t] of Object.entries(report.targets)) {
      process.stderr.write(`soak: ${t.met ? 'MET ' : 'MISS'}  ${name.padEnd(28)} ${String(t.value).padStart(10)}   target ${t.goal}\n`)
    }
    const lm = report.last_minute
    log(`last minute: the server's part, a send reaching the sequencer to stored (p50/p99, interpolated in the histogram's buckets): ${(lm.server_send_commit_ms ?? []).map(n => `${n.id.replace(/^soak-\w+-/, '')} ${n.p50_ms ?? '-'}/${n.p99_ms ?? '-'}${n.p99_above_buckets === true ? '+' : ''} ms`).join(', ') || '-'}; ` +
      `generator loop p99 up to ${lm.generator_loop_delay_p99_max_ms ?? '-'} ms; other work ${lm.other_pct ?? '-'}% of a core (steal ${lm.steal_pct ?? '-'}%); machine ${lm.machine_pct ?? '-'}%`)
    if (report.targets.unexpected_errors.value !== 0 || soak.nodeExits.length > 0) {
      for (const n of soak.nodes) log(`--- last output of ${n.id} (GC trace lines left out) ---\n${n.log.slice(-3000)}`)
    }
  } finally {
    await soak.close()
  }
  // the nodes and devices stopped (the databases idle until the clean-up): the machine as it is now
  report.calibration.after = await measureMachine('after the nodes stopped (the databases idle)')
  print()
  log(`done (${round((Date.now() - began) / 1000, 1)} s in all)`)
  return 0
}

let status = 1
try {
  status = await main()
} catch (err) {
  process.stderr.write(`soak: FAILED: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  status = 1
} finally {
  await runCleanups()
}
process.exit(exitStatus(status))
