/**
 * Browser end-to-end helpers: headless Debian Chromium driven by playwright-core, the chat page built
 * by scripts/build-web.mjs and served by a real mqim server.
 */
import { execFileSync } from 'node:child_process'
import { closeSync, existsSync, mkdirSync, openSync, statSync, unlinkSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core'
import type { MqimServer } from '../../src/server.js'
import { addUser, startServer } from './im.js'

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..')
export const ARTIFACTS = path.join(ROOT, 'test-artifacts')
export const CHROMIUM = process.env.MQIM_CHROMIUM ?? '/usr/bin/chromium'

/** Installs Debian's chromium package when the browser is missing (as root, or through sudo). */
export function ensureChromium (): void {
  if (existsSync(CHROMIUM)) return
  const root = process.getuid?.() === 0
  const run = (args: [string, ...string[]]): void => {
    const [cmd, ...rest]: [string, ...string[]] = root ? args : ['sudo', '-n', ...args]
    execFileSync(cmd, rest, { stdio: 'inherit', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' } })
  }
  try {
    run(['apt-get', 'update'])
    run(['apt-get', 'install', '-y', 'chromium'])
  } catch (err) {
    throw new Error(`${CHROMIUM} is missing and installing Debian's chromium package failed (run: apt-get install -y chromium): ${String(err)}`)
  }
  if (!existsSync(CHROMIUM)) throw new Error(`${CHROMIUM} is still missing after apt-get install chromium`)
}

const BUILD_LOCK = path.join(ROOT, 'web', '.build.lock')
/** A lock older than this was left by a process that died: taken over. */
const BUILD_LOCK_STALE_MS = 60_000

/**
 * Builds web/dist (esbuild; well under a second when warm) unless it is up to date
 * (`build-web.mjs --if-stale`). Test files run in parallel processes: a build happens under a lock
 * file, so the first test file builds and the others find it fresh.
 */
export function buildWeb (): void {
  const wait = new Int32Array(new SharedArrayBuffer(4))
  let fd: number | undefined
  while (fd === undefined) {
    try {
      fd = openSync(BUILD_LOCK, 'wx')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
      try {
        if (Date.now() - statSync(BUILD_LOCK).mtimeMs > BUILD_LOCK_STALE_MS) unlinkSync(BUILD_LOCK)
      } catch { /* released meanwhile */ }
      Atomics.wait(wait, 0, 0, 100)
    }
  }
  try {
    execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-web.mjs'), '--if-stale'], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
  } finally {
    closeSync(fd)
    unlinkSync(BUILD_LOCK)
  }
}

export async function launchBrowser (): Promise<Browser> {
  ensureChromium()
  return await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-quic', '--no-first-run', '--disable-component-update', '--disable-sync']
  })
}

export function artifactPath (name: string): string {
  mkdirSync(ARTIFACTS, { recursive: true })
  return path.join(ARTIFACTS, name)
}

export interface ChatPage {
  context: BrowserContext
  page: Page
  user: string
  /** Browser console errors and page errors, for the failure message. */
  errors: string[]
}

/** A fresh browser context (its own localStorage, like another browser) on the chat page. */
export async function openContext (browser: Browser, baseUrl: string, user: string, viewport = { width: 1000, height: 700 }): Promise<ChatPage> {
  const context = await browser.newContext({ viewport, baseURL: baseUrl })
  context.setDefaultTimeout(15000)
  const page = await context.newPage()
  const errors: string[] = []
  page.on('pageerror', err => { errors.push(`pageerror: ${err.message}`) })
  page.on('console', msg => { if (msg.type() === 'error') errors.push(`console: ${msg.text()}`) })
  await page.goto('/')
  return { context, page, user, errors }
}

export async function login (chat: ChatPage, password: string, device?: string): Promise<void> {
  const { page } = chat
  await page.getByTestId('login-user').fill(chat.user)
  await page.getByTestId('login-password').fill(password)
  if (device !== undefined) await page.getByTestId('login-device').fill(device)
  await page.getByTestId('login-submit').click()
  await page.getByTestId('app-view').waitFor({ state: 'visible' })
}

/** The list item of a conversation, by its shown name (peer for direct chats, group name). */
export function convItem (page: Page, name: string): Locator {
  return page.locator(`[data-testid="conv-item"][data-name="${name}"]`)
}

/** The unread badge's number on a conversation item (0 when there is no badge). */
export async function unreadOf (page: Page, name: string): Promise<number> {
  const value = await convItem(page, name).getAttribute('data-unread')
  return Number(value ?? '0')
}

export async function openChat (page: Page, name: string): Promise<void> {
  await convItem(page, name).click()
  await page.getByTestId('chat-title').filter({ hasText: name }).waitFor()
}

export async function sendText (page: Page, text: string): Promise<void> {
  await page.getByTestId('composer-input').fill(text)
  await page.getByTestId('composer-input').press('Enter')
}

/** Stored (not pending) messages of the open chat with exactly this text. */
export function message (page: Page, text: string): Locator {
  return page.getByTestId('message-list').locator('[data-testid="msg"]').filter({ has: page.getByTestId('msg-text').getByText(text, { exact: true }) })
}

/** Polls until fn() returns the expected value (playwright's auto-waiting does not cover text and attributes). */
export async function eventually<T> (fn: () => Promise<T>, expected: T, what: string, timeoutMs = 15000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  while (Date.now() < deadline) {
    last = await fn()
    if (last === expected) return
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  throw new Error(`timed out waiting for ${what}: expected ${String(expected)}, last ${String(last)}`)
}

/** A browser test file's server, browser and pages (see chatSuite). */
export interface ChatSuite {
  readonly server: MqimServer
  readonly baseUrl: string
  /** A fresh context as `user`: the page (at `path`, if given), logged in from device `device` (default `<user>-web`). */
  open: (user: string, options?: { device?: string, path?: string, viewport?: { width: number, height: number } }) => Promise<ChatPage>
}

/**
 * Registers a browser test file's hooks: before all, the page is built, a server started (default
 * settings, embedded stores) with `users` (password users), and Chromium launched; after each
 * test, any page or console error of a page opened through the suite fails it; after all, every
 * context, the browser and the server are closed. Hooks the file registers after this call run
 * after these.
 */
export function chatSuite (users: readonly string[]): ChatSuite {
  let server: MqimServer | undefined
  let browser: Browser | undefined
  let baseUrl = ''
  const passwords = new Map<string, string>()
  const opened: ChatPage[] = []
  beforeAll(async () => {
    buildWeb()
    server = await startServer()
    baseUrl = `http://127.0.0.1:${server.ports.http}`
    for (const user of users) passwords.set(user, await addUser(server, user))
    browser = await launchBrowser()
  })
  afterAll(async () => {
    for (const chat of opened) await chat.context.close().catch(() => {})
    await browser?.close()
    await server?.stop()
  })
  afterEach(() => {
    // page errors make a failure easier to understand; they never pass silently
    const errors = opened.flatMap(c => c.errors.map(e => `${c.user}: ${e}`))
    expect(errors).toEqual([])
  })
  return {
    get server () {
      if (server === undefined) throw new Error('the server starts in beforeAll')
      return server
    },
    get baseUrl () { return baseUrl },
    async open (user, options = {}) {
      if (browser === undefined) throw new Error('the browser starts in beforeAll')
      const password = passwords.get(user)
      if (password === undefined) throw new Error(`${user} is not one of this suite's users`)
      const chat = await openContext(browser, baseUrl, user, options.viewport)
      opened.push(chat)
      if (options.path !== undefined) await chat.page.goto(options.path)
      await login(chat, password, options.device ?? `${user}-web`)
      return chat
    }
  }
}
