/**
 * Notifications while the page is closed or in the background: the browser's Web Push. Turned on
 * from a user action (the sidebar's bell): asks for permission, registers the service worker
 * (web/src/sw.ts at /sw.js), subscribes with the server's VAPID key and registers the subscription
 * for this device (push-register). Turned off, or on logout: push-unregister and unsubscribe.
 * Clicking a notification opens its conversation (the worker posts `mqim.open`).
 */
import type { ImClient } from '../../src/client/index.js'
import type { AppStore, PushState } from './store.js'

const SUBSCRIBE_TIMEOUT_MS = 20_000

export class Push {
  constructor (private readonly client: ImClient, private readonly store: AppStore, private readonly open: (conv: string) => void) {}

  private set (push: PushState): void {
    this.store.update(state => { state.push = push })
  }

  /** What this browser can do, and whether this device is registered already. */
  async start (): Promise<void> {
    if (!('serviceWorker' in navigator) || !('PushManager' in window) || !('Notification' in window)) {
      this.set({ status: 'unsupported', detail: 'this browser has no Web Push' })
      return
    }
    navigator.serviceWorker.addEventListener('message', this.onWorkerMessage)
    if (Notification.permission === 'denied') {
      this.set({ status: 'denied', detail: 'notifications are blocked for this site in the browser settings' })
      return
    }
    try {
      const { targets } = await this.client.pushTargets()
      const mine = targets.some(t => t.device === this.client.deviceId && t.kind === 'webpush')
      this.set({ status: mine && Notification.permission === 'granted' ? 'on' : 'off', detail: null })
    } catch (err) {
      this.set({ status: 'unsupported', detail: (err as Error).message })
    }
  }

  private readonly onWorkerMessage = (e: MessageEvent): void => {
    const data = e.data as { type?: unknown, conv?: unknown } | null
    if (data?.type === 'mqim.open' && typeof data.conv === 'string' && data.conv !== '') this.open(data.conv)
  }

  /** From a click: permission, worker, subscription, registration. */
  async enable (): Promise<void> {
    this.set({ status: 'working', detail: null })
    try {
      const permission = await Notification.requestPermission()
      if (permission !== 'granted') {
        this.set({ status: permission === 'denied' ? 'denied' : 'off', detail: 'notifications were not allowed' })
        return
      }
      const registration = await navigator.serviceWorker.register('/sw.js', { scope: '/' })
      await navigator.serviceWorker.ready
      const { vapidPublicKey } = await this.client.pushTargets()
      if (vapidPublicKey === null) {
        this.set({ status: 'unsupported', detail: 'the server has no Web Push' })
        return
      }
      // a browser that cannot reach its push service may never settle subscribe(): give up after a while
      const subscription = await registration.pushManager.getSubscription() ??
        await withTimeout(registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: vapidPublicKey }), SUBSCRIBE_TIMEOUT_MS,
          'the browser\'s push service did not answer; try again later')
      const json = subscription.toJSON() as { endpoint: string, expirationTime?: number | null, keys: { p256dh: string, auth: string } }
      await this.client.pushRegister({ webPush: { endpoint: json.endpoint, expirationTime: json.expirationTime ?? null, keys: json.keys } })
      this.set({ status: 'on', detail: null })
    } catch (err) {
      this.set({ status: 'error', detail: (err as Error).message })
    }
  }

  /** From a click or logout: this device gets no more pushes. */
  async disable (): Promise<void> {
    try {
      await this.client.pushUnregister()
      const registration = await navigator.serviceWorker.getRegistration('/')
      await (await registration?.pushManager.getSubscription())?.unsubscribe()
      this.set({ status: 'off', detail: null })
    } catch (err) {
      this.set({ status: 'error', detail: (err as Error).message })
    }
  }

  close (): void {
    if ('serviceWorker' in navigator) navigator.serviceWorker.removeEventListener('message', this.onWorkerMessage)
  }
}

async function withTimeout<T> (p: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new Error(message)) }, ms) })])
  } finally {
    clearTimeout(timer)
  }
}
