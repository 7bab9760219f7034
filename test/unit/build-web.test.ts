/**
 * scripts/build-web.mjs --if-stale (what `npm start` runs first): builds only when something the
 * last build was made from changed since that build started, on a copy of the repository's parts
 * it reads (its root is the directory above the script; node_modules linked).
 */
import { spawnSync } from 'node:child_process'
import { cpSync, existsSync, rmSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { tempDir } from '../helpers/tmp.js'

const repo = path.resolve(import.meta.dirname, '..', '..')

describe('build-web --if-stale', () => {
  let root: string

  beforeAll(() => {
    root = tempDir('mqim-build-web-')
    for (const part of ['scripts/build-web.mjs', 'web/src', 'web/tsconfig.json', 'src', 'tsconfig.json', 'package.json', 'package-lock.json']) {
      cpSync(path.join(repo, part), path.join(root, part), { recursive: true })
    }
    symlinkSync(path.join(repo, 'node_modules'), path.join(root, 'node_modules'), 'dir')
  })

  /** Runs the script in the copy; what it printed. */
  function build (...args: string[]): string {
    const r = spawnSync(process.execPath, [path.join(root, 'scripts', 'build-web.mjs'), ...args], { encoding: 'utf8', timeout: 60_000 })
    if (r.status !== 0) throw new Error(`build-web ${args.join(' ')} exited ${r.status}: ${r.stderr}`)
    return r.stdout
  }
  const BUILT = /build-web: web\/dist\/app\.js [\d.]+ KiB/
  const FRESH = 'build-web: web/dist is up to date'
  /** Marks a file as changed now (after the last build started, before the next one starts). */
  const touch = (file: string): void => { const t = new Date(); utimesSync(path.join(root, file), t, t) }

  test('no build yet: it builds; then nothing changed: it does not', () => {
    expect(build('--if-stale')).toMatch(BUILT)
    expect(existsSync(path.join(root, 'web', 'dist', 'app.js'))).toBe(true)
    expect(build('--if-stale')).toContain(FRESH)
  }, 120_000)

  test('an edited source, a bundled SDK module, the config: each makes it build again', () => {
    for (const file of ['web/src/format.ts', 'src/client/client.ts', 'web/src/style.css', 'web/tsconfig.json', 'package-lock.json']) {
      touch(file)
      expect({ file, out: build('--if-stale') }).toEqual({ file, out: expect.stringMatching(BUILT) })
      expect({ file, out: build('--if-stale') }).toEqual({ file, out: expect.stringContaining(FRESH) })
    }
  }, 120_000)

  test('a file added next to a source (a .tsx that esbuild would take before the .ts) makes it build; one added at the root does not', () => {
    // (creating or removing a file sets its directory's time)
    writeFileSync(path.join(root, 'web', 'src', 'format.tsx'), 'export const shortTime = (): string => "shadowed"\n')
    expect(build('--if-stale')).toMatch(BUILT)
    rmSync(path.join(root, 'web', 'src', 'format.tsx'))
    expect(build('--if-stale')).toMatch(BUILT)
    expect(build('--if-stale')).toContain(FRESH)
    writeFileSync(path.join(root, 'notes.txt'), 'not an input\n')
    expect(build('--if-stale')).toContain(FRESH)
  }, 120_000)

  test('the inputs list gone or broken: it builds', () => {
    rmSync(path.join(root, 'web', '.build-inputs.json'))
    expect(build('--if-stale')).toMatch(BUILT)
    writeFileSync(path.join(root, 'web', '.build-inputs.json'), '{"startedAt": "soon", "inputs": []}')
    expect(build('--if-stale')).toMatch(BUILT)
    expect(build('--if-stale')).toContain(FRESH)
  }, 120_000)
})
