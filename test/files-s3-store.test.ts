/**
 * The ObjectStore contract on the S3 store against a real S3-compatible server: SeaweedFS, started
 * by scripts/services.sh (MQIM_S3_*). Each test gets a bucket of its own, emptied afterwards.
 */
import { randomBytes } from 'node:crypto'
import { S3ObjectStore } from '../src/files/s3-store.js'
import { describeObjectStore } from './contract/object-store.contract.js'
import { s3Options } from './helpers/s3.js'

describeObjectStore('s3 (SeaweedFS)', async () => {
  const options = s3Options(`mqimt-${randomBytes(6).toString('hex')}`)
  const store = new S3ObjectStore(options)
  return {
    store,
    origin: options.endpoint ?? '',
    cleanup: async () => {
      // empty the bucket through a second client (the suite closed the store)
      const cleaner = new S3ObjectStore(options)
      for (const prefix of ['f/', 't/', 'r/']) {
        let page = await cleaner.list(prefix, null, 1000)
        while (page.items.length > 0) {
          await cleaner.delete(page.items.map(i => i.key))
          if (page.next === null) break
          page = await cleaner.list(prefix, page.next, 1000)
        }
      }
      await cleaner.close()
    }
  }
})
