/**
 * `npm start`'s command line: --help prints the usage and exits without starting anything; any
 * other argument is refused (exit 2) instead of being ignored by a server that then starts. The
 * node options it runs with, and what the embedded default loads.
 */
import { spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { SERVER_NODE_FLAGS } from '../../scripts/lib/procs.js'

/** The environment of a server started here: none of the caller's MQIM_ settings (a store URL, an
 * S3 bucket, TLS files), loopback, any free port, `extra` on top. */
function serverEnv (dataDir: string, extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQIM_')))
  return { ...env, NODE_OPTIONS: '', MQIM_HOST: '127.0.0.1', MQIM_DATA_DIR: dataDir, MQIM_MQTT_PORT: '0', MQIM_HTTP_PORT: '0', ...extra }
}

function run (...args: string[]): { status: number | null, stdout: string, stderr: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'src/main.ts', ...args], {
    encoding: 'utf8',
    timeout: 30_000,
    // ports that would be taken if it started anyway: then it fails fast, and this test with it
    env: { ...process.env, MQIM_MQTT_PORT: '1', MQIM_HTTP_PORT: '1' }
  })
  return { status: r.status, stdout: r.stdout, stderr: r.stderr }
}

describe('npm start arguments', () => {
  test.each(['--help', '-h'])('%s prints the usage and exits 0', (flag) => {
    const r = run(flag)
    expect(r.status).toBe(0)
    expect(r.stdout).toContain('Usage: npm start')
    expect(r.stdout).toContain('MQIM_MQTT_PORT')
  })

  test.each([['--port', '5'], ['serve']])('%s is refused with the usage (exit 2)', (...args) => {
    const r = run(...args)
    expect(r.status).toBe(2)
    expect(r.stderr).toContain('Usage: npm start')
  })
})

describe('the node options the server runs with', () => {
  const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts
  test.each(['start', 'start:prod'])('npm run %s passes the same ones as the scripts that start servers', (name) => {
    const script = scripts[name] ?? ''
    const flags = script.split(' ').filter(w => w.startsWith('--') && w !== '--import')
    expect(flags).toEqual([...SERVER_NODE_FLAGS])
  })

  test.each([['Dockerfile', /^CMD \["node", (.*)"dist\/main\.js"\]$/m], ['deploy/mqim.service', /^ExecStart=\/usr\/bin\/node (.*)\/opt\/mqim\/dist\/main\.js$/m]])('%s starts node with them', (file, line) => {
    const m = line.exec(readFileSync(file, 'utf8'))
    expect(m).not.toBeNull()
    const flags = (m?.[1] ?? '').split(/[\s,"]+/).filter(w => w !== '')
    expect(flags).toEqual([...SERVER_NODE_FLAGS])
  })

  test('node accepts them', () => {
    const r = spawnSync(process.execPath, [...SERVER_NODE_FLAGS, '-e', 'process.exit(0)'], { encoding: 'utf8' })
    expect(r.stderr).toBe('')
    expect(r.status).toBe(0)
  })
})

describe('what the embedded default loads', () => {
  test('no database driver and no S3 SDK: they are loaded only when the config names them', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'mqim-main-'))
    const child = spawn(process.execPath, ['--import', './test/helpers/module-log.mjs', '--import', 'tsx', 'src/main.ts'], {
      env: serverEnv(dataDir, { MQIM_LOG_LEVEL: 'info' }),
      stdio: ['ignore', 'pipe', 'pipe']
    })
    let out = ''
    let err = ''
    child.stdout.on('data', (d: Buffer) => { out += d.toString() })
    child.stderr.on('data', (d: Buffer) => { err += d.toString() })
    const exited = new Promise<void>(resolve => { child.on('exit', () => { resolve() }); child.on('error', () => { resolve() }) })
    try {
      const deadline = Date.now() + 30_000
      // the log goes to stdout or stderr (see src/log.ts)
      while (!(out + err).includes('mqim listening') && child.exitCode === null && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
      expect(out + err).toContain('mqim listening')
      const loaded = new Set([...err.matchAll(/^module-log: (\S+)$/gm)].map(m => m[1] ?? ''))
      // the log works: the broker and the image library are loaded at start
      expect(loaded).toContain('aedes')
      expect(loaded).toContain('sharp')
      expect([...loaded].filter(p => ['mongodb', 'mysql2', '@aws-sdk/client-s3', '@aws-sdk/s3-request-presigner'].includes(p))).toEqual([])
    } finally {
      child.kill('SIGTERM')
      const hard = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(hard)
      rmSync(dataDir, { recursive: true, force: true })
    }
  }, 60_000)
})

describe('a store module that cannot be loaded', () => {
  test('stops the start with exit status 2, naming the config field, before anything listens', () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'mqim-main-'))
    try {
      const r = spawnSync(process.execPath, ['--import', './test/helpers/module-refuse.mjs', '--import', 'tsx', 'src/main.ts'], {
        encoding: 'utf8',
        timeout: 30_000,
        env: serverEnv(dataDir, {
          MQIM_TEST_REFUSE_MODULES: 'mongodb',
          // nothing listens on port 1: the stores are never reached, their modules fail first
          MQIM_MONGO_URL: 'mongodb://127.0.0.1:1/',
          MQIM_MYSQL_URL: 'mysql://mqim:mqim@127.0.0.1:1/mqim'
        })
      })
      expect(r.stderr).toContain('mqim: failed to start: messageStore (mongodb): its module could not be loaded: Cannot find package "mongodb"')
      expect(r.stderr).not.toContain('mqim listening')
      expect(r.status).toBe(2)
    } finally {
      rmSync(dataDir, { recursive: true, force: true })
    }
  }, 60_000)
})
