/** The page: the login form, or the conversation list beside the open chat. Re-renders whenever the store notifies. */
import { useLayoutEffect, useState } from 'preact/hooks'
import type { Session } from '../session.js'
import type { AppStore } from '../store.js'
import { ChatView } from './chat-view.js'
import { ConversationList } from './conversation-list.js'
import { LoginView } from './login.js'
import { FilesContext } from './file-body.js'

export function App ({ store, session }: { store: AppStore, session: Session }) {
  const [, setVersion] = useState(0)
  // Subscribed during the first render's commit, before any later update can be missed.
  useLayoutEffect(() => store.subscribe(() => { setVersion(v => v + 1) }), [store])
  const { state } = store
  const { chat } = session

  if (state.phase === 'restoring') return null
  if (state.phase === 'login' || chat === null) {
    return <LoginView login={state.login} onLogin={creds => { void session.login(creds) }} />
  }
  return (
    <div class={`app${state.active !== null ? ' chat-open' : ''}`} data-testid='app-view'>
      <ConversationList state={state} chat={chat} onLogout={() => { void session.logout() }} />
      <FilesContext.Provider value={chat.files}>
        <ChatView state={state} chat={chat} />
      </FilesContext.Provider>
    </div>
  )
}
