/**
 * The channel view of the chat page, in headless Chromium against a real server: alice creates a
 * public channel and posts; bob joins it by id, sees the posts and the member count, has no
 * composer (only admins post) and gets a new post live; bob leaves and the channel is gone from
 * his list. A screenshot is saved to test-artifacts/channel.png.
 */
import { artifactPath, chatSuite, convItem, eventually, message, sendText, type ChatPage } from '../helpers/browser.js'

const suite = chatSuite(['alice', 'bob'])
const open = async (user: string): Promise<ChatPage> => await suite.open(user)

test('create a public channel, join it by id, read posts live without a composer, leave', async () => {
  const alice = await open('alice')
  await alice.page.getByTestId('channel-new-toggle').click()
  await alice.page.getByTestId('channel-name').fill('Releases')
  await alice.page.getByTestId('channel-public').check()
  await alice.page.getByTestId('channel-create').click()
  await alice.page.getByTestId('chat-title').filter({ hasText: 'Releases' }).waitFor()
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: 'public channel · 1 member' }).waitFor()
  const conv = await alice.page.locator('.chat-pane').getAttribute('data-conv')
  expect(conv).toMatch(/^[A-Za-z0-9_-]{16}$/)
  await sendText(alice.page, 'v1.0 is out')
  await message(alice.page, 'v1.0 is out').waitFor()

  const bob = await open('bob')
  await bob.page.getByTestId('channel-new-toggle').click()
  await bob.page.getByTestId('join-id').fill(conv ?? '')
  await bob.page.getByTestId('join-submit').click()
  await bob.page.getByTestId('chat-title').filter({ hasText: 'Releases' }).waitFor()
  await bob.page.getByTestId('chat-subtitle').filter({ hasText: 'public channel · 2 members' }).waitFor()
  await message(bob.page, 'v1.0 is out').waitFor()
  // bob may not post: no composer, a notice instead
  await bob.page.getByTestId('channel-readonly').waitFor()
  expect(await bob.page.getByTestId('composer-input').count()).toBe(0)
  expect(await convItem(bob.page, 'Releases').getAttribute('data-kind')).toBe('channel')

  // a post arrives live (over the channel topic)
  await sendText(alice.page, 'v1.1 is out')
  await message(bob.page, 'v1.1 is out').waitFor()
  await bob.page.screenshot({ path: artifactPath('channel.png') })

  // bob leaves: the channel is gone from his list, and alice's count goes down
  await bob.page.getByTestId('channel-leave').click()
  await eventually(async () => await convItem(bob.page, 'Releases').count(), 0, 'the channel gone from bob\'s list')
  await alice.page.reload()
  await alice.page.getByTestId('conv-list').waitFor()
  await convItem(alice.page, 'Releases').click()
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: 'public channel · 1 member' }).waitFor()
})
