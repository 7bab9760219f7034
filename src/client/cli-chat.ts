/**
 * A small terminal chat client on the SDK, for operators and the README walk-through.
 *
 *   npm run chat -- --user alice [--password P | env MQIM_PASSWORD] [--url mqtt://localhost:1883] [--device term]
 *                   [--http http://localhost:8080]   (the HTTP listener, for files; default: the url's host, port 8080)
 *
 * Lines you type go to the open conversation (a line like `/echo hi` too: bot commands pass through).
 * Commands: /open <conv|user|group name>, /group <name> <user1,user2>, /list, /edit <seq> <text>,
 * /delete <seq>, /react <seq> <emoji> (again to take it back), /file <path> (send a file), /quit, /? (this help).
 * Incoming messages print as `[conv] #seq from: text`, where conv is the group name, or the other
 * user of a direct chat; changes print as `[conv] from edited #seq: text` and the like.
 */
import { createInterface } from 'node:readline'
import { openAsBlob } from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ImClient, nodeUploader, type ConversationSummary, type FileDescriptor, type MessageEnvelope } from './node.js'

const HELP = 'commands: /open <conv|user|group name>, /group <name> <user1,user2>, /list, /edit <seq> <text>, /delete <seq>, /react <seq> <emoji>, /file <path>, /quit, /? — any other line is sent to the open conversation'

const { values: args } = parseArgs({
  options: {
    user: { type: 'string' },
    password: { type: 'string' },
    url: { type: 'string', default: 'mqtt://localhost:1883' },
    device: { type: 'string', default: 'term' },
    http: { type: 'string' }
  }
})
const password = args.password ?? process.env.MQIM_PASSWORD
if (args.user === undefined || password === undefined) {
  console.error('usage: npm run chat -- --user <id> [--password <password> | env MQIM_PASSWORD] [--url mqtt://localhost:1883] [--device term]')
  process.exit(2)
}
const me = args.user

/** Display names by conversation id: the group name, or the peer of a direct chat. */
const names = new Map<string, string>()
let current: string | undefined

const label = (conv: string): string => names.get(conv) ?? conv
const show = (body: unknown): string => typeof body === 'string' ? body : JSON.stringify(body)

/** One line for a message as it is now, or for a change. */
function describe (m: MessageEnvelope): string {
  const where = `[${label(m.conv)}]`
  if (m.kind === 'edit') return `${where} ${m.from} edited #${m.target ?? '?'}: ${show(m.body)}`
  if (m.kind === 'delete') return `${where} ${m.from} deleted #${m.target ?? '?'}`
  if (m.kind === 'react') {
    const { emoji, remove } = m.body as { emoji: string, remove: boolean }
    return `${where} ${m.from} ${remove ? 'took back' : 'reacted'} ${emoji} ${remove ? 'from' : 'to'} #${m.target ?? '?'}`
  }
  if (m.deleted !== undefined) return `${where} #${m.seq} ${m.from}: (deleted)`
  if (m.kind === 'file') {
    const f = m.body as FileDescriptor
    return `${where} #${m.seq} ${m.from}: [file] ${f.name} (${f.mime}, ${f.size} bytes${f.w === undefined ? '' : `, ${f.w}x${f.h ?? '?'}`})`
  }
  const reactions = Object.entries(m.reactions ?? {}).map(([e, users]) => `${e}${users.length}`).join(' ')
  return `${where} #${m.seq} ${m.from}: ${show(m.body)}${m.edited === undefined ? '' : ' (edited)'}${reactions === '' ? '' : `  ${reactions}`}`
}

function print (m: MessageEnvelope): void {
  console.log(describe(m))
  if (m.conv === current) client.markRead(m.conv, m.seq)
}

/** A seq typed by the user. */
function seqOf (text: string | undefined): number | undefined {
  const seq = Number(text)
  return text !== undefined && Number.isSafeInteger(seq) && seq >= 1 ? seq : undefined
}

function remember (list: ConversationSummary[]): void {
  for (const c of list) names.set(c.conv, c.kind === 'direct' ? c.peer ?? c.conv : c.name ?? c.conv)
}

async function printList (): Promise<void> {
  const list = await client.list()
  remember(list)
  if (list.length === 0) console.log('no conversations yet: /open <user> or /group <name> <users>')
  for (const c of list) {
    const what = c.kind === 'direct' ? `direct with ${c.peer ?? '?'}` : `group ${c.name ?? ''}`
    const last = c.last === null ? '' : `  last: ${c.last.from}: ${show(c.last.body)}`
    console.log(`  ${c.conv}  ${what}  ${c.unread} unread${c.muted ? ' (muted)' : ''}${last}`)
  }
}

async function open (target: string): Promise<void> {
  let conv = names.has(target) ? target : [...names].find(([, name]) => name === target)?.[0]
  if (conv === undefined) {
    const direct = await client.direct(target)
    conv = direct.conv
    names.set(conv, direct.peer)
  }
  current = conv
  console.log(`opened ${label(conv)} (${conv})`)
  const recent = await client.history(conv, { limit: 10 })
  for (const m of recent.messages) console.log(describe(m))
  if (recent.lastSeq > 0) client.markRead(conv, recent.lastSeq)
}

async function handle (line: string): Promise<boolean> {
  const [command, ...rest] = line.trim().split(/\s+/)
  switch (command) {
    case '': return true
    case '/quit': return false
    case '/?': console.log(HELP); return true
    case '/list': await printList(); return true
    case '/open': {
      const [target] = rest
      if (target === undefined || rest.length !== 1) console.log('usage: /open <conv|user|group name>')
      else await open(target)
      return true
    }
    case '/group': {
      const [name, users = ''] = rest
      if (name === undefined) {
        console.log('usage: /group <name> <user1,user2>')
        return true
      }
      const members = users.split(',').filter(u => u !== '')
      const group = await client.createGroup(name, members)
      names.set(group.conv, group.name)
      current = group.conv
      console.log(`opened ${group.name} (${group.conv}) with ${group.members.join(', ')}`)
      return true
    }
    case '/edit':
    case '/delete':
    case '/react': {
      const seq = seqOf(rest[0])
      if (current === undefined) {
        console.log('open a conversation first: /open <user>, or /? for help')
      } else if (seq === undefined || (command === '/edit' && rest.length < 2) || (command === '/react' && rest.length !== 2)) {
        console.log(command === '/edit' ? 'usage: /edit <seq> <text>' : command === '/delete' ? 'usage: /delete <seq>' : 'usage: /react <seq> <emoji>')
      } else if (command === '/edit') {
        await client.edit(current, seq, line.trim().replace(/^\/edit\s+\S+\s+/, ''))
      } else if (command === '/delete') {
        await client.deleteMessage(current, seq)
      } else {
        const emoji = rest[1] as string
        // again: take it back
        // the message as it is now: from the local copy, or (an older one) from the server
        const held = client.messages(current).find(m => m.seq === seq) ?? (await client.history(current, { after: seq - 1, limit: 1 })).messages.find(m => m.seq === seq)
        const mine = held?.reactions?.[emoji]?.includes(me) === true
        await client.react(current, seq, emoji, { remove: mine })
      }
      return true
    }
    case '/file': {
      const file = line.trim().replace(/^\/file\s*/, '')
      if (current === undefined) console.log('open a conversation first: /open <user>, or /? for help')
      else if (file === '') console.log('usage: /file <path>')
      else await sendFile(current, file)
      return true
    }
    default:
      if (current === undefined) console.log('open a conversation first: /open <user>, or /? for help')
      else await client.send(current, line)
      return true
  }
}

/** Media types by file extension (others: application/octet-stream). */
const TYPES: Record<string, string> = { '.png': 'image/png', '.jpg': 'image/jpeg', '.jpeg': 'image/jpeg', '.gif': 'image/gif', '.webp': 'image/webp', '.pdf': 'application/pdf', '.txt': 'text/plain', '.zip': 'application/zip', '.mp4': 'video/mp4', '.mp3': 'audio/mpeg' }

/** /file: streamed from disk (never read whole into memory), with progress in quarters. */
async function sendFile (conv: string, file: string): Promise<void> {
  const blob = await openAsBlob(file)
  const name = path.basename(file)
  let shown = -1
  const sent = await client.sendFile(conv, blob, {
    name,
    mime: TYPES[path.extname(file).toLowerCase()] ?? 'application/octet-stream',
    onProgress: ({ sent, total }) => {
      const quarter = total === 0 ? 4 : Math.floor((sent / total) * 4)
      if (quarter > shown) { shown = quarter; console.log(`* uploading ${name}: ${quarter * 25}%`) }
    }
  })
  console.log(`* sent ${name} as #${sent.seq}`)
}

const httpUrl = args.http ?? `http://${new URL(args.url).hostname}:8080`
const client = await ImClient.connect({ url: args.url, userId: me, password, deviceId: args.device, httpUrl, uploader: nodeUploader })
client.on('message', print)
client.on('member', e => {
  if (e.name !== undefined) names.set(e.conv, e.name)
  else if (e.kind === 'direct') names.set(e.conv, e.users.find(u => u !== me) ?? e.conv)
  if (e.action === 'added' && e.users.includes(me)) console.log(`* ${e.by} added you to ${e.name ?? 'a direct chat'} (${e.conv})`)
})
client.on('state', s => { if (s !== 'online') console.log(`* ${s}`) })
client.on('error', err => { console.error(`* ${err.code}: ${err.message}`) })
console.log(`signed in as ${me}. ${HELP}`)
await printList()

const rl = createInterface({ input: process.stdin, terminal: false })
for await (const line of rl) {
  try {
    if (!(await handle(line))) break
  } catch (err) {
    console.log(`! ${(err as Error).message}`)
  }
}
rl.close()
await client.close()
process.exit(0)
