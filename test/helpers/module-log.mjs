// Loaded with `node --import`: writes "module-log: <package>" to stderr for each module of a package
// in node_modules that the process loads (tests of what a process does not load).
import { register } from 'node:module'

register('data:text/javascript,' + encodeURIComponent(`
export async function resolve (specifier, context, next) {
  const found = await next(specifier, context)
  const m = /\\/node_modules\\/((?:@[^/]+\\/)?[^/]+)\\//.exec(found.url)
  if (m !== null) process.stderr.write('module-log: ' + m[1] + '\\n')
  return found
}`))
