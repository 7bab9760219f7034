/**
 * One stored message of the open chat: its text (mentions highlighted, "message deleted" once
 * deleted), an "edited" mark, its reactions (counts; mine highlighted; a click toggles mine), and
 * its actions menu (the ⋯ button on hover or focus, or a right click / long press): react, edit
 * (mine, text) and delete (mine; in groups an admin's or the owner's: anyone's).
 */
import type { JSX } from 'preact'
import { useLayoutEffect, useRef, useState } from 'preact/hooks'
import type { MessageEnvelope } from '../../../src/client/index.js'
import { REACTIONS, type Changes } from '../changes.js'
import { clockTime } from '../format.js'
import { mentionParts, mentionsMe, MENTION_ALL } from '../mentions.js'
import { bodyText } from '../store.js'
import { FileBody } from './file-body.js'
import type { FileDescriptor } from '../../../src/client/index.js'

export interface MessageItemProps {
  conv: string
  m: MessageEnvelope
  me: string
  showSender: boolean
  /** I may delete it (mine, or a group's admin or owner). */
  canDelete: boolean
  /** The read receipt, on own messages. */
  status: JSX.Element | null
  menuOpen: boolean
  editing: boolean
  onMenu: (open: boolean) => void
  onEditing: (editing: boolean) => void
  changes: Changes
}

export function MessageItem ({ conv, m, me, showSender, canDelete, status, menuOpen, editing, onMenu, onEditing, changes }: MessageItemProps) {
  const own = m.from === me
  const deleted = m.deleted !== undefined
  const canEdit = own && m.kind === 'text' && !deleted
  const toMe = mentionsMe(m, me)
  const classes = ['msg', own ? 'own' : '', toMe ? 'to-me' : '', menuOpen ? 'menu-open' : ''].filter(c => c !== '').join(' ')
  const openMenu = (e: Event): void => {
    if (deleted || editing) return
    e.preventDefault()
    onMenu(true)
  }

  return (
    <li
      class={classes} data-testid='msg' data-seq={m.seq} data-from={m.from} data-own={own ? '' : undefined}
      data-deleted={deleted ? '' : undefined} data-edited={m.edited !== undefined ? '' : undefined} data-mentions-me={toMe ? '' : undefined}
    >
      {showSender && <span class='msg-sender' data-testid='msg-sender'>{m.from}</span>}
      <div class='msg-row'>
        {editing && !deleted
          ? <EditForm initial={typeof m.body === 'string' ? m.body : ''} onCancel={() => { onEditing(false) }} onSave={text => { onEditing(false); void changes.edit(conv, m.seq, text) }} />
          : (
            <div class={`bubble${m.kind === 'custom' && !deleted ? ' custom' : ''}${m.kind === 'file' && !deleted ? ' file' : ''}${deleted ? ' deleted' : ''}`} data-testid='msg-text' onContextMenu={openMenu}>
              {m.kind === 'file' && !deleted
                ? <FileBody conv={conv} file={m.body as FileDescriptor} />
                : deleted || m.kind !== 'text' ? bodyText(m) : <MessageText text={bodyText(m)} mentions={m.mentions} me={me} />}
            </div>
            )}
        {!deleted && !editing && (
          <button
            class='msg-more' data-testid='msg-actions' type='button' aria-label='Message actions' title='React, edit or delete'
            aria-haspopup='true' aria-expanded={menuOpen} onClick={() => { onMenu(!menuOpen) }}
          >⋯
          </button>
        )}
      </div>
      {menuOpen && !deleted && !editing && (
        <MessageMenu
          m={m} me={me} canEdit={canEdit} canDelete={canDelete} onClose={() => { onMenu(false) }}
          onReact={emoji => { onMenu(false); void changes.toggleReaction(conv, m.seq, emoji) }}
          onEdit={() => { onMenu(false); onEditing(true) }}
          onDelete={() => { onMenu(false); void changes.remove(conv, m.seq) }}
        />
      )}
      {m.reactions !== undefined && !deleted && <Reactions reactions={m.reactions} me={me} onToggle={emoji => { void changes.toggleReaction(conv, m.seq, emoji) }} />}
      <div class='msg-meta'>
        <time dateTime={new Date(m.ts).toISOString()}>{clockTime(m.ts)}</time>
        {m.edited !== undefined && !deleted && <span class='msg-edited' data-testid='msg-edited' title={`edited at ${clockTime(m.edited.ts)}`}>edited</span>}
        {status}
      </div>
    </li>
  )
}

/** A text with the `@name`s it mentions highlighted (mine, and @all, more strongly). */
function MessageText ({ text, mentions, me }: { text: string, mentions: string[] | undefined, me: string }) {
  return (
    <>
      {mentionParts(text, mentions).map((part, i) => typeof part === 'string'
        ? part
        : <mark key={i} class={`mention${part.mention === me || part.mention === MENTION_ALL ? ' is-me' : ''}`} data-testid='mention' data-user={part.mention}>{part.token}</mark>
      )}
    </>
  )
}

function Reactions ({ reactions, me, onToggle }: { reactions: Record<string, string[]>, me: string, onToggle: (emoji: string) => void }) {
  return (
    <div class='reactions' data-testid='reactions'>
      {Object.entries(reactions).map(([emoji, users]) => {
        const mine = users.includes(me)
        return (
          <button
            key={emoji} type='button' class={`reaction${mine ? ' mine' : ''}`} data-testid='reaction' data-emoji={emoji}
            data-count={users.length} data-mine={String(mine)} aria-pressed={mine} title={users.join(', ')}
            aria-label={`${emoji} ${users.length}: ${users.join(', ')}. ${mine ? 'Take yours back' : 'React too'}`}
            onClick={() => { onToggle(emoji) }}
          >
            <span aria-hidden='true'>{emoji}</span> <span class='count' aria-hidden='true'>{users.length}</span>
          </button>
        )
      })}
    </div>
  )
}

interface MenuProps {
  m: MessageEnvelope
  me: string
  canEdit: boolean
  canDelete: boolean
  onClose: () => void
  onReact: (emoji: string) => void
  onEdit: () => void
  onDelete: () => void
}

/** React with one of REACTIONS (again: take it back), edit, delete (after a confirmation). Escape closes it. */
function MessageMenu ({ m, me, canEdit, canDelete, onClose, onReact, onEdit, onDelete }: MenuProps) {
  const [confirming, setConfirming] = useState(false)
  const box = useRef<HTMLDivElement>(null)
  useLayoutEffect(() => { box.current?.querySelector('button')?.focus() }, [])
  return (
    <div
      ref={box} class='msg-menu' role='toolbar' aria-label='Message actions' data-testid='msg-menu'
      onKeyDown={e => { if (e.key === 'Escape') { e.preventDefault(); onClose() } }}
    >
      <div class='react-picker'>
        {REACTIONS.map(emoji => {
          const mine = m.reactions?.[emoji]?.includes(me) ?? false
          return (
            <button
              key={emoji} type='button' class={`react-option${mine ? ' mine' : ''}`} data-testid='react-option' data-emoji={emoji}
              aria-pressed={mine} aria-label={mine ? `Take back ${emoji}` : `React with ${emoji}`} title={mine ? `Take back ${emoji}` : `React with ${emoji}`}
              onClick={() => { onReact(emoji) }}
            >{emoji}
            </button>
          )
        })}
      </div>
      {canEdit && <button class='link' data-testid='msg-edit' type='button' onClick={onEdit}>Edit</button>}
      {canDelete && !confirming && <button class='link danger' data-testid='msg-delete' type='button' onClick={() => { setConfirming(true) }}>Delete…</button>}
      {confirming && (
        <span class='confirm' role='group' aria-label='Delete for everyone?'>
          <span>Delete for everyone?</span>
          <button class='danger' data-testid='msg-delete-confirm' type='button' onClick={onDelete}>Delete</button>
          <button class='link' data-testid='msg-delete-cancel' type='button' onClick={() => { setConfirming(false) }}>Cancel</button>
        </span>
      )}
    </div>
  )
}

/** Editing a text message in place: Enter (or Save) saves, Shift+Enter makes a new line, Escape (or Cancel) cancels. */
function EditForm ({ initial, onSave, onCancel }: { initial: string, onSave: (text: string) => void, onCancel: () => void }) {
  const input = useRef<HTMLTextAreaElement>(null)
  // filled and focused before the form is first seen
  useLayoutEffect(() => {
    const t = input.current
    if (t === null) return
    t.value = initial
    t.focus()
    t.setSelectionRange(initial.length, initial.length)
  }, [])
  const save = (): void => {
    const text = input.current?.value.replace(/\s+$/, '') ?? ''
    if (text.trim() === '') return
    if (text === initial) onCancel()
    else onSave(text)
  }
  return (
    <form class='edit-form' data-testid='msg-edit-form' onSubmit={e => { e.preventDefault(); save() }}>
      <textarea
        ref={input} data-testid='msg-edit-input' aria-label='Edit message' rows={Math.min(6, initial.split('\n').length + 1)}
        onKeyDown={e => {
          if (e.key === 'Escape') {
            e.preventDefault()
            onCancel()
          } else if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
            e.preventDefault()
            save()
          }
        }}
      />
      <div class='row'>
        <button class='link' data-testid='msg-edit-cancel' type='button' onClick={onCancel}>Cancel</button>
        <button data-testid='msg-edit-save' type='submit'>Save</button>
      </div>
    </form>
  )
}
