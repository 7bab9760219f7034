/** A fuzz report for people: the figures, then every failure, then one summary line. */
import type { FuzzReport } from './run.js'

function counts (o: Record<string, number>): string {
  return Object.entries(o).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k} ${v}`).join(', ') || '-'
}

export function summaryLine (r: FuzzReport): string {
  const p = r.packets
  const q = r.requests
  const b = r.bystander
  return [
    `fuzz: ${r.ok ? 'PASS' : 'FAIL'}`,
    `seed=${r.seed}`,
    `stores=${r.stores}${r.secondNode === null ? '' : ' nodes=2'}`,
    `packets=${p.packets} (closed ${p.outcomes.closed}, alive ${p.outcomes.alive}, unanswered ${p.outcomes.unanswered})`,
    `requests=${q.sent} (replies ${q.replies}, closed ${q.closedViolations})`,
    `http=${r.http.cases}`,
    `bystander=${b.exchanges} p50=${b.delivery.p50}ms p99=${b.delivery.p99}ms`,
    `rss=${r.server.rssMB ?? '?'}MB`,
    `failures=${r.failures.length}`,
    `${(r.durationMs / 1000).toFixed(1)}s`
  ].join(' ')
}

export function formatReport (r: FuzzReport): string[] {
  const p = r.packets
  const q = r.requests
  const b = r.bystander
  const lines = [
    `seed ${r.seed}, ${(r.durationMs / 1000).toFixed(1)} s, stores: ${r.stores}${r.stored === null ? '' : ` (the run's own databases hold ${r.stored.messages} messages and ${r.stored.users} users)`}${r.server.inMemoryStores === true ? ', the server said it ran in memory' : ''}`,
    `server config over the defaults: ${JSON.stringify(r.config)}`,
    ...(r.secondNode === null ? [] : [`a cluster of two nodes: the streams on the first, the bystander byb on the second (its connections while they chatted: ${JSON.stringify(r.secondNode.connectionsDuringRun)}; after the run: ${r.secondNode.alive ? 'alive' : 'DEAD'}, /healthz ${r.secondNode.health}, exit ${r.secondNode.exit?.code ?? r.secondNode.exit?.signal ?? '?'}, ${r.secondNode.errorLines.length} error lines)`]),
    '',
    `stream 1, mutated MQTT packets: ${p.packets} packets (${p.bytes} bytes) in ${p.cases} connections (tcp ${p.byTransport.tcp}, ws ${p.byTransport.ws}; ${p.loggedIn} logged in first)`,
    `  connections: closed by the server ${p.outcomes.closed}, alive (answered PINGREQ) ${p.outcomes.alive}, unanswered (waiting for bytes) ${p.outcomes.unanswered}`,
    `  logged-in connections with only legal, unmutated packets (must stay alive): ${p.mustStayAlive}; CONNACKs to fuzzed CONNECTs: ${counts(p.connacks)}; replies checked: ${p.replies}`,
    `  first packets claiming a length over the limit or a malformed one (must be closed): ${p.mustClose}`,
    `  fuzzed logins that left a will (never to be published, checked at the end): ${p.armedWills}`,
    '',
    `stream 2, fuzzed requests: ${q.sent} publishes, ${q.replies} replies, ${q.closedViolations} connections closed for protocol violations (expected), ${q.reconnects} reconnects, ${q.fromCache} answered from the redelivery cache`,
    `  codes: ${counts(q.codes)}`
  ]
  for (const [op, c] of Object.entries(q.byOp).sort()) lines.push(`    ${op}: ${counts(c)}`)
  lines.push(`  precedence deviations (a later fault's code than topics.md's order gives first): ${q.deviations.count}`)
  for (const e of q.deviations.examples) lines.push(`    e.g. ${e}`)
  lines.push(
    '',
    `stream 3, fuzzed HTTP requests: ${r.http.cases} (every one answered, no 5xx, errors as {code, message}, nosniff, no secret or path on disk in an answer)`,
    `  statuses: ${counts(r.http.statuses)}`,
    `  error codes: ${counts(r.http.codes)}`,
    '',
    `bystander (bya over TCP, byb over WebSocket): ${b.exchanges} exchanges, ${b.historyChecks} history checks, ${b.failures.length} failures`,
    `  send -> reply: p50 ${b.request.p50} ms, p99 ${b.request.p99} ms, max ${b.request.max} ms`,
    `  send -> peer has it: p50 ${b.delivery.p50} ms, p99 ${b.delivery.p99} ms, max ${b.delivery.max} ms`,
    '',
    `server: ${r.server.alive ? 'alive' : 'DEAD'} after the run, /healthz ${r.server.health}, RSS ${r.server.rssMB ?? '?'} MB (${r.server.rssStartMB ?? '?'} MB before the streams; peak ${r.server.peakRssMB ?? '?'} MB), exit on SIGTERM ${r.server.exit === null ? '?' : (r.server.exit.code ?? r.server.exit.signal)}`,
    `  V8 heap in use after a forced GC: ${r.server.heapStartMB ?? '?'} MB before the streams, ${r.server.heapEndMB ?? '?'} MB after`,
    `  log errors: ${r.server.errorLines.length}; warnings: ${counts(r.server.warnings)}`
  )
  if (r.failures.length > 0) {
    lines.push('', `FAILURES (${r.failures.length}), seed ${r.seed}:`)
    for (const f of r.failures.slice(0, 30)) {
      lines.push(`- [${f.stream}${f.index !== undefined ? ` case ${f.index}` : ''}] ${f.problem}`)
      if (f.input !== undefined) lines.push(`    input: ${f.input}`)
      if (f.detail !== undefined) lines.push(`    ${f.detail.split('\n').join('\n    ')}`)
      if (f.shrunk !== undefined) lines.push(`    shrunk: ${f.shrunk}`)
    }
    if (r.failures.length > 30) lines.push(`… and ${r.failures.length - 30} more (--json FILE has them all)`)
  }
  return lines
}
