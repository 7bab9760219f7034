/**
 * A/B a change to the server: the direct scenario on this checkout (A) and on another checkout
 * (B, e.g. a copy of src/ with a patch and a symlink to this node_modules), interleaved
 * A B B A A B ..., with the medians of the per-round B/A ratios. The machine is noisy: use
 * enough rounds (default 6).
 *
 *   node --import tsx scripts/bench/ab.ts --alt /tmp/mqim-patched [--rounds 6] [--pairs 50] [--window 8] [--measure 3000]
 *   node --import tsx scripts/bench/ab.ts --alt-node-args="--max-semi-space-size=64"   (B = same code, other node flags)
 *   --keep: keep the scratch directory (each broker's log, e.g. with --alt-node-args="--trace-gc")
 */
import os from 'node:os'
import path from 'node:path'
import { mkdtempSync, rmSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { headerComment, intOption, parseCommandLine, printUsage } from '../lib/cli.js'
import { exitStatus, installSignalHandlers, onCleanup, runCleanups } from '../lib/procs.js'
import { median } from './lib/hist.js'
import { LoaderPool } from './lib/loader.js'
import { runDirect, type Ctx, type FlowResult } from './scenarios.js'

const usage = headerComment(new URL(import.meta.url))
const { alt, altNodeArgs, rounds, params, timing, keep } = parseCommandLine(usage, () => {
  const { values } = parseArgs({
    options: {
      alt: { type: 'string' },
      'alt-node-args': { type: 'string' },
      rounds: { type: 'string' },
      pairs: { type: 'string' },
      window: { type: 'string' },
      measure: { type: 'string' },
      keep: { type: 'boolean' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) printUsage(usage)
  const altNodeArgs = (values['alt-node-args'] ?? '').split(' ').filter(x => x !== '')
  if (values.alt === undefined && altNodeArgs.length === 0) throw new Error('give --alt DIR or --alt-node-args="--flag ..."')
  return {
    alt: values.alt ?? null,
    altNodeArgs,
    rounds: intOption('rounds', values.rounds, 6),
    params: { pairs: intOption('pairs', values.pairs, 50), window: intOption('window', values.window, 8), bodyBytes: 100 },
    timing: { warmMs: 1000, measureMs: intOption('measure', values.measure, 3000) },
    keep: values.keep === true
  }
})

installSignalHandlers('ab')
const scratch = mkdtempSync(path.join(os.tmpdir(), 'mqim-ab-'))
if (keep) process.stderr.write(`scratch (broker logs) kept in ${scratch}\n`)
else onCleanup(() => rmSync(scratch, { recursive: true, force: true }))
const pool = await LoaderPool.start(Math.max(2, os.availableParallelism()))
const log = (l: string): void => { process.stderr.write(l + '\n') }
/** One side's results in a round: at the maximum rate, then paced at half of it. */
interface SideResult { max: FlowResult, half: FlowResult }
const results: Array<{ A: SideResult, B: SideResult }> = []
try {
  for (let r = 1; r <= rounds; r++) {
    // A B, B A, A B ...: neither side always runs first
    const order = r % 2 === 1 ? ['A', 'B'] as const : ['B', 'A'] as const
    const round: Partial<Record<'A' | 'B', SideResult>> = {}
    for (const side of order) {
      const ctx: Ctx = {
        pool,
        dir: path.join(scratch, `${side}${r}`),
        mqimRoot: side === 'B' && alt !== null ? path.resolve(alt) : undefined,
        mqimNodeArgs: side === 'B' ? altNodeArgs : undefined,
        log
      }
      const [max, half] = await runDirect(ctx, 'mqim', r, params, timing, 'half')
      if (max === undefined || half === undefined) throw new Error(`round ${r}, side ${side}: expected a maximum and a half-rate result`)
      round[side] = { max, half }
    }
    if (round.A !== undefined && round.B !== undefined) results.push({ A: round.A, B: round.B })
  }
} catch (err) {
  await runCleanups()
  throw err
} finally {
  await pool.close()
}

const ratio = (fn: (r: SideResult) => number): string => {
  const xs = results.map(({ A, B }) => fn(B) / fn(A))
  return `${median(xs).toFixed(3)} (rounds: ${xs.map(x => x.toFixed(2)).join(' ')})`
}
const out = [
  `B/A medians over ${rounds} rounds (direct, ${params.pairs} pairs, window ${params.window})`,
  `  max deliveries/s        ${ratio(r => r.max.deliveredPerSec)}`,
  `  CPU per delivery, max   ${ratio(r => r.max.cpuSecondsPer1kDelivered)}`,
  `  CPU per delivery, half  ${ratio(r => r.half.cpuSecondsPer1kDelivered)}`,
  `  p99 at half load        ${ratio(r => r.half.latencyMs.p99)}`,
  `  write syscalls/delivery ${ratio(r => r.max.syscallsPerDelivered.write)}`,
  `  A: ${results.map(({ A: r }) => `${Math.round(r.max.deliveredPerSec)}/s ${(r.max.cpuSecondsPer1kDelivered * 1000).toFixed(1)} ms/1k`).join(', ')}`,
  `  B: ${results.map(({ B: r }) => `${Math.round(r.max.deliveredPerSec)}/s ${(r.max.cpuSecondsPer1kDelivered * 1000).toFixed(1)} ms/1k`).join(', ')}`
]
process.stdout.write(out.join('\n') + '\n')
await runCleanups()
process.exit(exitStatus(0))
