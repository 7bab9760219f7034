/** Temporary directories of a test file, removed after its last test. */
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'

const made: string[] = []

// evaluated when a test file imports this module, so a hook of that file
afterAll(() => {
  for (const dir of made.splice(0)) rmSync(dir, { recursive: true, force: true })
})

/** A fresh directory under the system's temporary directory, named `<prefix>XXXXXX`. */
export function tempDir (prefix: string): string {
  const dir = mkdtempSync(path.join(tmpdir(), prefix))
  made.push(dir)
  return dir
}
