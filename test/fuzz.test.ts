/**
 * `npm run fuzz` at a bounded size: a real server process, 2,000 mutated MQTT packets, 2,000
 * fuzzed requests and 1,000 fuzzed HTTP requests at once while two bystanders chat. Asserts on the fuzzer's report: nothing
 * failed, and the run reached what it is meant to reach (every connection outcome, the refusal
 * codes, connections closed for protocol violations, bystander exchanges). A few checks of the
 * oracle itself first, so that a pass means the checks could have failed.
 */
import fc from 'fast-check'
import { runFuzz, type FuzzReport } from '../scripts/fuzz/run.js'
import { readFileSync } from 'node:fs'
import { expectationOf, judge, REDELIVERY_MEMORY, ReplyMemory, UNCACHED_OPS } from '../scripts/fuzz/oracle.js'
import { packetCase } from '../scripts/fuzz/packets.js'
import { FUZZ_USER, requestCase, type RequestCase } from '../scripts/fuzz/requests.js'
import { RequestLane } from '../scripts/fuzz/request-stream.js'
import { httpCase, judgeHttp, parseResponse, redact } from '../scripts/fuzz/http.js'
import { FuzzServer } from '../scripts/fuzz/server.js'
import { killAllChildren } from '../scripts/lib/procs.js'
import { servicesFromEnv } from '../scripts/lib/services.js'
import { tempDir } from './helpers/tmp.js'
import { isOpName, type Reply } from '../src/protocol/schemas.js'
import { RECENT_REPLIES_MAX, UNCACHED_OPS as SERVER_UNCACHED_OPS } from '../src/gateway/hooks.js'

const LIMITS = { maxPayloadBytes: 65536, maxPacketBytes: 131072, maxJsonDepth: 32 }

function expectation (topic: string, payload: string, qos = 1): Extract<ReturnType<typeof expectationOf>, { kind: 'reply' }> {
  const exp = expectationOf(topic, Buffer.from(payload), qos, LIMITS)
  if (exp.kind !== 'reply') throw new Error(`expected a reply expectation, got ${JSON.stringify(exp)}`)
  return exp
}

describe('fuzz oracle', () => {
  test('refuses replies the protocol does not allow', () => {
    const bad = expectation('im/req/read', '{"id":"r1","conv":"c1","seq":-1}')
    expect(bad.stages).toEqual([['BAD_REQUEST']])
    const reply = (r: Partial<Reply> & Record<string, unknown>): Reply => ({ id: 'r1', op: 'read', ...r }) as Reply
    expect(judge(bad, reply({ ok: false, error: { code: 'BAD_REQUEST', message: 'x' } }))).toEqual({ ok: true, deviation: null })
    expect(judge(bad, reply({ ok: true, result: {} })).ok).toBe(false)
    expect(judge(bad, reply({ ok: false, error: { code: 'NOT_MEMBER', message: 'x' } })).ok).toBe(false)
    expect(judge(bad, reply({ ok: false, error: { code: 'OOPS', message: 'x' } })).ok).toBe(false)
    expect(judge(bad, reply({ id: null, ok: false, error: { code: 'BAD_REQUEST', message: 'x' } })).ok).toBe(false)
    expect(judge(bad, reply({ ok: false, error: { code: 'BAD_REQUEST' } as never })).ok).toBe(false)
    const good = expectation('im/req/read', '{"id":"r1","conv":"c1","seq":1}')
    expect(judge(good, reply({ ok: false, error: { code: 'INTERNAL', message: 'x' } })).ok).toBe(false)
    expect(judge(good, reply({ ok: false, error: { code: 'UNKNOWN_OP', message: 'x' } })).ok).toBe(false)
    expect(judge(good, reply({ ok: false, error: { code: 'NOT_MEMBER', message: 'x' } })).ok).toBe(true)
  })

  test('follows the documented order and the topic rules', () => {
    const big = expectation('im/req/nope', `{"id":"r1","x":"${'a'.repeat(70_000)}"}`)
    expect(big.stages).toEqual([['TOO_LARGE'], ['UNKNOWN_OP']])
    expect(expectation('$mqim/revoke', '{}')).toMatchObject({ op: '$mqim/revoke', id: null, stages: [['FORBIDDEN']] })
    expect(expectation('foo/bar', '{}')).toMatchObject({ stages: [['UNKNOWN_OP']] })
    expect(expectationOf('im/req/' + 'a/'.repeat(100), Buffer.from('{}'), 1, LIMITS).kind).toBe('close')
    expect(expectationOf('im/req/send', Buffer.alloc(140_000), 1, LIMITS).kind).toBe('close')
    expect(expectation('im/req/list', '[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]')).toMatchObject({ id: null, stages: [['BAD_REQUEST']] })
  })

  test('expects a redelivery to run again exactly for the requests topics.md says run again, as the server does', () => {
    // topics.md, "A request comes again": the items that say a request is safe either way or runs again
    const text = readFileSync(new URL('../topics.md', import.meta.url), 'utf8')
    const section = text.slice(text.indexOf('A client that gets no reply'), text.indexOf('## Operations'))
    const again = new Set<string>()
    for (const item of section.split('\n- ').slice(1)) {
      // the item's first sentence, up to its verdict: the requests it names
      const head = item.split(/\.\s/)[0] ?? ''
      const verdict = head.search(/safe either way|(?<!not |never )runs? again/)
      if (verdict < 0) continue
      for (const [, name] of head.slice(0, verdict).matchAll(/`([a-z-]+)`/g)) if (name !== undefined && isOpName(name)) again.add(name)
    }
    expect(again.has('read')).toBe(true)
    expect(again.has('create-group')).toBe(false)
    expect([...UNCACHED_OPS].sort()).toEqual([...again].sort())
    // and the server's own list
    expect([...SERVER_UNCACHED_OPS].sort()).toEqual([...again].sort())
  })

  test("knows when the server's reply memory surely still holds a reply: topics.md's size, the server's own", () => {
    const text = readFileSync(new URL('../topics.md', import.meta.url), 'utf8')
    const row = text.split('\n').find(l => l.startsWith('| replies kept for MQTT redeliveries')) ?? ''
    const documented = /the last ([\d,]+) such requests/.exec(row)?.[1]
    expect(Number(documented?.replace(/,/g, ''))).toBe(REDELIVERY_MEMORY)
    expect(RECENT_REPLIES_MAX).toBe(REDELIVERY_MEMORY)
    const memory = new ReplyMemory(3)
    const stamp = memory.now()
    memory.notePublishes(2)
    expect(memory.sure(stamp)).toBe(true)
    memory.notePublishes(1)
    expect(memory.sure(stamp)).toBe(false)
    expect(memory.sure(memory.now())).toBe(true)
    // the real size, less a slack for publishes counted late or never (other lanes', resends, a
    // mutated packet that is two publishes)
    const real = new ReplyMemory()
    const at = real.now()
    real.notePublishes(REDELIVERY_MEMORY - real.slack - 1)
    expect(real.sure(at)).toBe(true)
    real.notePublishes(1)
    expect(real.sure(at)).toBe(false)
    expect(real.slack).toBeGreaterThanOrEqual(1000)
  })

  test('judges HTTP answers: a 5xx, an error that is not {code, message} with a documented code, no nosniff, a secret or a path in the body', () => {
    const answer = (status: number, body: string, headers: Record<string, string> = { 'x-content-type-options': 'nosniff' }): Parameters<typeof judgeHttp>[1] =>
      ({ status, headers: new Map(Object.entries(headers)), body: Buffer.from(body), complete: true })
    const secrets = ['s3cr3t-token-value', '/srv/mqim']
    expect(judgeHttp('GET', answer(404, '{"code":"NOT_FOUND","message":"no such page"}'), secrets)).toEqual({ problem: null, code: 'NOT_FOUND' })
    expect(judgeHttp('GET', answer(200, '<html></html>'), secrets).problem).toBeNull()
    expect(judgeHttp('GET', answer(500, '{"code":"INTERNAL","message":"x"}'), secrets).problem).toMatch(/never the server's fault/)
    expect(judgeHttp('GET', answer(503, ''), secrets).problem).toMatch(/never the server's fault/)
    expect(judgeHttp('GET', answer(400, 'Bad Request'), secrets).problem).toMatch(/not JSON/)
    expect(judgeHttp('GET', answer(400, '{"error":"x"}'), secrets).problem).toMatch(/not \{code, message\}/)
    expect(judgeHttp('GET', answer(400, '{"code":"OOPS","message":"x"}'), secrets).problem).toMatch(/undocumented code/)
    expect(judgeHttp('HEAD', answer(404, ''), secrets).problem).toBeNull()
    expect(judgeHttp('GET', answer(404, '{"code":"NOT_FOUND","message":"x"}', {}), secrets).problem).toMatch(/nosniff/)
    expect(judgeHttp('GET', answer(200, 'token: s3cr3t-token-value'), secrets).problem).toMatch(/a secret or a path/)
    expect(judgeHttp('GET', answer(403, '{"code":"FORBIDDEN","message":"see /srv/mqim/web"}'), secrets).problem).toMatch(/secrets\[1\]/)
    // what a report quotes (the request sent, a problem quoting an answer) has every secret replaced
    expect(redact('authorization: Bearer s3cr3t-token-value; see /srv/mqim/web', { adminToken: 's3cr3t-token-value', secrets: ['s3cr3t-token-value', '/srv/mqim'] }))
      .toBe('authorization: Bearer <admin token>; see <secrets[1]>/web')
    // the report names a secret by its place, never by its value
    expect(judgeHttp('GET', answer(200, 'token: s3cr3t-token-value'), secrets).problem).not.toContain('s3cr3t')
    // interim answers are skipped; a body is read by its length or its chunks
    const parsed = parseResponse(Buffer.from('HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 404 Not Found\r\ntransfer-encoding: chunked\r\n\r\n3\r\n{"a\r\n2\r\n":\r\n0\r\n\r\n'), false)
    expect(parsed).toMatchObject({ status: 404, complete: true })
    expect(parsed?.body.toString()).toBe('{"a":')
    expect(() => parseResponse(Buffer.from('SSH-2.0\r\n\r\n'), false)).toThrow(/not an HTTP response/)
  })

  test('a seed names the same cases', () => {
    expect(fc.sample(httpCase, { seed: 5, numRuns: 50 })).toEqual(fc.sample(httpCase, { seed: 5, numRuns: 50 }))
    expect(fc.sample(requestCase, { seed: 5, numRuns: 50 })).toEqual(fc.sample(requestCase, { seed: 5, numRuns: 50 }))
    expect(fc.sample(packetCase, { seed: 5, numRuns: 50 })).toEqual(fc.sample(packetCase, { seed: 5, numRuns: 50 }))
  })
})

describe("a request lane judges a redelivery by what the server's reply memory surely holds", () => {
  let server: FuzzServer
  let key: string

  beforeAll(async () => {
    server = new FuzzServer(tempDir('mqim-fuzz-memory-'))
    await server.start()
    key = await server.addBot(FUZZ_USER)
  }, 60_000)

  afterAll(async () => { await server?.stop() })

  const settings = (id: string, groupInvites: string, dup: boolean): RequestCase =>
    ({ topic: { kind: 'op', op: 'settings' }, payload: { kind: 'json', value: { id, groupInvites } }, qos: 1, retain: false, dup })

  // Two lanes of one device: b's request under a's id replaces a's reply in the server's memory, so
  // a's redelivery gets b's reply: what a server that forgot a's reply and ran it again could answer.
  test.each([
    ['surely kept (the server must answer the earlier reply): a failure', REDELIVERY_MEMORY, false],
    ['perhaps forgotten (one publish since, in a memory of one): a new answer, judged as one', 1, true]
  ])('%s', async (_name, capacity, accepted) => {
    const memory = new ReplyMemory(capacity)
    const options = { url: `mqtt://127.0.0.1:${server.mqttPort}`, key, device: `mem${capacity}`, limits: server.limits, replyTimeoutMs: 10_000, convs: [], memory }
    const a = new RequestLane(options)
    const b = new RequestLane(options)
    try {
      const id = `m${capacity}`
      expect(await a.run(settings(id, 'contacts', false))).toMatchObject({ outcome: 'reply', problem: null })
      await a.stop() // (one connection of the device at a time; a lane reconnects for its next case)
      expect(await b.run(settings(id, 'anyone', false))).toMatchObject({ outcome: 'reply', problem: null })
      await b.stop()
      const again = await a.run(settings(id, 'contacts', true))
      expect(again.reply).toMatchObject({ ok: true, result: { groupInvites: 'anyone' } })
      if (accepted) {
        expect(again).toMatchObject({ outcome: 'reply', problem: null, fromCache: false })
        // and the server's answer is what a's next redelivery must match, from its memory
        expect(await a.run(settings(id, 'contacts', true))).toMatchObject({ outcome: 'reply', problem: null, fromCache: true })
      } else {
        expect(again.outcome).toBe('failed')
        expect(again.problem).toMatch(/instead of its earlier reply/)
      }
    } finally {
      await a.stop()
      await b.stop()
    }
  }, 60_000)
})

describe('npm run fuzz, bounded', () => {
  let report: FuzzReport

  beforeAll(async () => {
    report = await runFuzz({ packets: 2000, requests: 2000, http: 1000, shrink: 1 })
  }, 120_000)

  afterAll(() => { killAllChildren('SIGKILL') })

  test('nothing failed: the server stayed up, answered every request as documented, logged no error, stopped cleanly', () => {
    // on failure the diff shows every failure with its input (and the seed below)
    expect({ seed: report.seed, failures: report.failures }).toEqual({ seed: report.seed, failures: [] })
    expect(report.ok).toBe(true)
    expect(report.server).toMatchObject({ alive: true, health: 200, errorLines: [], exit: { code: 0 }, inMemoryStores: true })
  })

  test('stream 1 reached every outcome, before and after a login, over TCP and WebSocket', () => {
    const p = report.packets
    expect(p.packets).toBeGreaterThanOrEqual(2000)
    expect(p.outcomes.closed).toBeGreaterThan(0)
    expect(p.outcomes.alive).toBeGreaterThan(0)
    expect(p.outcomes.unanswered).toBeGreaterThan(0)
    expect(p.byTransport.tcp).toBeGreaterThan(0)
    expect(p.byTransport.ws).toBeGreaterThan(0)
    expect(p.loggedIn).toBeGreaterThan(0)
    expect(p.mustStayAlive).toBeGreaterThan(0)
    expect(Object.keys(p.connacks)).toEqual(expect.arrayContaining(['0', '2', '4']))
    expect(p.armedWills).toBeGreaterThan(0)
  })

  test('stream 2 got a reply to every well-formed publish, with the refusals it aimed at', () => {
    const q = report.requests
    expect(q.sent).toBe(2000)
    expect(q.replies + q.closedViolations).toBe(q.sent)
    expect(q.closedViolations).toBeGreaterThan(0)
    expect(Object.keys(q.codes)).toEqual(expect.arrayContaining(['ok', 'BAD_REQUEST', 'BAD_JSON', 'TOO_LARGE', 'UNKNOWN_OP', 'FORBIDDEN', 'NOT_MEMBER', 'NOT_FOUND']))
    expect(q.codes.INTERNAL).toBeUndefined()
    // every operation was tried
    expect(Object.keys(q.byOp)).toEqual(expect.arrayContaining(['send', 'history', 'read', 'mute', 'list', 'direct', 'create-group', 'add-members', 'remove-member', 'leave', 'rename', 'set-role', 'receipts', 'members', 'presence', 'settings']))
  })

  test('stream 3 got an answer to every HTTP request, with the refusals it aimed at and pages and admin answers that went through', () => {
    const h = report.http
    expect(h.cases).toBe(1000)
    expect(h.statuses.none).toBeUndefined()
    expect(Object.keys(h.statuses)).toEqual(expect.arrayContaining(['200', '201', '400', '401', '403', '404', '413', '431']))
    expect(Object.keys(h.statuses).filter(s => s >= '500')).toEqual([])
    expect(Object.keys(h.codes)).toEqual(expect.arrayContaining(['BAD_REQUEST', 'BAD_JSON', 'FORBIDDEN', 'NOT_FOUND', 'TOO_LARGE']))
  })

  test('the bystanders chatted throughout without a failure', () => {
    expect(report.bystander.failures).toEqual([])
    expect(report.bystander.exchanges).toBeGreaterThan(10)
    expect(report.bystander.delivery.p99).toBeLessThan(2000)
  })
})

/** The Redis database of the fuzz on the real stores (flushed; no other test file uses it). */
const REDIS_DB = 24

describe('npm run fuzz --stores --cluster, bounded: two nodes on MongoDB (FerretDB), MySQL (MariaDB) and Redis', () => {
  let report: FuzzReport

  beforeAll(async () => {
    const stores = servicesFromEnv()
    if (stores === null) throw new Error('MQIM_MONGO_URL, MQIM_MYSQL_URL and MQIM_REDIS_URL are not set: run the tests with "npm test", which starts the services')
    report = await runFuzz({ packets: 2000, requests: 2000, http: 1000, shrink: 1, seed: 20261205, stores, redisDb: REDIS_DB, cluster: true })
  }, 300_000)

  afterAll(() => { killAllChildren('SIGKILL') })

  test('nothing failed on the stores people deploy: every request answered as documented, no error logged, a clean stop', () => {
    expect({ seed: report.seed, failures: report.failures }).toEqual({ seed: report.seed, failures: [] })
    expect(report.stores).toBe('mongodb+mysql+redis')
    expect(report.server).toMatchObject({ alive: true, health: 200, errorLines: [], exit: { code: 0 }, inMemoryStores: false })
    // the second node (the bystander byb's, so every exchange crossed Redis) came through too
    expect(report.secondNode).toMatchObject({ alive: true, health: 200, exit: { code: 0, signal: null }, errorLines: [], inMemoryStores: false })
    expect(report.secondNode?.connectionsDuringRun?.ws).toBeGreaterThanOrEqual(1)
    // what the server wrote into the run's own databases, and its own word that it kept state in Redis
    expect(report.stored?.messages).toBeGreaterThan(0)
    expect(report.stored?.users).toBeGreaterThan(0)
    expect(Object.keys(report.server.warnings).some(w => w.includes('kept in Redis'))).toBe(true)
  })

  test('it reached what it aims at there too: logins, closes, replies of every kind, bystanders served', () => {
    const p = report.packets
    expect(p.outcomes.closed).toBeGreaterThan(0)
    expect(p.outcomes.alive).toBeGreaterThan(0)
    expect(p.loggedIn).toBeGreaterThan(0)
    expect(p.mustStayAlive).toBeGreaterThan(0)
    const q = report.requests
    expect(q.replies + q.closedViolations).toBe(q.sent)
    expect(Object.keys(q.codes)).toEqual(expect.arrayContaining(['ok', 'BAD_REQUEST', 'BAD_JSON', 'TOO_LARGE', 'NOT_MEMBER', 'NOT_FOUND']))
    expect(q.codes.INTERNAL).toBeUndefined()
    // the admin API on MySQL: accounts and conversations made (201), refusals as {code, message}
    expect(report.http.cases).toBe(1000)
    expect(Object.keys(report.http.statuses)).toEqual(expect.arrayContaining(['200', '201', '400', '403', '404']))
    expect(report.bystander.failures).toEqual([])
    expect(report.bystander.exchanges).toBeGreaterThan(10)
  })
})
