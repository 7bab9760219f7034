/**
 * Serves the browser chat page (built by `npm run build:web` into web/dist/) from the HTTP
 * listener. Only files inside that directory, GET/HEAD only; missing build -> a 404 that says how
 * to build it.
 */
import { createReadStream, existsSync, statSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import type { IncomingMessage, ServerResponse } from 'node:http'

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.webmanifest': 'application/manifest+json'
}

function findWebDist (): string {
  let dir = path.dirname(fileURLToPath(import.meta.url))
  for (let i = 0; i < 5; i++) {
    const candidate = path.join(dir, 'web', 'dist')
    if (existsSync(path.join(dir, 'package.json'))) return candidate
    dir = path.dirname(dir)
  }
  return path.resolve('web', 'dist')
}

export const WEB_DIST = findWebDist()

/** Returns true if it answered the request. */
export function serveStatic (req: IncomingMessage, res: ServerResponse, root: string = WEB_DIST): boolean {
  if (req.method !== 'GET' && req.method !== 'HEAD') return false
  const urlPath = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname)
  const rel = urlPath === '/' ? 'index.html' : urlPath.slice(1)
  const file = path.resolve(root, rel)
  if (!file.startsWith(root + path.sep)) return false
  if (!existsSync(file) || !statSync(file).isFile()) {
    if (urlPath === '/') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' })
      res.end('The chat page is not built. Run: npm run build:web\n')
      return true
    }
    return false
  }
  res.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'cache-control': rel === 'index.html' ? 'no-cache' : 'public, max-age=300',
    'x-content-type-options': 'nosniff'
  })
  if (req.method === 'HEAD') {
    res.end()
    return true
  }
  createReadStream(file).pipe(res)
  return true
}
