import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import type { UserRecord } from '../../src/store/types.js'
import { describeMetadataStore } from '../contract/metadata-store.contract.js'

describeMetadataStore('memory', async () => ({ store: new MemoryMetadataStore() }))

// The memory store's change feed is a counter, so it is exact where the contract allows repeats.
describe('MemoryMetadataStore userChanges', () => {
  function user (id: string): UserRecord {
    return { id, kind: 'user', displayName: id, secretHash: 'h', disabled: false, createdAt: 1, groupInvites: 'anyone' }
  }

  test('reports exactly the users changed since the cursor, each once', async () => {
    const store = new MemoryMetadataStore()
    await store.userCreate(user('alice'))
    await store.userCreate(user('bob'))
    const { cursor } = await store.userChanges(null)
    await store.userSetDisabled('bob', true)
    await store.userSetGroupInvites('bob', 'contacts')

    const changes = await store.userChanges(cursor)
    expect(changes.users).toStrictEqual([{ ...user('bob'), disabled: true, groupInvites: 'contacts' }])
    expect((await store.userChanges(changes.cursor)).users).toStrictEqual([])
  })

  test('setting a value it already has is no change, as in MySQL', async () => {
    const store = new MemoryMetadataStore()
    await store.userCreate(user('alice'))
    const { cursor } = await store.userChanges(null)
    await store.userSetDisabled('alice', false)
    await store.userSetSecret('alice', 'h')
    await store.userSetGroupInvites('alice', 'anyone')
    expect((await store.userChanges(cursor)).users).toStrictEqual([])
  })
})
