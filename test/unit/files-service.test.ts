/**
 * FileService through a local store on disk: when an upload's reference is written (with the
 * message, or first for an upload near the sweep's age), a reference the store refuses
 * (UNAVAILABLE, healed by a resend), and the sweep's bound per step.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { randomBytes } from 'node:crypto'
import { LocalObjectStore } from '../../src/files/local-store.js'
import { FileService } from '../../src/files/service.js'
import { MemoryUploadQuota } from '../../src/files/quota.js'
import { loadConfig } from '../../src/config.js'
import { createLogger } from '../../src/log.js'
import type { ObjectStore } from '../../src/files/object-store.js'

describe('FileService', () => {
  let dir: string
  let store: LocalObjectStore
  let now: number
  let failRefs: boolean
  let files: FileService
  /** Messages "stored": conv/sender/msgId. */
  let stored: Set<string>

  beforeEach(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'mqim-files-svc-'))
    store = new LocalObjectStore({ dir, secret: randomBytes(32), publicUrl: '' })
    await store.init()
    now = Date.now()
    failRefs = false
    stored = new Set()
    // the store, refusing reference writes while failRefs is set
    const flaky: ObjectStore = Object.assign(Object.create(store) as ObjectStore, {
      put: async (key: string, body: Buffer, binding: { mime: string, meta: Record<string, string> }) => {
        if (failRefs && key.startsWith('r/')) throw new Error('store down')
        await store.put(key, body, binding)
      }
    })
    const config = loadConfig({ env: {}, overrides: { files: { unreferencedTtlMs: 60_000, sweepMaxPerRun: 2 } } }).files
    files = new FileService({ store: flaky, config, quota: new MemoryUploadQuota(), logger: createLogger('silent'), now: () => now, messageStored: async (conv, sender, msgId) => stored.has(`${conv}/${sender}/${msgId}`) })
  })

  afterEach(() => { rmSync(dir, { recursive: true, force: true }) })

  /** An upload of alice's in c1, as a PUT would leave it. */
  async function uploaded (): Promise<string> {
    const grant = await files.grantUpload('alice', { conv: 'c1', name: 'a.txt', size: 3, mime: 'text/plain' })
    await store.put(`f/${grant.id}`, Buffer.from('abc'), { mime: 'text/plain', meta: { owner: 'alice', conv: 'c1', size: '3', name: Buffer.from('a.txt').toString('base64url') } })
    return grant.id
  }

  test('a young upload is referenced with the message; a refused reference is UNAVAILABLE, and a resend writes it', async () => {
    const id = await uploaded()
    const first = await files.attach('alice', 'c1', 'm1', id)
    expect(first.file).toEqual({ id, name: 'a.txt', size: 3, mime: 'text/plain' })
    expect(await store.head(`r/${id}`)).toBeNull()
    failRefs = true
    await expect(first.refer()).rejects.toMatchObject({ code: 'UNAVAILABLE' })
    expect(await store.head(`r/${id}`)).toBeNull()
    failRefs = false
    const again = await files.attach('alice', 'c1', 'm1', id)
    await again.refer()
    expect((await store.head(`r/${id}`))?.meta).toMatchObject({ msgid: 'm1', conv: 'c1' })
    // now another message cannot take it; the same one can (a resend)
    await expect(files.attach('alice', 'c1', 'm2', id)).rejects.toMatchObject({ code: 'CONFLICT' })
    await (await files.attach('alice', 'c1', 'm1', id)).refer()
  })

  test('an upload near the sweep\'s age is referenced before the message is stored', async () => {
    const id = await uploaded()
    now += 45_000
    const attached = await files.attach('alice', 'c1', 'm1', id)
    expect((await store.head(`r/${id}`))?.meta.msgid).toBe('m1')
    await attached.refer()
  })

  test('the sweep removes unreferenced uploads older than the limit, a page per step, and keeps referenced ones', async () => {
    const ids = [await uploaded(), await uploaded(), await uploaded()]
    await (await files.attach('alice', 'c1', 'keep', ids[0] as string)).refer()
    stored.add('c1/alice/keep')
    expect((await files.sweep(null)).removed).toBe(0)
    now += 61_000
    let removed = 0
    let cursor: string | null = null
    let steps = 0
    do {
      const step = await files.sweep(cursor)
      expect(step.removed).toBeLessThanOrEqual(2)
      removed += step.removed
      cursor = step.next
      steps++
    } while (cursor !== null)
    expect(steps).toBe(2)
    expect(removed).toBe(2)
    expect(await store.head(`f/${ids[0] as string}`)).not.toBeNull()
    for (const id of ids.slice(1)) expect(await store.head(`f/${id}`)).toBeNull()
  })

  test('an image that does not decode is tried once: a resend finds the marker (no decoding), and there is no thumbnail to download', async () => {
    const grant = await files.grantUpload('alice', { conv: 'c1', name: 'broken.png', size: 20, mime: 'image/png' })
    // the PNG signature, then garbage
    const bytes = Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(12, 7)])
    await store.put(`f/${grant.id}`, bytes, { mime: 'image/png', meta: { owner: 'alice', conv: 'c1', size: '20', name: Buffer.from('broken.png').toString('base64url') } })
    let reads = 0
    const read = store.read.bind(store)
    store.read = async (key, max) => { reads++; return await read(key, max) }
    const first = await files.attach('alice', 'c1', 'm1', grant.id)
    expect(first.file).toEqual({ id: grant.id, name: 'broken.png', size: 20, mime: 'image/png' })
    expect(reads).toBe(1)
    const again = await files.attach('alice', 'c1', 'm1', grant.id)
    expect(again.file).toEqual(first.file)
    expect(reads).toBe(1)
    await expect(files.grantDownload('c1', grant.id, 'thumb')).rejects.toMatchObject({ code: 'NOT_FOUND' })
  })

  test('every upload is charged at least 4 KiB of the daily quota', async () => {
    const quota = new MemoryUploadQuota()
    const config = loadConfig({ env: {}, overrides: { files: { bytesPerUserPerDay: 40_960 } } }).files
    const small = new FileService({ store, config, quota, logger: createLogger('silent'), now: () => now, messageStored: async () => false })
    for (let i = 0; i < 10; i++) await small.grantUpload('eve', { conv: 'c1', name: 'x', size: 1, mime: 'text/plain' })
    await expect(small.grantUpload('eve', { conv: 'c1', name: 'x', size: 1, mime: 'text/plain' })).rejects.toMatchObject({ code: 'LIMIT_REACHED' })
  })
})

describe('FileService sweep of references without a message', () => {
  test('an upload whose reference names a message that is not stored (a failed send, a message retention removed) goes once the reference is old', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'mqim-files-svc-'))
    try {
      const store = new LocalObjectStore({ dir, secret: randomBytes(32), publicUrl: '' })
      await store.init()
      let now = Date.now()
      const stored = new Set<string>(['c1/alice/kept'])
      const config = loadConfig({ env: {}, overrides: { files: { unreferencedTtlMs: 60_000 } } }).files
      const files = new FileService({ store, config, quota: new MemoryUploadQuota(), logger: createLogger('silent'), now: () => now, messageStored: async (c, u, m) => stored.has(`${c}/${u}/${m}`) })
      const ids: string[] = []
      for (const msgId of ['kept', 'lost']) {
        const grant = await files.grantUpload('alice', { conv: 'c1', name: 'a.txt', size: 3, mime: 'text/plain' })
        await store.put(`f/${grant.id}`, Buffer.from('abc'), { mime: 'text/plain', meta: { owner: 'alice', conv: 'c1', size: '3', name: 'YQ' } })
        await (await files.attach('alice', 'c1', msgId, grant.id)).refer()
        ids.push(grant.id)
      }
      // young references are not judged yet
      now += 30_000
      expect((await files.sweep(null)).removed).toBe(0)
      now += 31_000
      expect((await files.sweep(null)).removed).toBe(1)
      expect(await store.head(`f/${ids[0] as string}`)).not.toBeNull()
      expect(await store.head(`f/${ids[1] as string}`)).toBeNull()
      expect(await store.head(`r/${ids[1] as string}`)).toBeNull()
    } finally {
      rmSync(dir, { recursive: true, force: true })
    }
  })
})
