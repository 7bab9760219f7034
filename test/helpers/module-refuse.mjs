// Loaded with `node --import`: the packages named in MQIM_TEST_REFUSE_MODULES (comma-separated)
// cannot be imported, as if missing from node_modules (tests of a failed install).
import { register } from 'node:module'

const refused = (process.env.MQIM_TEST_REFUSE_MODULES ?? '').split(',').filter(m => m !== '')

register('data:text/javascript,' + encodeURIComponent(`
const refused = ${JSON.stringify(refused)}
export async function resolve (specifier, context, next) {
  if (refused.includes(specifier)) {
    const err = new Error('Cannot find package ' + JSON.stringify(specifier) + ' (refused by test/helpers/module-refuse.mjs)')
    err.code = 'ERR_MODULE_NOT_FOUND'
    throw err
  }
  return await next(specifier, context)
}`))
