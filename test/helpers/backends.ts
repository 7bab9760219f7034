/** Store pairs an integration test can run on: the embedded default and the real databases. */
import { MemoryMessageStore } from '../../src/store/messages-memory.js'
import { MemoryMetadataStore } from '../../src/store/metadata-memory.js'
import { MongoMessageStore } from '../../src/store/messages-mongo.js'
import { MySqlMetadataStore } from '../../src/store/metadata-mysql.js'
import type { MessageStore, MetadataStore } from '../../src/store/types.js'
import { freshMongo, freshMysqlUrl } from './db.js'

export interface Backend {
  name: string
  /** Fresh, initialized stores. */
  make: () => Promise<{ meta: MetadataStore, messages: MessageStore }>
}

export const MEMORY: Backend = {
  name: 'memory',
  make: async () => {
    const meta = new MemoryMetadataStore()
    const messages = new MemoryMessageStore()
    await meta.init()
    await messages.init()
    return { meta, messages }
  }
}

export const DATABASES: Backend = {
  name: 'mongodb+mysql',
  make: async () => {
    const mongo = freshMongo()
    const meta = new MySqlMetadataStore({ url: await freshMysqlUrl() })
    const messages = new MongoMessageStore({ url: mongo.url, database: mongo.dbName })
    await meta.init()
    await messages.init()
    return { meta, messages }
  }
}

export const BACKENDS: Backend[] = [MEMORY, DATABASES]
