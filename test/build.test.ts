/**
 * The production build runs without tsx. The sources are compiled as `npm run build` compiles them
 * (tsc -p tsconfig.build.json, here with --outDir in a temporary directory, so that the checkout's
 * dist/ is neither needed nor touched) and laid out as the Dockerfile's runtime stage lays them out:
 * dist/, web/dist/, config/, package.json and node_modules. From another working directory,
 * `node dist/main.js` starts on the embedded default; the admin tool (`node dist/admin/cli.js`)
 * runs the walk-through's `users` step; the README's mqtt.js script (walk-through step 8: alice over
 * TCP, bob over WebSocket, send, receive, read receipt, history) runs against it; the page is served
 * at `/`; SIGTERM stops it gracefully, as `docker stop` and systemd do. The deployment examples'
 * variables (deploy/mqim.env, deploy/config.example.json, the mqim service of docker-compose.yml)
 * are checked to load as a valid configuration.
 */
import type { ChildProcess } from 'node:child_process'
import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { loadConfig } from '../src/config.js'
import { freePorts, run, spawnTracked, stopChild, waitUntil, SERVER_NODE_FLAGS } from '../scripts/lib/procs.js'
import { buildWeb } from './helpers/browser.js'

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const README = readFileSync(path.join(ROOT, 'README.md'), 'utf8')

/** The fenced block after `<!-- walkthrough:NAME -->` in README.md (as scripts/walkthrough.sh reads it). */
function readmeBlock (name: string): string {
  const start = README.indexOf(`<!-- walkthrough:${name} -->\n`)
  if (start < 0) throw new Error(`README.md has no block marked <!-- walkthrough:${name} -->`)
  const fence = /^```[^\n]*\n([\s\S]*?)^```$/m.exec(README.slice(start))
  if (fence?.[1] === undefined) throw new Error(`no fenced block after walkthrough:${name}`)
  return fence[1]
}

/** The environment of a newcomer's shell: none of the caller's MQIM_* variables, no jest NODE_OPTIONS. */
function cleanEnv (extra: Record<string, string>): NodeJS.ProcessEnv {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQIM_') && k !== 'NODE_OPTIONS'))
  return { ...base, ...extra }
}

function jsFiles (dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true, recursive: true })
    .filter(e => e.isFile() && e.name.endsWith('.js'))
    .map(e => path.join(e.parentPath, e.name))
}

/** KEY=value lines of an environment file (systemd's EnvironmentFile), comments and blanks left out. */
function parseEnvFile (text: string): Record<string, string> {
  const env: Record<string, string> = {}
  for (const line of text.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim())
    if (m?.[1] !== undefined && m[2] !== undefined) env[m[1]] = m[2]
  }
  return env
}

describe('production build: node dist/main.js', () => {
  let work: string
  /** The package root as the image has it: /app in the Dockerfile. */
  let pkg: string
  let server: ChildProcess | undefined
  let log = ''
  let mqttPort: number
  let httpPort: number
  let env: NodeJS.ProcessEnv

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'mqim-build-'))
    pkg = path.join(work, 'app')
    mkdirSync(pkg)
    await run(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json', '--outDir', path.join(pkg, 'dist')], { cwd: ROOT })
    // web/dist is built under the browser tests' lock (only when its sources changed)
    buildWeb()
    cpSync(path.join(ROOT, 'web', 'dist'), path.join(pkg, 'web', 'dist'), { recursive: true })
    cpSync(path.join(ROOT, 'config'), path.join(pkg, 'config'), { recursive: true })
    cpSync(path.join(ROOT, 'package.json'), path.join(pkg, 'package.json'))
    symlinkSync(path.join(ROOT, 'node_modules'), path.join(pkg, 'node_modules'), 'dir')
    ;[mqttPort, httpPort] = await freePorts(2)
    env = cleanEnv({
      MQIM_MQTT_PORT: String(mqttPort),
      MQIM_HTTP_PORT: String(httpPort),
      MQIM_DATA_DIR: path.join(work, 'data'),
      MQIM_LOG_LEVEL: 'info'
    })
  }, 60_000)

  afterAll(async () => {
    if (server !== undefined) await stopChild(server, 'SIGKILL')
    if (work !== undefined) rmSync(work, { recursive: true, force: true })
  })

  test('dist/ holds plain ESM JavaScript: main.js, admin/cli.js, no import of TypeScript sources or tsx', () => {
    const dist = path.join(pkg, 'dist')
    expect(existsSync(path.join(dist, 'main.js'))).toBe(true)
    expect(existsSync(path.join(dist, 'admin', 'cli.js'))).toBe(true)
    const offending = jsFiles(dist).filter(f => /\bfrom\s+['"][^'"]*\.ts['"]|\bimport\(\s*['"][^'"]*\.ts['"]|['"]tsx(\/[^'"]*)?['"]/.test(readFileSync(f, 'utf8')))
    expect(offending).toEqual([])
  })

  test('node dist/main.js --help, started outside the package, finds config/ and exits 0', async () => {
    const out = await run(process.execPath, [path.join(pkg, 'dist', 'main.js'), '--help'], { cwd: work, env: cleanEnv({}) })
    expect(out).toContain('Usage: npm start')
  })

  test('the walk-through against the built server: admin tool, mqtt.js over TCP and WebSocket, the page, SIGTERM', async () => {
    // 1. Start the server, from a working directory that is not the package root.
    const child = spawnTracked(process.execPath, [...SERVER_NODE_FLAGS, path.join(pkg, 'dist', 'main.js')], { cwd: work, env, stdio: ['ignore', 'pipe', 'pipe'] })
    server = child
    const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
    child.stdout?.on('data', (d: Buffer) => { log += d.toString('utf8') })
    child.stderr?.on('data', (d: Buffer) => { log += d.toString('utf8') })
    await waitUntil(async () => {
      if (child.exitCode !== null) throw new Error(`node dist/main.js exited during start-up (${child.exitCode}):\n${log}`)
      const res = await fetch(`http://127.0.0.1:${httpPort}/healthz`).catch(() => null)
      return res?.status === 200
    }, 20_000, 'GET /healthz to answer 200', 100)
    expect(log).toContain('"msg":"mqim listening"')

    // The chat page and its script, from web/dist of the package.
    const page = await fetch(`http://127.0.0.1:${httpPort}/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-type')).toMatch(/^text\/html/)
    expect(await page.text()).toContain('<script type="module" src="app.js"></script>')
    const script = await fetch(`http://127.0.0.1:${httpPort}/app.js`)
    expect(script.status).toBe(200)
    expect((await script.arrayBuffer()).byteLength).toBeGreaterThan(10_000)

    // 2. The README's two users, with `npm run admin --` replaced by the built admin tool.
    const users = readmeBlock('users').trim().split('\n')
    expect(users).toHaveLength(2)
    for (const line of users) {
      expect(line).toMatch(/^npm run admin -- /)
      const args = line.replace(/^npm run admin -- /, '').split(/\s+/)
      const out = await run(process.execPath, [path.join(pkg, 'dist', 'admin', 'cli.js'), ...args], { cwd: work, env })
      expect(out).toMatch(/^created user (alice|bob)$/m)
    }

    // 8. The README's mqtt.js script, saved in the package directory (where `import 'mqtt'` resolves).
    const chat = readmeBlock('chat.mjs')
      .replaceAll('localhost:1883', `localhost:${mqttPort}`)
      .replaceAll('localhost:8080', `localhost:${httpPort}`)
    writeFileSync(path.join(pkg, 'chat.mjs'), chat)
    expect(readmeBlock('run-chat').trim()).toBe('node chat.mjs')
    const out = await run(process.execPath, ['chat.mjs'], { cwd: pkg, env, timeout: 30_000 })
    const conv = /^alice: stored as seq 1 in (\S+)$/m.exec(out)?.[1]
    expect({ conv, out }).toMatchObject({ conv: expect.stringMatching(/^[A-Za-z0-9_-]+$/) })
    expect(out.trimEnd().split('\n').slice(1)).toEqual([
      'bob:   got seq 1 from alice: Hello from mqtt.js!',
      'bob:   read up to seq 1, 0 unread',
      'alice: bob has read up to seq 1',
      'bob:   history has 1 message(s), lastSeq 1'
    ])

    // SIGTERM, as `docker stop` and systemd send it: a graceful stop, exit status 0.
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(log).toContain('"msg":"mqim stopped"')
  }, 60_000)

  test('the deployment examples configure MongoDB, MySQL and Redis with valid settings', () => {
    const expectDurable = (config: ReturnType<typeof loadConfig>): void => {
      expect(config.messageStore.adapter).toBe('mongodb')
      expect(config.metadataStore.adapter).toBe('mysql')
      expect(config.broker.persistence.adapter).toBe('redis')
    }
    // deploy/mqim.env with deploy/config.example.json as MQIM_CONFIG
    const unitEnv = parseEnvFile(readFileSync(path.join(ROOT, 'deploy', 'mqim.env'), 'utf8'))
    const fromUnit = loadConfig({ env: { ...unitEnv, MQIM_CONFIG: path.join(ROOT, 'deploy', 'config.example.json') } })
    expectDurable(fromUnit)
    expect(fromUnit.tls.cert).not.toBeNull()
    // the environment of the mqim service in docker-compose.yml (its `KEY: value` lines)
    const compose = readFileSync(path.join(ROOT, 'docker-compose.yml'), 'utf8')
    const service = /^ {2}mqim:\n([\s\S]*?)^ {2}\S/m.exec(compose)?.[1] ?? ''
    const composeEnv = Object.fromEntries([...service.matchAll(/^ {6}(MQIM_[A-Z_]+): (\S+)$/gm)].map(m => [m[1], m[2]]))
    expect(Object.keys(composeEnv)).toEqual(expect.arrayContaining(['MQIM_MONGO_URL', 'MQIM_MYSQL_URL', 'MQIM_REDIS_URL']))
    expectDurable(loadConfig({ env: composeEnv }))
    // the compose file's MySQL user and password are the ones in MQIM_MYSQL_URL
    const mysqlUrl = new URL(composeEnv.MQIM_MYSQL_URL ?? '')
    expect(compose).toContain(`MYSQL_USER: ${mysqlUrl.username}`)
    expect(compose).toContain(`MYSQL_PASSWORD: ${mysqlUrl.password}`)
    expect(compose).toContain(`MYSQL_DATABASE: ${mysqlUrl.pathname.slice(1)}`)
  })
})
