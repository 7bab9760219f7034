/**
 * Entry point of the browser chat page: one store, the session (login, then the controllers on top
 * of the SDK, which talks MQTT over WebSocket to `ws(s)://<this host>/mqtt`), and the views.
 *
 *   store.ts            the state every view reads; notifies on change
 *   session.ts          login/logout, what the browser remembers
 *   chat.ts             a logged-in session: SDK and browser events -> controllers
 *   conversations.ts    the list, open/close, new direct chats and groups
 *   messages.ts         history, live messages, sends, receipts, marking read
 *   members.ts          the members panel's data
 *   views/              login, conversation list, chat view (message list, members panel, composer)
 */
import { render } from 'preact'
import { Session } from './session.js'
import { initialState, Store } from './store.js'
import { App } from './views/app.js'

const store = new Store(initialState())
const session = new Session(store)
session.init()
const root = document.getElementById('root')
if (root === null) throw new Error('missing #root')
render(<App store={store} session={session} />, root)
