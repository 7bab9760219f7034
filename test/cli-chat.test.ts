/** The terminal client (src/client/cli-chat.ts) as a child process fed through stdin, chatting with an SDK client. */
import { startServer, addUser, url, waitUntil, spawnChatCli } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, type MessageEnvelope } from '../src/client/index.js'

describe('terminal chat client', () => {
  let server: MqimServer
  let bob: ImClient | undefined

  beforeAll(async () => {
    server = await startServer()
    await addUser(server, 'alice')
    await addUser(server, 'bob')
    await addUser(server, 'carol')
  })
  afterAll(async () => {
    await bob?.close()
    await server.stop()
  })

  test('lists, opens a direct chat, sends and receives, creates a group, quits', async () => {
    bob = await ImClient.connect({ url: url(server, 'ws'), userId: 'bob', password: 'password-bob', deviceId: 'web' })
    const got: MessageEnvelope[] = []
    bob.on('message', m => { got.push(m) })

    const cli = spawnChatCli(['--user', 'alice', '--url', url(server, 'tcp')], 'password-alice')
    const { type, exited } = cli
    const waitOut = async (text: string): Promise<void> => { await cli.waitOut(text, 15000) }

    try {
      await waitOut('no conversations yet')
      type('hello?') // nothing open yet
      await waitOut('open a conversation first')

      type('/open bob')
      await waitOut('opened bob (')
      type('hello from the terminal')
      await waitUntil(() => got.some(m => m.from === 'alice' && m.body === 'hello from the terminal'), 10000, 'bob got the message')
      const direct = got[0]?.conv
      if (direct === undefined) throw new Error('bob got no message')
      await bob.send(direct, 'hi terminal')
      await waitOut('[bob] #2 bob: hi terminal')
      // changes: edit my message #1, react to bob's #2 (and take it back), delete mine
      type('/edit 1 hello, edited in the terminal')
      await waitOut('[bob] alice edited #1: hello, edited in the terminal')
      type('/react 2 👍')
      await waitOut('[bob] alice reacted 👍 to #2')
      await waitUntil(() => bob?.messages(direct).find(m => m.seq === 2)?.reactions?.['👍']?.includes('alice') === true, 10000, 'bob sees the reaction')
      type('/react 2 👍')
      await waitOut('[bob] alice took back 👍 from #2')
      type('/edit 2 not mine')
      await waitOut('! only the sender may edit a message')
      type('/react x 👍')
      await waitOut('usage: /react <seq> <emoji>')
      type('/delete 1')
      await waitOut('[bob] alice deleted #1')
      await waitUntil(() => bob?.messages(direct).find(m => m.seq === 1)?.deleted?.by === 'alice', 10000, 'bob sees the deletion')

      type('/group ops bob,carol')
      await waitOut('opened ops (')
      type('/echo this goes to the group as text')
      await waitUntil(() => got.some(m => m.conv !== direct && m.body === '/echo this goes to the group as text'), 10000, 'group message')
      const group = got.find(m => m.conv !== direct)?.conv ?? ''
      await bob.send(group, 'group hi')
      await waitOut('[ops] #2 bob: group hi')

      type('/list')
      await waitOut(`${group}  group ops`)
      expect(cli.output()).toContain(`${direct}  direct with bob`)

      type('/open bob')
      await waitOut('[bob] #1 alice: (deleted)')
      type('/quit')
      expect(await exited).toBe(0)
    } finally {
      cli.kill()
    }
  })
})
