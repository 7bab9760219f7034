/**
 * A small terminal chat client on the SDK, for operators and the README walk-through.
 *
 *   npm run chat -- --user alice [--password P | env MQIM_PASSWORD] [--url mqtt://localhost:1883] [--device term]
 *
 * Lines you type go to the open conversation (a line like `/echo hi` too: bot commands pass through).
 * Commands: /open <conv|user|group name>, /group <name> <user1,user2>, /list, /quit, /? (this help).
 * Incoming messages print as `[conv] from: text`, where conv is the group name, or the other user
 * of a direct chat.
 */
import { createInterface } from 'node:readline'
import { parseArgs } from 'node:util'
import { ImClient, type ConversationSummary, type MessageEnvelope } from './node.js'

const HELP = 'commands: /open <conv|user|group name>, /group <name> <user1,user2>, /list, /quit, /? — any other line is sent to the open conversation'

const { values: args } = parseArgs({
  options: {
    user: { type: 'string' },
    password: { type: 'string' },
    url: { type: 'string', default: 'mqtt://localhost:1883' },
    device: { type: 'string', default: 'term' }
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

function print (m: MessageEnvelope): void {
  console.log(`[${label(m.conv)}] ${m.from}: ${show(m.body)}`)
  if (m.conv === current) client.markRead(m.conv, m.seq)
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
  for (const m of recent.messages) console.log(`[${label(conv)}] ${m.from}: ${show(m.body)}`)
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
    default:
      if (current === undefined) console.log('open a conversation first: /open <user>, or /? for help')
      else await client.send(current, line)
      return true
  }
}

const client = await ImClient.connect({ url: args.url, userId: me, password, deviceId: args.device })
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
