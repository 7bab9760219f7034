/**
 * The example bots as separate processes against a real server: the SDK bot (examples/bots/echo-bot.ts)
 * and the raw-MQTT Python bot (examples/bots/raw_bot.py, Debian's python3-paho-mqtt). A user adds
 * both to a group after they started, and opens a direct chat with each; both answer /echo and /help,
 * and never answer themselves.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import path from 'node:path'
import { startServer, addUser, url, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { createBot } from '../src/admin/accounts.js'
import { ImClient, type MessageEnvelope } from '../src/client/index.js'

const ROOT = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
/** Debian's interpreter: python3-paho-mqtt lives in its dist-packages (a pyenv/venv python3 on PATH would not see it). */
const PYTHON = '/usr/bin/python3'

interface Bot { name: string, proc: ChildProcess, out: string[], exited: Promise<unknown> }

function startBot (name: string, command: string, args: string[], env: Record<string, string>): Bot {
  const proc = spawn(command, args, { cwd: ROOT, env: { ...process.env, NODE_OPTIONS: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const out: string[] = []
  proc.stdout?.on('data', (d: Buffer) => { out.push(...d.toString().split('\n').filter(l => l !== '')) })
  proc.stderr?.on('data', (d: Buffer) => { out.push(...d.toString().split('\n').filter(l => l !== '').map(l => `stderr: ${l}`)) })
  return { name, proc, out, exited: new Promise(resolve => proc.on('exit', resolve)) }
}

describe('bots', () => {
  let server: MqimServer
  let alice: ImClient | undefined
  const bots: Bot[] = []

  beforeAll(async () => {
    server = await startServer()
    await addUser(server, 'alice')
    const echo = await createBot(server.services.meta, { id: 'echo' })
    const raw = await createBot(server.services.meta, { id: 'rawbot' })
    const common = { MQIM_URL: url(server, 'tcp') }
    bots.push(startBot('echo', process.execPath, ['--import', 'tsx', 'examples/bots/echo-bot.ts'], { ...common, MQIM_BOT_ID: 'echo', MQIM_BOT_KEY: echo.apiKey }))
    bots.push(startBot('rawbot', PYTHON, ['-u', 'examples/bots/raw_bot.py'], { ...common, MQIM_BOT_ID: 'rawbot', MQIM_BOT_KEY: raw.apiKey }))
    for (const b of bots) await waitUntil(() => b.out.some(l => l.includes('online as')), 30000, `${b.name} online: ${b.out.join('\n')}`)
  })
  afterAll(async () => {
    for (const b of bots) b.proc.kill('SIGTERM')
    await Promise.all(bots.map(async b => await b.exited))
    await alice?.close()
    await server.stop()
  })

  test('both bots answer /echo and /help in a group they were added to and in direct chats', async () => {
    const got: MessageEnvelope[] = []
    alice = await ImClient.connect({ url: url(server, 'ws'), userId: 'alice', password: 'password-alice', deviceId: 'web' })
    alice.on('message', m => { got.push(m) })
    const replies = (conv: string, seq: number, from: string): MessageEnvelope[] => got.filter(m => m.conv === conv && m.replyTo === seq && m.from === from)
    const a = alice

    const group = await a.createGroup('with bots', [])
    expect(await a.addMembers(group.conv, ['echo', 'rawbot'])).toEqual({ conv: group.conv, added: ['echo', 'rawbot'] })
    for (const b of bots) await waitUntil(() => b.out.some(l => l.includes(`added to group ${group.conv}`)), 10000, `${b.name} saw the member event`)

    const echo = await a.send(group.conv, '/echo hi')
    const help = await a.send(group.conv, '/help')
    const chatter = await a.send(group.conv, 'just talking, no command')
    await waitUntil(() => ['echo', 'rawbot'].every(bot => replies(group.conv, echo.seq, bot).length === 1 && replies(group.conv, help.seq, bot).length === 1), 15000, 'answers in the group')
    for (const bot of ['echo', 'rawbot']) {
      expect(replies(group.conv, echo.seq, bot)[0]?.body).toBe('hi')
      expect(replies(group.conv, help.seq, bot)[0]?.body).toMatch(/\/echo/)
      expect(replies(group.conv, chatter.seq, bot)).toEqual([])
    }

    for (const bot of ['echo', 'rawbot']) {
      const { conv } = await a.direct(bot)
      const e = await a.send(conv, '/echo hi there')
      const h = await a.send(conv, '/help')
      const t = await a.send(conv, '/time')
      await waitUntil(() => [e, h, t].every(r => replies(conv, r.seq, bot).length === 1), 15000, `${bot} answers in direct`)
      expect(replies(conv, e.seq, bot)[0]?.body).toBe('hi there')
      expect(replies(conv, h.seq, bot)[0]?.body).toMatch(/\/time/)
      expect(Math.abs(Date.parse(replies(conv, t.seq, bot)[0]?.body as string) - Date.now())).toBeLessThan(60000)
    }

    // no bot answered a bot or itself. Bots take a conversation's messages in seq order, so an
    // answer to a bot's message would come before their answers to a marker sent after it.
    const marker = await a.send(group.conv, '/echo marker')
    await waitUntil(() => ['echo', 'rawbot'].every(bot => replies(group.conv, marker.seq, bot).length === 1), 15000, 'answers to the marker')
    const fromAlice = new Set(got.filter(m => m.from === 'alice').map(m => `${m.conv}#${m.seq}`))
    for (const m of got.filter(m => m.from !== 'alice')) expect(fromAlice.has(`${m.conv}#${m.replyTo ?? 0}`)).toBe(true)
    expect(got.filter(m => m.conv === group.conv)).toHaveLength(3 + 4 + 3)
  })
})
