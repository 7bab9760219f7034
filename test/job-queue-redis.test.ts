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

test('a record that is not a job (written by something else) is dropped, and the queue goes on', async () => {
  const redis = new Redis(redisUrl())
  const name = `test-${randomBytes(6).toString('hex')}`
  try {
    const queue = new RedisJobQueue(redis, name, 10)
    await queue.add([{ id: 'good', data: 'g' }], 1000)
    await redis.hset(`mqim:jobs:${name}:data`, 'bad', 'not json {', 'odd', '{"data":1}')
    await redis.zadd(`mqim:jobs:${name}:due`, 900, 'bad', 901, 'odd', 902, 'nothing')
    expect((await queue.claim(10, 1000, 1000)).map(j => j.id)).toStrictEqual(['good'])
    expect(await queue.size()).toBe(1)
    expect(await redis.hkeys(`mqim:jobs:${name}:data`)).toStrictEqual(['good'])
  } finally {
    await redis.del(`mqim:jobs:${name}:due`, `mqim:jobs:${name}:data`)
    await redis.quit()
  }
})
