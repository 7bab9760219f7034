/**
 * A Redis server of a test's own, for what cannot be done to the shared test Redis without
 * disturbing the tests running beside it: a memory limit, writes refused, a server frozen. `redis-server` is the
 * one scripts/services.sh installs (Debian's), on a free port, with no persistence.
 */
import type { ChildProcess } from 'node:child_process'
import { Redis } from 'ioredis'
import { freePort, spawnTracked, stopChild, waitUntil } from '../../scripts/lib/procs.js'
import { tempDir } from './tmp.js'

export interface PrivateRedis {
  url: string
  /** The server's process (to freeze it with SIGSTOP, as a Redis stuck or cut off). */
  pid: number
  /** A connection for the test's own commands (CONFIG SET, looking at keys). */
  admin: Redis
  stop: () => Promise<void>
}

export async function startPrivateRedis (): Promise<PrivateRedis> {
  const dir = tempDir('mqim-redis-')
  let lastErr: unknown
  for (let attempt = 0; attempt < 3; attempt++) {
    const port = await freePort()
    const child: ChildProcess = spawnTracked('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', dir, '--maxmemory-policy', 'noeviction'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-2000) })
    child.stderr?.on('data', (d: Buffer) => { output = (output + d.toString()).slice(-2000) })
    let spawnError: Error | null = null
    child.once('error', (err) => { spawnError = err })
    const url = `redis://127.0.0.1:${port}`
    const admin = new Redis(url, { lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => 50 })
    admin.on('error', () => {})
    try {
      await waitUntil(async () => {
        if (spawnError !== null) throw new Error(`redis-server could not start (scripts/services.sh install puts it on PATH): ${(spawnError).message}`)
        if (child.exitCode !== null) throw new Error(`redis-server on ${port} exited (${child.exitCode}): ${output}`)
        if (!await admin.ping().then(() => true, () => false)) return false
        // the server answering is this one, not another that took the port first
        const pid = Number(/process_id:(\d+)/.exec(await admin.info('server'))?.[1])
        if (pid !== child.pid) throw new Error(`port ${port} is another server's (pid ${pid})`)
        return true
      }, 10_000, `redis-server on ${port}`, 50)
      return {
        url,
        pid: child.pid as number,
        admin,
        stop: async () => {
          admin.disconnect()
          await stopChild(child)
        }
      }
    } catch (err) {
      // the port was taken between freePort and the server's bind: another one
      lastErr = err
      admin.disconnect()
      await stopChild(child)
    }
  }
  throw lastErr
}
