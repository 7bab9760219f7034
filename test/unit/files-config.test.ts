/** The `files` section of the configuration: defaults, the S3 environment variables, and errors that name the field. */
import { loadConfig, ConfigError } from '../../src/config.js'
import { typeAllowed } from '../../src/files/config.js'
import { fileOrigins } from '../../src/files/index.js'

describe('files configuration', () => {
  test('the embedded default: the local store under the data dir, with limits', () => {
    const { files } = loadConfig({ env: {} })
    expect(files.store).toEqual({ adapter: 'local', dir: null, secret: null })
    expect(files).toMatchObject({ publicUrl: null, maxFileBytes: 104857600, urlTtlMs: 300000, unreferencedTtlMs: 86400000 })
    expect(fileOrigins(files)).toEqual([])
  })

  test('MQIM_S3_BUCKET switches to S3; the endpoint sets path style; the page may load from the store', () => {
    const { files } = loadConfig({ env: { MQIM_S3_BUCKET: 'chat-files', MQIM_S3_ENDPOINT: 'http://127.0.0.1:8333', MQIM_S3_ACCESS_KEY: 'k', MQIM_S3_SECRET_KEY: 's', MQIM_S3_REGION: 'eu-west-1' } })
    expect(files.store).toEqual({ adapter: 's3', bucket: 'chat-files', region: 'eu-west-1', endpoint: 'http://127.0.0.1:8333', publicEndpoint: null, forcePathStyle: true, accessKeyId: 'k', secretAccessKey: 's', createBucket: false })
    expect(fileOrigins(files)).toEqual(['http://127.0.0.1:8333'])
    // the other S3 variables alone change nothing (the test services export them)
    expect(loadConfig({ env: { MQIM_S3_ENDPOINT: 'http://127.0.0.1:8333', MQIM_S3_ACCESS_KEY: 'k' } }).files.store.adapter).toBe('local')
    const aws = loadConfig({ overrides: { files: { store: { adapter: 's3', bucket: 'b-1', region: 'eu-central-1' } } }, env: {} }).files
    expect(fileOrigins(aws)).toEqual(['https://b-1.s3.eu-central-1.amazonaws.com'])
  })

  test.each([
    ['files.store.bucket', { store: { adapter: 's3', bucket: 'Bad_Bucket' } }],
    ['files.store.accessKeyId', { store: { adapter: 's3', bucket: 'good', accessKeyId: 'only-one' } }],
    ['files.store.endpoint', { store: { adapter: 's3', bucket: 'good', endpoint: 'ftp://x' } }],
    ['files.store.secret', { store: { adapter: 'local', secret: 'short' } }],
    ['files.allowedTypes.0', { allowedTypes: ['Image/PNG'] }],
    ['files.allowedTypes', { allowedTypes: [] }],
    ['files.maxFileBytes', { maxFileBytes: -1 }],
    ['files.urlTtlMs', { urlTtlMs: 10 }],
    ['files.publicUrl', { publicUrl: 'javascript:alert(1)' }],
    ['files.store.adapter', { store: { adapter: 'minio' } }]
  ])('an invalid %s stops start-up naming the field', (field, files) => {
    let err: unknown
    try {
      loadConfig({ env: {}, overrides: { files } })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    expect((err as Error).message).toContain(field)
  })

  test('allowed types: exact, or a whole type with *', () => {
    expect(typeAllowed('image/png', ['image/*'])).toBe(true)
    expect(typeAllowed('image/png', ['image/jpeg'])).toBe(false)
    expect(typeAllowed('application/pdf', ['application/pdf'])).toBe(true)
    expect(typeAllowed('imagex/png', ['image/*'])).toBe(false)
  })
})
