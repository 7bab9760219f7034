#!/usr/bin/env node
/**
 * Builds the browser chat page: web/src/main.tsx (Preact views; it imports the client SDK from
 * src/client/) is bundled by esbuild into web/dist/app.js (minified, with a source map), the
 * keepalive worker web/src/timer-worker.ts into web/dist/timer-worker.js, the service worker web/src/sw.ts
 * (Web Push notifications) into web/dist/sw.js, and web/src/index.html and
 * web/src/style.css are copied next to them. The server serves web/dist/ at `/` (src/http/static.ts).
 *
 *   node scripts/build-web.mjs             build once
 *   node scripts/build-web.mjs --if-stale  build only when something it was built from changed (npm start)
 *   node scripts/build-web.mjs --watch     rebuild on change (development)
 *
 * A build replaces each file of web/dist whole (written aside, then renamed over the old one) and
 * then removes what it no longer makes: a server already serving web/dist (another `npm start`, a
 * test) finds the old page or the new one, never a missing or half-written file.
 *
 * mqtt resolves to its browser build through the "browser" export condition (dist/mqtt.esm.js); the
 * build fails if anything tries to pull a Node built-in module into the bundle.
 */
import * as esbuild from 'esbuild'
import { existsSync, lstatSync, readFileSync, readdirSync, statSync } from 'node:fs'
import { copyFile, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { parseArgs } from 'node:util'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const src = path.join(root, 'web', 'src')
const out = path.join(root, 'web', 'dist')
const args = parseArgs({ options: { watch: { type: 'boolean' }, 'if-stale': { type: 'boolean' } } }).values
const watch = args.watch === true
const OUTPUTS = ['app.js', 'index.html', 'style.css', 'timer-worker.js', 'sw.js'].map(f => path.join(out, f))
/**
 * What the last build was made from, and when it started (web/.build-inputs.json, outside web/dist,
 * which the server serves): esbuild's inputs (web/src, the SDK and protocol it bundles, the packages
 * it takes from node_modules) and what steers esbuild without being one (this script, the tsconfig
 * files, package.json, package-lock.json). Paths relative to the repository, so a copy of it checks
 * its own files.
 */
const INPUTS_FILE = path.join(root, 'web', '.build-inputs.json')
const ALWAYS = ['scripts/build-web.mjs', 'tsconfig.json', 'web/tsconfig.json', 'package.json', 'package-lock.json']
const STATIC = ['index.html', 'style.css']

function mtimeOrNull (file) {
  try {
    return statSync(path.resolve(root, file)).mtimeMs
  } catch {
    return null
  }
}

/**
 * web/dist holds a build of what it was built from, none of which changed since that build started
 * (a file saved while esbuild ran may not be in the build: it counts as changed).
 */
function isFresh () {
  if (!OUTPUTS.every(f => existsSync(f))) return false
  let record
  try {
    record = JSON.parse(readFileSync(INPUTS_FILE, 'utf8'))
  } catch {
    return false
  }
  const { startedAt, inputs } = record ?? {}
  if (typeof startedAt !== 'number' || !Array.isArray(inputs) || inputs.length === 0) return false
  // an input gone or changed since; a file added or removed next to one (its directory changed: a
  // new main.tsx is taken before main.ts, a new file is imported by an edited one, a page asset)
  return inputs.every(f => typeof f === 'string' && (mtimeOrNull(f) ?? Infinity) < startedAt)
}

/** Writes `file` whole: aside first, then renamed over the old one (atomic on one filesystem). */
async function replaceFile (file, contents) {
  const aside = `${file}.${process.pid}.tmp`
  await writeFile(aside, contents)
  await rename(aside, file)
}

/** Fails the build on any Node built-in (node:fs, crypto, ...) instead of letting it slip in. */
const noNodeBuiltins = {
  name: 'no-node-builtins',
  setup (build) {
    build.onResolve({ filter: /^node:/ }, args => ({
      errors: [{ text: `Node built-in "${args.path}" imported by ${path.relative(root, args.importer)}: not allowed in the browser bundle` }]
    }))
  }
}

/** Watch mode: index.html and style.css copied after each rebuild. */
const copyStatic = {
  name: 'copy-static',
  setup (build) {
    build.onEnd(async result => {
      if (result.errors.length > 0) return
      await Promise.all(STATIC.map(f => copyFile(path.join(src, f), path.join(out, f))))
    })
  }
}

/** @type {import('esbuild').BuildOptions} */
const options = {
  absWorkingDir: root,
  entryPoints: { app: path.join(src, 'main.tsx'), 'timer-worker': path.join(src, 'timer-worker.ts'), sw: path.join(src, 'sw.ts') },
  outdir: out,
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  // The "browser" condition picks mqtt's dist/mqtt.esm.js (see node_modules/mqtt/package.json "exports").
  conditions: ['browser', 'import'],
  mainFields: ['browser', 'module', 'main'],
  jsx: 'automatic',
  jsxImportSource: 'preact',
  minify: true,
  sourcemap: true,
  legalComments: 'none',
  define: { 'process.env.NODE_ENV': '"production"', global: 'globalThis' },
  logLevel: 'warning',
  metafile: true,
  plugins: [noNodeBuiltins]
}

if (args['if-stale'] === true && !watch && isFresh()) {
  console.log('build-web: web/dist is up to date')
  process.exit(0)
}
const started = Date.now()
await mkdir(out, { recursive: true })
if (watch) {
  // what the watcher builds is not listed: the next --if-stale builds again
  await rm(INPUTS_FILE, { force: true })
  const ctx = await esbuild.context({ ...options, plugins: [noNodeBuiltins, copyStatic] })
  await ctx.watch()
  console.log('build-web: watching web/src and src/client')
} else {
  // no list while the outputs change: a build that dies half-way is built again next time
  await rm(INPUTS_FILE, { force: true })
  const result = await esbuild.build({ ...options, write: false })
  const written = [
    ...result.outputFiles.map(f => ({ file: f.path, contents: f.contents })),
    ...await Promise.all(STATIC.map(async f => ({ file: path.join(out, f), contents: await readFile(path.join(src, f)) })))
  ]
  for (const { file, contents } of written) await replaceFile(file, contents)
  // what an older build made and this one did not (a renamed entry point, an old chunk) goes; not
  // through a web/dist that is a link to somewhere else
  if (!lstatSync(out).isSymbolicLink()) {
    const made = new Set(written.map(w => w.file))
    await Promise.all(readdirSync(out).map(f => path.join(out, f)).filter(f => !made.has(f)).map(f => rm(f, { recursive: true, force: true })))
  }
  // (esbuild's inputs are paths from root; a virtual one, such as a define, is no file: left out)
  const sources = [...Object.keys(result.metafile.inputs), ...STATIC.map(f => path.posix.join('web/src', f))]
  // and the directories of the sources (not of the packages, which npm changes with
  // package-lock.json; not the repository's or web/, where other things come and go)
  const dirs = new Set(sources.filter(f => !f.split('/').includes('node_modules')).map(f => path.posix.dirname(f)))
  const inputs = [...sources, ...ALWAYS, ...dirs].filter(f => mtimeOrNull(f) !== null)
  await replaceFile(INPUTS_FILE, JSON.stringify({ startedAt: started, inputs }))
  const bytes = result.metafile.outputs[path.relative(root, path.join(out, 'app.js'))]?.bytes ?? 0
  console.log(`build-web: web/dist/app.js ${(bytes / 1024).toFixed(1)} KiB in ${Date.now() - started} ms`)
}
