/**
 * Entry point of the browser chat page: the login form, then ChatApp on top of the SDK, which talks
 * MQTT over WebSocket to `ws(s)://<this host>/mqtt`.
 *
 * What is kept in the browser:
 * - localStorage `mqim.device`: this browser's device id (default `web-<random>`), `mqim.user`: the last user id;
 * - localStorage, through the SDK's LocalStorageStorage: per-conversation sync position and unsent messages;
 * - sessionStorage `mqim.session`: the credentials of this tab, so a reload logs straight back in; it
 *   ends with the tab, and "Log out" clears it.
 */
import { ImClient, LocalStorageStorage } from '../../src/client/index.js'
import { ChatApp } from './app.js'
import { $, showError } from './dom.js'

const DEVICE_KEY = 'mqim.device'
const USER_KEY = 'mqim.user'
const SESSION_KEY = 'mqim.session'

interface Session { user: string, password: string, device: string }

const el = {
  loginView: $('login-view'),
  appView: $('app-view'),
  form: $<HTMLFormElement>('login-form'),
  user: $<HTMLInputElement>('login-user'),
  password: $<HTMLInputElement>('login-password'),
  device: $<HTMLInputElement>('login-device'),
  submit: $<HTMLButtonElement>('login-submit'),
  error: $('login-error'),
  logout: $('logout')
}

let client: ImClient | null = null
let app: ChatApp | null = null

function randomDevice (): string {
  const bytes = new Uint8Array(6)
  crypto.getRandomValues(bytes)
  return 'web-' + Array.from(bytes, b => b.toString(36).padStart(2, '0')).join('').slice(0, 8)
}

function storageGet (storage: Storage, key: string): string | null {
  try {
    return storage.getItem(key)
  } catch {
    return null
  }
}

function storageSet (storage: Storage, key: string, value: string | null): void {
  try {
    if (value === null) storage.removeItem(key)
    else storage.setItem(key, value)
  } catch {
    // private mode or quota: the page still works, it just forgets
  }
}

function brokerUrl (): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`
}

function showLogin (): void {
  el.appView.hidden = true
  el.loginView.hidden = false
  el.submit.disabled = false
  el.submit.textContent = 'Log in'
  ;(el.user.value === '' ? el.user : el.password).focus()
}

/** Turns the SDK's / mqtt.js's connect failures into something a person understands. */
function loginMessage (err: unknown): string {
  const text = err instanceof Error ? err.message : String(err)
  if (/bad user ?name or password|code 4\b|not authori[sz]ed|code 5\b/i.test(text)) {
    return /not authori[sz]ed|code 5\b/i.test(text) ? 'This account is disabled.' : 'Wrong user id or password.'
  }
  if (/identifier rejected|code 2\b/i.test(text)) return 'Invalid device id: use 1-64 of A-Z a-z 0-9 _ -'
  return `Could not connect: ${text}`
}

async function login (session: Session, remember: boolean): Promise<void> {
  showError(el.error, null)
  el.submit.disabled = true
  el.submit.textContent = 'Connecting…'
  try {
    const c = await ImClient.connect({
      url: brokerUrl(),
      userId: session.user,
      password: session.password,
      deviceId: session.device,
      storage: new LocalStorageStorage()
    })
    client = c
    storageSet(localStorage, USER_KEY, session.user)
    storageSet(localStorage, DEVICE_KEY, session.device)
    if (remember) storageSet(sessionStorage, SESSION_KEY, JSON.stringify(session))
    el.password.value = ''
    el.loginView.hidden = true
    el.appView.hidden = false
    app = new ChatApp(c, session.user)
    await app.start()
  } catch (err) {
    storageSet(sessionStorage, SESSION_KEY, null)
    await logout(false)
    showError(el.error, loginMessage(err))
  }
}

async function logout (clearSession = true): Promise<void> {
  if (clearSession) {
    storageSet(sessionStorage, SESSION_KEY, null)
    if (location.hash !== '') history.replaceState(null, '', location.pathname + location.search)
  }
  app?.close()
  app = null
  const c = client
  client = null
  if (c !== null) {
    try {
      await c.close()
    } catch {
      // closing anyway
    }
  }
  showLogin()
}

function init (): void {
  let device = storageGet(localStorage, DEVICE_KEY)
  if (device === null || !/^[A-Za-z0-9_-]{1,64}$/.test(device)) {
    device = randomDevice()
    storageSet(localStorage, DEVICE_KEY, device)
  }
  el.device.value = device
  el.user.value = storageGet(localStorage, USER_KEY) ?? ''

  el.form.addEventListener('submit', e => {
    e.preventDefault()
    const session: Session = { user: el.user.value.trim().toLowerCase(), password: el.password.value, device: el.device.value.trim() }
    if (session.user === '' || session.password === '' || session.device === '') return
    void login(session, true)
  })
  el.logout.addEventListener('click', () => { void logout() })
  window.addEventListener('pagehide', () => { void client?.close() })
  // Restored from the back/forward cache after pagehide closed the connection: start afresh.
  window.addEventListener('pageshow', e => { if (e.persisted) location.reload() })

  const saved = storageGet(sessionStorage, SESSION_KEY)
  if (saved !== null) {
    try {
      const session = JSON.parse(saved) as Session
      el.user.value = session.user
      el.device.value = session.device
      el.loginView.hidden = true
      void login(session, true)
      return
    } catch {
      storageSet(sessionStorage, SESSION_KEY, null)
    }
  }
  showLogin()
}

init()
