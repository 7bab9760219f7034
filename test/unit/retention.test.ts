/**
 * Retention in process: the job (which conversations, how old, when), the config section, and the
 * SDK's sync over a history whose oldest messages are gone. The stores' part is in the MessageStore
 * contract (test/contract/message-store.contract.ts); the whole path over MQTT in test/retention.test.ts.
 */
import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { ConversationKind, StoredMessage } from '../../src/store/types.js'
import { RetentionJob, retentionMs, type RetentionOptions } from '../../src/im/retention.js'
import { createLogger } from '../../src/log.js'
import { loadConfig } from '../../src/config.js'
import { ConversationSync, type SyncDeps } from '../../src/client/sync.js'
import { MemoryStorage, StateStore } from '../../src/client/storage.js'
import type { ImClientError } from '../../src/client/errors.js'
import type { MessageEnvelope } from '../../src/protocol/schemas.js'
import type { HistoryResult } from '../../src/client/types.js'

const DAY = 24 * 3600 * 1000
const NOW = 1_767_225_600_000 + 100 * DAY

describe('RetentionJob', () => {
  async function setup (options: Partial<RetentionOptions> = {}) {
    const meta = new MemoryMetadataStore()
    const messages = new MemoryMessageStore()
    await meta.init()
    const conversation = async (id: string, kind: ConversationKind): Promise<void> => {
      await meta.conversationCreate({ id, kind, name: kind === 'group' ? id : null, directKey: kind === 'direct' ? `${id}a|${id}b` : null, createdBy: 'alice', createdAt: 0 }, [])
    }
    /** `count` messages a day apart, the last one `lastAgeDays` old. */
    const write = async (id: string, count: number, lastAgeDays: number): Promise<void> => {
      const batch: StoredMessage[] = []
      for (let seq = 1; seq <= count; seq++) {
        batch.push({ conversationId: id, seq, clientMsgId: `m${seq}`, senderId: 'alice', ts: NOW - (lastAgeDays + count - seq) * DAY, kind: 'text', body: `${seq}`, replyTo: null })
      }
      await messages.insertBatch(batch)
    }
    const asked: string[][] = []
    const counting = { conversationGetMany: async (ids: readonly string[]) => { asked.push([...ids]); return await meta.conversationGetMany(ids) } }
    const job = new RetentionJob(messages, counting, {
      directMs: 30 * DAY,
      groupMs: null,
      intervalMs: 60_000,
      maxPerRun: 1000,
      conversationsPerRun: 1000,
      logger: createLogger('silent'),
      now: () => NOW,
      ...options
    })
    return { meta, messages, job, conversation, write, asked }
  }

  test('removes what is older than its kind keeps, and nothing of kinds kept forever', async () => {
    const t = await setup({ directMs: 30 * DAY, groupMs: 60 * DAY })
    await t.conversation('d1', 'direct')
    await t.conversation('g1', 'group')
    await t.conversation('g2', 'group')
    await t.write('d1', 50, 0) // seq s is 50 - s days old: 1-19 are older than 30 days
    await t.write('g1', 100, 0) // 100 - s days old: 1-39 are older than 60 days
    await t.write('g2', 3, 0) // nothing old
    expect(await t.job.step()).toEqual({ removed: 19 + 39, examined: 3, done: true })
    expect([await t.messages.firstSeq('d1'), await t.messages.firstSeq('g1'), await t.messages.firstSeq('g2')]).toEqual([20, 40, 1])
    // kinds are asked once, and only of conversations with old entries
    expect(t.asked).toEqual([['d1', 'g1']])
    expect(await t.job.step()).toEqual({ removed: 0, examined: 3, done: true })
    expect(t.asked).toHaveLength(1)
  })

  test('off by default per kind: groups are kept when only direct conversations have an age', async () => {
    const t = await setup()
    await t.conversation('g1', 'group')
    await t.write('g1', 100, 0)
    expect((await t.job.step()).removed).toBe(0)
    expect(await t.messages.firstSeq('g1')).toBe(1)
  })

  test('a conversation unknown to the metadata store keeps its messages', async () => {
    const t = await setup()
    await t.write('ghost', 100, 0)
    expect((await t.job.step()).removed).toBe(0)
  })

  test('started, it runs by itself (steps a second apart while there is work) and stops on close', async () => {
    const t = await setup({ intervalMs: 100, maxPerRun: 10 })
    await t.conversation('d1', 'direct')
    await t.write('d1', 50, 0)
    t.job.start()
    const deadline = Date.now() + 10_000
    while (await t.messages.firstSeq('d1') < 20 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 50))
    await t.job.close()
    expect(await t.messages.firstSeq('d1')).toBe(20)
  })

  test('disabled: start schedules nothing and a step removes nothing', async () => {
    const t = await setup({ directMs: null, groupMs: null })
    await t.conversation('d1', 'direct')
    await t.write('d1', 50, 0)
    expect(t.job.enabled).toBe(false)
    t.job.start()
    expect(await t.job.step()).toEqual({ removed: 0, examined: 0, done: true })
    await t.job.close()
  })
})

describe('retention config', () => {
  test('off by default; days may be fractions; zero and negative ages are refused', () => {
    const config = loadConfig({ env: {} })
    expect(config.retention).toEqual({ directDays: null, groupDays: null, intervalMs: 60_000, maxPerRun: 1000, conversationsPerRun: 10_000 })
    expect(loadConfig({ env: {}, overrides: { retention: { directDays: 0.5, groupDays: 365 } } }).retention).toMatchObject({ directDays: 0.5, groupDays: 365 })
    expect(retentionMs(0.5)).toBe(12 * 3600 * 1000)
    expect(retentionMs(null)).toBeNull()
    expect(() => loadConfig({ env: {}, overrides: { retention: { directDays: 0 } } })).toThrow(/retention\.directDays/)
    expect(() => loadConfig({ env: {}, overrides: { retention: { groupDays: -1 } } })).toThrow(/retention\.groupDays/)
  })
})

describe('SDK sync over retention', () => {
  const msg = (seq: number): MessageEnvelope => ({ conv: 'c1', seq, msgId: `m${seq}`, from: 'alice', ts: seq, kind: 'text', body: `text ${seq}` })

  /** A server whose messages below `first` are gone: history answers as src/im/ops/history.ts does. */
  async function setup (first: number, lastSeq: number, synced: number) {
    const storage = new MemoryStorage()
    await storage.set('k', JSON.stringify({ v: 1, initialized: true, synced: { c1: synced }, outbox: [] }))
    const store = await StateStore.load(storage, 'k')
    const calls: number[] = []
    const emitted: number[] = []
    const errors: ImClientError[] = []
    const deps: SyncDeps = {
      store,
      history: async (_conv, after): Promise<HistoryResult> => {
        calls.push(after)
        const from = Math.max(after + 1, first)
        const to = Math.min(lastSeq, from + 2) // pages of 3
        const page: HistoryResult = { conv: 'c1', messages: Array.from({ length: to - from + 1 }, (_, i) => msg(from + i)), lastSeq, hasMore: to < lastSeq, limit: 3 }
        if (from > after + 1) page.firstSeq = first
        return page
      },
      emitMessage: (m) => { emitted.push(m.seq) },
      emitUpdated: () => {},
      emitSynced: () => {},
      emitError: (e) => { errors.push(e) },
      maxBackfill: 1000,
      retryMs: 10,
      isClosed: () => false
    }
    return { sync: new ConversationSync(deps), calls, emitted, errors, store }
  }

  test('a client behind the kept range takes the kept messages once, in order, without a gap error or a loop', async () => {
    const t = await setup(6, 10, 0)
    await t.sync.catchUp(async () => ({ conversations: [{ conv: 'c1', kind: 'direct', name: null, role: 'member', lastSeq: 10, last: null, readSeq: 0, unread: 5, mentions: 0, muted: false }], complete: true }))
    expect(t.emitted).toEqual([6, 7, 8, 9, 10])
    expect(t.calls).toEqual([0, 8])
    expect(t.errors).toEqual([])
    expect(t.store.state.synced.c1).toBe(10)
  })

  test('a live message far ahead of the client: the gap below the kept range is skipped, the rest filled', async () => {
    const t = await setup(6, 12, 2)
    t.sync.receive(msg(12))
    for (let i = 0; i < 50 && t.emitted.length < 7; i++) await new Promise(resolve => setTimeout(resolve, 0))
    expect(t.emitted).toEqual([6, 7, 8, 9, 10, 11, 12])
    expect(t.errors).toEqual([])
  })
})
