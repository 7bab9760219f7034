/**
 * `npm run admin`: the real tool as a child process, against a real server (embedded default, over
 * the admin HTTP API) and against MySQL directly. What it prints is checked by logging in with it.
 */
import { spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { writeFileSync } from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import mqtt from 'mqtt'
import mysql from 'mysql2/promise'
import type { MqimServer } from '../src/server.js'
import { newAdminToken } from '../src/admin/auth.js'
import { freshMysqlUrl } from './helpers/db.js'
import { connackCode, startServer } from './helpers/im.js'
import { tempDir } from './helpers/tmp.js'

const ROOT = fileURLToPath(new URL('..', import.meta.url))

interface Run { code: number | null, stdout: string, stderr: string }

/** Runs src/admin/cli.ts as `npm run admin` does, with no MQIM_* variables but those given. */
function runCli (args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQIM_') && k !== 'NODE_OPTIONS'))
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/admin/cli.ts', ...args], { cwd: ROOT, env: { ...base, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d: Buffer) => { stdout += d.toString() })
  child.stderr.on('data', (d: Buffer) => { stderr += d.toString() })
  return new Promise((resolve, reject) => {
    child.once('error', reject)
    child.once('close', code => resolve({ code, stdout, stderr }))
  })
}

/** The CONNACK return code the server answers for these credentials (0 = accepted). */
/** A port on which nothing listens (bound, then released). */
async function closedPort (): Promise<number> {
  const server = net.createServer()
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const { port } = server.address() as net.AddressInfo
  await new Promise<void>(resolve => server.close(() => resolve()))
  return port
}

describe('admin CLI on the embedded default (admin HTTP API of a running server)', () => {
  const service = newAdminToken()
  const readOnly = newAdminToken()
  let server: MqimServer
  let target: string[]
  const cli = async (...args: string[]): Promise<Run> => await runCli([...args, ...target])
  const login = async (user: string, secret: string): Promise<number | null> => await connackCode(server.ports.mqtt, user, secret)

  beforeAll(async () => {
    // a page of 2 users: `user list` walks the pages
    server = await startServer({
      admin: {
        pageMax: 2,
        tokens: [
          { name: 'service', tokenSha256: service.tokenSha256, scopes: ['users:read', 'users:write'] },
          { name: 'read-only', tokenSha256: readOnly.tokenSha256, scopes: ['users:read'] }
        ]
      }
    })
    target = ['--server', `http://127.0.0.1:${server.ports.http}`, '--data-dir', server.services.config.dataDir]
  })
  afterAll(async () => { await server.stop() })

  test('user add prints a password that logs in, and a connect hint; a wrong password gets CONNACK 4', async () => {
    const run = await cli('user', 'add', 'alice', '--name', 'Alice Liddell')
    expect(run).toMatchObject({ code: 0, stderr: '' })
    const password = /^password: (\S+)$/m.exec(run.stdout)?.[1] ?? ''
    expect(run.stdout).toMatch(/^created user alice$/m)
    expect(run.stdout.trimEnd().split('\n').at(-1)).toBe(`connect: mosquitto_sub -h localhost -p <mqtt-port> -i alice:sub -u alice -P ${password} -q 1 -v -t 'im/u/alice/#'`)
    expect(password.length).toBeGreaterThanOrEqual(12)
    expect(await login('alice', password)).toBe(0)
    expect(await login('alice', password + 'x')).toBe(4)
  })

  test('user add --password --json: the given password works; the JSON carries the user', async () => {
    const run = await cli('user', 'add', 'bob', '--password', "bob's secret pw", '--json')
    expect(run.code).toBe(0)
    expect(JSON.parse(run.stdout)).toMatchObject({ user: { id: 'bob', kind: 'user', displayName: 'bob', disabled: false }, password: "bob's secret pw" })
    expect(await login('bob', "bob's secret pw")).toBe(0)
  })

  test('bot add prints an API key that logs in', async () => {
    const run = await cli('bot', 'add', 'weather', '--name', 'Weather Bot')
    expect(run.code).toBe(0)
    const apiKey = /^api key: (\S+)$/m.exec(run.stdout)?.[1] ?? ''
    expect(apiKey).toMatch(/^mqk_/)
    expect(await login('weather', apiKey)).toBe(0)
    expect(await login('weather', 'mqk_wrong')).toBe(4)
  })

  test('user disable refuses logins with CONNACK 5; user enable lets them in again', async () => {
    const { stdout } = await cli('user', 'add', 'carol', '--password', 'carol-password', '--json')
    expect(JSON.parse(stdout).password).toBe('carol-password')
    const live = await mqtt.connectAsync(`mqtt://127.0.0.1:${server.ports.mqtt}`, { clientId: 'carol:live', username: 'carol', password: 'carol-password', protocolVersion: 4, reconnectPeriod: 0 })
    const closed = new Promise<void>(resolve => live.once('close', () => resolve()))
    expect(await cli('user', 'disable', 'carol')).toMatchObject({ code: 0 })
    await closed // the open session of a disabled account is ended at once
    await live.endAsync(true)
    expect(await login('carol', 'carol-password')).toBe(5)
    expect(await cli('user', 'enable', 'carol')).toMatchObject({ code: 0 })
    expect(await login('carol', 'carol-password')).toBe(0)
  })

  test('user reset: the new password works and the old one stops; a bot gets a new API key', async () => {
    await cli('user', 'add', 'dave', '--password', 'dave-password')
    const reset = await cli('user', 'reset', 'dave', '--json')
    expect(reset.code).toBe(0)
    const { password } = JSON.parse(reset.stdout) as { password: string }
    expect(await login('dave', password)).toBe(0)
    expect(await login('dave', 'dave-password')).toBe(4)

    const bot = JSON.parse((await cli('bot', 'add', 'echo', '--json')).stdout) as { apiKey: string }
    const botReset = JSON.parse((await cli('user', 'reset', 'echo', '--json')).stdout) as { apiKey: string }
    expect(botReset.apiKey).toMatch(/^mqk_/)
    expect(await login('echo', botReset.apiKey)).toBe(0)
    expect(await login('echo', bot.apiKey)).toBe(4)
  })

  test('user list --json lists users and bots', async () => {
    await cli('user', 'add', 'erin')
    const run = await cli('user', 'list', '--json')
    expect(run.code).toBe(0)
    const { users } = JSON.parse(run.stdout) as { users: Array<{ id: string, kind: string }> }
    expect(users).toEqual(expect.arrayContaining([expect.objectContaining({ id: 'erin', kind: 'user' }), expect.objectContaining({ id: 'weather', kind: 'bot' })]))
    expect((await cli('user', 'list')).stdout).toMatch(/^erin\s+user\s+active\s/m)
  })

  test('operation errors exit 1: duplicate user (CONFLICT), unknown user, short password', async () => {
    await cli('user', 'add', 'frank')
    const dup = await cli('user', 'add', 'frank')
    expect(dup.code).toBe(1)
    expect(dup.stderr.trim()).toBe('error CONFLICT: user frank already exists')
    const json = await cli('user', 'add', 'frank', '--json')
    expect(json.code).toBe(1)
    expect(JSON.parse(json.stdout)).toEqual({ error: { code: 'CONFLICT', message: 'user frank already exists' } })
    const [unknown, short] = await Promise.all([cli('user', 'disable', 'nobody'), cli('user', 'add', 'gina', '--password', 'short')])
    expect(unknown).toMatchObject({ code: 1, stderr: 'error NOT_FOUND: no such user: nobody\n' })
    expect(short).toMatchObject({ code: 1, stderr: 'error BAD_REQUEST: password: at least 8 characters\n' })
  })

  test('usage errors exit 2 with the usage text', async () => {
    const cases = [['user', 'frob'], ['user', 'add'], ['user', 'list', '--bogus'], ['user', 'list', '--name', 'x'], ['bot', 'add', 'x', '--password', 'longenough']]
    const runs = await Promise.all(cases.map(async args => ({ args, ...(await cli(...args)) })))
    for (const run of runs) {
      expect({ args: run.args, code: run.code }).toEqual({ args: run.args, code: 2 })
      expect(run.stderr).toContain('usage: npm run admin -- <command>')
    }
    expect(runs[0]?.stderr).toMatch(/^mqim admin: unknown command: user frob$/m)
    const help = await runCli(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toContain('MQIM_MYSQL_URL')
  })

  test('the admin HTTP API refuses a wrong token with 403 (none: 401), and so does the tool given the wrong data dir', async () => {
    const res = await fetch(`http://127.0.0.1:${server.ports.http}/admin/users`, { headers: { authorization: 'Bearer wrong' } })
    expect(res.status).toBe(403)
    expect(await res.json()).toMatchObject({ code: 'FORBIDDEN' })
    const noAuth = await fetch(`http://127.0.0.1:${server.ports.http}/admin/users`, { method: 'POST', body: JSON.stringify({ id: 'mallory' }) })
    expect(noAuth.status).toBe(401)

    const otherDir = tempDir('mqim-cli-')
    writeFileSync(path.join(otherDir, 'admin-token'), 'not-the-token\n')
    const run = await runCli(['user', 'list', '--server', `http://127.0.0.1:${server.ports.http}`, '--data-dir', otherDir])
    expect(run.code).toBe(1)
    expect(run.stderr).toContain('refused the admin token')
  })

  test('MQIM_ADMIN_TOKEN: a token of admin.tokens instead of the token file, with its scopes', async () => {
    const emptyDir = tempDir('mqim-cli-')
    const add = await runCli(['user', 'add', 'by-service', '--json', ...target.slice(0, 2), '--data-dir', emptyDir], { MQIM_ADMIN_TOKEN: service.token })
    expect(add.code).toBe(0)
    expect(JSON.parse(add.stdout).user.id).toBe('by-service')
    const list = await runCli(['user', 'list', '--json', ...target.slice(0, 2)], { MQIM_ADMIN_TOKEN: readOnly.token })
    expect(JSON.parse(list.stdout).users.map((u: { id: string }) => u.id)).toContain('by-service')
    const refused = await runCli(['user', 'disable', 'by-service', ...target.slice(0, 2)], { MQIM_ADMIN_TOKEN: readOnly.token })
    expect(refused.code).toBe(1)
    expect(refused.stderr.trim()).toMatch(/^error FORBIDDEN: the server at \S+ refused the admin token from MQIM_ADMIN_TOKEN: admin token "read-only" lacks the scope users:write$/)
    const unknown = await runCli(['user', 'list', ...target.slice(0, 2)], { MQIM_ADMIN_TOKEN: newAdminToken().token })
    expect(unknown.stderr).toContain('refused the admin token from MQIM_ADMIN_TOKEN: is it one of its admin.tokens?')
  })

  test('token new: a token and its admin.tokens entry (the SHA-256), made without a server', async () => {
    const run = await runCli(['token', 'new', 'billing', '--scopes', 'users:read, messages:send', '--json'])
    expect(run.code).toBe(0)
    const { token, entry } = JSON.parse(run.stdout) as { token: string, entry: { name: string, tokenSha256: string, scopes: string[] } }
    expect(token).toMatch(/^mqa_[A-Za-z0-9_-]{43}$/)
    expect(entry).toEqual({ name: 'billing', tokenSha256: createHash('sha256').update(token).digest('hex'), scopes: ['users:read', 'messages:send'] })
    const text = await runCli(['token', 'new', 'billing', '--scopes', 'users:read'])
    expect(text.stdout).toMatch(/^mqa_\S+$/m)
    expect(text.stdout).toMatch(/^\{"name":"billing","tokenSha256":"[0-9a-f]{64}","scopes":\["users:read"\]\}$/m)
    expect(await runCli(['token', 'new', 'billing'])).toMatchObject({ code: 2, stderr: expect.stringContaining('token new needs --scopes') })
    const bad = await runCli(['token', 'new', 'billing', '--scopes', 'users:delete'])
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(/^error BAD_REQUEST: scopes\.0: one of users:read/)
    expect((await runCli(['token', 'new', 'bad name!', '--scopes', 'users:read'])).code).toBe(1)
  })

  test('with no server running the tool says so', async () => {
    const port = await closedPort()
    const run = await runCli(['user', 'list', '--server', `http://127.0.0.1:${port}`, '--data-dir', server.services.config.dataDir])
    expect(run.code).toBe(1)
    expect(run.stderr.trim()).toBe(`error UNAVAILABLE: no mqim server is running at http://127.0.0.1:${port} (start it with npm start, or pass --server)`)
    // the default address comes from the config (http.port)
    const byConfig = await runCli(['user', 'list'], { MQIM_HTTP_PORT: String(port), MQIM_DATA_DIR: tempDir('mqim-cli-') })
    expect(byConfig.stderr.trim()).toBe(`error UNAVAILABLE: no mqim server is running at http://127.0.0.1:${port} (start it with npm start, or pass --server)`)
  })
})

describe('admin CLI on MySQL (directly, no server)', () => {
  let url: string
  beforeAll(async () => { url = await freshMysqlUrl() })
  afterAll(async () => {
    const parsed = new URL(url)
    const conn = await mysql.createConnection({ host: parsed.hostname, port: Number(parsed.port || 3306), user: decodeURIComponent(parsed.username), password: decodeURIComponent(parsed.password) })
    await conn.query(`DROP DATABASE IF EXISTS \`${parsed.pathname.slice(1)}\``)
    await conn.end()
  })

  test('user add then user list --json; the password logs in to a server started on that database afterwards', async () => {
    const add = await runCli(['user', 'add', 'alice', '--name', 'Alice', '--json'], { MQIM_MYSQL_URL: url })
    expect(add.code).toBe(0)
    const { password } = JSON.parse(add.stdout) as { password: string }
    const list = await runCli(['user', 'list', '--json'], { MQIM_MYSQL_URL: url })
    expect(list.code).toBe(0)
    expect(JSON.parse(list.stdout)).toEqual({ users: [expect.objectContaining({ id: 'alice', kind: 'user', displayName: 'Alice', disabled: false })] })
    expect(await runCli(['user', 'add', 'alice'], { MQIM_MYSQL_URL: url })).toMatchObject({ code: 1, stderr: 'error CONFLICT: user alice already exists\n' })

    const server = await startServer({ metadataStore: { adapter: 'mysql', url } })
    try {
      expect(await connackCode(server.ports.mqtt, 'alice', password)).toBe(0)
    } finally {
      await server.stop()
    }
  })

  test('an unreachable database is an operation error naming the store, with the password hidden', async () => {
    const parsed = new URL(url)
    parsed.port = String(await closedPort())
    const run = await runCli(['user', 'list'], { MQIM_MYSQL_URL: parsed.toString() })
    expect(run.code).toBe(1)
    expect(run.stderr).toMatch(/^error UNAVAILABLE: metadataStore \(mysql\) at mysql:\/\/[^:@]*(:\*\*\*)?@127\.0\.0\.1:/)
    if (parsed.password !== '') expect(run.stderr).not.toContain(`:${parsed.password}@`)
  })
})
