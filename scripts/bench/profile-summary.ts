/**
 * Summary of a V8 CPU profile (.cpuprofile, from `node --cpu-prof`, e.g. `npm run bench -- --profile`):
 * the functions with the most self time, self time per package/file, and the inclusive (total)
 * time of the heaviest frames.
 *
 *   node --import tsx scripts/bench/profile-summary.ts <file.cpuprofile> [--top N] [--filter text]
 */
import { readFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { headerComment, intOption, parseCommandLine, printUsage } from '../lib/cli.js'

interface CallFrame { functionName: string, url: string, lineNumber: number, columnNumber: number }
interface Node { id: number, callFrame: CallFrame, hitCount?: number, children?: number[] }
interface Profile { nodes: Node[], startTime: number, endTime: number, samples?: number[], timeDeltas?: number[] }

const usage = headerComment(new URL(import.meta.url))
const { file, TOP, FILTER } = parseCommandLine(usage, () => {
  const { values, positionals } = parseArgs({
    options: { top: { type: 'string' }, filter: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true
  })
  if (values.help === true) printUsage(usage)
  const [file] = positionals
  if (file === undefined || positionals.length !== 1) throw new Error('give one .cpuprofile file')
  return { file, TOP: intOption('top', values.top, 30), FILTER: values.filter ?? null }
})

const profile = JSON.parse(readFileSync(file, 'utf8')) as Profile
const byId = new Map(profile.nodes.map(n => [n.id, n]))
const parent = new Map<number, number>()
for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id)

// self time per node from samples and time deltas (µs)
const self = new Map<number, number>()
const samples = profile.samples ?? []
const deltas = profile.timeDeltas ?? []
for (const [i, id] of samples.entries()) {
  const dt = deltas[i + 1] ?? deltas[i] ?? 0
  self.set(id, (self.get(id) ?? 0) + dt)
}
const total = [...self.values()].reduce((a, b) => a + b, 0)

function shortUrl (url: string): string {
  if (url === '') return '(native)'
  const nm = url.lastIndexOf('node_modules/')
  if (nm >= 0) return url.slice(nm + 'node_modules/'.length)
  const src = url.indexOf('/src/')
  if (src >= 0) return url.slice(src + 1)
  return url.replace(/^file:\/\//, '')
}
function label (cf: CallFrame): string {
  return `${cf.functionName || '(anonymous)'} ${shortUrl(cf.url)}:${cf.lineNumber + 1}`
}
function pkg (cf: CallFrame): string {
  const u = shortUrl(cf.url)
  if (u.startsWith('(')) return cf.functionName.startsWith('(') ? cf.functionName : '(native/builtin)'
  const [first = u, second] = u.split('/')
  if (u.startsWith('node:')) return first
  if (u.startsWith('src/')) return u
  return first.startsWith('@') ? `${first}/${second}` : first
}

const ms = (us: number): string => (us / 1000).toFixed(0).padStart(7) + ' ms'
const pct = (us: number): string => (100 * us / total).toFixed(1).padStart(5) + ' %'

// self time by function
const selfByFn = new Map<string, number>()
const selfByPkg = new Map<string, number>()
for (const [id, t] of self) {
  const cf = byId.get(id)!.callFrame
  selfByFn.set(label(cf), (selfByFn.get(label(cf)) ?? 0) + t)
  selfByPkg.set(pkg(cf), (selfByPkg.get(pkg(cf)) ?? 0) + t)
}

// inclusive time by function (each sample counted once per distinct function on its stack)
const inclusive = new Map<string, number>()
for (const [id, t] of self) {
  const seen = new Set<string>()
  let cur: number | undefined = id
  while (cur !== undefined) {
    const l = label(byId.get(cur)!.callFrame)
    if (!seen.has(l)) { seen.add(l); inclusive.set(l, (inclusive.get(l) ?? 0) + t) }
    cur = parent.get(cur)
  }
}

const show = (title: string, m: Map<string, number>): void => {
  process.stdout.write(`\n${title}\n`)
  const rows = [...m.entries()].filter(([k]) => FILTER === null || k.includes(FILTER)).sort((a, b) => b[1] - a[1]).slice(0, TOP)
  for (const [k, v] of rows) process.stdout.write(`${ms(v)} ${pct(v)}  ${k}\n`)
}
process.stdout.write(`${file}: ${(total / 1e6).toFixed(2)} s sampled\n`)
show('self time by package / file', selfByPkg)
show('self time by function', selfByFn)
show('inclusive time by function', inclusive)
