import { startServer, addUser, connect } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'

describe('smoke', () => {
  let server: MqimServer
  beforeAll(async () => { server = await startServer() })
  afterAll(async () => { await server.stop() })

  test('two users chat in a group', async () => {
    await addUser(server, 'alice')
    await addUser(server, 'bob')
    const a = await connect(server, 'alice', 'phone')
    const b = await connect(server, 'bob', 'laptop', { transport: 'ws' })
    const g = await a.request('create-group', { name: 'g', members: ['bob'] })
    const r = await a.request('send', { conv: g.conv, msgId: 'm1', kind: 'text', body: 'hi' })
    expect(r.seq).toBe(1)
    await b.waitFor(() => b.messages.length === 1)
    expect(b.messages[0]).toMatchObject({ conv: g.conv, seq: 1, from: 'alice', body: 'hi' })
    await a.end(); await b.end()
  })
})
