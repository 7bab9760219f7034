/** Adapters chosen by name from config; each validates its own sub-config. */
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { MessageStore, MetadataStore } from './types.js'
import { MemoryMessageStore } from './messages-memory.js'
import { MongoMessageStore } from './messages-mongo.js'
import { MemoryMetadataStore } from './metadata-memory.js'
import { MySqlMetadataStore } from './metadata-mysql.js'

export function createMessageStore (config: Config['messageStore'], logger?: Logger, opts: { clustered?: boolean } = {}): MessageStore {
  switch (config.adapter) {
    case 'memory': return new MemoryMessageStore()
    case 'mongodb': return new MongoMessageStore({
      url: config.url,
      database: config.database,
      clustered: opts.clustered,
      onChangeUnverified: (change, err) => logger?.error({ conv: change.conversationId, seq: change.seq, target: change.target, err }, 'mongodb: a change to a message could not be verified (FerretDB loses concurrent updates); the message may not show it'),
      onClientReplaced: (ms) => logger?.warn({ failingForMs: ms }, 'mongodb client replaced: it had not reached the server for a while, although the server answers new connections'),
      onMigrated: (info) => logger?.warn(info, info.skipped === 0
        ? 'mongodb: messages migrated to layout 2; the old collection is dropped'
        : 'mongodb: messages migrated to layout 2; documents that are not messages were skipped and left in <collection>_layout1')
    })
  }
}

export function createMetadataStore (config: Config['metadataStore']): MetadataStore {
  switch (config.adapter) {
    case 'memory': return new MemoryMetadataStore()
    case 'mysql': return new MySqlMetadataStore({ url: config.url, poolSize: config.poolSize })
  }
}

export function isEmbedded (config: Config): boolean {
  return config.messageStore.adapter === 'memory' || config.metadataStore.adapter === 'memory'
}
