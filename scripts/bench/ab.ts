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
import { installSignalHandlers, onCleanup, runCleanups } from '../lib/procs.js'
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
const A: FlowResult[][] = []
const B: FlowResult[][] = []
try {
  for (let r = 1; r <= rounds; r++) {
    // A B, B A, A B ...: neither side always runs first
    const order = r % 2 === 1 ? ['A', 'B'] : ['B', 'A']
    for (const side of order) {
      const ctx: Ctx = {
        pool,
        dir: path.join(scratch, `${side}${r}`),
        mqimRoot: side === 'B' && alt !== null ? path.resolve(alt) : undefined,
        mqimNodeArgs: side === 'B' ? altNodeArgs : undefined,
        log
      }
      const res = await runDirect(ctx, 'mqim', r, params, timing, 'half')
      ;(side === 'A' ? A : B).push(res)
    }
  }
} catch (err) {
  await runCleanups()
  throw err
} finally {
  await pool.close()
}

const ratio = (fn: (r: FlowResult[]) => number): string => {
  const xs = A.map((a, i) => fn(B[i]) / fn(a))
  return `${median(xs).toFixed(3)} (rounds: ${xs.map(x => x.toFixed(2)).join(' ')})`
}
const out = [
  `B/A medians over ${rounds} rounds (direct, ${params.pairs} pairs, window ${params.window})`,
  `  max deliveries/s        ${ratio(r => r[0].deliveredPerSec)}`,
  `  CPU per delivery, max   ${ratio(r => r[0].cpuSecondsPer1kDelivered)}`,
  `  CPU per delivery, half  ${ratio(r => r[1].cpuSecondsPer1kDelivered)}`,
  `  p99 at half load        ${ratio(r => r[1].latencyMs.p99)}`,
  `  write syscalls/delivery ${ratio(r => r[0].syscallsPerDelivered.write)}`,
  `  A: ${A.map(r => `${Math.round(r[0].deliveredPerSec)}/s ${(r[0].cpuSecondsPer1kDelivered * 1000).toFixed(1)} ms/1k`).join(', ')}`,
  `  B: ${B.map(r => `${Math.round(r[0].deliveredPerSec)}/s ${(r[0].cpuSecondsPer1kDelivered * 1000).toFixed(1)} ms/1k`).join(', ')}`
]
process.stdout.write(out.join('\n') + '\n')
await runCleanups()
process.exit(0)
