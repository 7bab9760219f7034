/**
 * Configuration: defaults, MQIM_CONFIG file and environment overrides, the messages of bad values,
 * and what `npm start` (the real entry point, as a child process) does with them.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process'
import { existsSync, readFileSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { ConfigError, DEFAULT_CONFIG_PATH, loadConfig, type LoadOptions } from '../../src/config.js'
import { tempDir } from '../helpers/tmp.js'

const ROOT = fileURLToPath(new URL('../..', import.meta.url))

function configDir (): string {
  return tempDir('mqim-config-')
}

function configFile (content: unknown): string {
  const file = path.join(configDir(), 'mqim.json')
  writeFileSync(file, typeof content === 'string' ? content : JSON.stringify(content))
  return file
}

/** loadConfig must fail with a ConfigError whose message names `field`. */
function expectConfigError (options: LoadOptions, field: string): void {
  let caught: unknown
  try {
    loadConfig(options)
  } catch (err) {
    caught = err
  }
  expect(caught).toBeInstanceOf(ConfigError)
  expect((caught as Error).message).toContain(field)
}

describe('loadConfig', () => {
  test('with no file and no environment: config/default.json, documented defaults included', () => {
    const config = loadConfig({ env: {} })
    expect(config).toEqual(JSON.parse(readFileSync(DEFAULT_CONFIG_PATH, 'utf8')))
    expect(config).toMatchObject({
      host: '0.0.0.0',
      mqtt: { port: 1883 },
      http: { port: 8080 },
      tls: { cert: null, key: null },
      dataDir: '.mqim',
      messageStore: { adapter: 'memory' },
      metadataStore: { adapter: 'memory' },
      limits: { maxPayloadBytes: 65536 }
    })
  })

  test('environment overrides: ports, data dir, log level, host', () => {
    const config = loadConfig({ env: { MQIM_MQTT_PORT: '1999', MQIM_HTTP_PORT: '0', MQIM_TLS_PORT: '9999', MQIM_DATA_DIR: '/var/lib/mqim', MQIM_LOG_LEVEL: 'debug', MQIM_HOST: '127.0.0.1' } })
    expect(config).toMatchObject({ host: '127.0.0.1', mqtt: { port: 1999 }, http: { port: 0 }, tls: { port: 9999, cert: null }, dataDir: '/var/lib/mqim', log: { level: 'debug' } })
  })

  test('MQIM_MONGO_URL and MQIM_MYSQL_URL switch the stores, with the adapters\' defaults', () => {
    const config = loadConfig({ env: { MQIM_MONGO_URL: 'mongodb://db.example:27017/', MQIM_MYSQL_URL: 'mysql://u:p@db.example:3306/im' } })
    expect(config.messageStore).toEqual({ adapter: 'mongodb', url: 'mongodb://db.example:27017/', database: 'mqim' })
    expect(config.metadataStore).toEqual({ adapter: 'mysql', url: 'mysql://u:p@db.example:3306/im', poolSize: 10 })
    expect(loadConfig({ env: { MQIM_MONGO_URL: 'mongodb://h/', MQIM_MONGO_DB: 'chat' } }).messageStore).toMatchObject({ database: 'chat' })
  })

  test('MQIM_CONFIG is deep-merged over the defaults, and the environment wins over it', () => {
    const file = configFile({
      mqtt: { port: 2000 },
      limits: { historyPageMax: 50 },
      metadataStore: { adapter: 'mysql', url: 'mysql://u:p@h:3306/db', poolSize: 3 }
    })
    const config = loadConfig({ env: { MQIM_CONFIG: file } })
    expect(config.limits).toEqual({ ...JSON.parse(readFileSync(DEFAULT_CONFIG_PATH, 'utf8')).limits, historyPageMax: 50 })
    expect(config.metadataStore).toEqual({ adapter: 'mysql', url: 'mysql://u:p@h:3306/db', poolSize: 3 })
    expect(config.mqtt.port).toBe(2000)
    expect(loadConfig({ env: { MQIM_CONFIG: file, MQIM_MQTT_PORT: '3000' } }).mqtt.port).toBe(3000)
  })

  test('a Redis URL with its database in the path, in ?db= or not at all is taken', () => {
    for (const url of ['redis://cache:6379', 'redis://cache:6379/', 'redis://cache:6379/2', 'rediss://u:p@cache:6380/15', 'redis://cache:6379?db=3']) {
      expect(loadConfig({ env: { MQIM_REDIS_URL: url } }).broker.persistence).toMatchObject({ adapter: 'redis', url })
    }
  })

  test('TLS is configured by both cert and key', () => {
    expect(loadConfig({ env: { MQIM_TLS_CERT: '/etc/mqim/cert.pem', MQIM_TLS_KEY: '/etc/mqim/key.pem' } }).tls).toEqual({ port: 8883, cert: '/etc/mqim/cert.pem', key: '/etc/mqim/key.pem' })
  })

  test.each([
    ['mqtt.port', { overrides: { mqtt: { port: 70000 } } }],
    ['http.port', { overrides: { http: { port: -1 } } }],
    ['limits.maxPayloadBytes', { overrides: { limits: { maxPayloadBytes: 10 } } }],
    ['limits.requestsPerSecond', { overrides: { limits: { requestsPerSecond: 0 } } }],
    ['messageStore.url', { env: { MQIM_MONGO_URL: 'http://db.example/' } }],
    ['metadataStore.url', { env: { MQIM_MYSQL_URL: 'mysql://u:p@db.example:3306/' } }],
    ['messageStore.adapter', { overrides: { messageStore: { adapter: 'redis' } } }],
    ['broker.persistence.url', { env: { MQIM_REDIS_URL: 'redis://cache:6379/abc' } }],
    ['broker.persistence.url', { env: { MQIM_REDIS_URL: 'redis://cache:6379/?db=-1' } }],
    ['broker.persistence.url', { env: { MQIM_REDIS_URL: 'redis://cache:6379/2/x' } }],
    ['log.level', { env: { MQIM_LOG_LEVEL: 'verbose' } }],
    ['channels.invitesPerChannel', { overrides: { channels: { invitesPerChannel: 0 } } }],
    ['channels.inviteTtlMs', { overrides: { channels: { inviteTtlMs: 3_000_000_000 } } }],
    ['channels.inviteTtlMaxMs', { overrides: { channels: { inviteTtlMaxMs: 1.5 } } }],
    ['"colour"', { overrides: { colour: 'blue' } }],
    ['"maxPayload"', { overrides: { limits: { maxPayload: 1000 } } }],
    ['tls.cert', { env: { MQIM_TLS_CERT: '/etc/mqim/cert.pem' } }],
    ['tls.key', { env: { MQIM_TLS_KEY: '/etc/mqim/key.pem' } }],
    ['MQIM_MQTT_PORT', { env: { MQIM_MQTT_PORT: 'abc' } }],
    ['MQIM_HTTP_PORT', { env: { MQIM_HTTP_PORT: '65536' } }],
    ['sequencer.batchDelayMs', () => ({ env: { MQIM_CONFIG: configFile({ sequencer: { batchDelayMs: 'soon' } }) } })],
    ['nope.json', { env: { MQIM_CONFIG: '/nonexistent/nope.json' } }],
    ['not valid JSON', () => ({ env: { MQIM_CONFIG: configFile('{"mqtt": ') } })]
  ] as Array<[string, LoadOptions | (() => LoadOptions)]>)('a bad value fails with a ConfigError naming %s', (field, options) => {
    const opts = typeof options === 'function' ? options() : options
    expectConfigError({ ...opts, env: opts.env ?? {} }, field)
  })

  test('every bad field is named at once', () => {
    expectConfigError({ env: {}, overrides: { mqtt: { port: 'x' }, limits: { historyPageMax: 0 } } }, 'mqtt.port')
    expectConfigError({ env: {}, overrides: { mqtt: { port: 'x' }, limits: { historyPageMax: 0 } } }, 'limits.historyPageMax')
  })
})

// ---------------------------------------------------------------------------------------------------
// npm start
// ---------------------------------------------------------------------------------------------------

/**
 * `npm start` runs `exec node --import tsx src/main.ts` (package.json); this spawns the same node
 * directly (npm does not pass SIGTERM on), in its own process group so a failed test can kill it.
 * (Not the tsx command: it relays a signal to its child only if the child says within 30 ms that it
 * got it, else kills it, exit 143: on a loaded machine the server then never stops cleanly.)
 * Only the given MQIM_* variables apply.
 */
function start (env: Record<string, string>): { child: ChildProcessWithoutNullStreams, output: () => string, exited: Promise<number | null> } {
  const base = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('MQIM_') && k !== 'NODE_OPTIONS'))
  const child = spawn(process.execPath, ['--min-semi-space-size=16', '--import', 'tsx', 'src/main.ts'], { cwd: ROOT, env: { ...base, ...env }, detached: true })
  let out = ''
  child.stdout.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr.on('data', (d: Buffer) => { out += d.toString() })
  const exited = new Promise<number | null>(resolve => child.once('close', code => resolve(code)))
  return { child, output: () => out, exited }
}

async function waitForOutput (output: () => string, text: string, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!output().includes(text)) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for "${text}"; output so far:\n${output()}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
}

describe('npm start', () => {
  test('an invalid environment value stops start-up with status 2, naming the field on stderr', async () => {
    const bad = start({ MQIM_MQTT_PORT: 'notaport' })
    const bySchema = start({ MQIM_CONFIG: configFile({ limits: { maxPayloadBytes: 1 } }) })
    expect(await bad.exited).toBe(2)
    expect(bad.output()).toContain('MQIM_MQTT_PORT')
    expect(bad.output()).toContain('"notaport"')
    expect(await bySchema.exited).toBe(2)
    expect(bySchema.output()).toContain('limits.maxPayloadBytes')
  })

  test('on the embedded default it prints how to add a user, serves, and stops cleanly on SIGTERM', async () => {
    const dataDir = configDir()
    const server = start({ MQIM_HOST: '127.0.0.1', MQIM_MQTT_PORT: '0', MQIM_HTTP_PORT: '0', MQIM_DATA_DIR: dataDir })
    try {
      await waitForOutput(server.output, 'npm run admin -- user add')
      expect(server.output()).toContain('running with in-memory stores')
      const httpPort = /ws:\/\/localhost:(\d+)\/mqtt/.exec(server.output())?.[1]
      // the chat page's address, where the page is (npm test builds web/dist first)
      if (existsSync(path.join(ROOT, 'web', 'dist', 'index.html'))) expect(server.output()).toContain(`Chat page:       http://localhost:${httpPort ?? ''}/`)
      const health = await fetch(`http://127.0.0.1:${httpPort ?? ''}/healthz`)
      expect(await health.json()).toMatchObject({ status: 'ok', messageStore: 'memory', metadataStore: 'memory' })
      expect(existsSync(path.join(dataDir, 'admin-token'))).toBe(true)
      server.child.kill('SIGTERM')
      expect(await server.exited).toBe(0)
      expect(server.output()).toContain('mqim stopped')
    } finally {
      if (server.child.exitCode === null && server.child.signalCode === null) process.kill(-(server.child.pid ?? 0), 'SIGKILL')
    }
  })
})
