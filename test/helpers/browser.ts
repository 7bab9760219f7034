/**
 * Browser end-to-end helpers: headless Debian Chromium driven by playwright-core, the chat page built
 * by scripts/build-web.mjs and served by a real mqim server.
 */
import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium, type Browser, type BrowserContext, type Locator, type Page } from 'playwright-core'

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

/** Builds web/dist (esbuild; well under a second when warm). */
export function buildWeb (): void {
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'build-web.mjs')], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] })
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
