/**
 * Attachments on the chat page, two users in two Chromium pages against a real mqim server (local
 * disk store): alice pastes an image into the message box, bob sees its thumbnail in the timeline
 * and opens it full size; alice attaches a PDF with the attach button and drops a text file on the
 * chat, bob sees file chips with name and size and downloads one. Screenshots go to
 * test-artifacts/files-*.png.
 */
import type { Browser } from 'playwright-core'
import sharp from 'sharp'
import { addUser, connect, startServer } from '../helpers/im.js'
import type { MqimServer } from '../../src/server.js'
import { artifactPath, buildWeb, launchBrowser, login, openChat, openContext, sendText, message, type ChatPage } from '../helpers/browser.js'

let server: MqimServer
let browser: Browser
let alice: ChatPage
let bob: ChatPage
const opened: ChatPage[] = []

beforeAll(async () => {
  buildWeb()
  server = await startServer()
  const passwords: Record<string, string> = {}
  for (const user of ['alice', 'bob']) passwords[user] = await addUser(server, user)
  // a direct chat with a first message, there before the pages log in
  const setup = await connect(server, 'alice', 'setup')
  const { conv } = await setup.request('direct', { user: 'bob' })
  await setup.request('send', { conv, msgId: 'hello1', kind: 'text', body: 'hello, a picture follows' })
  await setup.end()
  browser = await launchBrowser()
  const baseUrl = `http://127.0.0.1:${server.ports.http}`
  alice = await openContext(browser, baseUrl, 'alice')
  bob = await openContext(browser, baseUrl, 'bob')
  opened.push(alice, bob)
  await login(alice, passwords.alice as string, 'alice-web')
  await login(bob, passwords.bob as string, 'bob-web')
})

afterAll(async () => {
  for (const c of opened) await c.context.close().catch(() => {})
  await browser?.close()
  await server?.stop()
})

test('alice pastes an image, bob sees its thumbnail and opens it full size', async () => {
  await openChat(alice.page, 'bob')
  await openChat(bob.page, 'alice')
  await message(bob.page, 'hello, a picture follows').waitFor()

  const png = await sharp({ create: { width: 800, height: 600, channels: 3, background: '#e07a1f' } })
    .composite([{ input: Buffer.from('<svg width="800" height="600"><circle cx="400" cy="300" r="200" fill="#1f6fe0"/></svg>'), top: 0, left: 0 }])
    .withExif({ IFD0: { Make: 'TestCam' }, IFD3: { GPSLatitudeRef: 'N', GPSLatitude: '48/1 51/1 2400/100' } })
    .png().toBuffer()
  // paste: a clipboard event carrying the image, as a browser makes it when one pastes a screenshot
  await alice.page.getByTestId('composer-input').focus()
  await alice.page.evaluate(async (b64) => {
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0))
    const dt = new DataTransfer()
    dt.items.add(new File([bytes], 'screenshot.png', { type: 'image/png' }))
    const input = document.querySelector('[data-testid="composer-input"]')
    input?.dispatchEvent(new ClipboardEvent('paste', { clipboardData: dt, bubbles: true, cancelable: true }))
  }, png.toString('base64'))

  // alice sees her own image; bob sees the thumbnail, loaded (a real image of the thumbnail's size)
  await alice.page.getByTestId('msg-thumb').waitFor()
  const thumb = bob.page.getByTestId('msg-thumb')
  await thumb.waitFor()
  await bob.page.waitForFunction(() => {
    const img = document.querySelector<HTMLImageElement>('[data-testid="msg-thumb"]')
    return img !== null && img.complete && img.naturalWidth > 0
  })
  const size = await thumb.evaluate((img: HTMLImageElement) => ({ w: img.naturalWidth, h: img.naturalHeight }))
  expect(size).toEqual({ w: 320, h: 240 })
  // the composer text box kept nothing from the paste
  expect(await alice.page.getByTestId('composer-input').inputValue()).toBe('')
  await alice.page.screenshot({ path: artifactPath('files-alice-pasted.png') })
  await bob.page.screenshot({ path: artifactPath('files-bob-thumbnail.png') })

  await bob.page.getByTestId('msg-thumb-open').click()
  const full = bob.page.getByTestId('file-viewer-img')
  await full.waitFor()
  await bob.page.waitForFunction(() => {
    const img = document.querySelector<HTMLImageElement>('[data-testid="file-viewer-img"]')
    return img !== null && img.complete && img.naturalWidth > 0
  })
  expect(await full.evaluate((img: HTMLImageElement) => ({ w: img.naturalWidth, h: img.naturalHeight }))).toEqual({ w: 800, h: 600 })
  await bob.page.screenshot({ path: artifactPath('files-bob-full-size.png') })
  await bob.page.keyboard.press('Escape')
  await bob.page.getByTestId('file-viewer').waitFor({ state: 'detached' })
  expect(alice.errors.concat(bob.errors)).toEqual([])
})

test('attach button and drag-and-drop send other files as chips with name and size; bob downloads one', async () => {
  await alice.page.getByTestId('composer-file-input').setInputFiles({ name: 'minutes.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF-1.4\n% test file\n' + 'x'.repeat(2000)) })
  const chip = bob.page.getByTestId('msg-file').filter({ hasText: 'minutes.pdf' })
  await chip.waitFor()
  expect(await chip.textContent()).toContain('2 kB')
  // drop a text file on the chat
  await alice.page.evaluate(() => {
    const dt = new DataTransfer()
    dt.items.add(new File(['dropped text'], 'notes.txt', { type: 'text/plain' }))
    const pane = document.querySelector('.chat-pane')
    pane?.dispatchEvent(new DragEvent('dragover', { dataTransfer: dt, bubbles: true, cancelable: true }))
    pane?.dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }))
  })
  const notes = bob.page.getByTestId('msg-file').filter({ hasText: 'notes.txt' })
  await notes.waitFor()
  const download = bob.page.waitForEvent('download')
  await notes.click()
  const file = await download
  expect(file.suggestedFilename()).toBe('notes.txt')
  const stream = await file.createReadStream()
  let text = ''
  for await (const chunk of stream) text += (chunk as Buffer).toString()
  expect(text).toBe('dropped text')
  await sendText(alice.page, 'files done')
  await message(bob.page, 'files done').waitFor()
  await bob.page.screenshot({ path: artifactPath('files-bob-chips.png') })
  expect(alice.errors.concat(bob.errors)).toEqual([])
})
