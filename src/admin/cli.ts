/**
 * `npm run admin -- <command>`: create and manage users and bots. See USAGE below (also `--help`).
 *
 * The commands work on an AccountsBackend chosen from the config:
 *  - metadataStore `mysql`: DirectBackend, the store itself (init() applies pending migrations);
 *  - metadataStore `memory`: HttpBackend, the admin API of the running server (src/admin/http.ts),
 *    because the in-memory store lives inside that process: with the token of <dataDir>/admin-token,
 *    or the one in MQIM_ADMIN_TOKEN (a token of admin.tokens, for a server on another host).
 * `token new` needs neither: it makes a token for admin.tokens here.
 */
import { readFileSync } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { z } from 'zod'
import { loadConfig, ConfigError, AdminTokenSchema, ADMIN_SCOPES, type Config } from '../config.js'
import { ImError, type ErrorCode, ERROR_CODES } from '../errors.js'
import { createMetadataStore } from '../store/index.js'
import type { MetadataStore } from '../store/types.js'
import { CreateBotInput, CreateUserInput, createBot, createUser, listUsers, resetSecret, setDisabled, type PublicUser } from './accounts.js'
import { newAdminToken } from './auth.js'

const USAGE = `usage: npm run admin -- <command> [options]

commands:
  user add <id> [--password P] [--name "Display Name"]
                       create a user; prints its password (generated unless given)
  bot add <id> [--name N]
                       create a bot; prints its API key (shown only once)
  user list            list users and bots
  user disable <id>    refuse new connections of a user or bot (CONNACK 5) and end the open ones
  user enable <id>     allow them again
  user reset <id> [--password P]
                       new password for a user (generated unless given), new API key for a bot
                       (always generated: --password is refused for a bot); the old one stops
                       working at once
  token new <name> --scopes S[,S...]
                       make a token for another service: prints it, and the entry to add to
                       admin.tokens in the config (which holds only its SHA-256); scopes:
                       ${ADMIN_SCOPES.join(', ')}

options:
  --json               print one JSON object instead of text (errors too: {"error":{code,message}})
  --server URL         admin API of the running server (default http://127.0.0.1:<http.port>)
  --data-dir D         directory holding that server's admin-token (default: dataDir from the config)
  -h, --help           show this text

which store the tool changes:
  The config is loaded as npm start loads it: config/default.json, then the file named by MQIM_CONFIG,
  then the MQIM_* variables (MQIM_MYSQL_URL, MQIM_HTTP_PORT, MQIM_DATA_DIR, ...).
  - metadataStore "mysql" (e.g. MQIM_MYSQL_URL is set): the tool talks to MySQL directly and applies
    pending schema migrations; no server needs to run.
  - metadataStore "memory" (the embedded default): users live inside the running server process, so
    the tool calls its admin API on loopback with the token the server wrote to <dataDir>/admin-token.
    Start the server first (npm start); use --server / --data-dir if it runs with another port or dataDir.
    MQIM_ADMIN_TOKEN=<token of admin.tokens> is used instead of the token file (e.g. with --server
    for a server on another host).

exit status: 0 done, 1 the operation failed (e.g. CONFLICT: the user exists), 2 usage or config error
`

/** What the commands need; one implementation per kind of metadata store. */
interface AccountsBackend {
  createUser (input: CreateUser): Promise<{ user: PublicUser, password: string }>
  createBot (input: CreateBot): Promise<{ user: PublicUser, apiKey: string }>
  list (): Promise<PublicUser[]>
  setDisabled (id: string, disabled: boolean): Promise<void>
  /** A user gets a password (the given one or a generated one), a bot a new API key. */
  reset (id: string, password?: string): Promise<Secret>
  close (): Promise<void>
}

interface Secret { password?: string, apiKey?: string }

type CreateUser = z.infer<typeof CreateUserInput>
type CreateBot = z.infer<typeof CreateBotInput>

/** The metadata store itself (MySQL): the same account functions the admin API uses. */
class DirectBackend implements AccountsBackend {
  private constructor (private readonly meta: MetadataStore) {}

  static async open (config: Config['metadataStore']): Promise<DirectBackend> {
    const meta = await createMetadataStore(config)
    try {
      await meta.init()
    } catch (err) {
      await meta.close().catch(() => {})
      const where = 'url' in config ? ` at ${redactUrl(config.url)}` : ''
      throw new ImError('UNAVAILABLE', `metadataStore (${config.adapter})${where} is unavailable: ${(err as Error).message}`, { cause: err })
    }
    return new DirectBackend(meta)
  }

  async createUser (input: CreateUser): Promise<{ user: PublicUser, password: string }> { return await createUser(this.meta, input) }
  async createBot (input: CreateBot): Promise<{ user: PublicUser, apiKey: string }> { return await createBot(this.meta, input) }
  async list (): Promise<PublicUser[]> { return await listUsers(this.meta) }
  async setDisabled (id: string, disabled: boolean): Promise<void> { await setDisabled(this.meta, id, disabled) }
  async reset (id: string, password?: string): Promise<Secret> { return await resetSecret(this.meta, id, password) }
  async close (): Promise<void> { await this.meta.close() }
}

/** The admin HTTP API of a running server (the only way to reach its in-memory store). */
class HttpBackend implements AccountsBackend {
  /** `envToken`: the token in MQIM_ADMIN_TOKEN, else null (read from tokenFile). */
  constructor (private readonly baseUrl: string, private readonly tokenFile: string, private readonly envToken: string | null) {}

  async createUser (input: CreateUser): Promise<{ user: PublicUser, password: string }> { return await this.call('POST', '/admin/users', input) }
  async createBot (input: CreateBot): Promise<{ user: PublicUser, apiKey: string }> { return await this.call('POST', '/admin/bots', input) }
  /** Every page (the server clamps the limit to its admin.pageMax). */
  async list (): Promise<PublicUser[]> {
    const users: PublicUser[] = []
    let cursor: string | null = null
    do {
      const page: { users: PublicUser[], next: string | null } = await this.call('GET', `/admin/users?limit=10000${cursor === null ? '' : `&cursor=${encodeURIComponent(cursor)}`}`)
      users.push(...page.users)
      cursor = page.next
    } while (cursor !== null)
    return users
  }

  async setDisabled (id: string, disabled: boolean): Promise<void> {
    await this.call('POST', `/admin/users/${encodeURIComponent(id)}/${disabled ? 'disable' : 'enable'}`, {})
  }

  async reset (id: string, password?: string): Promise<Secret> {
    return await this.call('POST', `/admin/users/${encodeURIComponent(id)}/reset`, password === undefined ? {} : { password })
  }

  async close (): Promise<void> {}

  private async call<T> (method: string, route: string, body?: unknown): Promise<T> {
    const token = await this.token()
    const res = await this.fetch(route, {
      method,
      headers: { authorization: `Bearer ${token}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
      body: body === undefined ? undefined : JSON.stringify(body)
    })
    const text = await res.text()
    let json: unknown
    try {
      json = JSON.parse(text)
    } catch {
      throw new ImError('INTERNAL', `${this.baseUrl} answered ${method} ${route} with HTTP ${res.status} and no JSON: is it an mqim server?`)
    }
    if (res.ok) return json as T
    const wire = json as { code?: unknown, message?: unknown }
    if (res.status === 401 || res.status === 403) {
      const why = typeof wire.message === 'string' && /lacks the scope/.test(wire.message) ? `: ${wire.message}` : ''
      throw new ImError('FORBIDDEN', this.envToken === null
        ? `the server at ${this.baseUrl} refused the admin token from ${this.tokenFile}${why || ': does it use that data dir (pass --data-dir)?'}`
        : `the server at ${this.baseUrl} refused the admin token from MQIM_ADMIN_TOKEN${why || ': is it one of its admin.tokens?'}`)
    }
    const code = typeof wire.code === 'string' && wire.code in ERROR_CODES ? wire.code as ErrorCode : 'INTERNAL'
    throw new ImError(code, typeof wire.message === 'string' ? wire.message : `HTTP ${res.status}`)
  }

  private async fetch (route: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(this.baseUrl + route, { ...init, signal: AbortSignal.timeout(10_000) })
    } catch (err) {
      throw this.unreachable(err)
    }
  }

  /** The token, or the clearest reason why there is none (usually: no server has been started). */
  private async token (): Promise<string> {
    if (this.envToken !== null) return this.envToken
    try {
      return readFileSync(this.tokenFile, 'utf8').trim()
    } catch (err) {
      await this.fetch('/healthz', {})
      throw new ImError('FORBIDDEN', `cannot read the admin token ${this.tokenFile} (${(err as NodeJS.ErrnoException).code ?? String(err)}): pass the server's data dir with --data-dir`)
    }
  }

  private unreachable (err: unknown): ImError {
    const cause = (err as { cause?: { code?: string, message?: string } }).cause
    const detail = cause?.code === 'ECONNREFUSED' ? '' : ` [${cause?.code ?? cause?.message ?? String(err)}]`
    return new ImError('UNAVAILABLE', `no mqim server is running at ${this.baseUrl}${detail} (start it with npm start, or pass --server)`, { cause: err })
  }
}

function redactUrl (url: string): string {
  try {
    const u = new URL(url)
    if (u.password !== '') u.password = '***'
    return u.toString()
  } catch {
    return '(unparsable url)'
  }
}

async function openBackend (config: Config, flags: Flags, env: NodeJS.ProcessEnv): Promise<AccountsBackend> {
  if (config.metadataStore.adapter === 'mysql') return await DirectBackend.open(config.metadataStore)
  const baseUrl = (flags.server ?? `http://127.0.0.1:${config.http.port}`).replace(/\/+$/, '')
  const envToken = env.MQIM_ADMIN_TOKEN === undefined || env.MQIM_ADMIN_TOKEN === '' ? null : env.MQIM_ADMIN_TOKEN.trim()
  return new HttpBackend(baseUrl, path.join(flags['data-dir'] ?? config.dataDir, 'admin-token'), envToken)
}

// ---------------------------------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------------------------------

const OPTIONS = {
  password: { type: 'string' },
  name: { type: 'string' },
  json: { type: 'boolean' },
  scopes: { type: 'string' },
  server: { type: 'string' },
  'data-dir': { type: 'string' },
  help: { type: 'boolean', short: 'h' }
} as const

interface Flags { password?: string, name?: string, scopes?: string, json?: boolean, server?: string, 'data-dir'?: string, help?: boolean }

/** What a command prints: one JSON object, or lines of text. */
interface Output { json: Record<string, unknown>, text: string[] }

type CommandFlag = 'password' | 'name' | 'scopes'

interface Command {
  /** Positional arguments after the command words. */
  args: Array<'id' | 'name'>
  /** Flags beyond the global ones (--json, --server, --data-dir). */
  flags: CommandFlag[]
  run: (backend: AccountsBackend, id: string, flags: Flags, config: Config) => Promise<Output>
}

/** A command that needs no server, database or config. */
interface LocalCommand {
  args: Array<'id' | 'name'>
  flags: CommandFlag[]
  /** Of `flags`, those that must be given. */
  required: CommandFlag[]
  local: (arg: string, flags: Flags) => Output
}

const COMMANDS: Record<string, Command | LocalCommand> = {
  'user add': {
    args: ['id'],
    flags: ['password', 'name'],
    run: async (backend, id, flags, config) => {
      const { user, password } = await backend.createUser(validate(CreateUserInput, { id, password: flags.password, displayName: flags.name }))
      return { json: { user, password }, text: [`created user ${user.id}`, `password: ${password}`, connectHint(config, flags, user.id, password)] }
    }
  },
  'bot add': {
    args: ['id'],
    flags: ['name'],
    run: async (backend, id, flags, config) => {
      const { user, apiKey } = await backend.createBot(validate(CreateBotInput, { id, displayName: flags.name }))
      return { json: { user, apiKey }, text: [`created bot ${user.id}`, `api key: ${apiKey}`, '(shown only once: store it now; `user reset` makes a new one)', connectHint(config, flags, user.id, apiKey)] }
    }
  },
  'user list': {
    args: [],
    flags: [],
    run: async (backend) => {
      const users = await backend.list()
      return { json: { users }, text: table(users) }
    }
  },
  'user disable': {
    args: ['id'],
    flags: [],
    run: async (backend, id) => {
      await backend.setDisabled(id, true)
      return { json: { id, disabled: true }, text: [`disabled ${id}: new connections are refused; open ones end (at once through a running server, within auth.revocationPollMs when written to MySQL)`] }
    }
  },
  'user enable': {
    args: ['id'],
    flags: [],
    run: async (backend, id) => {
      await backend.setDisabled(id, false)
      return { json: { id, disabled: false }, text: [`enabled ${id}`] }
    }
  },
  'user reset': {
    args: ['id'],
    flags: ['password'],
    run: async (backend, id, flags) => {
      const password = flags.password === undefined ? undefined : validate(CreateUserInput.shape.password, flags.password)
      const secret = await backend.reset(id, password)
      if (secret.apiKey !== undefined) return { json: { id, apiKey: secret.apiKey }, text: [`new api key for bot ${id}: ${secret.apiKey}`] }
      return { json: { id, password: secret.password }, text: [`new password for ${id}: ${secret.password ?? ''}`] }
    }
  },
  'token new': {
    args: ['name'],
    flags: ['scopes'],
    required: ['scopes'],
    local: (name, flags) => {
      const { token, tokenSha256 } = newAdminToken()
      const entry = validate(AdminTokenSchema, { name, tokenSha256, scopes: (flags.scopes ?? '').split(',').map(s => s.trim()).filter(s => s !== '') })
      return {
        json: { token, entry },
        text: [
          `token for ${name} (give it to that service; it is shown only now and stored nowhere):`,
          token,
          'add this entry to admin.tokens in the config file (MQIM_CONFIG), then restart the server:',
          JSON.stringify(entry)
        ]
      }
    }
  }
}

/** The admin API's own input check, applied here too so both backends answer alike. */
function validate<T> (schema: z.ZodType<T>, value: unknown): T {
  const result = schema.safeParse(value)
  if (result.success) return result.data
  throw new ImError('BAD_REQUEST', result.error.issues.map(i => `${i.path.map(String).join('.') || 'value'}: ${i.message}`).join('; '))
}

function shellQuote (s: string): string {
  return /^[A-Za-z0-9_.:/@%+=-]+$/.test(s) ? s : `'${s.replaceAll("'", "'\\''")}'`
}

/**
 * A line to try the account: a watcher of everything for the user, with its own device id (`sub`,
 * so that a `mosquitto_pub -i <id>:cli` does not take its session over). The MQTT port is the
 * configured one; with --server the tool cannot know that server's MQTT port.
 */
function connectHint (config: Config, flags: Flags, id: string, secret: string): string {
  const port = flags.server !== undefined || config.mqtt.port === 0 ? '<mqtt-port>' : String(config.mqtt.port)
  return `connect: mosquitto_sub -h localhost -p ${port} -i ${id}:sub -u ${id} -P ${shellQuote(secret)} -q 1 -v -t 'im/u/${id}/#'`
}

function table (users: PublicUser[]): string[] {
  if (users.length === 0) return ['no users yet (create one with: npm run admin -- user add <id>)']
  const header = ['ID', 'KIND', 'STATUS', 'CREATED', 'NAME']
  const rows = [header, ...users.map(u => [
    u.id, u.kind, u.disabled ? 'disabled' : 'active', new Date(u.createdAt).toISOString().slice(0, 19) + 'Z', u.displayName
  ])]
  const widths = header.map((_, c) => Math.max(...rows.map(r => r[c]?.length ?? 0)))
  return rows.map(r => r.map((cell, c) => c === r.length - 1 ? cell : cell.padEnd(widths[c] ?? 0)).join('  '))
}

class UsageError extends Error {}

/** Parses argv into a command, its id and flags; throws UsageError. */
function parse (argv: string[]): { command: Command | LocalCommand, id: string, flags: Flags } | { help: true } {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: true })
  } catch (err) {
    throw new UsageError((err as Error).message)
  }
  const flags: Flags = parsed.values
  const words = parsed.positionals
  if (flags.help === true || words.length === 0) return { help: true }
  const name = words.slice(0, 2).join(' ')
  const command = COMMANDS[name]
  if (command === undefined) throw new UsageError(`unknown command: ${name}`)
  const args = words.slice(2)
  if (args.length !== command.args.length) {
    throw new UsageError(`${name} takes ${command.args.length === 0 ? 'no arguments' : command.args.map(a => `<${a}>`).join(' ')}`)
  }
  for (const flag of ['password', 'name', 'scopes'] as const) {
    if (flags[flag] !== undefined && !command.flags.includes(flag)) throw new UsageError(`${name} has no --${flag} option`)
    if (flags[flag] === undefined && 'required' in command && command.required.includes(flag)) throw new UsageError(`${name} needs --${flag}`)
  }
  return { command, id: args[0] ?? '', flags }
}

function errorOutput (code: string, message: string): Output {
  return { json: { error: { code, message } }, text: [`error ${code}: ${message}`] }
}

/** Runs one invocation; returns the exit status. */
async function main (argv: string[], env: NodeJS.ProcessEnv): Promise<number> {
  const wantJson = argv.includes('--json')
  const print = (out: Output, stream: NodeJS.WriteStream): void => {
    stream.write(wantJson ? JSON.stringify(out.json) + '\n' : out.text.join('\n') + '\n')
  }
  let request
  try {
    request = parse(argv)
  } catch (err) {
    if (!(err instanceof UsageError)) throw err
    process.stderr.write(`mqim admin: ${err.message}\n\n${USAGE}`)
    return 2
  }
  if ('help' in request) {
    process.stdout.write(USAGE)
    return 0
  }
  const { command } = request
  if ('local' in command) {
    try {
      print(command.local(request.id, request.flags), process.stdout)
      return 0
    } catch (err) {
      if (!(err instanceof ImError)) throw err
      print(errorOutput(err.code, err.message), wantJson ? process.stdout : process.stderr)
      return 1
    }
  }
  let config: Config
  try {
    config = loadConfig({ env })
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err
    print(errorOutput('CONFIG', err.message), wantJson ? process.stdout : process.stderr)
    return 2
  }
  if (config.metadataStore.adapter === 'mysql' && (request.flags.server !== undefined || request.flags['data-dir'] !== undefined)) {
    process.stderr.write('mqim admin: --server and --data-dir are for the in-memory store; this config\'s metadataStore is mysql, which the tool changes directly\n')
    return 2
  }
  let backend: AccountsBackend | undefined
  try {
    backend = await openBackend(config, request.flags, env)
    print(await command.run(backend, request.id, request.flags, config), process.stdout)
    return 0
  } catch (err) {
    const out = err instanceof ImError ? errorOutput(err.code, err.message) : errorOutput('INTERNAL', err instanceof Error ? err.message : String(err))
    print(out, wantJson ? process.stdout : process.stderr)
    return 1
  } finally {
    await backend?.close()
  }
}

process.exitCode = await main(process.argv.slice(2), process.env)
