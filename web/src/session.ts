/**
 * Logging in and out. What is kept in the browser:
 * - localStorage `mqim.device`: this browser's device id (default `web-<random>`), `mqim.user`: the last user id;
 * - localStorage, through the SDK's LocalStorageStorage: per-conversation sync position and unsent messages;
 * - sessionStorage `mqim.session`: the credentials of this tab, so a reload logs straight back in; it
 *   ends with the tab, and "Log out" clears it.
 */
import { ImClient, LocalStorageStorage } from '../../src/client/index.js'
import { Chat } from './chat.js'
import { initialState, type AppStore } from './store.js'
import { workerIntervals } from './timers.js'

const DEVICE_KEY = 'mqim.device'
const USER_KEY = 'mqim.user'
const SESSION_KEY = 'mqim.session'
const DEVICE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

export interface Credentials { user: string, password: string, device: string }

export class Session {
  /** The controllers of the logged-in session. */
  chat: Chat | null = null
  private client: ImClient | null = null
  private readonly keepaliveTimer = workerIntervals()

  constructor (private readonly store: AppStore) {}

  /** Fills the login form from what this browser remembers, or logs straight back in (reload). */
  init (): void {
    let device = storageGet(localStorage, DEVICE_KEY)
    if (device === null || !DEVICE_PATTERN.test(device)) {
      device = randomDevice()
      storageSet(localStorage, DEVICE_KEY, device)
    }
    const user = storageGet(localStorage, USER_KEY) ?? ''
    this.store.update(state => { state.login = { user, device, error: null, busy: false } })
    window.addEventListener('pagehide', () => { void this.client?.close() })
    // Restored from the back/forward cache after pagehide closed the connection: start afresh.
    window.addEventListener('pageshow', e => { if (e.persisted) location.reload() })

    const saved = storageGet(sessionStorage, SESSION_KEY)
    if (saved === null) return
    try {
      const creds = JSON.parse(saved) as Credentials
      this.store.update(state => {
        state.phase = 'restoring'
        state.login.user = creds.user
        state.login.device = creds.device
      })
      void this.login(creds)
    } catch {
      storageSet(sessionStorage, SESSION_KEY, null)
    }
  }

  async login (creds: Credentials): Promise<void> {
    this.store.update(state => {
      state.login = { user: creds.user, device: creds.device, error: null, busy: true }
    })
    try {
      const client = this.client = await ImClient.connect({
        url: brokerUrl(),
        userId: creds.user,
        password: creds.password,
        deviceId: creds.device,
        storage: new LocalStorageStorage(),
        keepaliveTimer: this.keepaliveTimer
      })
      storageSet(localStorage, USER_KEY, creds.user)
      storageSet(localStorage, DEVICE_KEY, creds.device)
      storageSet(sessionStorage, SESSION_KEY, JSON.stringify(creds))
      const chat = this.chat = new Chat(client, this.store)
      this.store.update(state => {
        state.phase = 'app'
        state.me = creds.user
        state.login.busy = false
      })
      await chat.start()
    } catch (err) {
      storageSet(sessionStorage, SESSION_KEY, null)
      await this.logout(false)
      this.store.update(state => { state.login.error = loginMessage(err) })
    }
  }

  async logout (clearSession = true): Promise<void> {
    if (clearSession) {
      // a browser that logs out gets no more pushes of this user
      if (this.store.state.push.status === 'on') await this.chat?.push.disable()
      storageSet(sessionStorage, SESSION_KEY, null)
      if (location.hash !== '') history.replaceState(null, '', location.pathname + location.search)
    }
    this.chat?.close()
    this.chat = null
    const client = this.client
    this.client = null
    this.store.update(state => {
      const { login } = state
      Object.assign(state, initialState())
      state.login = { ...login, error: null, busy: false }
    })
    try {
      await client?.close()
    } catch {
      // closing anyway
    }
  }
}

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

/** MQTT over WebSocket on this page's own origin (what the CSP's connect-src 'self' allows). */
function brokerUrl (): string {
  return `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/mqtt`
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
