/**
 * The messages of the open chat, oldest first, with day separators, sender names in groups, read
 * receipts on own messages and own sends still on their way (or failed, with why). Keeps the view
 * at the bottom while the reader is there (and after own sends), keeps it in place when older
 * messages come in, loads older ones near the top, and reports which messages are on screen (for
 * marking read). Which message's actions menu is open, and which one is being edited, is kept here.
 */
import type { JSX } from 'preact'
import { useLayoutEffect, useRef, useState } from 'preact/hooks'
import type { MessageEnvelope, Role } from '../../../src/client/index.js'
import type { Changes } from '../changes.js'
import { dayLabel } from '../format.js'
import type { Messages } from '../messages.js'
import { lastOwnSeq, type ChatState } from '../store.js'
import { MessageItem } from './message-item.js'

interface Props {
  conv: string
  chat: ChatState
  me: string
  group: boolean
  /** My role in the conversation: a group's admins and owner delete anyone's messages. */
  role: Role
  messages: Messages
  changes: Changes
}

/** Which message has its menu open or is being edited (by seq). */
interface Focus { menu: number | null, editing: number | null }

/** Within this many pixels of the bottom, new messages scroll into view. */
const STICK_PX = 120
/** Within this many pixels of the top, the older page is loaded. */
const LOAD_OLDER_PX = 80

export function MessageList ({ conv, chat, me, group, role, messages, changes }: Props) {
  const [focus, setFocus] = useState<Focus>({ menu: null, editing: null })
  const box = useRef<HTMLDivElement>(null)
  const list = useRef<HTMLOListElement>(null)
  const observer = useRef<IntersectionObserver | null>(null)
  const visible = useRef(new Set<number>())
  /** At the bottom (as of the last scroll): new messages scroll into view. */
  const stick = useRef(true)
  /** scrollHeight - scrollTop after the last render or scroll: restored when older messages come in. */
  const fromBottom = useRef(0)
  const shown = useRef<{ first: number, last: number, pending: number } | null>(null)

  const sorted = [...chat.messages.values()].sort((a, b) => a.seq - b.seq)

  // Which messages are on screen (60 % visible), for marking read. One observer per chat.
  useLayoutEffect(() => {
    const io = new IntersectionObserver(entries => {
      for (const e of entries) {
        const seq = Number((e.target as HTMLElement).dataset.seq)
        if (!Number.isFinite(seq)) continue
        if (e.isIntersecting) visible.current.add(seq)
        else visible.current.delete(seq)
      }
      messages.setVisible(conv, visible.current)
    }, { root: box.current, threshold: 0.6 })
    observer.current = io
    return () => { io.disconnect() }
  }, [])

  // After every render: observe new bubbles, then place the scroll position.
  useLayoutEffect(() => {
    const el = box.current
    if (el === null) return
    for (const li of list.current?.querySelectorAll('li[data-seq]') ?? []) observer.current?.observe(li)
    const now = { first: sorted[0]?.seq ?? 0, last: sorted[sorted.length - 1]?.seq ?? 0, pending: chat.pending.size }
    const before = shown.current
    const newest = sorted[sorted.length - 1]
    if (before === null) {
      el.scrollTop = el.scrollHeight
    } else if (now.last > before.last || now.pending > before.pending) {
      if (stick.current || now.pending > before.pending || newest?.from === me) el.scrollTop = el.scrollHeight
    } else if (now.first < before.first) {
      el.scrollTop = el.scrollHeight - fromBottom.current
    } else if (stick.current) {
      // a message at the bottom grew (reactions, an open menu, an edit): stay at the bottom
      el.scrollTop = el.scrollHeight
    }
    shown.current = now
    fromBottom.current = el.scrollHeight - el.scrollTop
  })

  const onScroll = (): void => {
    const el = box.current
    if (el === null) return
    stick.current = el.scrollHeight - el.scrollTop - el.clientHeight < STICK_PX
    fromBottom.current = el.scrollHeight - el.scrollTop
    if (el.scrollTop < LOAD_OLDER_PX) void messages.loadOlder(conv)
  }

  return (
    <div ref={box} class='messages' data-testid='messages' onScroll={onScroll}>
      {chat.hasOlder && <button class='link older' data-testid='load-older' type='button' onClick={() => { void messages.loadOlder(conv) }}>Load older messages</button>}
      <ol ref={list} class='message-list' data-testid='message-list' data-loaded={String(chat.loaded)}>
        {items(sorted, { conv, chat, me, group, role, changes, focus, setFocus })}
        {[...chat.pending.values()].map(p => (
          <li
            key={p.msgId} class={`msg own ${p.failed ? 'failed' : 'pending'}`} data-testid='msg-pending' data-msg-id={p.msgId}
            data-failed={p.failed ? '' : undefined} title={p.failed ? 'Not sent: click to retry' : 'sending…'}
            onClick={() => { if (p.failed) messages.resend(conv, p.msgId) }}
          >
            <div class='bubble' data-testid='msg-text'>{p.text}</div>
            <div class='msg-meta'>
              <span class='msg-status' data-status={p.failed ? 'failed' : 'sending'}>{p.failed ? 'not sent · tap to retry' : 'sending…'}</span>
            </div>
            {p.error !== null && <p class='error send-error' data-testid='send-error' role='alert'>{p.error}</p>}
          </li>
        ))}
      </ol>
    </div>
  )
}

interface ItemsContext {
  conv: string
  chat: ChatState
  me: string
  group: boolean
  role: Role
  changes: Changes
  focus: Focus
  setFocus: (f: Focus) => void
}

/** Stored messages with a day separator before each new day. */
function items (sorted: MessageEnvelope[], { conv, chat, me, group, role, changes, focus, setFocus }: ItemsContext): JSX.Element[] {
  const lastOwn = lastOwnSeq(chat, me)
  const moderator = group && role !== 'member'
  const out: JSX.Element[] = []
  let prevFrom = ''
  let prevDay = ''
  for (const m of sorted) {
    const day = dayLabel(m.ts)
    if (day !== prevDay) {
      out.push(<li key={`day ${m.seq}`} class='day'>{day}</li>)
      prevDay = day
      prevFrom = ''
    }
    const own = m.from === me
    out.push(
      <MessageItem
        key={m.seq} conv={conv} m={m} me={me} showSender={group && !own && m.from !== prevFrom} canDelete={own || moderator}
        status={own ? <Status seq={m.seq} chat={chat} group={group} lastOwn={lastOwn} /> : null}
        menuOpen={focus.menu === m.seq} editing={focus.editing === m.seq} changes={changes}
        onMenu={open => { setFocus({ menu: open ? m.seq : null, editing: null }) }}
        onEditing={editing => { setFocus({ menu: null, editing: editing ? m.seq : null }) }}
      />
    )
    prevFrom = m.from
  }
  return out
}

/** Direct: sent or read on every own message. Group: on my last message, how many others read it. */
function Status ({ seq, chat, group, lastOwn }: { seq: number, chat: ChatState, group: boolean, lastOwn: number }) {
  if (!group) {
    const read = seq <= chat.peerReadSeq
    return <span class='msg-status' data-testid='msg-status' data-status={read ? 'read' : 'sent'}>{read ? '✓✓ read' : '✓ sent'}</span>
  }
  if (seq !== lastOwn) return null
  const n = chat.receiptSeq === seq ? chat.othersRead : 0
  return <span class='msg-status' data-testid='msg-status' data-status={n > 0 ? 'read' : 'sent'} data-read-by={n}>{n > 0 ? `read by ${n}` : '✓ sent'}</span>
}
