/** The SDK's ClientStorage implementations and its persisted state. */
import { mkdtempSync, readdirSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { FileStorage, LocalStorageStorage, MemoryStorage, type ClientStorage } from '../src/client/node.js'
import { StateStore } from '../src/client/storage.js'

const fakeLocalStorage = (): { getItem: (k: string) => string | null, setItem: (k: string, v: string) => void } => {
  const m = new Map<string, string>()
  return { getItem: k => m.get(k) ?? null, setItem: (k, v) => { m.set(k, v) } }
}

describe.each<[string, () => ClientStorage]>([
  ['MemoryStorage', () => new MemoryStorage()],
  ['LocalStorageStorage', () => new LocalStorageStorage(fakeLocalStorage())],
  ['FileStorage', () => new FileStorage(path.join(mkdtempSync(path.join(tmpdir(), 'mqim-fs-')), 'state'))]
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
    await a.save()
    const b = await StateStore.load(s, 'k')
    expect(b.state).toEqual(a.state)
  })
})

test('FileStorage writes whole files (temp file + rename) and leaves no temp file behind', async () => {
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-fs-'))
  const s = new FileStorage(dir)
  for (let i = 0; i < 20; i++) await s.set('mqim:alice:term', JSON.stringify({ i }))
  expect(readdirSync(dir)).toEqual([encodeURIComponent('mqim:alice:term') + '.json'])
  expect(JSON.parse((await s.get('mqim:alice:term')) ?? '')).toEqual({ i: 19 })
})
