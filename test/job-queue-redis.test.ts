import { Redis } from 'ioredis'
import { randomBytes } from 'node:crypto'
import { RedisJobQueue } from '../src/im/jobs.js'
import { redisUrl } from './helpers/db.js'
import { describeJobQueue } from './contract/job-queue.contract.js'

describeJobQueue('redis', async (max) => {
  const redis = new Redis(redisUrl())
  // a queue name of its own per test: nothing of another test or run is seen
  const name = `test-${randomBytes(6).toString('hex')}`
  return {
    queue: new RedisJobQueue(redis, name, max),
    cleanup: async () => {
      await redis.del(`mqim:jobs:${name}:due`, `mqim:jobs:${name}:data`)
      await redis.quit()
    }
  }
})
