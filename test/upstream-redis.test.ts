/**
 * The upstream behaviour of mqemitter-redis 7.2.1 (with ioredis 6) that src/broker/upstream.ts
 * works around (workaround 8), on the test Redis: close() calls quit() on both of its connections
 * without handling the promises and waits for both to end. With a connection that is already
 * closed (disconnected, or Redis gone), that quit() rejects, nobody handles it (an unhandled
 * rejection: fatal by default), and close() never calls back, so a graceful stop hangs.
 * (The in-process behaviours are in test/unit/upstream.test.ts.)
 */
import { execFileSync } from 'node:child_process'
import { Redis } from 'ioredis'
import mqemitterRedis from 'mqemitter-redis'
import { redisUrl } from './helpers/db.js'
import { closeEmitterQuietly } from '../src/broker/upstream.js'

interface Emitter { close: (cb: () => void) => void, state: NodeJS.EventEmitter }

async function emitterWithClosedConnection (): Promise<{ emitter: Emitter, subConn: Redis }> {
  const pubConn = new Redis(redisUrl(), { maxRetriesPerRequest: 0 })
  const subConn = new Redis(redisUrl(), { maxRetriesPerRequest: 0 })
  pubConn.on('error', () => {})
  subConn.on('error', () => {})
  const emitter = mqemitterRedis({ pubConn, subConn } as unknown as Parameters<typeof mqemitterRedis>[0]) as unknown as Emitter
  emitter.state.on('error', () => {})
  closeEmitterQuietly(emitter)
  await new Promise(resolve => setTimeout(resolve, 100))
  pubConn.disconnect()
  await new Promise(resolve => setTimeout(resolve, 50))
  return { emitter, subConn }
}

async function closesWithin (emitter: Emitter, ms: number): Promise<boolean> {
  return await new Promise(resolve => {
    const timer = setTimeout(() => resolve(false), ms)
    emitter.close(() => { clearTimeout(timer); resolve(true) })
  })
}

describe('mqemitter-redis 7.2.1 close()', () => {
  test('upstream: close() with a closed connection rejects unhandled and never calls back', async () => {
    // in a child process: the unhandled rejection is the behaviour under test (jest would fail on it)
    const script = `
      import { execFileSync } from 'node:child_process'
import { Redis } from 'ioredis'
      import mqemitterRedis from 'mqemitter-redis'
      const pubConn = new Redis(process.env.URL, { maxRetriesPerRequest: 0 })
      const subConn = new Redis(process.env.URL, { maxRetriesPerRequest: 0 })
      pubConn.on('error', () => {}); subConn.on('error', () => {})
      const mq = mqemitterRedis({ pubConn, subConn }); mq.state.on('error', () => {})
      await new Promise(r => setTimeout(r, 100))
      pubConn.disconnect()
      await new Promise(r => setTimeout(r, 50))
      process.on('unhandledRejection', r => console.log('unhandled: ' + r.message))
      mq.close(() => console.log('closed'))
      setTimeout(() => { console.log('end'); process.exit(0) }, 1000)`
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], { env: { ...process.env, URL: redisUrl() }, encoding: 'utf8' })
    expect(out.trim().split('\n')).toEqual(['unhandled: Connection is closed.', 'end'])
  })

  test('workaround: only the emitter is closed, at once; the owner quits the connections', async () => {
    const { emitter, subConn } = await emitterWithClosedConnection()
    expect(await closesWithin(emitter, 1000)).toBe(true)
    await subConn.quit()
  })
})
