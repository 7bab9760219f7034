/**
 * echo-bot: a command bot on the mqim client SDK. It answers in every conversation it belongs to,
 * groups it is added to later included:
 *
 *   /help          the commands
 *   /echo <text>   says <text> back
 *   /time          the server-independent current time (UTC, ISO 8601)
 *
 * Run it with a bot account (`npm run admin -- bot add echo` prints the API key):
 *
 *   MQIM_URL=mqtt://localhost:1883 MQIM_BOT_ID=echo MQIM_BOT_KEY=mqk_… node --import tsx examples/bots/echo-bot.ts
 *
 * Optional: MQIM_BOT_DEVICE (default `bot`), MQIM_BOT_STATE (a directory: the SDK keeps its synced seqs
 * and unsent answers there, so a restarted bot answers what came in while it was down, once).
 *
 * The bot is an ordinary MQTT client: same authorization and rate limits as users. The SDK resends
 * answers after RATE_LIMITED with the same msgId, and each answer's msgId is derived from the command
 * message (`re-<seq>`), so even a bot that crashed between answering and saving its state answers once.
 */
import { ImClient, FileStorage, MemoryStorage, type MessageEnvelope } from '../../src/client/node.js'

const HELP = 'Commands: /help (this list), /echo <text> (I repeat <text>), /time (the current time, UTC)'

/** The answer to a message, or null when it is not a command for this bot. */
function answer (text: string, now: Date): string | null {
  const match = /^\/([a-z]+)(?:@\S+)?(?:\s+([\s\S]*))?$/.exec(text.trim())
  if (match === null) return null
  const [, command, arg = ''] = match
  switch (command) {
    case 'help': return HELP
    case 'echo': return arg.trim() === '' ? 'Usage: /echo <text>' : arg.trim()
    case 'time': return now.toISOString()
    default: return `Unknown command /${command}. ${HELP}`
  }
}

function env (name: string, fallback?: string): string {
  const v = process.env[name] ?? fallback
  if (v === undefined || v === '') {
    console.error(`echo-bot: set ${name}`)
    process.exit(2)
  }
  return v
}

const botId = env('MQIM_BOT_ID')
const stateDir = process.env.MQIM_BOT_STATE

// eslint-disable-next-line prefer-const -- onMessage reads `bot` while connect() runs (the initial sync delivers commands): a const would still be uninitialized then
let bot: ImClient | undefined
/** Commands the initial sync delivers before `connect` has resolved. */
const early: MessageEnvelope[] = []

function onMessage (m: MessageEnvelope): void {
  if (m.from === botId || m.kind !== 'text' || typeof m.body !== 'string') return // never answer ourselves
  if (bot === undefined) {
    early.push(m)
    return
  }
  const reply = answer(m.body, new Date())
  if (reply === null) return
  bot.send(m.conv, reply, { replyTo: m.seq, msgId: `re-${m.seq}` })
    .catch((err: Error) => { console.error(`echo-bot: could not answer ${m.conv}#${m.seq}: ${err.message}`) })
  bot.markRead(m.conv, m.seq)
}

bot = await ImClient.connect({
  url: env('MQIM_URL', 'mqtt://localhost:1883'),
  userId: botId,
  password: env('MQIM_BOT_KEY'),
  deviceId: env('MQIM_BOT_DEVICE', 'bot'),
  storage: stateDir !== undefined ? new FileStorage(stateDir) : new MemoryStorage(),
  // commands sent while the bot was down are answered after the initial sync
  on: { message: onMessage }
})

for (const m of early.splice(0)) onMessage(m)

bot.on('member', (e) => {
  // The SDK starts a conversation the bot is added to at the join: no old commands are answered.
  if (e.action === 'added' && e.users.includes(botId)) console.log(`echo-bot: added to ${e.kind} ${e.conv}${e.name !== undefined ? ` (${e.name})` : ''} by ${e.by}`)
  if ((e.action === 'removed' || e.action === 'left') && e.users.includes(botId)) console.log(`echo-bot: no longer in ${e.conv}`)
})
bot.on('state', s => { console.log(`echo-bot: ${s}`) })
bot.on('error', err => { console.error(`echo-bot: ${err.code}: ${err.message}`) })

const stop = (): void => { void bot?.close().then(() => process.exit(0)) }
process.on('SIGINT', stop)
process.on('SIGTERM', stop)
console.log(`echo-bot online as ${botId} (${(await bot.list()).length} conversations)`)
