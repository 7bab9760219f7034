/**
 * How often the SDK writes its state, against a real server: a burst of received messages costs a
 * few coalesced writes, not one per message; an unacknowledged send is in storage before send()
 * returns; close() writes what is pending.
 */
import { startServer, addUser, url, waitUntil } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { ImClient, MemoryStorage, type MessageEnvelope } from '../src/client/index.js'

/** A MemoryStorage that keeps every value written, in order. */
class RecordingStorage extends MemoryStorage {
  readonly writes: string[] = []
  override async set (key: string, value: string): Promise<void> {
    this.writes.push(value)
    await super.set(key, value)
  }

  last (): { synced: Record<string, number>, outbox: Array<{ msgId: string }> } {
    return JSON.parse(this.writes[this.writes.length - 1] ?? '{}')
  }
}

describe('SDK state persistence', () => {
  let server: MqimServer
  const open: ImClient[] = []

  beforeAll(async () => {
    server = await startServer()
    await addUser(server, 'alice')
    await addUser(server, 'bob')
  })
  afterAll(async () => {
    await Promise.allSettled(open.map(async c => { await c.close() }))
    await server.stop()
  })

  async function client (userId: string, deviceId: string, storage: RecordingStorage, saveIntervalMs?: number): Promise<ImClient> {
    const c = await ImClient.connect({ url: url(server, 'tcp'), userId, password: 'password-' + userId, deviceId, storage, reconnectPeriodMs: 100, saveIntervalMs })
    open.push(c)
    return c
  }

  test('a burst of 300 received messages costs a few writes; close() writes the end of it', async () => {
    const alice = await client('alice', 'sender', new RecordingStorage())
    const { conv } = await alice.direct('bob')
    const storage = new RecordingStorage()
    const bob = await client('bob', 'reader', storage)
    const got: MessageEnvelope[] = []
    bob.on('message', m => { got.push(m) })
    const before = storage.writes.length

    const started = Date.now()
    await Promise.all(Array.from({ length: 300 }, async (_, i) => await alice.send(conv, `burst ${i}`)))
    await waitUntil(() => got.length === 300, 10000, '300 messages')
    const elapsed = Date.now() - started
    const writes = storage.writes.length - before
    // one write per 200 ms interval at most, plus the first one at once
    expect(writes).toBeLessThanOrEqual(Math.ceil(elapsed / 200) + 2)
    expect(writes).toBeLessThan(30)

    await bob.close()
    expect(storage.last().synced[conv]).toBe(300)
  })

  test('with a long interval: one write at the start of the burst, one at close()', async () => {
    const alice = await client('alice', 'sender2', new RecordingStorage())
    const { conv } = await alice.direct('bob')
    const storage = new RecordingStorage()
    const bob = await client('bob', 'reader2', storage, 60000)
    const got: MessageEnvelope[] = []
    bob.on('message', m => { got.push(m) })
    const lastSeq = (await bob.list()).find(c => c.conv === conv)?.lastSeq ?? 0
    const before = storage.writes.length
    for (let i = 0; i < 50; i++) await alice.send(conv, `slow ${i}`)
    await waitUntil(() => got.length === 50, 10000, '50 messages')
    // the connect-time sync wrote less than 60 s ago, so every message of the burst waits for the interval
    expect(storage.writes.length - before).toBe(0)
    await bob.close()
    expect(storage.writes.length - before).toBe(1)
    expect(storage.last().synced[conv]).toBe(lastSeq + 50)
  })

  test('an unacknowledged send is in storage before send() returns, and leaves it once acknowledged', async () => {
    const storage = new RecordingStorage()
    const alice = await client('alice', 'writer', storage)
    const { conv } = await alice.direct('bob')
    const sent = alice.send(conv, 'kept safe', { msgId: 'kept-safe-1' })
    expect(storage.last().outbox.map(e => e.msgId)).toEqual(['kept-safe-1'])
    await sent
    await alice.close()
    expect(storage.last().outbox).toEqual([])
  })
})
