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
 * A build writes its files over the old ones and then removes what it no longer makes: web/dist is
 * never empty, so a server already serving it (another `npm start`, a test) keeps finding its page.
 *
 * mqtt resolves to its browser build through the "browser" export condition (dist/mqtt.esm.js); the
 * build fails if anything tries to pull a Node built-in module into the bundle.
 */
import * as esbuild from 'esbuild'
import { existsSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs'
import { copyFile, mkdir, rm } from 'node:fs/promises'
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
 * What the last build was made from (esbuild's inputs: web/src, the SDK and protocol it bundles,
 * the packages it takes from node_modules), with this script and package-lock.json: outside
 * web/dist, which the server serves.
 */
const INPUTS_FILE = path.join(root, 'web', '.build-inputs.json')
const ALWAYS = [fileURLToPath(import.meta.url), path.join(root, 'package-lock.json')]

function mtimeOrNull (file) {
  try {
    return statSync(file).mtimeMs
  } catch {
    return null
  }
}

/** web/dist holds a build of what it was built from, none of which changed since. */
function isFresh () {
  if (!existsSync(INPUTS_FILE) || !OUTPUTS.every(f => existsSync(f))) return false
  let inputs
  try {
    inputs = JSON.parse(readFileSync(INPUTS_FILE, 'utf8'))
  } catch {
    return false
  }
  if (!Array.isArray(inputs) || inputs.length === 0) return false
  const built = Math.min(...OUTPUTS.map(f => statSync(f).mtimeMs))
  // an input gone or newer than the build (a new file counts once a listed one imports it)
  return inputs.every(f => typeof f === 'string' && (mtimeOrNull(f) ?? Infinity) <= built)
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

const copyStatic = {
  name: 'copy-static',
  setup (build) {
    build.onEnd(async result => {
      if (result.errors.length > 0) return
      await Promise.all(['index.html', 'style.css'].map(f => copyFile(path.join(src, f), path.join(out, f))))
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
  plugins: [noNodeBuiltins, copyStatic]
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
  const ctx = await esbuild.context(options)
  await ctx.watch()
  console.log('build-web: watching web/src and src/client')
} else {
  const result = await esbuild.build(options)
  // what an older build made and this one did not (a renamed entry point, an old chunk) goes
  const made = new Set([...Object.keys(result.metafile.outputs).map(f => path.resolve(root, f)), ...['index.html', 'style.css'].map(f => path.join(out, f))])
  await Promise.all(readdirSync(out).map(f => path.join(out, f)).filter(f => !made.has(f)).map(f => rm(f, { recursive: true, force: true })))
  // (esbuild's inputs are paths from root; a virtual one, such as a define, is no file: left out)
  const inputs = [...Object.keys(result.metafile.inputs).map(f => path.resolve(root, f)), ...['index.html', 'style.css'].map(f => path.join(src, f)), ...ALWAYS]
    .filter(f => mtimeOrNull(f) !== null)
  writeFileSync(INPUTS_FILE, JSON.stringify(inputs))
  const bytes = result.metafile.outputs[path.relative(root, path.join(out, 'app.js'))]?.bytes ?? 0
  console.log(`build-web: web/dist/app.js ${(bytes / 1024).toFixed(1)} KiB in ${Date.now() - started} ms`)
}
