/**
 * The chat page under the Content-Security-Policy the server is going to send: a reverse proxy in
 * front of the server adds that header to every response (and passes the MQTT WebSocket through, so
 * it stays same-origin), and the test fails on any CSP violation the page reports
 * (`securitypolicyviolation` events, console errors) while two users log in, chat, build a group and
 * scroll. Static checks keep inline scripts, styles and handlers out of the HTML and string
 * evaluation out of the bundle.
 */
import * as esbuild from 'esbuild'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import http from 'node:http'
import net, { type AddressInfo } from 'node:net'
import path from 'node:path'
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { addUser, startServer, waitUntil } from '../helpers/im.js'
import type { MqimServer } from '../../src/server.js'
import { ROOT, buildWeb, convItem, launchBrowser, message, openChat, sendText } from '../helpers/browser.js'

const CSP = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'; object-src 'none'"

let server: MqimServer
let proxy: http.Server
/** Both ends of every WebSocket the proxy passes through (the HTTP server forgets upgraded sockets). */
const tunnels = new Set<net.Socket>()
/** How often the proxy has passed each path through (the worker's script is fetched through it). */
const served = new Map<string, number>()
let browser: Browser
let baseUrl: string
const passwords: Record<string, string> = {}

function passwordOf (user: string): string {
  const password = passwords[user]
  if (password === undefined) throw new Error(`no password for ${user}`)
  return password
}

const contexts: BrowserContext[] = []

interface CspPage { page: Page, problems: string[], workers: string[] }

/** Forwards HTTP requests to the server's HTTP port adding the CSP header, and WebSocket upgrades as raw bytes. */
async function startCspProxy (port: number): Promise<http.Server> {
  const p = http.createServer((req, res) => {
    const pathname = new URL(req.url ?? '/', 'http://proxy').pathname
    served.set(pathname, (served.get(pathname) ?? 0) + 1)
    const upstream = http.request({ host: '127.0.0.1', port, path: req.url, method: req.method, headers: req.headers }, up => {
      res.writeHead(up.statusCode ?? 502, { ...up.headers, 'content-security-policy': CSP })
      up.pipe(res)
    })
    upstream.on('error', () => { res.destroy() })
    req.pipe(upstream)
  })
  p.on('upgrade', (req: http.IncomingMessage, socket: net.Socket, head: Buffer) => {
    const up = net.connect(port, '127.0.0.1', () => {
      tunnels.add(socket).add(up)
      const lines = [`${req.method ?? 'GET'} ${req.url ?? '/'} HTTP/1.1`]
      for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`)
      up.write(lines.join('\r\n') + '\r\n\r\n')
      up.write(head)
      socket.pipe(up).pipe(socket)
    })
    up.on('error', () => { socket.destroy() })
    socket.on('error', () => { up.destroy() })
    up.on('close', () => { tunnels.delete(up); socket.destroy() })
    socket.on('close', () => { tunnels.delete(socket); up.destroy() })
  })
  await new Promise<void>(resolve => p.listen(0, '127.0.0.1', resolve))
  return p
}

/** A browser context on the page behind the CSP proxy; records violations and errors. */
async function openWithCsp (user: string): Promise<CspPage> {
  const context = await browser.newContext({ viewport: { width: 1000, height: 700 }, baseURL: baseUrl })
  contexts.push(context)
  context.setDefaultTimeout(15000)
  // Runs before the page's own scripts; init scripts are not subject to the page's CSP.
  await context.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', e => {
      console.error(`CSP violation: ${e.violatedDirective} blocked ${e.blockedURI || 'inline'} at ${e.sourceFile}:${e.lineNumber} ${e.sample}`)
    })
  })
  const page = await context.newPage()
  const problems: string[] = []
  const workers: string[] = []
  page.on('worker', w => { workers.push(new URL(w.url()).pathname) })
  page.on('pageerror', err => { problems.push(`pageerror: ${err.message}`) })
  page.on('console', msg => {
    // errors, and the warning the page logs when its keepalive worker failed and it fell back
    if (msg.type() === 'error' || (msg.type() === 'warning' && msg.text().includes('keepalive'))) problems.push(`console ${msg.type()}: ${msg.text()}`)
  })
  const fetchedBefore = served.get('/timer-worker.js') ?? 0
  const response = await page.goto('/')
  expect(response?.headers()['content-security-policy']).toBe(CSP)
  // The SDK's keepalive runs in a worker of this origin (mqtt.js's own blob: worker is not allowed):
  // the page fetches its script through the proxy. (Playwright's 'worker' event can come late on a
  // loaded machine, so the workers it reports are checked at the end of the test.)
  await waitUntil(() => (served.get('/timer-worker.js') ?? 0) > fetchedBefore, 15000, 'the keepalive worker\'s script to be fetched')
  await page.getByTestId('login-user').fill(user)
  await page.getByTestId('login-password').fill(passwordOf(user))
  await page.getByTestId('login-submit').click()
  await page.getByTestId('app-view').waitFor({ state: 'visible' }).catch(err => { throw new Error(`${String(err)}\n${problems.join('\n')}`) })
  return { page, problems, workers }
}

function filesUnder (dir: string): string[] {
  return readdirSync(dir).flatMap(name => {
    const file = path.join(dir, name)
    return statSync(file).isDirectory() ? filesUnder(file) : [file]
  })
}

beforeAll(async () => {
  buildWeb()
  server = await startServer()
  proxy = await startCspProxy(server.ports.http)
  baseUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`
  for (const user of ['alice', 'bob']) passwords[user] = await addUser(server, user)
  browser = await launchBrowser()
})

afterAll(async () => {
  for (const context of contexts) await context.close().catch(() => {})
  await browser?.close()
  for (const s of tunnels) s.destroy()
  proxy?.closeAllConnections()
  await new Promise(resolve => proxy?.close(resolve))
  await server?.stop()
})

test('the page works under the CSP without a single violation', async () => {
  const alice = await openWithCsp('alice')
  const bob = await openWithCsp('bob')

  await alice.page.getByTestId('direct-user').fill('bob')
  await alice.page.getByTestId('direct-open').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'bob' }).waitFor()
  // a multi-line message grows the composer (a style set through the CSSOM, which the CSP allows)
  await alice.page.getByTestId('composer-input').fill('line one\nline two\nline three')
  await alice.page.getByTestId('composer-send').click()
  await alice.page.getByTestId('message-list').locator('[data-testid="msg"]', { hasText: 'line three' }).waitFor()
  await sendText(alice.page, 'Hi Bob!')
  await message(alice.page, 'Hi Bob!').waitFor()

  // bob sees the conversation (avatar colours, badge), opens it, answers
  await convItem(bob.page, 'alice').waitFor()
  await openChat(bob.page, 'alice')
  await message(bob.page, 'Hi Bob!').waitFor()
  await sendText(bob.page, 'Hello Alice')
  await message(alice.page, 'Hello Alice').waitFor()
  await alice.page.getByTestId('msg-status').first().waitFor()

  // a group with its members panel
  await alice.page.getByTestId('group-new-toggle').click()
  await alice.page.getByTestId('group-name').fill('csp team')
  await alice.page.getByTestId('group-members').fill('bob')
  await alice.page.getByTestId('group-create').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'csp team' }).waitFor()
  await alice.page.getByTestId('members-toggle').click()
  await alice.page.locator('[data-testid="member"][data-user="bob"]').waitFor()
  await sendText(alice.page, 'Welcome')
  await message(alice.page, 'Welcome').waitFor()
  await convItem(bob.page, 'csp team').waitFor()

  // a reload (the session is restored from sessionStorage) and a logout
  await bob.page.reload()
  await bob.page.getByTestId('app-view').waitFor({ state: 'visible' })
  await bob.page.getByTestId('chat-title').filter({ hasText: 'alice' }).waitFor()
  await bob.page.getByTestId('logout').click()
  await bob.page.getByTestId('login-view').waitFor({ state: 'visible' })

  expect(alice.problems).toEqual([])
  expect(bob.problems).toEqual([])
  // every worker either page started is the keepalive worker of this origin, never a blob: one
  expect([...alice.workers, ...bob.workers].filter(w => w !== '/timer-worker.js')).toEqual([])
})

test('the page has no inline script or style, and nothing but mqtt.js\'s old-engine fallbacks can evaluate a string', async () => {
  const html = readFileSync(path.join(ROOT, 'web', 'dist', 'index.html'), 'utf8')
  expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/i) // every <script> has a src
  expect(html).not.toMatch(/<style\b/i)
  expect(html).not.toMatch(/\sstyle\s*=/i)
  expect(html).not.toMatch(/\son[a-z]+\s*=/i) // inline event handlers
  const own = [...filesUnder(path.join(ROOT, 'web', 'src')), ...filesUnder(path.join(ROOT, 'src', 'client'))].filter(f => /\.tsx?$/.test(f))
  for (const file of own) {
    const text = readFileSync(file, 'utf8')
    expect({ file, hits: text.match(/innerHTML|outerHTML|insertAdjacentHTML|document\.write|setAttribute\(\s*['"]style['"]|\bstyle=['"{]['"`]/g) }).toEqual({ file, hits: null })
  }
  // Everything bundled but mqtt (the page, the SDK, Preact) evaluates no string. mqtt's prebuilt
  // browser build carries Function() fallbacks for engines without globalThis or
  // Function.prototype.bind; a current browser never reaches them, as the test above shows.
  const { outputFiles } = await esbuild.build({
    absWorkingDir: ROOT,
    entryPoints: [path.join(ROOT, 'web', 'src', 'main.tsx'), path.join(ROOT, 'web', 'src', 'timer-worker.ts')],
    outdir: path.join(ROOT, 'web', 'dist-check'),
    write: false,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    conditions: ['browser', 'import'],
    jsx: 'automatic',
    jsxImportSource: 'preact',
    external: ['mqtt'],
    logLevel: 'silent'
  })
  for (const f of outputFiles.filter(o => o.path.endsWith('.js'))) {
    expect({ file: path.basename(f.path), hits: f.text.match(/\beval\s*\(|\bFunction\s*\(|setTimeout\(\s*['"`]|setInterval\(\s*['"`]/g) }).toEqual({ file: path.basename(f.path), hits: null })
  }
  expect(readFileSync(path.join(ROOT, 'web', 'dist', 'app.js'), 'utf8')).not.toMatch(/[^\w$.]eval\(/)
})
