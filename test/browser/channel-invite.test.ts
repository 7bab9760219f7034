/**
 * Invite links on the chat page, in headless Chromium against a real server: alice creates a
 * private channel, posts, and makes an invite link ("Invite link"); bob opens the page with that
 * link (…/#join=<code>), logs in, and lands in the channel with its posts; carol pastes the link
 * into "Join with invite link or code…" and joins too; bob, a plain member, gets no "Invite link".
 * A screenshot is saved to test-artifacts/channel-invite.png.
 */
import { artifactPath, chatSuite, convItem, message, sendText, type ChatPage } from '../helpers/browser.js'

const suite = chatSuite(['alice', 'bob', 'carol'])
const open = async (user: string, path?: string): Promise<ChatPage> => await suite.open(user, { path })

test('an admin makes an invite link to a private channel; others join with it', async () => {
  const alice = await open('alice')
  await alice.page.getByTestId('channel-new-toggle').click()
  await alice.page.getByTestId('channel-name').fill('Insiders')
  await alice.page.getByTestId('channel-create').click()
  await alice.page.getByTestId('chat-subtitle').filter({ hasText: 'private channel · 1 member' }).waitFor()
  await sendText(alice.page, 'welcome, insiders')
  await message(alice.page, 'welcome, insiders').waitFor()

  await alice.page.getByTestId('invite-create').click()
  const field = alice.page.getByTestId('invite-link')
  await field.waitFor()
  const link = await field.inputValue()
  expect(link).toMatch(new RegExp(`^${suite.baseUrl}/#join=[A-Za-z0-9_-]{24}$`))
  await alice.page.screenshot({ path: artifactPath('channel-invite-admin.png') })

  // bob opens the link and logs in: nothing is joined until he says so
  const bob = await open('bob', link)
  await bob.page.getByTestId('invite-pending').waitFor()
  expect(await convItem(bob.page, 'Insiders').count()).toBe(0)
  await bob.page.screenshot({ path: artifactPath('channel-invite-pending.png') })
  await bob.page.getByTestId('invite-accept').click()
  await bob.page.getByTestId('chat-title').filter({ hasText: 'Insiders' }).waitFor()
  await bob.page.getByTestId('chat-subtitle').filter({ hasText: 'private channel · 2 members' }).waitFor()
  await message(bob.page, 'welcome, insiders').waitFor()
  // the code left the address bar; a plain member makes no links
  expect(new URL(bob.page.url()).hash).not.toContain('join=')
  await bob.page.getByTestId('channel-readonly').waitFor()
  expect(await bob.page.getByTestId('invite-create').count()).toBe(0)

  // carol pastes the link into the sidebar
  const carol = await open('carol')
  await carol.page.getByTestId('channel-new-toggle').click()
  await carol.page.getByTestId('join-invite').fill(link)
  await carol.page.getByTestId('join-invite-submit').click()
  await carol.page.getByTestId('chat-subtitle').filter({ hasText: 'private channel · 3 members' }).waitFor()
  expect(await convItem(carol.page, 'Insiders').getAttribute('data-kind')).toBe('channel')

  // a post arrives live for both
  await sendText(alice.page, 'second post')
  await message(bob.page, 'second post').waitFor()
  await message(carol.page, 'second post').waitFor()
  await bob.page.screenshot({ path: artifactPath('channel-invite.png') })

  // a link that does not admit says so in the sidebar
  await carol.page.getByTestId('join-invite').fill(`${suite.baseUrl}/#join=${'A'.repeat(24)}`)
  await carol.page.getByTestId('join-invite-submit').click()
  await carol.page.getByTestId('sidebar-error').filter({ hasText: 'no such invite' }).waitFor()
})
