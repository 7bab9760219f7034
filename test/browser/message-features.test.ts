/**
 * The chat page's message features end to end, two users in two Chromium pages against a real mqim
 * server: edit (the "edited" mark, the list preview, unread untouched), reactions (toggled from the
 * menu and from the counts), delete ("message deleted" on both sides), a reload (history shows the
 * current state, never the change entries), "typing…" (ended by an empty composer, a sent message,
 * or its ttl), @mention autocomplete with the highlight and the list's mention badge, a group owner
 * deleting someone else's message, and block / unblock from the header of a direct chat (the other
 * side's send, reaction and edit refused with a visible error, the optimistic change taken back).
 *
 * The tests run in order and share the server, the browser and the two pages. Screenshots go to
 * test-artifacts/message-*.png.
 */
import type { Locator, Page } from 'playwright-core'
import { artifactPath, chatSuite, convItem, eventually, message, openChat, sendText, unreadOf, type ChatPage } from '../helpers/browser.js'

const suite = chatSuite(['alice', 'bob', 'carol'])
let alice: ChatPage
let bob: ChatPage

const THUMBS = '👍'
const HEART = '\u2764\ufe0f'

async function open (user: string, device: string): Promise<ChatPage> {
  return await suite.open(user, { device })
}

/** The stored message with this seq in the open chat. */
function bySeq (page: Page, seq: string): Locator {
  return page.getByTestId('message-list').locator(`[data-testid="msg"][data-seq="${seq}"]`)
}

async function seqOf (page: Page, text: string): Promise<string> {
  const seq = await message(page, text).getAttribute('data-seq')
  if (seq === null) throw new Error(`no seq on "${text}"`)
  return seq
}

/** A reaction count under a message, with its count and whether it is mine. */
function reaction (msg: Locator, emoji: string, count?: number, mine?: boolean): Locator {
  const countSel = count === undefined ? '' : `[data-count="${count}"]`
  const mineSel = mine === undefined ? '' : `[data-mine="${String(mine)}"]`
  return msg.locator(`[data-testid="reaction"][data-emoji="${emoji}"]${countSel}${mineSel}`)
}

/** Opens a message's actions menu (hovering shows its ⋯ button). */
async function menuOf (msg: Locator): Promise<Locator> {
  await msg.hover()
  await msg.getByTestId('msg-actions').click()
  const menu = msg.getByTestId('msg-menu')
  await menu.waitFor()
  return menu
}

async function storedTexts (page: Page): Promise<string[]> {
  return await page.getByTestId('message-list').locator('[data-testid="msg"] [data-testid="msg-text"]').allTextContents()
}

beforeAll(async () => {
  alice = await open('alice', 'alice-web')
  bob = await open('bob', 'bob-web')
})

test('an edit shows on the other page with an "edited" mark, updates the preview and leaves unread alone', async () => {
  await alice.page.getByTestId('direct-user').fill('bob')
  await alice.page.getByTestId('direct-open').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'bob' }).waitFor()
  await sendText(alice.page, 'Lunch at noon?')
  const mine = message(alice.page, 'Lunch at noon?')
  await mine.waitFor()
  await eventually(async () => await unreadOf(bob.page, 'alice'), 1, "bob's unread badge")

  // alice edits from the message's menu
  await (await menuOf(mine)).getByTestId('msg-edit').click()
  const input = alice.page.getByTestId('msg-edit-input')
  expect(await input.inputValue()).toBe('Lunch at noon?')
  await input.fill('Lunch at 1pm?')
  await input.press('Enter')
  await message(alice.page, 'Lunch at 1pm?').getByTestId('msg-edited').waitFor()
  expect(await message(alice.page, 'Lunch at noon?').count()).toBe(0)

  // bob, chat not open: the preview shows the new text; the edit is no unread message
  await eventually(async () => await convItem(bob.page, 'alice').getByTestId('conv-preview').textContent(), 'Lunch at 1pm?', "bob's preview after the edit")
  expect(await unreadOf(bob.page, 'alice')).toBe(1)

  // bob opens the chat: the edited text with its mark, one bubble (the edit entry is none)
  await openChat(bob.page, 'alice')
  await message(bob.page, 'Lunch at 1pm?').getByTestId('msg-edited').waitFor()
  expect(await storedTexts(bob.page)).toEqual(['Lunch at 1pm?'])
  // not his message: reactions only, no edit or delete
  const menu = await menuOf(message(bob.page, 'Lunch at 1pm?'))
  expect(await menu.getByTestId('react-option').count()).toBe(6)
  expect(await menu.getByTestId('msg-edit').count()).toBe(0)
  expect(await menu.getByTestId('msg-delete').count()).toBe(0)
  await menu.press('Escape')
  await menu.waitFor({ state: 'detached' })
  await eventually(async () => await unreadOf(bob.page, 'alice'), 0, "bob's badge cleared")

  await alice.page.screenshot({ path: artifactPath('message-edit.png') })
})

test('reactions: a click toggles mine, the counts show on both pages', async () => {
  const seq = await seqOf(alice.page, 'Lunch at 1pm?')
  const onAlice = bySeq(alice.page, seq)
  const onBob = bySeq(bob.page, seq)

  // bob reacts from the menu
  await (await menuOf(onBob)).locator(`[data-testid="react-option"][data-emoji="${THUMBS}"]`).click()
  await reaction(onBob, THUMBS, 1, true).waitFor()
  await reaction(onAlice, THUMBS, 1, false).waitFor()

  // alice joins by clicking the count: 2 on both pages, highlighted on hers
  await reaction(onAlice, THUMBS).click()
  await reaction(onAlice, THUMBS, 2, true).waitFor()
  await reaction(onBob, THUMBS, 2, true).waitFor()
  expect(await reaction(onAlice, THUMBS).getAttribute('aria-pressed')).toBe('true')
  expect(await reaction(onAlice, THUMBS).getAttribute('title')).toBe('bob, alice')

  // and takes hers back with a second click
  await reaction(onAlice, THUMBS).click()
  await reaction(onAlice, THUMBS, 1, false).waitFor()
  await reaction(onBob, THUMBS, 1, true).waitFor()

  // bob adds a heart, then takes his thumbs back: the thumbs go away on both pages
  await (await menuOf(onBob)).locator(`[data-testid="react-option"][data-emoji="${HEART}"]`).click()
  await reaction(onAlice, HEART, 1, false).waitFor()
  await reaction(onBob, THUMBS).click()
  await reaction(onAlice, THUMBS).waitFor({ state: 'detached' })
  await reaction(onBob, THUMBS).waitFor({ state: 'detached' })
  await reaction(onBob, HEART, 1, true).waitFor()

  // alice adds one from the menu too, for the picture
  await (await menuOf(onAlice)).locator('[data-testid="react-option"][data-emoji="🎉"]').click()
  await reaction(onBob, '🎉', 1, false).waitFor()
  await bob.page.screenshot({ path: artifactPath('message-reactions.png') })
})

test('a deleted message shows "message deleted" on both pages and in the preview', async () => {
  await sendText(alice.page, 'oops, wrong chat')
  await message(bob.page, 'oops, wrong chat').waitFor()
  const seq = await seqOf(alice.page, 'oops, wrong chat')

  const menu = await menuOf(bySeq(alice.page, seq))
  await menu.getByTestId('msg-delete').click()
  await menu.getByTestId('msg-delete-confirm').click()

  for (const page of [alice.page, bob.page]) {
    const gone = page.getByTestId('message-list').locator(`[data-testid="msg"][data-seq="${seq}"][data-deleted]`)
    await gone.waitFor()
    expect(await gone.getByTestId('msg-text').textContent()).toBe('message deleted')
    // nothing to do with a deleted message
    expect(await gone.getByTestId('msg-actions').count()).toBe(0)
  }
  expect(await message(bob.page, 'oops, wrong chat').count()).toBe(0)
  await eventually(async () => await convItem(bob.page, 'alice').getByTestId('conv-preview').textContent(), 'message deleted', "bob's preview after the delete")
  await eventually(async () => await convItem(alice.page, 'bob').getByTestId('conv-preview').textContent(), 'You: message deleted', "alice's preview after the delete")
  await bob.page.screenshot({ path: artifactPath('message-delete.png') })
})

test('a reload shows the messages as they are now, and no change entry as a message', async () => {
  await bob.page.reload()
  await bob.page.getByTestId('chat-title').filter({ hasText: 'alice' }).waitFor()
  await message(bob.page, 'Lunch at 1pm?').getByTestId('msg-edited').waitFor()
  // the edit, four reaction changes, the delete: entries of the conversation, none of them a bubble
  expect(await storedTexts(bob.page)).toEqual(['Lunch at 1pm?', 'message deleted'])
  const first = message(bob.page, 'Lunch at 1pm?')
  await reaction(first, HEART, 1, true).waitFor()
  await reaction(first, '🎉', 1, false).waitFor()
  expect(await first.getByTestId('reaction').count()).toBe(2)
  expect(await unreadOf(bob.page, 'alice')).toBe(0)
  expect(await convItem(bob.page, 'alice').getByTestId('conv-preview').textContent()).toBe('message deleted')
})

test('"typing…" shows on the other page while one types, and goes away', async () => {
  const indicator = bob.page.getByTestId('typing')
  const composer = alice.page.getByTestId('composer-input')

  await composer.pressSequentially('Hel')
  await indicator.filter({ hasText: 'alice is typing…' }).waitFor()
  await bob.page.screenshot({ path: artifactPath('message-typing.png') })
  // emptying the composer ends it
  await composer.fill('')
  await indicator.waitFor({ state: 'detached' })

  // typing again shows it again; sending the message ends it
  await composer.pressSequentially('Hello again')
  await indicator.filter({ hasText: 'alice is typing…' }).waitFor()
  await composer.press('Enter')
  await message(bob.page, 'Hello again').waitFor()
  await indicator.waitFor({ state: 'detached' })
  // never on the typist's own page
  expect(await alice.page.getByTestId('typing').count()).toBe(0)

  // typing, then a pause with text left in the composer: it expires on its own (the event's ttlMs, 5 s)
  await composer.pressSequentially('Hmm')
  await indicator.filter({ hasText: 'alice is typing…' }).waitFor()
  const shownAt = Date.now()
  await indicator.waitFor({ state: 'detached', timeout: 15000 })
  expect(Date.now() - shownAt).toBeGreaterThan(3000)
  expect(await composer.inputValue()).toBe('Hmm')
  await composer.fill('')
})

test('@mention: the composer suggests members, the other page highlights the mention and badges the conversation', async () => {
  await alice.page.getByTestId('group-new-toggle').click()
  await alice.page.getByTestId('group-name').fill('crew')
  await alice.page.getByTestId('group-members').fill('bob, carol')
  await alice.page.getByTestId('group-create').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'crew' }).waitFor()
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: '3 members' }).waitFor()
  await convItem(bob.page, 'crew').waitFor()

  const composer = alice.page.getByTestId('composer-input')
  const picker = alice.page.getByTestId('mention-picker')
  const options = async (): Promise<Array<string | null>> => await picker.getByTestId('mention-option').evaluateAll(els => els.map(e => e.getAttribute('data-user')))

  // "@" offers everyone (alice owns the group: @all too), a letter narrows it down; a click inserts
  await composer.pressSequentially('Hey @')
  await picker.waitFor()
  expect(await options()).toEqual(['@all', 'bob', 'carol'])
  await composer.pressSequentially('b')
  await eventually(async () => (await options()).join(','), 'bob', 'suggestions for "@b"')
  await alice.page.screenshot({ path: artifactPath('message-mention-autocomplete.png') })
  await picker.locator('[data-testid="mention-option"][data-user="bob"]').click()
  await picker.waitFor({ state: 'detached' })
  expect(await composer.inputValue()).toBe('Hey @bob ')

  // the keyboard: arrows pick, Enter inserts (and does not send), Escape closes
  await composer.pressSequentially('and @')
  await picker.waitFor()
  await composer.press('ArrowDown')
  await composer.press('ArrowDown')
  expect(await picker.locator('[aria-selected="true"]').getAttribute('data-user')).toBe('carol')
  await composer.press('Enter')
  await picker.waitFor({ state: 'detached' })
  expect(await composer.inputValue()).toBe('Hey @bob and @carol ')
  await composer.pressSequentially('@')
  await picker.waitFor()
  await composer.press('Escape')
  await picker.waitFor({ state: 'detached' })
  await composer.press('Backspace')
  await composer.pressSequentially('look at this')
  await composer.press('Enter')
  const sent = message(alice.page, 'Hey @bob and @carol look at this')
  await sent.waitFor()
  expect(await sent.getByTestId('mention').evaluateAll(els => els.map(e => e.textContent))).toEqual(['@bob', '@carol'])

  // bob is in the direct chat: the group gets the mention badge besides the unread one
  const crew = convItem(bob.page, 'crew')
  await crew.getByTestId('conv-mentions').waitFor()
  expect(await crew.getAttribute('data-mentions')).toBe('1')
  expect(await unreadOf(bob.page, 'crew')).toBe(1)
  expect(await convItem(bob.page, 'alice').getByTestId('conv-mentions').count()).toBe(0)
  await bob.page.screenshot({ path: artifactPath('message-mention-badge.png') })

  // he opens it: his name is highlighted as his, the message marked as mentioning him, the badge gone
  await openChat(bob.page, 'crew')
  const got = message(bob.page, 'Hey @bob and @carol look at this')
  await got.waitFor()
  expect(await got.getAttribute('data-mentions-me')).toBe('')
  expect(await got.locator('[data-testid="mention"][data-user="bob"]').getAttribute('class')).toBe('mention is-me')
  expect(await got.locator('[data-testid="mention"][data-user="carol"]').getAttribute('class')).toBe('mention')
  // highlighted within the line, not on a line of its own
  expect(await got.locator('[data-testid="mention"][data-user="bob"]').evaluate(el => getComputedStyle(el).display)).toBe('inline')
  await crew.getByTestId('conv-mentions').waitFor({ state: 'detached' })
  await eventually(async () => await crew.getAttribute('data-mentions'), '0', "bob's mention badge cleared")
  await bob.page.screenshot({ path: artifactPath('message-mention.png') })
})

test('in a group the owner deletes a member\'s message; a member cannot', async () => {
  await sendText(bob.page, 'something regrettable')
  const onAlice = message(alice.page, 'something regrettable')
  await onAlice.waitFor()
  const seq = await seqOf(alice.page, 'something regrettable')

  // bob (a member) may delete his own message, not alice's
  const bobsMenu = await menuOf(message(bob.page, 'Hey @bob and @carol look at this'))
  expect(await bobsMenu.getByTestId('msg-delete').count()).toBe(0)
  await bobsMenu.press('Escape')

  const menu = await menuOf(onAlice)
  expect(await menu.getByTestId('msg-edit').count()).toBe(0)
  await menu.getByTestId('msg-delete').click()
  await menu.getByTestId('msg-delete-confirm').click()
  for (const page of [alice.page, bob.page]) {
    await page.getByTestId('message-list').locator(`[data-testid="msg"][data-seq="${seq}"][data-deleted]`).getByText('message deleted').waitFor()
  }
})

test('block from the header of a direct chat: the other side\'s sends fail with a visible error; unblock restores', async () => {
  await openChat(alice.page, 'bob')
  await openChat(bob.page, 'alice')
  await sendText(bob.page, 'See you there')
  await message(alice.page, 'See you there').waitFor()

  const toggle = alice.page.getByTestId('block-toggle')
  expect(await toggle.textContent()).toBe('Block')
  await toggle.click()
  await alice.page.getByTestId('blocked-notice').waitFor()
  expect(await toggle.getAttribute('aria-pressed')).toBe('true')
  expect(await toggle.textContent()).toBe('Unblock')
  // the blocker's own composer says why it is off
  expect(await alice.page.getByTestId('composer-input').isDisabled()).toBe(true)
  expect(await alice.page.getByTestId('composer-input').getAttribute('placeholder')).toBe('Unblock bob to send messages')

  // bob's send fails, and says why
  await sendText(bob.page, 'Are you ignoring me?')
  const failed = bob.page.locator('[data-testid="msg-pending"][data-failed]').filter({ hasText: 'Are you ignoring me?' })
  await failed.waitFor()
  expect(await failed.getByTestId('send-error').textContent()).toContain('BLOCKED')
  // a reaction is refused too: the error shows, the optimistic reaction goes back
  const lunch = message(bob.page, 'Lunch at 1pm?')
  await (await menuOf(lunch)).locator('[data-testid="react-option"][data-emoji="😮"]').click()
  await bob.page.getByTestId('chat-error').filter({ hasText: 'BLOCKED' }).waitFor()
  await reaction(lunch, '😮').waitFor({ state: 'detached' })
  // and so is an edit of his own message: the old text comes back
  await (await menuOf(message(bob.page, 'See you there'))).getByTestId('msg-edit').click()
  await bob.page.getByTestId('msg-edit-input').fill('See you there!')
  await bob.page.getByTestId('msg-edit-save').click()
  await bob.page.getByTestId('chat-error').filter({ hasText: 'Could not edit' }).filter({ hasText: 'BLOCKED' }).waitFor()
  await message(bob.page, 'See you there').waitFor()
  expect(await message(bob.page, 'See you there').getByTestId('msg-edited').count()).toBe(0)
  expect(await message(bob.page, 'See you there!').count()).toBe(0)
  await bob.page.screenshot({ path: artifactPath('message-blocked.png') })
  expect(await message(alice.page, 'Are you ignoring me?').count()).toBe(0)

  // a reload still knows whom alice blocks
  await alice.page.reload()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'bob' }).waitFor()
  await alice.page.getByTestId('blocked-notice').waitFor()

  // unblocked: the failed message goes out on a click, new ones too
  await alice.page.getByTestId('block-toggle').click()
  await alice.page.getByTestId('blocked-notice').waitFor({ state: 'detached' })
  expect(await alice.page.getByTestId('block-toggle').getAttribute('aria-pressed')).toBe('false')
  expect(await alice.page.getByTestId('composer-input').isDisabled()).toBe(false)
  await failed.click()
  await message(alice.page, 'Are you ignoring me?').waitFor()
  await message(bob.page, 'Are you ignoring me?').waitFor()
  expect(await bob.page.locator('[data-testid="msg-pending"]').count()).toBe(0)
  await sendText(alice.page, 'Sorry, misclick')
  await message(bob.page, 'Sorry, misclick').waitFor()
  await alice.page.screenshot({ path: artifactPath('message-unblocked.png') })
})
