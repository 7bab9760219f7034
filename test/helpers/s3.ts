/** The test S3 service (SeaweedFS, started by scripts/services.sh); a missing variable fails loudly. */
import type { S3StoreOptions } from '../../src/files/s3-store.js'

function requireEnv (name: string): string {
  const value = process.env[name]
  if (value === undefined || value === '') {
    throw new Error(`${name} is not set. Run the tests with "npm test", which starts SeaweedFS (S3) on a free port, or source the env of scripts/services.sh start.`)
  }
  return value
}

/** Options of an S3 store on the test service, in `bucket` (created on init). */
export function s3Options (bucket: string): S3StoreOptions {
  return {
    bucket,
    region: process.env.MQIM_S3_REGION ?? 'us-east-1',
    endpoint: requireEnv('MQIM_S3_ENDPOINT'),
    publicEndpoint: null,
    forcePathStyle: true,
    accessKeyId: requireEnv('MQIM_S3_ACCESS_KEY'),
    secretAccessKey: requireEnv('MQIM_S3_SECRET_KEY'),
    createBucket: true
  }
}
