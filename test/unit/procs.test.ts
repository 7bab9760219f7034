/**
 * scripts/lib/procs.ts, the exit of a script (soak, drill, bench): an exception nothing caught
 * ends it with status 1, also when it comes while the script's own clean-up is running after its
 * work ended well (its `process.exit(exitStatus(0))` would otherwise report success).
 */
import { execFile } from 'node:child_process'
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'

const PROCS = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../scripts/lib/procs.ts')

async function run (body: string): Promise<{ code: number | null, stderr: string }> {
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-procs-'))
  try {
    const file = path.join(dir, 'script.mts')
    writeFileSync(file, `import { exitStatus, installSignalHandlers, onCleanup, runCleanups, sleep } from ${JSON.stringify(PROCS)}\n${body}\n`)
    return await new Promise(resolve => {
      execFile(process.execPath, ['--import', 'tsx', file], { cwd: path.dirname(PROCS), timeout: 30_000 }, (err, _stdout, stderr) => {
        resolve({ code: err === null ? 0 : (err as { code?: number | null }).code ?? null, stderr })
      })
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}

describe('a script\'s exit status', () => {
  test('an exception thrown while the clean-up after a successful run is running: status 1, the clean-up done once', async () => {
    const r = await run(`
installSignalHandlers('t')
let cleaned = 0
onCleanup(async () => { await sleep(300); cleaned++; process.stderr.write('cleaned ' + cleaned + '\\n') })
const status = 0 // the work ended well
setTimeout(() => { throw new Error('late failure') }, 50)
await runCleanups()
process.exit(exitStatus(status))`)
    expect(r.stderr).toContain('late failure')
    expect(r.stderr.match(/cleaned \d/g)).toEqual(['cleaned 1'])
    expect(r.code).toBe(1)
  })

  test('no exception: the script\'s own status, 0 or not', async () => {
    expect((await run('installSignalHandlers(\'t\')\nawait runCleanups()\nprocess.exit(exitStatus(0))')).code).toBe(0)
    expect((await run('installSignalHandlers(\'t\')\nawait runCleanups()\nprocess.exit(exitStatus(3))')).code).toBe(3)
  })
})
