/**
 * Attachments on the page: files chosen with the attach button, pasted, or dropped are sent with
 * the SDK's sendFile (progress shown under the messages); thumbnails and files are fetched with
 * short-lived URLs from `file-url`, kept until shortly before they expire (at most URLS_MAX).
 */
import type { ImClient } from '../../src/client/index.js'
import { describeError } from './format.js'
import type { AppStore } from './store.js'

/** Download URLs kept at once (the least recently used go first). */
const URLS_MAX = 500
/** A URL is asked for again this long before it expires. */
const URL_MARGIN_MS = 30_000

let uploadSeq = 0

export class Files {
  private readonly urls = new Map<string, { url: string, expiresAt: number }>()

  constructor (private readonly client: ImClient, private readonly store: AppStore) {}

  /** Sends each file as a message of kind `file`; a refusal shows in the chat. */
  async send (conv: string, files: readonly File[]): Promise<void> {
    for (const file of files) {
      const key = `u${++uploadSeq}`
      this.store.update(state => {
        state.chatError = null
        state.uploads.set(key, { conv, name: file.name || 'pasted file', sent: 0, total: file.size })
      })
      try {
        await this.client.sendFile(conv, file, {
          name: file.name || `pasted-${Date.now()}.${(file.type.split('/')[1] ?? 'bin').replace(/[^a-z0-9]/g, '')}`,
          onProgress: p => { this.store.update(state => { const u = state.uploads.get(key); if (u !== undefined) u.sent = p.sent }) }
        })
      } catch (err) {
        this.store.update(state => { state.chatError = { conv, text: `Could not send ${file.name || 'the file'}: ${describeError(err)}` } })
      } finally {
        this.store.update(state => { state.uploads.delete(key) })
      }
    }
  }

  /** A URL of the file (or its thumbnail) valid for a while yet. */
  async url (conv: string, file: string, variant: 'original' | 'thumb'): Promise<string> {
    const key = `${conv}/${file}/${variant}`
    const held = this.urls.get(key)
    if (held !== undefined && held.expiresAt - URL_MARGIN_MS > Date.now()) {
      this.urls.delete(key)
      this.urls.set(key, held)
      return held.url
    }
    const grant = await this.client.fileUrl(conv, file, variant)
    this.urls.set(key, { url: grant.url, expiresAt: grant.expiresAt })
    while (this.urls.size > URLS_MAX) this.urls.delete(this.urls.keys().next().value as string)
    return grant.url
  }
}

/** 1.2 MB, 340 kB, 12 B */
export function byteSize (n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(1)} GB`
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)} MB`
  if (n >= 1e3) return `${Math.round(n / 1e3)} kB`
  return `${n} B`
}
