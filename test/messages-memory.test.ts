import { MemoryMessageStore } from '../src/store/messages-memory.js'
import { describeMessageStore } from './contract/message-store.contract.js'

describeMessageStore('memory', async () => ({ store: new MemoryMessageStore() }))
