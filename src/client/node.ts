/** Node-only parts of the SDK (kept out of the browser bundle). */
import { mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import type { ClientStorage } from './types.js'

export * from './index.js'

/**
 * One JSON file per key in `dir`. Writes are synchronous and atomic (temp file + rename), so the
 * state is on disk when `set` returns and a killed process never leaves a torn file behind.
 */
export class FileStorage implements ClientStorage {
  constructor (private readonly dir: string) {
    mkdirSync(dir, { recursive: true })
  }

  async get (key: string): Promise<string | null> {
    try {
      return readFileSync(this.file(key), 'utf8')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null
      throw err
    }
  }

  async set (key: string, value: string): Promise<void> {
    const file = this.file(key)
    const tmp = `${file}.${process.pid}.tmp`
    writeFileSync(tmp, value)
    renameSync(tmp, file)
  }

  private file (key: string): string {
    return path.join(this.dir, encodeURIComponent(key) + '.json')
  }
}
