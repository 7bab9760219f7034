// Loaded with `node --import`: writes "module-log: <package>" to stderr for each module of a package
// in node_modules that the process loads, by import (a resolve hook) or by require (CommonJS
// resolution, which that hook does not see): tests of what a process does not load.
import Module, { register } from 'node:module'

const PACKAGE = /\/node_modules\/((?:@[^/]+\/)?[^/]+)\//

register('data:text/javascript,' + encodeURIComponent(`
export async function resolve (specifier, context, next) {
  const found = await next(specifier, context)
  const m = ${PACKAGE.toString()}.exec(found.url)
  if (m !== null) process.stderr.write('module-log: ' + m[1] + '\\n')
  return found
}`))

const resolveFilename = Module._resolveFilename
Module._resolveFilename = function (...args) {
  const found = resolveFilename.apply(this, args)
  const m = typeof found === 'string' ? PACKAGE.exec(found) : null
  if (m !== null) process.stderr.write('module-log: ' + m[1] + '\n')
  return found
}
