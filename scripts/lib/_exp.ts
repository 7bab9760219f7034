import { mkdtempSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { OutageDrill } from './drills.js'
import { servicesFromEnv } from './services.js'
import { runCleanups, installSignalHandlers, sleep } from './procs.js'
installSignalHandlers()
const t0 = Date.now()
const log = (s: string) => process.stderr.write(`[${((Date.now() - t0) / 1000).toFixed(1)}] ${s}\n`)
const monitor = process.argv[2] !== 'nomon'
const drill = await OutageDrill.start({ services: servicesFromEnv()!, nodes: 2, conversations: 8, workDir: mkdtempSync(path.join(tmpdir(), 'exp-')), ratePerSender: 100, window: 16, log })
if (!monitor) await drill.monitor.stop()
const start = Date.now()
const iv = setInterval(() => log(`${drill.rec.acked.size} acked ${JSON.stringify(drill.rec.outcomes())}`), 1000)
await sleep(25000)
clearInterval(iv)
const f = await drill.finish()
const ports = new Map(drill.cluster.nodes.map(n => [n.mqttPort, n.id]))
for (const a of drill.rec.attempts.filter(a => a.outcome !== 'ok').slice(0, 40)) log(`${a.msgId} ${a.outcome} ${ports.get(a.port)} t0=${a.t0 - start} dur=${a.t1 - a.t0} ack=${JSON.stringify(drill.rec.acked.get(a.msgId))}`)
log(`${f.acked} acked, errors ${JSON.stringify(f.errors)}`)
for (const n of drill.cluster.nodes) log(`--- ${n.id}\n${n.log.slice(-3000)}`)
await drill.close()
await runCleanups()
