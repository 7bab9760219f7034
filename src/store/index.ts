/**
 * Adapters chosen by name from config; each validates its own sub-config. The MongoDB and MySQL
 * adapters (and their drivers) are loaded only when the config names them: the embedded default
 * would otherwise carry both drivers (mongodb 7.0 MB of heap after GC, 23 MB of RSS and ~210 ms of
 * start-up; mysql2 2.8 MB, 16 MB and ~115 ms; each measured by importing it under
 * node --expose-gc).
 */
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import { loadModule } from '../load-module.js'
import type { MessageStore, MetadataStore } from './types.js'
import { MemoryMessageStore } from './messages-memory.js'
import { MemoryMetadataStore } from './metadata-memory.js'

export async function createMessageStore (config: Config['messageStore'], logger?: Logger, opts: { clustered?: boolean } = {}): Promise<MessageStore> {
  switch (config.adapter) {
    case 'memory': return new MemoryMessageStore()
    case 'mongodb': return new (await loadModule('messageStore', config.adapter, async () => await import('./messages-mongo.js'))).MongoMessageStore({
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

export async function createMetadataStore (config: Config['metadataStore']): Promise<MetadataStore> {
  switch (config.adapter) {
    case 'memory': return new MemoryMetadataStore()
    case 'mysql': return new (await loadModule('metadataStore', config.adapter, async () => await import('./metadata-mysql.js'))).MySqlMetadataStore({ url: config.url, poolSize: config.poolSize })
  }
}

export function isEmbedded (config: Config): boolean {
  return config.messageStore.adapter === 'memory' || config.metadataStore.adapter === 'memory'
}
