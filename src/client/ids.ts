/** Random ids for requests and client message ids: 1-64 of A-Z a-z 0-9 _ - (Web Crypto: Node 20 and browsers). */
const ALPHABET = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-'

export function randomId (length = 22): string {
  const bytes = new Uint8Array(length)
  globalThis.crypto.getRandomValues(bytes)
  let id = ''
  for (const b of bytes) id += ALPHABET[b & 63]
  return id
}
