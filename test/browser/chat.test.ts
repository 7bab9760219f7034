/**
 * The browser chat page end to end: headless Chromium (Debian's package, driven by playwright-core)
 * against a real mqim server, MQTT over WebSocket through the client SDK.
 *
 * The tests run in order and share the server and the browser: alice and bob chat, bob reloads,
 * bob goes offline and comes back, alice builds a group, and alice scrolls back through a long
 * history. A screenshot is saved to test-artifacts/chat.png (and chat-phone.png).
 */
import type { Browser } from 'playwright-core'
import { addUser, connect, startServer } from '../helpers/im.js'
import type { MqimServer } from '../../src/server.js'
import {
  artifactPath, buildWeb, convItem, eventually, launchBrowser, login, message, openChat, openContext, sendText, unreadOf,
  type ChatPage
} from '../helpers/browser.js'

let server: MqimServer
let browser: Browser
let baseUrl: string
const passwords: Record<string, string> = {}

function passwordOf (user: string): string {
  const password = passwords[user]
  if (password === undefined) throw new Error(`no password for ${user}`)
  return password
}

const opened: ChatPage[] = []
let alice: ChatPage
let bob: ChatPage

async function open (user: string, device: string, viewport?: { width: number, height: number }): Promise<ChatPage> {
  const chat = await openContext(browser, baseUrl, user, viewport)
  opened.push(chat)
  await login(chat, passwordOf(user), device)
  return chat
}

beforeAll(async () => {
  buildWeb()
  server = await startServer()
  baseUrl = `http://127.0.0.1:${server.ports.http}`
  for (const user of ['alice', 'bob', 'carol', 'dave']) passwords[user] = await addUser(server, user)
  browser = await launchBrowser()
})

afterAll(async () => {
  for (const chat of opened) await chat.context.close().catch(() => {})
  await browser?.close()
  await server?.stop()
})

afterEach(() => {
  // Page errors make a failure easier to understand; they never pass silently.
  const errors = opened.flatMap(c => c.errors.map(e => `${c.user}: ${e}`))
  expect(errors).toEqual([])
})

test('a wrong password is refused on the login form', async () => {
  const chat = await openContext(browser, baseUrl, 'alice')
  opened.push(chat)
  await chat.page.getByTestId('login-user').fill('alice')
  await chat.page.getByTestId('login-password').fill('not-the-password')
  await chat.page.getByTestId('login-submit').click()
  await chat.page.getByTestId('login-error').filter({ hasText: 'Wrong user id or password' }).waitFor()
  expect(await chat.page.getByTestId('app-view').isHidden()).toBe(true)
  await chat.page.screenshot({ path: artifactPath('login.png') })
  await chat.context.close()
  opened.pop()
})

test('two users chat: the message arrives, the unread badge counts, the read receipt shows', async () => {
  alice = await open('alice', 'alice-web')
  bob = await open('bob', 'bob-web')

  // alice opens the direct chat by user id and says hi
  await alice.page.getByTestId('direct-user').fill('bob')
  await alice.page.getByTestId('direct-open').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'bob' }).waitFor()
  await sendText(alice.page, 'Hi Bob!')
  await message(alice.page, 'Hi Bob!').waitFor()
  expect(await message(alice.page, 'Hi Bob!').getAttribute('data-own')).toBe('')

  // bob, with no chat open, sees the conversation appear with one unread message, then two
  await convItem(bob.page, 'alice').waitFor()
  await eventually(async () => await unreadOf(bob.page, 'alice'), 1, "bob's unread badge = 1")
  expect(await convItem(bob.page, 'alice').getByTestId('conv-unread').textContent()).toBe('1')
  await sendText(alice.page, 'Are you there?')
  await eventually(async () => await unreadOf(bob.page, 'alice'), 2, "bob's unread badge = 2")
  expect(await convItem(bob.page, 'alice').getByTestId('conv-preview').textContent()).toBe('Are you there?')

  // not read yet on alice's side
  const last = message(alice.page, 'Are you there?')
  expect(await last.getByTestId('msg-status').getAttribute('data-status')).toBe('sent')

  // bob opens the chat: he sees both messages, his badge clears, alice sees "read"
  await openChat(bob.page, 'alice')
  await message(bob.page, 'Hi Bob!').waitFor()
  await message(bob.page, 'Are you there?').waitFor()
  expect(await message(bob.page, 'Hi Bob!').getAttribute('data-own')).toBeNull()
  await eventually(async () => await last.getByTestId('msg-status').getAttribute('data-status'), 'read', "alice's read receipt")
  expect(await message(alice.page, 'Hi Bob!').getByTestId('msg-status').getAttribute('data-status')).toBe('read')
  await eventually(async () => await unreadOf(bob.page, 'alice'), 0, "bob's badge cleared")

  // bob answers; alice has the chat open, so the message shows up there and leaves no badge
  await sendText(bob.page, 'Hello Alice')
  await message(alice.page, 'Hello Alice').waitFor()
  await eventually(async () => await unreadOf(alice.page, 'bob'), 0, "alice's badge stays 0 while her chat is open")
})

test('a reload keeps the history', async () => {
  await bob.page.reload()
  await bob.page.getByTestId('app-view').waitFor({ state: 'visible' })
  // the URL remembers the open chat; the history comes from the server
  await bob.page.getByTestId('chat-title').filter({ hasText: 'alice' }).waitFor()
  await message(bob.page, 'Hello Alice').waitFor()
  const texts = await bob.page.getByTestId('message-list').getByTestId('msg-text').allTextContents()
  expect(texts).toEqual(['Hi Bob!', 'Are you there?', 'Hello Alice'])
  expect(await unreadOf(bob.page, 'alice')).toBe(0)

  // what bob sees is marked read on the server (his own message too), in one batched read
  const probe = await connect(server, 'bob', 'probe', { password: passwords.bob })
  try {
    await eventually(async () => {
      const { conversations } = await probe.request('list', {})
      return conversations.find(c => c.peer === 'alice')?.unread
    }, 0, "bob's unread count on the server")
  } finally {
    await probe.end()
  }
})

test('a message sent while the other is offline shows up when they come back', async () => {
  await bob.context.close()
  opened.splice(opened.indexOf(bob), 1)

  await sendText(alice.page, 'While you were away')
  await message(alice.page, 'While you were away').waitFor()

  // bob comes back in a new browser context (fresh localStorage) on the same device id
  bob = await open('bob', 'bob-web')
  await convItem(bob.page, 'alice').waitFor()
  await eventually(async () => await unreadOf(bob.page, 'alice'), 1, "bob's badge after coming back")
  expect(await convItem(bob.page, 'alice').getByTestId('conv-preview').textContent()).toBe('While you were away')
  await openChat(bob.page, 'alice')
  await message(bob.page, 'While you were away').waitFor()
  const texts = await bob.page.getByTestId('message-list').getByTestId('msg-text').allTextContents()
  expect(texts).toEqual(['Hi Bob!', 'Are you there?', 'Hello Alice', 'While you were away'])
  await eventually(async () => await message(alice.page, 'While you were away').getByTestId('msg-status').getAttribute('data-status'), 'read', 'read receipt after coming back')
})

test('online state: a peer shows online, then offline with last seen, then online again', async () => {
  await eventually(async () => await convItem(alice.page, 'bob').getAttribute('data-online'), 'true', 'bob online in alice\'s list')
  await bob.page.getByTestId('chat-subtitle').filter({ hasText: 'online' }).waitFor()
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: 'online' }).waitFor()

  // bob logs out: alice sees him go offline (presence events are rate-limited per user, hence the wait)
  await bob.page.getByTestId('logout').click()
  await bob.page.getByTestId('login-view').waitFor({ state: 'visible' })
  await eventually(async () => await convItem(alice.page, 'bob').getAttribute('data-online'), 'false', 'bob offline in alice\'s list', 20000)
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: 'last seen' }).waitFor()

  // and back
  await login(bob, passwordOf('bob'), 'bob-web')
  await eventually(async () => await convItem(alice.page, 'bob').getAttribute('data-online'), 'true', 'bob back online', 20000)
})

test('a group is created and a member added through the page', async () => {
  await alice.page.getByTestId('group-new-toggle').click()
  await alice.page.getByTestId('group-name').fill('team')
  await alice.page.getByTestId('group-members').fill('bob')
  await alice.page.getByTestId('group-create').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'team' }).waitFor()

  // bob's list gets the group at once (member event)
  await convItem(bob.page, 'team').waitFor()

  // alice adds carol from the members panel
  await alice.page.getByTestId('members-toggle').click()
  await alice.page.locator('[data-testid="member"][data-user="bob"]').waitFor()
  await alice.page.getByTestId('add-members-input').fill('carol')
  await alice.page.getByTestId('add-members-submit').click()
  await alice.page.locator('[data-testid="member"][data-user="carol"]').waitFor()
  expect(await alice.page.getByTestId('member').evaluateAll(els => els.map(e => e.getAttribute('data-user')))).toEqual(['alice', 'bob', 'carol'])
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: '3 members' }).waitFor()
  await alice.page.getByTestId('members-toggle').click()

  await sendText(alice.page, 'Welcome to the team')
  await message(alice.page, 'Welcome to the team').waitFor()
  await eventually(async () => await unreadOf(bob.page, 'team'), 1, "bob's team badge")

  // carol logs in and finds the group with alice's message; her own message shows her name to others
  const carol = await open('carol', 'carol-web', { width: 390, height: 760 })
  await convItem(carol.page, 'team').waitFor()
  await eventually(async () => await unreadOf(carol.page, 'team'), 1, "carol's team badge")
  await openChat(carol.page, 'team')
  await message(carol.page, 'Welcome to the team').waitFor()
  await sendText(carol.page, 'Thanks!')
  const carolsMessage = message(alice.page, 'Thanks!')
  await carolsMessage.waitFor()
  expect(await carolsMessage.getByTestId('msg-sender').textContent()).toBe('carol')

  // bob reads too: "read by 2" on alice's message (group receipts are aggregated, at most 1/s)
  await openChat(bob.page, 'team')
  await message(bob.page, 'Thanks!').waitFor()
  const status = message(alice.page, 'Welcome to the team').getByTestId('msg-status')
  await eventually(async () => await status.getAttribute('data-read-by'), '2', 'read by 2 on alice\'s group message')
  expect(await status.textContent()).toBe('read by 2')

  await carol.page.screenshot({ path: artifactPath('chat-phone.png') })
})

test('scroll-back loads older pages of a long history', async () => {
  // dave sends 70 messages to alice with a plain MQTT client
  const dave = await connect(server, 'dave', 'seed', { password: passwords.dave })
  try {
    const { conv } = await dave.request('direct', { user: 'alice' })
    for (let i = 1; i <= 70; i++) {
      await dave.request('send', { conv, msgId: `seed-${i}`, kind: 'text', body: `line ${i}` })
    }
  } finally {
    await dave.end()
  }
  await eventually(async () => await unreadOf(alice.page, 'dave'), 70, "alice's badge for dave")
  // The open page holds every message that arrived live; a reloaded one starts from the newest page.
  await alice.page.reload()
  await alice.page.getByTestId('app-view').waitFor({ state: 'visible' })
  await convItem(alice.page, 'dave').waitFor()
  expect(await unreadOf(alice.page, 'dave')).toBe(70)
  await openChat(alice.page, 'dave')
  await message(alice.page, 'line 70').waitFor()
  const list = alice.page.getByTestId('message-list').getByTestId('msg')
  expect(await list.count()).toBe(50)
  await eventually(async () => await unreadOf(alice.page, 'dave'), 0, 'alice read the newest page')

  // scrolling to the top fetches the older page
  await alice.page.getByTestId('messages').evaluate(el => { el.scrollTop = 0 })
  await message(alice.page, 'line 1').waitFor()
  expect(await list.count()).toBe(70)
  expect(await alice.page.getByTestId('load-older').isHidden()).toBe(true)
  const texts = await alice.page.getByTestId('message-list').getByTestId('msg-text').allTextContents()
  expect(texts).toEqual(Array.from({ length: 70 }, (_, i) => `line ${i + 1}`))

  // back to the direct chat with bob for the screenshot, with a new message waiting in the group
  await openChat(alice.page, 'bob')
  await message(alice.page, 'While you were away').waitFor()
  const team = await convItem(alice.page, 'team').getAttribute('data-conv')
  const carol = await connect(server, 'carol', 'probe', { password: passwords.carol })
  try {
    await carol.request('send', { conv: team, msgId: 'see-you', kind: 'text', body: 'See you at 10?' })
  } finally {
    await carol.end()
  }
  await eventually(async () => await unreadOf(alice.page, 'team'), 1, "alice's team badge")
  await alice.page.screenshot({ path: artifactPath('chat.png') })
})
