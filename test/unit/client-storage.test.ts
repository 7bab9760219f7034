/** The SDK's ClientStorage implementations and its persisted state. */
import { readdirSync } from 'node:fs'
import path from 'node:path'
import { FileStorage, LocalStorageStorage, MemoryStorage, type ClientStorage } from '../../src/client/node.js'
import { StateStore } from '../../src/client/storage.js'
import { tempDir } from '../helpers/tmp.js'

const fakeLocalStorage = (): { getItem: (k: string) => string | null, setItem: (k: string, v: string) => void } => {
  const m = new Map<string, string>()
  return { getItem: k => m.get(k) ?? null, setItem: (k, v) => { m.set(k, v) } }
}

describe.each<[string, () => ClientStorage]>([
  ['MemoryStorage', () => new MemoryStorage()],
  ['LocalStorageStorage', () => new LocalStorageStorage(fakeLocalStorage())],
  ['FileStorage', () => new FileStorage(path.join(tempDir('mqim-fs-'), 'state'))]
])('%s', (_name, make) => {
  test('get/set, missing keys, overwrite', async () => {
    const s = make()
    expect(await s.get('mqim:alice:phone')).toBeNull()
    await s.set('mqim:alice:phone', '{"a":1}')
    await s.set('mqim:alice:phone', '{"a":2}')
    await s.set('mqim:bob:web', 'x')
    expect(await s.get('mqim:alice:phone')).toBe('{"a":2}')
    expect(await s.get('mqim:bob:web')).toBe('x')
  })

  test('StateStore round-trips the state through the storage', async () => {
    const s = make()
    const a = await StateStore.load(s, 'k')
    expect(a.state).toEqual({ v: 1, initialized: false, synced: {}, outbox: [] })
    a.state.synced.c1 = 7
    a.state.outbox.push({ conv: 'c1', msgId: 'm1', kind: 'text', body: 'hi' })
    a.state.initialized = true
    await a.saveNow()
    const b = await StateStore.load(s, 'k')
    expect(b.state).toEqual(a.state)
  })
})

test('FileStorage writes whole files (temp file + rename) and leaves no temp file behind', async () => {
  const dir = tempDir('mqim-fs-')
  const s = new FileStorage(dir)
  for (let i = 0; i < 20; i++) await s.set('mqim:alice:term', JSON.stringify({ i }))
  expect(readdirSync(dir)).toEqual([encodeURIComponent('mqim:alice:term') + '.json'])
  expect(JSON.parse((await s.get('mqim:alice:term')) ?? '')).toEqual({ i: 19 })
})

/** A MemoryStorage that keeps every value written, in order. */
class RecordingStorage extends MemoryStorage {
  readonly writes: string[] = []
  override async set (key: string, value: string): Promise<void> {
    this.writes.push(value)
    await super.set(key, value)
  }
}

describe('StateStore write coalescing', () => {
  test('a burst of changes: the first is written at once, the rest together at the end of the interval', async () => {
    const storage = new RecordingStorage()
    const store = await StateStore.load(storage, 'k', { saveIntervalMs: 50 })
    for (let seq = 1; seq <= 1000; seq++) {
      store.state.synced.c1 = seq
      store.changed()
    }
    expect(storage.writes.map(w => JSON.parse(w).synced.c1)).toEqual([1])
    const deadline = Date.now() + 5000
    while (storage.writes.length < 2 && Date.now() < deadline) await new Promise(resolve => setTimeout(resolve, 10))
    expect(storage.writes.map(w => JSON.parse(w).synced.c1)).toEqual([1, 1000])
    // quiet for longer than the interval since that write (timed from it: a busy machine fires
    // timers late): the next change is written at once again
    await new Promise(resolve => setTimeout(resolve, 120))
    expect(storage.writes).toHaveLength(2)
    store.state.synced.c1 = 1001
    store.changed()
    expect(storage.writes).toHaveLength(3)
  })

  test('saveNow writes at once, pending changes included; flush and close write what is pending', async () => {
    const storage = new RecordingStorage()
    const store = await StateStore.load(storage, 'k', { saveIntervalMs: 60000 })
    store.state.synced.c1 = 1
    store.changed() // written at once (nothing written before)
    store.state.synced.c1 = 2
    store.changed() // waits for the interval
    expect(storage.writes).toHaveLength(1)
    store.state.outbox.push({ conv: 'c1', msgId: 'm1', kind: 'text', body: 'hi' })
    const saved = store.saveNow()
    // a synchronous storage has it before saveNow's caller gets control back
    expect(JSON.parse(storage.writes[1] ?? 'null')).toMatchObject({ synced: { c1: 2 }, outbox: [{ msgId: 'm1' }] })
    await saved
    store.state.synced.c1 = 3
    store.changed()
    expect(storage.writes).toHaveLength(2)
    await store.flush()
    expect(JSON.parse(storage.writes[2] ?? 'null')?.synced.c1).toBe(3)
    store.state.synced.c1 = 4
    store.changed()
    await store.close()
    expect(storage.writes.map(w => JSON.parse(w).synced.c1)).toEqual([1, 2, 3, 4])
    // closed: changes are written at once, no timer is left behind
    store.state.synced.c1 = 5
    store.changed()
    expect(storage.writes).toHaveLength(5)
  })

  test('a failed coalesced write is reported through onError', async () => {
    const errors: unknown[] = []
    const failing: ClientStorage = { get: async () => null, set: async () => { throw new Error('disk full') } }
    const store = await StateStore.load(failing, 'k', { onError: err => { errors.push(err) } })
    store.changed()
    await new Promise(resolve => setTimeout(resolve, 0))
    expect(String(errors[0])).toContain('disk full')
    await expect(store.saveNow()).rejects.toThrow('disk full')
  })
})
