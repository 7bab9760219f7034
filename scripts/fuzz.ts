/**
 * `npm run fuzz`: attacks a real mqim server (a child process on the embedded default, free
 * ports) over real sockets with three fuzz streams at once, while two bystanders chat:
 *
 *   1. mutated MQTT packets on raw TCP and WebSocket connections, before and after a login;
 *   2. fuzzed requests (every operation of src/protocol/schemas.ts, and bad payloads and topics)
 *      from mqtt.js clients of a logged-in user;
 *   3. fuzzed HTTP requests (the page, /healthz, /metrics, the admin API with its token and
 *      without, the file routes, WebSocket upgrades) on raw TCP connections.
 *
 * Passes when the server never dies, answers every well-formed publish with a reply of the
 * documented form and code (never INTERNAL, never silence; only a protocol violation may close
 * the connection), answers every HTTP request (never a 5xx while the stores are up; errors as
 * {code, message}; nosniff on every answer; no admin token or server directory path in any
 * answer), logs no error, stops cleanly, and the bystanders' every exchange succeeds within
 * --stall-ms. Failures are tagged with their stream: [packets …], [requests …], [http …]. See scripts/fuzz/*.ts for what each part generates and checks.
 *
 *   npm run fuzz                          5,000 packets + 5,000 requests + 2,000 HTTP requests, seed 20240601
 *   npm run fuzz -- --size 20000          20,000 packets and requests, 8,000 HTTP requests
 *   npm run fuzz -- --seed 7              other inputs (a seed always names the same inputs)
 *   options:
 *     --seed N                    the inputs (20240601); the same seed and options, the same run
 *     --size N                    --packets and --requests (5000); --http defaults to 0.4 N, rounded
 *     --packets N, --requests N   each MQTT stream's size on its own (default: --size)
 *     --http N                    HTTP requests (default: --size x 0.4)
 *     --packet-lanes N            raw connections at once (24)
 *     --request-lanes N           mqtt.js clients of the fuzz user at once (4)
 *     --http-lanes N              HTTP requests in flight at once, one connection each (4)
 *     --probe-ms N                stream 1: wait for the probe PINGREQ's answer before "unanswered" (300)
 *     --stall-ms N                slowest bystander exchange allowed (2000)
 *     --shrink N                  failures to shrink per MQTT stream, 0 for none (3); HTTP
 *                                 failures are reported as sent
 *     --stores                    the server on MongoDB, MySQL and Redis instead of the embedded
 *                                 default: those of MQIM_MONGO_URL, MQIM_MYSQL_URL, MQIM_REDIS_URL
 *                                 (`bash scripts/services.sh start DIR; source DIR/env`); a MongoDB
 *                                 and a MySQL database of its own (mqimfuzz_<time>_<random>),
 *                                 dropped after a run without failures, kept for a look otherwise
 *     --redis-db N                with --stores, required: the Redis database (1 or more, holding
 *                                 no key: checked) the run uses and empties after a run without
 *                                 failures (a failed run's keys stay there for a look)
 *     --cluster                   with --stores: a second node on the same stores; the streams hit
 *                                 the first, the bystander byb chats through the second
 *     --json FILE                 the whole report as JSON
 *
 * The server runs with the settings of FUZZ_CONFIG (scripts/fuzz/server.ts) over the defaults.
 *
 * Exit status 0 only when nothing failed; the last line is a one-line summary.
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { DEFAULT_OPTIONS, runFuzz } from './fuzz/run.js'
import { killAllChildren } from './lib/procs.js'
import { Redis } from 'ioredis'
import { servicesFromEnv } from './lib/services.js'
import { formatReport, summaryLine } from './fuzz/report.js'

function int (name: string, raw: string | undefined, dflt: number, min = 0): number {
  if (raw === undefined) return dflt
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got "${raw}"`)
  return n
}

/**
 * The Redis database a --stores run will empty: not 0 (where a deployment on that Redis most likely
 * keeps its sessions, and whose pub/sub channels every database-0 deployment shares) and holding no
 * key (a database that holds data is not the fuzzer's to empty; a failed run's keys stay until
 * emptied by hand: `redis-cli -n N FLUSHDB`).
 */
async function checkEmptyRedisDb (redisUrl: string, db: number): Promise<void> {
  if (db === 0) throw new Error('--redis-db 0: pick another database (1-15 on a stock Redis): 0 is where a deployment keeps its data')
  const url = new URL(redisUrl)
  url.pathname = `/${db}`
  const conn = new Redis(url.toString(), { lazyConnect: true, maxRetriesPerRequest: 1 })
  conn.on('error', () => {})
  try {
    await conn.connect()
    const keys = await conn.dbsize()
    if (keys > 0) throw new Error(`--redis-db ${db}: that database holds ${keys} keys; the fuzzer empties the database it runs on, so it only takes an empty one (empty it yourself if it is a fuzz run's: redis-cli -n ${db} FLUSHDB)`)
  } finally {
    conn.disconnect()
  }
}

async function main (): Promise<number> {
  const { values } = parseArgs({
    options: {
      seed: { type: 'string' },
      size: { type: 'string' },
      packets: { type: 'string' },
      requests: { type: 'string' },
      http: { type: 'string' },
      'packet-lanes': { type: 'string' },
      'request-lanes': { type: 'string' },
      'http-lanes': { type: 'string' },
      'probe-ms': { type: 'string' },
      'stall-ms': { type: 'string' },
      shrink: { type: 'string' },
      stores: { type: 'boolean' },
      cluster: { type: 'boolean' },
      'redis-db': { type: 'string' },
      json: { type: 'string' },
      help: { type: 'boolean', short: 'h' }
    }
  })
  if (values.help === true) {
    const text = readFileSync(new URL(import.meta.url), 'utf8')
    process.stdout.write(text.slice(text.indexOf('/**') + 4, text.indexOf('*/')).split('\n').map(l => l.replace(/^ \* ?/, '')).join('\n') + '\n')
    return 0
  }
  const size = int('size', values.size, DEFAULT_OPTIONS.packets)
  const stores = values.stores === true ? servicesFromEnv() : null
  if (values.stores === true && stores === null) throw new Error('--stores: set MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL (bash scripts/services.sh start DIR; source DIR/env)')
  if (stores === null && values['redis-db'] !== undefined) throw new Error('--redis-db is for --stores runs')
  if (stores === null && values.cluster === true) throw new Error('--cluster needs --stores (the nodes share MongoDB, MySQL and Redis)')
  if (stores !== null && values['redis-db'] === undefined) throw new Error('--stores needs --redis-db N: the Redis database the run empties (FLUSHDB) and uses; pick one that holds nothing')
  const redisDb = int('redis-db', values['redis-db'], DEFAULT_OPTIONS.redisDb)
  if (stores !== null) await checkEmptyRedisDb(stores.redisUrl, redisDb)
  const started = Date.now()
  const log = (s: string): void => { process.stderr.write(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${s}\n`) }
  const report = await runFuzz({
    seed: int('seed', values.seed, DEFAULT_OPTIONS.seed),
    packets: int('packets', values.packets, size),
    requests: int('requests', values.requests, size),
    http: int('http', values.http, Math.round(size * 0.4)),
    packetLanes: int('packet-lanes', values['packet-lanes'], DEFAULT_OPTIONS.packetLanes, 1),
    requestLanes: int('request-lanes', values['request-lanes'], DEFAULT_OPTIONS.requestLanes, 1),
    httpLanes: int('http-lanes', values['http-lanes'], DEFAULT_OPTIONS.httpLanes, 1),
    probeMs: int('probe-ms', values['probe-ms'], DEFAULT_OPTIONS.probeMs, 1),
    stallMs: int('stall-ms', values['stall-ms'], DEFAULT_OPTIONS.stallMs, 1),
    shrink: int('shrink', values.shrink, DEFAULT_OPTIONS.shrink),
    stores,
    redisDb,
    cluster: values.cluster === true,
    log
  })
  if (values.json !== undefined) writeFileSync(values.json, JSON.stringify(report, null, 2))
  process.stdout.write(formatReport(report).join('\n') + '\n\n' + summaryLine(report) + '\n')
  return report.ok ? 0 : 1
}

// the server child never outlives the fuzzer
process.on('exit', () => killAllChildren('SIGKILL'))
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
  process.once(sig, () => {
    process.stderr.write(`\nfuzz: ${sig}: stopping the server\n`)
    killAllChildren('SIGKILL')
    process.exit(130)
  })
}

main().then(code => process.exit(code), (err: unknown) => {
  process.stderr.write(`fuzz: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`)
  process.exit(2)
})
