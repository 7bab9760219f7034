import { MemoryJobQueue } from '../../src/im/jobs.js'
import { describeJobQueue } from '../contract/job-queue.contract.js'

describeJobQueue('memory', async (max) => ({ queue: new MemoryJobQueue(max) }))
