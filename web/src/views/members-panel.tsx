/** A group's members, and (for owners and admins) a form to add more. */
import type { ConversationSummary } from '../../../src/client/index.js'
import { useRef } from 'preact/hooks'
import { parseUserList } from '../format.js'
import type { ChatState } from '../store.js'

interface Props {
  summary: ConversationSummary
  chat: ChatState
  me: string
  error: string | null
  /** Resolves true once added. */
  onAdd: (users: string[]) => Promise<boolean>
}

export function MembersPanel ({ summary, chat, me, error, onAdd }: Props) {
  const input = useRef<HTMLInputElement>(null)
  const add = async (e: Event): Promise<void> => {
    e.preventDefault()
    const users = parseUserList(input.current?.value ?? '')
    if (users.length > 0 && await onAdd(users) && input.current !== null) input.current.value = ''
  }
  return (
    <div class='members-panel' data-testid='members-panel'>
      <ul class='members-list' data-testid='members-list'>
        {(chat.members ?? []).map(m => (
          <li key={m.user} data-testid='member' data-user={m.user}>
            {m.user === me ? `${m.user} (you)` : m.user}
            {m.role !== 'member' && <small>{m.role}</small>}
          </li>
        ))}
      </ul>
      {summary.role !== 'member' && (
        <form class='row' data-testid='add-members-form' onSubmit={e => { void add(e) }}>
          <input ref={input} data-testid='add-members-input' placeholder='Add: dave, erin' autoCapitalize='none' spellcheck={false} required />
          <button data-testid='add-members-submit' type='submit'>Add</button>
        </form>
      )}
      {error !== null && <p class='error' data-testid='members-error' role='alert'>{error}</p>}
    </div>
  )
}
