/** `npm start`: load config, start mqim, stop gracefully on SIGINT/SIGTERM. */
import { existsSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { loadConfig, ConfigError, type Config } from './config.js'
import { createLogger } from './log.js'
import { MqimServer } from './server.js'
import { isEmbedded } from './store/index.js'
import { ModuleLoadError } from './load-module.js'
import { WEB_DIST } from './http/app.js'

/**
 * How to add a user to this server with the admin tool: with --server / --data-dir when they are
 * not the defaults the tool assumes (another terminal does not share this one's environment).
 */
function addUserCommand (config: Config, httpPort: number): string {
  const defaults = loadConfig({ env: {} })
  const parts = ['npm run admin -- user add alice']
  if (httpPort !== defaults.http.port) parts.push(`--server http://127.0.0.1:${httpPort}`)
  if (path.resolve(config.dataDir) !== path.resolve(defaults.dataDir)) parts.push(`--data-dir ${config.dataDir}`)
  return parts.join(' ')
}

const USAGE = `Usage: npm start [-- --help]

Starts mqim. It takes no arguments: it is configured by config/default.json, the JSON file named
by MQIM_CONFIG (merged over it), and environment variables, among them:
  MQIM_MQTT_PORT, MQIM_HTTP_PORT, MQIM_HOST      where it listens (1883, 8080, 0.0.0.0)
  MQIM_DATA_DIR                                  where the admin token (and files on disk) are kept (.mqim)
  MQIM_MONGO_URL, MQIM_MYSQL_URL, MQIM_REDIS_URL durable stores and clustering (default: in memory)
  MQIM_S3_BUCKET (+ _REGION, _ENDPOINT, _ACCESS_KEY, _SECRET_KEY)  attachments on S3 (default: on disk)
  MQIM_LOG_LEVEL                                 debug, info, warn, error or silent
Every key, its default and its variable: README.md, "Configuration".
`

/** --help prints the usage; anything else given on the command line is an error (exit 2). */
function handleArguments (): void {
  let help: boolean | undefined
  try {
    help = parseArgs({ options: { help: { type: 'boolean', short: 'h' } }, strict: true }).values.help
  } catch (err) {
    process.stderr.write(`mqim: ${(err as Error).message}\n\n${USAGE}`)
    process.exit(2)
  }
  if (help === true) {
    process.stdout.write(USAGE)
    process.exit(0)
  }
}

async function main (): Promise<void> {
  handleArguments()
  let config
  try {
    config = loadConfig()
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`mqim: ${err.message}\n`)
      process.exit(2)
    }
    throw err
  }
  const logger = createLogger(config.log.level)
  // A rejected promise nobody awaited (a dependency's background failure) is logged, not fatal:
  // every request path handles its own errors, and the server must ride out outages.
  process.on('unhandledRejection', (reason) => logger.error({ err: reason }, 'unhandled rejection'))
  const server = await MqimServer.start({ config, logger })
  if (isEmbedded(config)) {
    process.stderr.write([
      '',
      `mqim is running with in-memory stores: ${config.messageStore.adapter} message store, ${config.metadataStore.adapter} metadata store, ${config.broker.persistence.adapter} broker state.`,
      'In-memory data lasts until this process stops. For durable storage set MQIM_MONGO_URL and MQIM_MYSQL_URL (see README).',
      `  MQTT:            mqtt://localhost:${server.ports.mqtt}`,
      `  MQTT/WebSocket:  ws://localhost:${server.ports.http}/mqtt`,
      // (the HTTP listener serves web/dist when it holds the page, see http/app.ts)
      ...(existsSync(path.join(WEB_DIST, 'index.html')) ? [`  Chat page:       http://localhost:${server.ports.http}/`] : []),
      `Create a user (in another terminal):  ${addUserCommand(config, server.ports.http)}`,
      ''
    ].join('\n') + '\n')
  }
  let stopping = false
  const stop = (signal: string): void => {
    if (stopping) return
    stopping = true
    logger.info({ signal }, 'stopping')
    server.stop().then(() => process.exit(0), (err: unknown) => {
      logger.error({ err }, 'stop failed')
      process.exit(1)
    })
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
}

main().catch((err: unknown) => {
  process.stderr.write(`mqim: failed to start: ${err instanceof Error ? err.message : String(err)}\n`)
  // a module that could not be loaded: where (a broken build's file and line)
  if (err instanceof ModuleLoadError && err.cause instanceof Error) process.stderr.write(`${err.cause.stack ?? ''}\n`)
  // a missing or broken module is an install to fix, as a bad setting is (2: not restarted by systemd)
  process.exit(err instanceof ModuleLoadError ? 2 : 1)
})
