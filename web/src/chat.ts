/**
 * A logged-in session of the page: the controllers that keep the store in step with the SDK
 * (conversations, messages and their changes, members, typing, blocks), wired to the SDK's events
 * and to the browser's (visibility, focus, back/forward). Built on login, closed on logout.
 */
import type { ImClient } from '../../src/client/index.js'
import { Blocks } from './blocks.js'
import { Changes } from './changes.js'
import { Channels } from './channels.js'
import { Conversations } from './conversations.js'
import { Members } from './members.js'
import { noteMention } from './mentions.js'
import { Messages } from './messages.js'
import type { AppStore } from './store.js'
import { Typing } from './typing.js'
import { Push } from './push.js'
import { Files } from './files.js'

export class Chat {
  readonly messages: Messages
  readonly changes: Changes
  readonly members: Members
  readonly channels: Channels
  readonly conversations: Conversations
  readonly typing: Typing
  readonly blocks: Blocks
  readonly push: Push
  readonly files: Files
  private readonly cleanups: Array<() => void> = []

  constructor (private readonly client: ImClient, private readonly store: AppStore) {
    this.messages = new Messages(client, store)
    this.changes = new Changes(client, store)
    this.members = new Members(client, store)
    this.channels = new Channels(client, store)
    this.conversations = new Conversations(client, store, this.messages, this.members, this.channels)
    this.typing = new Typing(client, store)
    this.blocks = new Blocks(client, store)
    this.push = new Push(client, store, conv => { void this.conversations.open(conv) })
    this.files = new Files(client, store)
  }

  async start (): Promise<void> {
    const { client, conversations, messages, typing, store } = this
    store.update(state => { state.conn = client.state })
    this.cleanups.push(
      client.on('message', m => {
        // A conversation not listed yet: joined while this page was open.
        if (!conversations.known(m.conv)) conversations.scheduleRefresh(50)
        messages.add(m)
        typing.onMessage(m)
      }),
      client.on('updated', m => { messages.onUpdated(m) }),
      client.on('typing', e => { typing.onTyping(e) }),
      client.on('mention', e => { store.update(state => { noteMention(state, e) }) }),
      client.on('read', e => {
        messages.onRead(e.conv, e.readSeq)
        conversations.onRead(e)
      }),
      client.on('receipt', e => { messages.onReceipt(e) }),
      client.on('member', e => { conversations.onMember(e) }),
      client.on('presence', e => { conversations.onPresence([e]) }),
      client.on('state', s => {
        store.update(state => { state.conn = s })
        // Back online: the SDK has synced messages; refresh unread counts and previews too.
        if (s === 'online') conversations.scheduleRefresh(0)
      }),
      client.on('error', err => { console.warn('mqim:', err) }),
      listen(document, 'visibilitychange', () => {
        const visible = document.visibilityState === 'visible'
        store.update(state => { state.pageVisible = visible })
        if (visible) messages.maybeMarkRead()
        else void client.flushReads().catch(() => {})
      }),
      listen(window, 'focus', () => { messages.maybeMarkRead() }),
      listen(window, 'popstate', () => { conversations.followHash() })
    )
    store.update(state => { state.pageVisible = document.visibilityState === 'visible' })
    await Promise.all([conversations.start(), this.blocks.load(), this.push.start()])
  }

  /** Closes the refused change or block shown in the chat view. */
  dismissError (): void {
    this.store.update(state => { state.chatError = null })
  }

  close (): void {
    for (const fn of this.cleanups.splice(0)) fn()
    this.conversations.close()
    this.messages.close()
    this.typing.close()
    this.push.close()
  }
}

function listen (target: EventTarget, type: string, fn: () => void): () => void {
  target.addEventListener(type, fn)
  return () => { target.removeEventListener(type, fn) }
}
