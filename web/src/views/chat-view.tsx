/**
 * The open conversation: its header (title, online state or member count; Block / Unblock in a
 * direct chat; Leave in a channel, and Invite link for its admins), the members panel, an invite
 * link just made, the messages, who is typing, a refused change, and the composer (with @mention
 * suggestions; in a channel only for those who may post).
 */
import { useRef, useState } from 'preact/hooks'
import type { ConversationSummary } from '../../../src/client/index.js'
import type { Chat } from '../chat.js'
import { shortTime } from '../format.js'
import { mentionCandidates, mentionsIn } from '../mentions.js'
import { chatOf, titleOf, type AppState, type ChatState } from '../store.js'
import { typingText } from '../typing.js'
import { Composer } from './composer.js'
import { MembersPanel } from './members-panel.js'
import { MessageList } from './message-list.js'
import { byteSize } from '../files.js'

export function ChatView ({ state, chat }: { state: AppState, chat: Chat }) {
  const s = state.active === null ? undefined : state.summaries.get(state.active)
  if (s === undefined) {
    return <section class='chat' data-testid='chat-view'><div class='chat-empty' data-testid='chat-empty'>Pick a conversation</div></section>
  }
  const c = chatOf(state, s.conv)
  const group = s.kind === 'group'
  const channel = s.kind === 'channel' ? state.channels.get(s.conv) : undefined
  const peer = s.kind === 'direct' ? s.peer : undefined
  const blocked = peer !== undefined && state.blocked.has(peer)
  // channels have no mentions and no "typing…"
  const candidates = s.kind === 'channel' ? [] : mentionCandidates(state, s)
  const typing = typingText(state.typing.get(s.conv) ?? [])
  const error = state.chatError?.conv === s.conv ? state.chatError.text : null
  const uploads = [...state.uploads.values()].filter(u => u.conv === s.conv)
  const sendFiles = blocked ? undefined : (files: File[]) => { void chat.files.send(s.conv, files) }
  return (
    <section class='chat' data-testid='chat-view'>
      <div
        class='chat-pane' data-conv={s.conv} data-kind={s.kind}
        onDragOver={e => { if (sendFiles !== undefined && e.dataTransfer?.types.includes('Files') === true) e.preventDefault() }}
        onDrop={e => {
          const dropped = [...(e.dataTransfer?.files ?? [])]
          if (sendFiles === undefined || dropped.length === 0) return
          e.preventDefault()
          sendFiles(dropped)
        }}
      >
        <header class='bar'>
          <button class='back' data-testid='chat-back' type='button' aria-label='Back' onClick={() => { chat.conversations.closeChat() }}>‹</button>
          <div class='title'>
            <b data-testid='chat-title'>{titleOf(s)}</b>
            <small data-testid='chat-subtitle'>{subtitle(state, s, c)}</small>
          </div>
          {group && <button class='link' data-testid='members-toggle' type='button' onClick={() => { chat.members.toggle() }}>Members</button>}
          {channel !== undefined && channel.role !== null && channel.role !== 'member' && (
            <button class='link' data-testid='invite-create' type='button' title='Make a link that lets anyone who has it join this channel' onClick={() => { void chat.channels.createInvite(s.conv) }}>Invite link</button>
          )}
          {s.kind === 'channel' && <button class='link danger' data-testid='channel-leave' type='button' title='Leave this channel' onClick={() => { void chat.conversations.leaveChannel(s.conv) }}>Leave</button>}
          {peer !== undefined && (
            <button
              class={`link${blocked ? '' : ' danger'}`} data-testid='block-toggle' type='button' aria-pressed={blocked}
              title={blocked ? `Unblock ${peer}: you can write to each other again` : `Block ${peer}: neither of you can write here, and ${peer} no longer sees when you are online`}
              onClick={() => { void chat.blocks.set(s.conv, peer, !blocked) }}
            >{blocked ? 'Unblock' : 'Block'}
            </button>
          )}
        </header>
        {group && state.membersOpen && <MembersPanel summary={s} chat={c} me={state.me} error={state.membersError} onAdd={async users => await chat.members.add(users)} />}
        {state.invite?.conv === s.conv && <InvitePanel link={state.invite.link} expiresAt={state.invite.expiresAt} onClose={() => { chat.channels.closeInvite() }} />}
        {blocked && <p class='notice' data-testid='blocked-notice' role='status'>You blocked {peer}. Neither of you can send messages here until you unblock them.</p>}
        <MessageList key={s.conv} conv={s.conv} chat={c} me={state.me} group={s.kind !== 'direct'} role={s.role} messages={chat.messages} changes={chat.changes} />
        <div class='typing' aria-live='polite'>{typing !== '' && <span data-testid='typing'>{typing}</span>}</div>
        {uploads.map((u, i) => (
          <p key={i} class='upload' data-testid='upload' role='status'>
            Sending {u.name}… <progress max={u.total} value={u.sent} /> {byteSize(u.sent)} / {byteSize(u.total)}
          </p>
        ))}
        {error !== null && (
          <p class='error chat-error' data-testid='chat-error' role='alert'>
            <span>{error}</span>
            <button class='link' type='button' aria-label='Dismiss' title='Dismiss' onClick={() => { chat.dismissError() }}>×</button>
          </p>
        )}
        {s.kind === 'channel' && channel?.canPost !== true
          ? <p class='notice' data-testid='channel-readonly' role='status'>{channel === undefined ? 'Loading the channel…' : 'Only the admins and the owner post in this channel.'}</p>
          : (
            <Composer
              key={s.conv} candidates={candidates} disabledReason={blocked ? `Unblock ${peer ?? ''} to send messages` : undefined}
              onSend={text => { chat.messages.send(s.conv, text, mentionsIn(text, candidates)) }}
              onText={text => { if (s.kind !== 'channel') chat.typing.composing(s.conv, text) }}
              onFiles={sendFiles}
            />
            )}
      </div>
    </section>
  )
}

/** A new invite link: shown this once (the server keeps no copy of the code), to copy and share. */
function InvitePanel ({ link, expiresAt, onClose }: { link: string, expiresAt: number, onClose: () => void }) {
  const [copied, setCopied] = useState(false)
  const field = useRef<HTMLInputElement>(null)
  const copy = (): void => {
    // the clipboard exists in secure contexts only (https, localhost): elsewhere the link is selected to copy by hand
    const clipboard = (navigator as Partial<Navigator>).clipboard
    if (clipboard === undefined) {
      field.current?.select()
      return
    }
    clipboard.writeText(link).then(() => { setCopied(true) }, () => { field.current?.select() })
  }
  return (
    <div class='notice invite' data-testid='invite-panel' role='status'>
      <span>Anyone with this link can join until {shortTime(expiresAt)}. It is shown only now:</span>
      <div class='row'>
        <input ref={field} data-testid='invite-link' readOnly value={link} onFocus={e => { e.currentTarget.select() }} />
        <button type='button' data-testid='invite-copy' onClick={copy}>{copied ? 'Copied' : 'Copy'}</button>
        <button class='link' type='button' aria-label='Close' title='Close' onClick={onClose}>×</button>
      </div>
    </div>
  )
}

function subtitle (state: AppState, s: ConversationSummary, c: ChatState): string {
  if (s.kind === 'channel') {
    const info = state.channels.get(s.conv)
    if (info === undefined) return 'channel'
    return `${info.public ? 'public' : 'private'} channel · ${info.members} member${info.members === 1 ? '' : 's'}${info.public ? ` · id ${s.conv}` : ''}`
  }
  if (s.kind === 'group') return c.members !== undefined ? `group · ${c.members.length} members` : 'group'
  const st = s.peer === undefined ? undefined : state.presence.get(s.peer)
  if (st === undefined) return 'direct chat'
  if (st.online) return 'online'
  return st.lastSeen !== null ? `last seen ${shortTime(st.lastSeen)}` : 'offline'
}
