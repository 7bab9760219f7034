/** The object store chosen by name from config (`files.store.adapter`), and its HTTP routes (local disk). */
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { randomBytes } from 'node:crypto'
import path from 'node:path'
import type { FastifyInstance } from 'fastify'
import type { FilesConfig } from './config.js'
import type { ObjectStore } from './object-store.js'
import { LocalObjectStore } from './local-store.js'
import { fileRoutes } from './routes.js'
import { loadModule } from '../load-module.js'

export interface ObjectStoreSetup {
  store: ObjectStore
  /** Routes the HTTP listener serves for this store (local disk: the signed PUT and GET). */
  routes: ((app: FastifyInstance) => Promise<void>) | null
}

/** The signing secret of the local store: from config, or made once into <dataDir>/files-secret (0600). */
function localSecret (config: FilesConfig['store'] & { adapter: 'local' }, dataDir: string): Buffer {
  if (config.secret !== null) return Buffer.from(config.secret, 'utf8')
  const file = path.join(dataDir, 'files-secret')
  if (!existsSync(file)) {
    mkdirSync(dataDir, { recursive: true })
    try {
      writeFileSync(file, randomBytes(32).toString('hex') + '\n', { mode: 0o600, flag: 'wx' })
    } catch (err) {
      // another process made it first: use theirs
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
  }
  const secret = Buffer.from(readFileSync(file, 'utf8').trim(), 'utf8')
  if (secret.length < 32) throw new Error(`${file} holds fewer than 32 characters; remove it to make a new one`)
  return secret
}

/** Where browsers fetch and upload files of an S3 store (the page's CSP must allow it); none for the local store. */
export function fileOrigins (config: FilesConfig): string[] {
  const s = config.store
  if (s.adapter !== 's3') return []
  const endpoint = s.publicEndpoint ?? s.endpoint
  if (endpoint !== null) {
    const u = new URL(endpoint)
    // virtual-hosted style puts the bucket in the host name
    return [s.forcePathStyle ? u.origin : `${u.protocol}//${s.bucket}.${u.host}`]
  }
  return [s.forcePathStyle ? `https://s3.${s.region}.amazonaws.com` : `https://${s.bucket}.s3.${s.region}.amazonaws.com`]
}

/**
 * The S3 store's module (and with it the AWS SDK) is loaded only when the config names it: loaded
 * by every server, the SDK takes 4.7 MB of heap after GC, 20-24 MB of RSS and ~190 ms of start-up
 * (measured by importing its two packages under node --expose-gc), which a server storing files on
 * disk never uses.
 */
export async function createObjectStore (config: FilesConfig, dataDir: string): Promise<ObjectStoreSetup> {
  const s = config.store
  switch (s.adapter) {
    case 'local': {
      const store = new LocalObjectStore({ dir: s.dir ?? path.join(dataDir, 'files'), secret: localSecret(s, dataDir), publicUrl: config.publicUrl?.replace(/\/+$/, '') ?? '' })
      return { store, routes: async (app) => { await app.register(fileRoutes, { store, uploadsInFlight: config.uploadsInFlight }) } }
    }
    case 's3': {
      const { S3ObjectStore } = await loadModule('files.store', s.adapter, async () => await import('./s3-store.js'))
      return { store: new S3ObjectStore(s), routes: null }
    }
  }
}
