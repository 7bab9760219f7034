/**
 * A diagnostic for soak runs: counts what a node asks its MongoDB-compatible store, by collection,
 * method, the filter's top-level fields (or a bulk's size) and the first mqim frames of the call,
 * and writes the tally every 10 s to D/mongo-calls-<pid>.txt (count, rate over the process' life,
 * call; a findOne also counts as the find it makes). Loaded into each node before anything else:
 *
 *   MQIM_MONGO_CALLS_DIR=/tmp/mc MQIM_SOAK_NODE_ARGS="--import ./scripts/soak/mongo-calls.mjs" \
 *     npm run -s soak -- --quick --cluster
 *
 * (the path is relative to the checkout, the nodes' working directory). It wraps the driver's
 * Collection methods and captures a stack per call: it costs the node CPU, so runs with it are
 * for finding out what is asked, not for latency figures. Without MQIM_MONGO_CALLS_DIR it does nothing.
 */
import { createRequire } from 'node:module'
import { mkdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'

const dir = process.env.MQIM_MONGO_CALLS_DIR
if (dir !== undefined && dir !== '') {
  mkdirSync(dir, { recursive: true })
  const { Collection } = createRequire(import.meta.url)('mongodb')
  const counts = new Map()
  const caller = () => (new Error().stack ?? '').split('\n').slice(3)
    .filter(line => line.includes('/src/'))
    .slice(0, 4)
    .map(line => line.trim().replace(/^at /, '').replace(/\(.*\/src\//, '(').replace(/:\d+\)$/, ')'))
    .join(' < ')
  const shapeOf = (first) => Array.isArray(first)
    ? `[${first.length}]`
    : first !== null && typeof first === 'object' ? Object.keys(first).join(',') : ''
  for (const method of ['find', 'findOne', 'insertMany', 'insertOne', 'updateOne', 'updateMany', 'bulkWrite', 'deleteOne', 'deleteMany', 'findOneAndUpdate', 'countDocuments', 'aggregate']) {
    const original = Collection.prototype[method]
    if (typeof original !== 'function') continue
    Collection.prototype[method] = function (...args) {
      const key = `${this.collectionName}.${method}(${shapeOf(args[0])}) ${caller()}`
      counts.set(key, (counts.get(key) ?? 0) + 1)
      return original.apply(this, args)
    }
  }
  const started = Date.now()
  const file = path.join(dir, `mongo-calls-${process.pid}.txt`)
  setInterval(() => {
    const seconds = (Date.now() - started) / 1000
    const lines = [...counts].sort((a, b) => b[1] - a[1]).map(([key, n]) => `${n}\t${(n / seconds).toFixed(1)}/s\t${key}`)
    writeFileSync(file, lines.join('\n') + '\n')
  }, 10_000).unref()
}
