/**
 * The hostile scenario: how much a bystander suffers while an attacker runs.
 *
 * For each attack, a fresh mqim (embedded stores, every limit at its default) serves a bystander
 * pair (lib/bystander.ts: two users in a direct conversation, from 127.0.0.1; one sends at a fixed
 * rate and measures request -> reply and send -> peer delivery) while windows alternate:
 * baseline (no attacker), attack, baseline, attack, ... The attacker is a separate process
 * (attacker.ts) connecting from 127.0.0.2, so per-address limits tell it from the bystander. After
 * each attack window the attacker disconnects everything and the runner waits until the server's
 * CPU is back near its baseline level before the next baseline window.
 *
 * The figure: the median over the attack windows of the bystander's p99 / the median over the
 * baseline windows of its p99, for the round trip and for the delivery; the worse of the two
 * counts (per-round ratios, attack window / the baseline window before it, are kept too). The
 * server's RSS, and whether it survived (still running, /healthz 200), are reported with it; a
 * server that dies ends that attack's rounds and is reported.
 */
import { fileURLToPath } from 'node:url'
import { sleep, stopChild, waitUntil } from '../lib/procs.js'
import { Bystander, type WindowStats } from './lib/bystander.js'
import { median } from './lib/hist.js'
import { createBots, createUsers, ImClient, openDirects } from './lib/im.js'
import { IpcChild } from './lib/ipc.js'
import { machineBusySeconds, sampleProc } from './lib/proc-stats.js'
import type { AttackCommand, AttackName, AttackReport, AttackSpec } from './lib/protocol.js'
import { logTail, type Target } from './lib/targets.js'
import { targetDir, withTarget, type Ctx } from './scenarios.js'

const ATTACKER = fileURLToPath(new URL('./attacker.ts', import.meta.url))
/** The bystander connects from 127.0.0.1 (mqtt.js' default route); the attacker from here. */
const ATTACKER_ADDRESS = '127.0.0.2'

export const ATTACKS: readonly AttackName[] = ['stuck-subscriber', 'wrong-passwords', 'subscriptions', 'big-pages', 'request-flood']

export interface HostileParams {
  rounds: number
  /** length of each baseline and each attack window */
  windowMs: number
  /** after an attack is set up, before its window starts */
  warmMs: number
  /** longest wait after an attack for the server's CPU to come back to its baseline level */
  settleMaxMs: number
  /** the bystander's sends per second */
  bystanderRate: number
  /** a bystander request without a reply (or delivery) after this long counts as this long */
  requestTimeoutMs: number
}

export interface HostileWindow {
  kind: 'baseline' | 'attack'
  round: number
  /** seconds since the bystander started */
  from: number
  seconds: number
  bystander: WindowStats
  /** server CPU seconds per wall second */
  serverCpuUtil: number
  attackerCpuUtil: number
  /** cores used by everything else on the machine (other jobs): busy CPU minus server, attacker and runner */
  foreignCpuUtil: number
  /** highest RSS of the server sampled in the window (every 250 ms) */
  rssMiB: number
}

export interface HostileRound {
  round: number
  rttRatio: number
  deliveryRatio: number
  /** the worse of the two */
  ratio: number
}

export interface HostileResult {
  scenario: 'hostile'
  attack: AttackName
  label: string
  windows: HostileWindow[]
  rounds: HostileRound[]
  /** median attack-window p99 / median baseline-window p99, the worse of rtt and delivery; null without both kinds of window */
  ratio: number | null
  rttRatio: number | null
  deliveryRatio: number | null
  /** medians over the windows of each kind: bystander p99, ms */
  p99Ms: { baseline: { rtt: number, delivery: number }, attack: { rtt: number, delivery: number } }
  /** per round: attack set-up time, and the wait for the server to calm down after it */
  setupMs: number[]
  settleMs: number[]
  /** what the attacker did and got back, per round */
  attacker: AttackReport[]
  bystanderDisconnects: number
  server: {
    survived: boolean
    /** e.g. "exit code 134 in the attack window of round 2"; null if it kept running */
    died: string | null
    /** /healthz status at the end (0: no answer) */
    healthz: number
    rssEndMiB: number
    peakRssMiB: number
    logTail: string | null
  }
}

const MiB = 1048576

function exitText (e: { code: number | null, signal: NodeJS.Signals | null }): string {
  return e.signal !== null ? `signal ${e.signal}` : `exit code ${e.code}`
}

async function healthz (target: Target): Promise<number> {
  try {
    const res = await fetch(`http://127.0.0.1:${target.httpPort}/healthz`, { signal: AbortSignal.timeout(5000) })
    await res.text()
    return res.status
  } catch {
    return 0
  }
}

/** Accounts and conversations of one attack, made through the admin API and a setup connection before anything is measured. */
async function attackSpec (target: Target, attack: AttackName): Promise<AttackSpec> {
  switch (attack) {
    case 'stuck-subscriber': {
      const [victim, sender] = await createBots(target, ['hx-victim', 'hx-flooder'])
      const [conv] = await openDirects(target, [[sender, victim]])
      return { attack, victim, sender, conv, connections: 3, bodyBytes: 60 * 1024 }
    }
    case 'wrong-passwords': {
      // a real user with a password: every wrong guess costs the server a scrypt
      const [user] = await createUsers(target, ['hx-guessed'])
      return { attack, user: user.id, parallel: 200, attemptTimeoutMs: 10_000 }
    }
    case 'subscriptions': {
      const [user, peer] = await createBots(target, ['hx-subscriber', 'hx-peer'])
      const [conv] = await openDirects(target, [[user, peer]])
      return { attack, user, conv, maxFilters: 50_000, filtersPerPacket: 100, window: 4 }
    }
    case 'big-pages': {
      const ids = Array.from({ length: 6 }, (_, i) => `hx-pager${i + 1}`)
      const [peer, ...pagers] = await createBots(target, ['hx-pagepeer', ...ids])
      const convs = await openDirects(target, pagers.map(a => [a, peer] as const))
      // 20 texts of 55,000 characters: the first page (pageBytes 1 MiB) holds 19 of them
      const body = 'p'.repeat(55_000)
      await Promise.all(pagers.map(async (a, i) => {
        const im = await ImClient.connect(target, a, 'fill')
        try {
          for (let m = 0; m < 20; m++) await im.request('send', { conv: convs[i], msgId: `fill-${m}`, kind: 'text', body })
        } finally {
          await im.end()
        }
      }))
      return { attack, users: pagers.map((account, i) => ({ account, conv: convs[i] as string })), window: 22 }
    }
    case 'request-flood': {
      const [user] = await createBots(target, ['hx-flooder'])
      return { attack, user, connections: 16, packetsPerChunk: 200 }
    }
  }
}

export async function runHostile (ctx: Ctx, attack: AttackName, p: HostileParams): Promise<HostileResult> {
  return await withTarget(ctx, 'mqim', targetDir(ctx, `hostile-${attack}`, 'mqim', 1), { stores: null, limits: 'defaults' }, async (target) => {
    const label = 'mqim, default limits'
    const [a, b] = await createBots(target, ['hb-sender', 'hb-peer'])
    const [conv] = await openDirects(target, [[a, b]])
    const spec = await attackSpec(target, attack)
    const attacker = IpcChild.fork<AttackCommand>(ATTACKER, 'attacker')
    await attacker.ready
    const log = (line: string): void => ctx.log(`  hostile ${attack}: ${line}`)
    const died = (): boolean => target.exit() !== null
    let diedWhen: string | null = null
    const noteDeath = (when: string): boolean => {
      if (diedWhen === null && died()) {
        diedWhen = `${exitText(target.exit()!)} ${when}`
        log(`SERVER DIED: ${diedWhen}; its log ends with:\n${logTail(target.logFile, 8)}`)
      }
      return diedWhen !== null
    }
    // RSS every 250 ms, for the highest RSS of each window
    const rss: Array<{ at: number, bytes: number }> = []
    let last = target.sample()
    const sampler = setInterval(() => {
      try { last = target.sample(); rss.push({ at: last.at, bytes: last.rssBytes }) } catch { /* gone */ }
    }, 250)
    const cpu = (pid: number): number => { try { return sampleProc(pid).cpuSeconds } catch { return NaN } }
    const serverCpu = (): number => died() ? NaN : cpu(target.pid)

    const by = await Bystander.start(target, a, b, conv, p.bystanderRate)
    const t0 = performance.now()
    const marks: Array<Omit<HostileWindow, 'bystander' | 'rssMiB'> & { start: number, end: number }> = []
    /** One measurement window; returns false if the server died during it. */
    const measure = async (kind: 'baseline' | 'attack', round: number): Promise<boolean> => {
      const start = performance.now()
      const s0 = serverCpu()
      const a0 = cpu(attacker.pid)
      const m0 = machineBusySeconds()
      const me0 = process.cpuUsage()
      while (performance.now() - start < p.windowMs && !died()) await sleep(50)
      const end = performance.now()
      const seconds = (end - start) / 1000
      const server = serverCpu() - s0
      const attackerCpu = cpu(attacker.pid) - a0
      const me = process.cpuUsage(me0)
      const foreign = (machineBusySeconds() - m0) - (Number.isFinite(server) ? server : 0) - attackerCpu - (me.user + me.system) / 1e6
      marks.push({ kind, round, start, end, from: (start - t0) / 1000, seconds, serverCpuUtil: server / seconds, attackerCpuUtil: attackerCpu / seconds, foreignCpuUtil: Math.max(0, foreign) / seconds })
      return !noteDeath(`in the ${kind} window of round ${round}`)
    }
    const setupMs: number[] = []
    const settleMs: number[] = []
    const reports: AttackReport[] = []
    try {
      await sleep(p.warmMs * 2)
      for (let r = 1; r <= p.rounds; r++) {
        if (!await measure('baseline', r)) break
        // the attack, set up (with a deadline, and watching the server)
        let setup: { setupMs: number } | null = null
        let failed: Error | null = null
        attacker.call<{ setupMs: number }>({ cmd: 'start', host: '127.0.0.1', port: Number(new URL(target.mqttUrl).port), localAddress: ATTACKER_ADDRESS, spec }).then(s => { setup = s }, (err: Error) => { failed = err })
        await waitUntil(() => setup !== null || failed !== null || died(), 120_000, 'the attack to be set up', 50).catch(() => {})
        if (failed !== null) throw failed
        const s = setup as { setupMs: number } | null
        setupMs.push(s?.setupMs ?? NaN)
        log(`round ${r}: attack ${s === null ? 'not set up within 120 s (measured anyway)' : `set up in ${(s.setupMs / 1000).toFixed(1)} s`}`)
        let alive = !noteDeath(`while the attack of round ${r} was set up`)
        if (alive) {
          await sleep(p.warmMs)
          alive = await measure('attack', r)
        }
        const report = await attacker.call<AttackReport>({ cmd: 'stop' })
        reports.push(report)
        log(`round ${r}: attacker ${JSON.stringify(report.counters)}`)
        if (!alive || noteDeath(`as the attack of round ${r} stopped`)) break
        // wait for the server to calm down: CPU over 500 ms near the first baseline's
        const calm = Math.max(0.1, 1.5 * (marks[0]?.serverCpuUtil ?? 0))
        const w0 = performance.now()
        for (;;) {
          const c0 = serverCpu()
          await sleep(500)
          const util = (serverCpu() - c0) / 0.5
          if (!(util > calm) || performance.now() - w0 > p.settleMaxMs) break
        }
        settleMs.push(performance.now() - w0)
        if (noteDeath(`after the attack of round ${r}`)) break
      }
      // late replies and deliveries still count for their window
      by.pause()
      const lastEnd = marks.at(-1)?.end ?? performance.now()
      await waitUntil(() => by.settled(lastEnd) || died(), p.requestTimeoutMs, 'the bystander').catch(() => {})
    } finally {
      clearInterval(sampler)
      await by.end().catch(() => {})
      await stopChild(attacker.child, 'SIGTERM', 3000)
    }

    const windows: HostileWindow[] = marks.map(({ start, end, ...m }) => ({
      ...m,
      bystander: by.window(start, end, p.requestTimeoutMs),
      rssMiB: Math.max(0, ...rss.filter(x => x.at >= start && x.at <= end).map(x => x.bytes)) / MiB
    }))
    const rounds: HostileRound[] = []
    for (let r = 1; r <= p.rounds; r++) {
      const base = windows.find(w => w.kind === 'baseline' && w.round === r)
      const att = windows.find(w => w.kind === 'attack' && w.round === r)
      if (base === undefined || att === undefined) continue
      const rttRatio = att.bystander.rttMs.p99 / base.bystander.rttMs.p99
      const deliveryRatio = att.bystander.deliveryMs.p99 / base.bystander.deliveryMs.p99
      rounds.push({ round: r, rttRatio, deliveryRatio, ratio: Math.max(rttRatio, deliveryRatio) })
    }
    const p99 = (kind: 'baseline' | 'attack', k: 'rttMs' | 'deliveryMs'): number => median(windows.filter(w => w.kind === kind).map(w => w.bystander[k].p99))
    const finite = (x: number): number | null => Number.isFinite(x) ? x : null
    const rttRatio = finite(p99('attack', 'rttMs') / p99('baseline', 'rttMs'))
    const deliveryRatio = finite(p99('attack', 'deliveryMs') / p99('baseline', 'deliveryMs'))
    const health = died() ? 0 : await healthz(target)
    noteDeath('at the end')
    const result: HostileResult = {
      scenario: 'hostile',
      attack,
      label,
      windows,
      rounds,
      ratio: rttRatio === null || deliveryRatio === null ? null : Math.max(rttRatio, deliveryRatio),
      rttRatio,
      deliveryRatio,
      p99Ms: {
        baseline: { rtt: p99('baseline', 'rttMs'), delivery: p99('baseline', 'deliveryMs') },
        attack: { rtt: p99('attack', 'rttMs'), delivery: p99('attack', 'deliveryMs') }
      },
      setupMs,
      settleMs,
      attacker: reports,
      bystanderDisconnects: by.disconnects,
      server: {
        survived: diedWhen === null && health === 200,
        died: diedWhen,
        healthz: health,
        rssEndMiB: last.rssBytes / MiB,
        peakRssMiB: last.peakRssBytes / MiB,
        logTail: diedWhen === null ? null : logTail(target.logFile, 30)
      }
    }
    for (const w of windows) {
      log(`round ${w.round} ${w.kind.padEnd(8)}: ${w.bystander.requests} requests, p99 reply ${w.bystander.rttMs.p99.toFixed(1)} ms (${w.bystander.rttMs.missing} unanswered), delivery ${w.bystander.deliveryMs.p99.toFixed(1)} ms (${w.bystander.deliveryMs.missing} undelivered)${Object.keys(w.bystander.errors).length > 0 ? `, errors ${JSON.stringify(w.bystander.errors)}` : ''}; server CPU ${w.serverCpuUtil.toFixed(2)}, RSS ${w.rssMiB.toFixed(0)} MiB; attacker CPU ${w.attackerCpuUtil.toFixed(2)}, other jobs ${w.foreignCpuUtil.toFixed(2)}`)
    }
    log(`ratio ${result.ratio?.toFixed(2) ?? '-'} (reply ${result.rttRatio?.toFixed(2) ?? '-'}, delivery ${result.deliveryRatio?.toFixed(2) ?? '-'}); server ${result.server.survived ? 'survived' : `did NOT survive (${diedWhen ?? `/healthz ${health}`})`}, RSS ${result.server.rssEndMiB.toFixed(0)} MiB, peak ${result.server.peakRssMiB.toFixed(0)} MiB`)
    return result
  })
}
