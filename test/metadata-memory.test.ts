import { MemoryMetadataStore } from '../src/store/metadata-memory.js'
import { describeMetadataStore } from './contract/metadata-store.contract.js'

describeMetadataStore('memory', async () => ({ store: new MemoryMetadataStore() }))
