/**
 * Web Push in Chromium against a real mqim server: the page's bell registers the service worker
 * (web/src/sw.ts) and asks the browser for a push subscription. Chromium cannot make one here:
 * Playwright's contexts are incognito, where Chromium has no Push API ("Registration failed -
 * permission denied"), and in a persistent profile subscribe() waits for Google's push service,
 * which this machine cannot reach (it had not settled after 2 minutes). The test records which
 * happened and checks the page says so instead of hanging. Either way it then takes a push that mqim really sent for alice while she
 * was offline (received and decrypted by the local push service of test/helpers/push-service.ts)
 * and hands its payload to the service worker through the DevTools protocol
 * (ServiceWorker.deliverPushMessage): the worker shows a notification with the sender and the
 * text, and a click on it opens the conversation in the page. Screenshots in test-artifacts/push-*.png.
 */
import type { Browser, BrowserContext, Page } from 'playwright-core'
import { addUser, connect, startServer } from '../helpers/im.js'
import { LocalPushService } from '../helpers/push-service.js'
import type { MqimServer } from '../../src/server.js'
import { artifactPath, buildWeb, launchBrowser, login, openContext, type ChatPage } from '../helpers/browser.js'

let server: MqimServer
let browser: Browser
let service: LocalPushService
let baseUrl: string
const passwords: Record<string, string> = {}

beforeAll(async () => {
  buildWeb()
  service = await LocalPushService.start()
  server = await startServer({ push: { delayMs: 100, collapseMs: 1000, webPush: { allowedHosts: ['127.0.0.1:*', 'fcm.googleapis.com', '*.googleapis.com'], allowHttp: true } } })
  baseUrl = `http://127.0.0.1:${server.ports.http}`
  for (const u of ['alice', 'bob']) passwords[u] = await addUser(server, u)
  browser = await launchBrowser()
}, 120_000)

afterAll(async () => {
  await browser?.close()
  await server?.stop()
  await service?.close()
})

/** The registration id of the page's service worker, from the DevTools protocol. */
async function registrationOf (page: Page): Promise<{ send: (data: string) => Promise<void> }> {
  const cdp = await page.context().newCDPSession(page)
  const registrations: Array<{ registrationId: string, scopeURL: string, isDeleted: boolean }> = []
  cdp.on('ServiceWorker.workerRegistrationUpdated', e => { registrations.push(...e.registrations) })
  await cdp.send('ServiceWorker.enable')
  const deadline = Date.now() + 10_000
  while (!registrations.some(r => r.scopeURL === `${baseUrl}/` && !r.isDeleted)) {
    if (Date.now() > deadline) throw new Error(`no service worker registration at ${baseUrl}/: ${JSON.stringify(registrations)}`)
    await new Promise(resolve => setTimeout(resolve, 50))
  }
  const reg = registrations.find(r => r.scopeURL === `${baseUrl}/` && !r.isDeleted)
  return { send: async (data) => { await cdp.send('ServiceWorker.deliverPushMessage', { origin: baseUrl, registrationId: reg?.registrationId ?? '', data }) } }
}

async function notifications (page: Page): Promise<Array<{ title: string, body: string, tag: string, data: unknown }>> {
  return await page.evaluate(async () => {
    const reg = await navigator.serviceWorker.getRegistration('/')
    const shown = await reg?.getNotifications() ?? []
    return shown.map(n => ({ title: n.title, body: n.body, tag: n.tag, data: n.data as unknown }))
  })
}

test('the bell registers the service worker; a push mqim sent shows a notification, and its click opens the conversation', async () => {
  const alice: ChatPage = await openContext(browser, baseUrl, 'alice')
  const context: BrowserContext = alice.context
  await context.grantPermissions(['notifications'], { origin: baseUrl })
  await login(alice, passwords.alice as string, 'web1')
  const bell = alice.page.getByTestId('push-toggle')
  await bell.waitFor()
  expect(await bell.getAttribute('data-status')).toBe('off')
  await bell.click()
  // subscribed (Chromium reached its push service) or refused (it could not): never stuck
  await alice.page.waitForFunction(() => ['on', 'error'].includes(document.querySelector('[data-testid="push-toggle"]')?.getAttribute('data-status') ?? ''), undefined, { timeout: 30_000 })
  const status = await bell.getAttribute('data-status')
  const detail = await bell.getAttribute('title')
  console.log(`Chromium push subscription: ${status === 'on' ? 'created' : `not created (${detail ?? ''})`}`)
  await alice.page.screenshot({ path: artifactPath('push-bell.png') })
  const registered = (await server.services.meta.pushTargetsOf(['alice'])).filter(t => t.device === 'web1')
  expect(registered).toHaveLength(status === 'on' ? 1 : 0)
  const worker = await registrationOf(alice.page)

  // a push mqim really sends for alice while she is offline, taken by the local push service
  const relay = await connect(server, 'alice', 'relay')
  await relay.request('push-register', { webPush: service.subscribe('alice-relay').json })
  await relay.end()
  await alice.page.goto('about:blank')
  const bob = await connect(server, 'bob', 'b1')
  const { conv } = await bob.request('direct', { user: 'alice' })
  await bob.request('send', { conv, msgId: 'p1', kind: 'text', body: 'Are you there? 🍕' })
  const [push] = await service.waitFor(1)
  expect(push?.payload).toMatchObject({ conv, from: 'bob', text: 'Are you there? 🍕', badge: 1 })

  // the page again (this tab's session logs it back in); the worker gets the payload and shows it
  await alice.page.goto('/')
  await alice.page.getByTestId('app-view').waitFor({ state: 'visible' })
  // Delivered again every 2 s until it shows (a notification of the same tag replaces the last):
  // on a loaded machine a push delivered while the reloaded page's worker was still starting was
  // lost once (CI at d4fe9ad), and a push service redelivers what it could not hand over too.
  const deadline = Date.now() + 20_000
  let shown: Awaited<ReturnType<typeof notifications>> = []
  let sentAt = 0
  while (shown.length === 0 && Date.now() < deadline) {
    if (Date.now() - sentAt >= 2_000) {
      sentAt = Date.now()
      await worker.send(JSON.stringify(push?.payload))
    }
    await new Promise(resolve => setTimeout(resolve, 100))
    shown = await notifications(alice.page)
  }
  expect(shown).toStrictEqual([{ title: 'bob', body: 'Are you there? 🍕', tag: `conv:${conv}`, data: { conv } }])

  // a click on the notification opens bob's chat
  const [sw] = context.serviceWorkers()
  if (sw === undefined) throw new Error('no service worker in the context')
  await sw.evaluate(async () => {
    const scope = self as unknown as { registration: ServiceWorkerRegistration, dispatchEvent: (e: Event) => boolean }
    const [n] = await scope.registration.getNotifications()
    const Ctor = (self as unknown as { NotificationEvent: new (type: string, init: { notification: Notification }) => Event }).NotificationEvent
    if (n !== undefined) scope.dispatchEvent(new Ctor('notificationclick', { notification: n }))
  })
  await alice.page.getByTestId('chat-title').filter({ hasText: 'bob' }).waitFor()
  expect(await notifications(alice.page)).toStrictEqual([])
  await alice.page.screenshot({ path: artifactPath('push-opened.png') })
  expect(alice.errors.filter(e => !/push service|Registration failed|AbortError|Push API in incognito/i.test(e))).toStrictEqual([])
  await bob.end()
  await context.close()
})
