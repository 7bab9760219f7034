/**
 * Kill and restart: an SDK client in a child process (FileStorage) is SIGKILLed mid-conversation,
 * while the other side keeps sending and it has unacknowledged sends in its outbox, then restarted
 * with the same storage. In the end each of the child's messages was stored exactly once, in order;
 * alice got every message exactly once; each run of the child got its messages exactly once, in
 * order, without a gap, and the restarted one resumed from the position last written (sync progress
 * is written coalesced, so what the killed run emitted after that write is emitted again: at least
 * once across a crash).
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { startServer, addUser, url, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, type MessageEnvelope } from '../src/client/index.js'
import { tempDir } from './helpers/tmp.js'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
const CHILD = path.join(ROOT, 'test/fixtures/sdk-child.ts')
const ALICE_SENDS = 120
const CHILD_SENDS = 40

interface Child { proc: ChildProcess, lines: string[], exited: Promise<number | null> }

function startChild (env: Record<string, string>): Child {
  const proc = spawn(process.execPath, ['--import', 'tsx', CHILD], { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const lines: string[] = []
  let buf = ''
  proc.stdout?.on('data', (d: Buffer) => {
    buf += d.toString()
    const parts = buf.split('\n')
    buf = parts.pop() ?? ''
    lines.push(...parts)
  })
  let stderr = ''
  proc.stderr?.on('data', (d: Buffer) => { stderr += d.toString() })
  const exited = new Promise<number | null>(resolve => proc.on('exit', (code) => {
    if (code !== 0 && code !== null) console.error(`child exited with ${code}: ${stderr}`)
    resolve(code)
  }))
  return { proc, lines, exited }
}

const range = (n: number): number[] => Array.from({ length: n }, (_, i) => i + 1)

describe('SDK kill and restart', () => {
  let server: MqimServer
  let alice: ImClient | undefined
  const children: Child[] = []

  beforeAll(async () => {
    // a tight per-connection rate limit keeps the child's sends queued (and retried) for a while
    server = await startServer({ limits: { requestsPerSecond: 40, requestBurst: 5 } })
    await addUser(server, 'alice')
    await addUser(server, 'bob')
  })
  afterAll(async () => {
    for (const c of children) if (c.proc.exitCode === null) c.proc.kill('SIGKILL')
    await Promise.all(children.map(async c => await c.exited))
    await alice?.close()
    await server.stop()
  })

  test('SIGKILL mid-conversation with unacked sends, restart: every message exactly once, in order, on both sides', async () => {
    const dir = tempDir('mqim-sdk-child-')
    alice = await ImClient.connect({ url: url(server, 'tcp'), userId: 'alice', password: 'password-alice', deviceId: 'laptop', reconnectPeriodMs: 100 })
    const aGot: MessageEnvelope[] = []
    alice.on('message', m => { aGot.push(m) })
    const { conv } = await alice.direct('bob')
    const env = {
      MQIM_URL: url(server, 'tcp'),
      USER_ID: 'bob',
      PASSWORD: 'password-bob',
      DEVICE: 'term',
      STORAGE_DIR: path.join(dir, 'storage'),
      CONV: conv,
      RECORD: path.join(dir, 'record.jsonl'),
      PROGRESS: path.join(dir, 'progress'),
      SENDS: String(CHILD_SENDS),
      BURST: '20'
    }
    const first = startChild(env)
    children.push(first)
    await waitUntil(() => first.lines.some(l => l.startsWith('online')), 30000, 'child online')

    // alice keeps talking the whole time
    const aliceDone = (async () => {
      for (let i = 0; i < ALICE_SENDS; i++) {
        await alice?.send(conv, `a-${i}`)
        await new Promise(resolve => setTimeout(resolve, 15))
      }
    })()

    await waitUntil(() => first.lines.some(l => l.startsWith('burst sent=20')), 30000, 'first burst')
    await new Promise(resolve => setTimeout(resolve, 100))
    first.proc.kill('SIGKILL')
    expect(await first.exited).toBeNull()
    const recordedBeforeKill = readFileSync(env.RECORD, 'utf8').trim().split('\n').length

    const second = startChild(env)
    children.push(second)
    await waitUntil(() => second.lines.some(l => l.startsWith('online')), 30000, 'child online again')
    // the restarted client found sends of the killed one in its outbox
    expect(Number(/unacked=(\d+)/.exec(second.lines[0] ?? '')?.[1])).toBeGreaterThan(0)
    const resumed = Number(/resumed=(-?\d+)/.exec(second.lines[0] ?? '')?.[1])
    await waitUntil(() => second.lines.includes('all acked'), 60000, 'child sends acked')
    await aliceDone

    const total = ALICE_SENDS + CHILD_SENDS
    const recorded = (): Array<{ run: number, seq: number, from: string, body: string }> =>
      existsSync(env.RECORD) ? readFileSync(env.RECORD, 'utf8').trim().split('\n').map(l => JSON.parse(l)) : []
    const secondRun = (): number[] => recorded().filter(m => m.run === second.proc.pid).map(m => m.seq)
    await waitUntil(() => secondRun().includes(total) && aGot.length >= total, 30000, 'all messages on both sides')
    second.proc.kill('SIGTERM')
    expect(await second.exited).toBe(0)

    // the child: each run got its messages exactly once, in seq order; the second one from where the
    // storage said, which is never beyond what the first one had emitted (no message lost)
    const rec = recorded()
    expect(recordedBeforeKill).toBeLessThan(total)
    const firstRun = rec.filter(m => m.run === first.proc.pid).map(m => m.seq)
    expect(firstRun).toEqual(range(recordedBeforeKill))
    expect(resumed).toBeGreaterThanOrEqual(0)
    expect(resumed).toBeLessThanOrEqual(recordedBeforeKill)
    expect(secondRun()).toEqual(range(total).slice(resumed))
    // alice: the same
    expect(aGot.map(m => m.seq)).toEqual(range(total))
    expect(alice.messages(conv).map(m => m.seq)).toEqual(range(total))
    // the server: each of the child's messages stored once, in the order it handed them over
    const stored: MessageEnvelope[] = []
    for (let after = 0; ;) {
      const page = await alice.history(conv, { after })
      stored.push(...page.messages)
      const last = page.messages.at(-1)
      if (!page.hasMore || last === undefined) break
      after = last.seq
    }
    expect(stored.filter(m => m.from === 'bob').map(m => m.body)).toEqual(Array.from({ length: CHILD_SENDS }, (_, i) => `b-${i}`))
    expect(stored.filter(m => m.from === 'alice').map(m => m.body)).toEqual(Array.from({ length: ALICE_SENDS }, (_, i) => `a-${i}`))
    expect(rec.filter(m => m.run === second.proc.pid).map(m => m.body)).toEqual(stored.slice(resumed).map(m => m.body))
  })
})
