/** The sidebar: who I am and the connection state, new direct chats and groups, the conversations with unread and mention badges and previews. */
import type { ConversationSummary } from '../../../src/client/index.js'
import { useEffect, useRef } from 'preact/hooks'
import type { Chat } from '../chat.js'
import { colorFor, parseUserList, shortTime } from '../format.js'
import { shownMentions } from '../mentions.js'
import { bodyText, shownUnread, sortedSummaries, titleOf, type AppState } from '../store.js'

export function ConversationList ({ state, chat, onLogout }: { state: AppState, chat: Chat, onLogout: () => void }) {
  const items = sortedSummaries(state)
  const total = items.reduce((n, s) => n + (s.muted ? 0 : shownUnread(state, s)), 0)
  useEffect(() => { document.title = total > 0 ? `(${total}) mqim chat` : 'mqim chat' }, [total])

  return (
    <aside class='sidebar' data-testid='sidebar'>
      <header class='bar'>
        <span class='me'>
          <span class='dot' data-testid='conn-state' data-state={state.conn} title={state.conn} />
          <b data-testid='me'>{state.me}</b>
        </span>
        <PushToggle state={state} chat={chat} />
        <button class='link' data-testid='logout' type='button' onClick={onLogout}>Log out</button>
      </header>
      {state.pendingInvite !== null && (
        <div class='actions' data-testid='invite-pending' role='alert'>
          <p>You opened an invite link to a channel. Join it?</p>
          <div class='row'>
            <button data-testid='invite-accept' type='button' onClick={() => { void chat.conversations.answerPendingInvite(true) }}>Join</button>
            <button class='link' data-testid='invite-dismiss' type='button' onClick={() => { void chat.conversations.answerPendingInvite(false) }}>Not now</button>
          </div>
        </div>
      )}
      <NewConversation chat={chat} error={state.sidebarError} />
      <ul class='conv-list' data-testid='conv-list'>
        {items.map(s => <ConversationItem key={s.conv} state={state} summary={s} onOpen={() => { void chat.conversations.open(s.conv) }} />)}
      </ul>
      {items.length === 0 && <p class='hint pad' data-testid='conv-empty'>No conversations yet. Open a chat by user id, or create a group.</p>}
    </aside>
  )
}

/** The bell: notifications through Web Push while this page is closed (web/src/push.ts). */
function PushToggle ({ state, chat }: { state: AppState, chat: Chat }) {
  const { status, detail } = state.push
  if (status === 'unsupported') return null
  const on = status === 'on'
  const label = status === 'working' ? 'Turning on…' : on ? 'Notifications on' : status === 'denied' ? 'Notifications blocked' : 'Notifications off'
  const title = detail ?? (on ? 'This browser shows a notification when a message arrives while mqim is closed. Click to turn off.' : 'Show a notification when a message arrives while mqim is closed')
  return (
    <button
      class='link' data-testid='push-toggle' data-status={status} type='button' aria-pressed={on} title={title}
      disabled={status === 'working' || status === 'denied'}
      onClick={() => { void (on ? chat.push.disable() : chat.push.enable()) }}
    >{label}
    </button>
  )
}

function ConversationItem ({ state, summary: s, onOpen }: { state: AppState, summary: ConversationSummary, onOpen: () => void }) {
  const title = titleOf(s)
  const unread = shownUnread(state, s)
  const mentions = shownMentions(state, s)
  const online = s.peer !== undefined ? state.presence.get(s.peer)?.online : undefined
  const last = s.last
  const who = last === null ? '' : last.from === state.me ? 'You: ' : s.kind === 'group' ? `${last.from}: ` : ''
  return (
    <li
      class={`conv${s.conv === state.active ? ' active' : ''}${unread > 0 ? ' unread' : ''}`} role='button' tabIndex={0}
      data-testid='conv-item' data-conv={s.conv} data-name={title} data-kind={s.kind} data-unread={unread} data-mentions={mentions}
      data-online={online === undefined ? undefined : String(online)}
      onClick={onOpen}
      onKeyDown={e => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); onOpen() } }}
    >
      {/* a CSSOM style (not a style attribute in markup): allowed by the CSP's style-src 'self' */}
      <span class='avatar' style={{ background: colorFor(title) }} aria-hidden='true'>
        {s.kind === 'group' ? '#' : s.kind === 'channel' ? '»' : title.slice(0, 1)}
        {online === true && <span class='presence' data-testid='conv-presence' title='online' />}
      </span>
      <span class='conv-name' data-testid='conv-name'>{title}</span>
      <span class='conv-time'>{last !== null ? shortTime(last.ts) : ''}</span>
      <span class='conv-preview' data-testid='conv-preview'>{last === null ? 'No messages yet' : who + bodyText(last)}</span>
      <span class='badges'>
        {mentions > 0 && (
          <span class='badge mention' data-testid='conv-mentions' title={`${mentions} unread mention${mentions === 1 ? '' : 's'} of you`} aria-label={`${mentions} unread mention${mentions === 1 ? '' : 's'}`}>
            @{mentions > 1 ? mentions : ''}
          </span>
        )}
        {unread > 0 && <span class={`badge${s.muted ? ' muted' : ''}`} data-testid='conv-unread' aria-label={`${unread} unread`}>{unread > 999 ? '999+' : String(unread)}</span>}
      </span>
    </li>
  )
}

/** "Chat with user id…" and "New group". */
function NewConversation ({ chat, error }: { chat: Chat, error: string | null }) {
  const directUser = useRef<HTMLInputElement>(null)
  const groupDetails = useRef<HTMLDetailsElement>(null)
  const groupForm = useRef<HTMLFormElement>(null)
  const groupName = useRef<HTMLInputElement>(null)
  const groupMembers = useRef<HTMLInputElement>(null)
  const channelDetails = useRef<HTMLDetailsElement>(null)
  const channelForm = useRef<HTMLFormElement>(null)
  const channelName = useRef<HTMLInputElement>(null)
  const channelPublic = useRef<HTMLInputElement>(null)
  const joinId = useRef<HTMLInputElement>(null)
  const joinCode = useRef<HTMLInputElement>(null)

  const openDirect = async (e: Event): Promise<void> => {
    e.preventDefault()
    const input = directUser.current
    const user = input?.value.trim().toLowerCase() ?? ''
    if (input === null || user === '') return
    if (await chat.conversations.openDirect(user)) input.value = ''
  }
  const createGroup = async (e: Event): Promise<void> => {
    e.preventDefault()
    const name = groupName.current?.value.trim() ?? ''
    if (name === '') return
    if (await chat.conversations.createGroup(name, parseUserList(groupMembers.current?.value ?? ''))) {
      groupForm.current?.reset()
      if (groupDetails.current !== null) groupDetails.current.open = false
    }
  }

  const createChannel = async (e: Event): Promise<void> => {
    e.preventDefault()
    const name = channelName.current?.value.trim() ?? ''
    if (name === '') return
    if (await chat.conversations.createChannel(name, channelPublic.current?.checked === true)) {
      channelForm.current?.reset()
      if (channelDetails.current !== null) channelDetails.current.open = false
    }
  }
  const joinChannel = async (e: Event): Promise<void> => {
    e.preventDefault()
    const input = joinId.current
    const conv = input?.value.trim() ?? ''
    if (input === null || conv === '') return
    if (await chat.conversations.joinChannel(conv)) input.value = ''
  }
  const joinWithInvite = async (e: Event): Promise<void> => {
    e.preventDefault()
    const input = joinCode.current
    const text = input?.value.trim() ?? ''
    if (input === null || text === '') return
    if (await chat.conversations.joinWithInvite(text)) input.value = ''
  }

  return (
    <div class='actions'>
      <form class='row' data-testid='direct-form' onSubmit={e => { void openDirect(e) }}>
        <input ref={directUser} data-testid='direct-user' placeholder='Chat with user id…' autoCapitalize='none' spellcheck={false} required />
        <button data-testid='direct-open' type='submit'>Chat</button>
      </form>
      <details ref={groupDetails} data-testid='group-new'>
        <summary data-testid='group-new-toggle'>New group</summary>
        <form ref={groupForm} class='stack' data-testid='group-form' onSubmit={e => { void createGroup(e) }}>
          <input ref={groupName} data-testid='group-name' placeholder='Group name' maxLength={100} required />
          <input ref={groupMembers} data-testid='group-members' placeholder='Members: bob, carol' autoCapitalize='none' spellcheck={false} />
          <button data-testid='group-create' type='submit'>Create group</button>
        </form>
      </details>
      <details ref={channelDetails} data-testid='channel-new'>
        <summary data-testid='channel-new-toggle'>Channels</summary>
        <form ref={channelForm} class='stack' data-testid='channel-form' onSubmit={e => { void createChannel(e) }}>
          <input ref={channelName} data-testid='channel-name' placeholder='Channel name' maxLength={100} required />
          <label class='check'><input ref={channelPublic} data-testid='channel-public' type='checkbox' /> Public: anyone may join by its id</label>
          <button data-testid='channel-create' type='submit'>Create channel</button>
        </form>
        <form class='row' data-testid='join-form' onSubmit={e => { void joinChannel(e) }}>
          <input ref={joinId} data-testid='join-id' placeholder='Join channel by id…' autoCapitalize='none' spellcheck={false} required />
          <button data-testid='join-submit' type='submit'>Join</button>
        </form>
        <form class='row' data-testid='join-invite-form' onSubmit={e => { void joinWithInvite(e) }}>
          <input ref={joinCode} data-testid='join-invite' placeholder='Join with invite link or code…' autoCapitalize='none' spellcheck={false} required />
          <button data-testid='join-invite-submit' type='submit'>Join</button>
        </form>
      </details>
      {error !== null && <p class='error' data-testid='sidebar-error' role='alert'>{error}</p>}
    </div>
  )
}
