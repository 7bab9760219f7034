/** The open conversation: its header (title, online state or member count), the members panel, the messages and the composer. */
import type { ConversationSummary } from '../../../src/client/index.js'
import type { Chat } from '../chat.js'
import { shortTime } from '../format.js'
import { chatOf, titleOf, type AppState, type ChatState } from '../store.js'
import { Composer } from './composer.js'
import { MembersPanel } from './members-panel.js'
import { MessageList } from './message-list.js'

export function ChatView ({ state, chat }: { state: AppState, chat: Chat }) {
  const s = state.active === null ? undefined : state.summaries.get(state.active)
  if (s === undefined) {
    return <section class='chat' data-testid='chat-view'><div class='chat-empty' data-testid='chat-empty'>Pick a conversation</div></section>
  }
  const c = chatOf(state, s.conv)
  const group = s.kind === 'group'
  return (
    <section class='chat' data-testid='chat-view'>
      <div class='chat-pane' data-conv={s.conv} data-kind={s.kind}>
        <header class='bar'>
          <button class='back' data-testid='chat-back' type='button' aria-label='Back' onClick={() => { chat.conversations.closeChat() }}>‹</button>
          <div class='title'>
            <b data-testid='chat-title'>{titleOf(s)}</b>
            <small data-testid='chat-subtitle'>{subtitle(state, s, c)}</small>
          </div>
          {group && <button class='link' data-testid='members-toggle' type='button' onClick={() => { chat.members.toggle() }}>Members</button>}
        </header>
        {group && state.membersOpen && <MembersPanel summary={s} chat={c} me={state.me} error={state.membersError} onAdd={async users => await chat.members.add(users)} />}
        <MessageList key={s.conv} conv={s.conv} chat={c} me={state.me} group={group} messages={chat.messages} />
        <Composer key={s.conv} onSend={text => { chat.messages.send(s.conv, text) }} />
      </div>
    </section>
  )
}

function subtitle (state: AppState, s: ConversationSummary, c: ChatState): string {
  if (s.kind === 'group') return c.members !== undefined ? `group · ${c.members.length} members` : 'group'
  const st = s.peer === undefined ? undefined : state.presence.get(s.peer)
  if (st === undefined) return 'direct chat'
  if (st.online) return 'online'
  return st.lastSeen !== null ? `last seen ${shortTime(st.lastSeen)}` : 'offline'
}
