/**
 * The page's service worker, built to web/dist/sw.js and registered at scope `/` when the user
 * turns notifications on (web/src/push.ts). A push from mqim (src/im/push.ts: the payload is JSON,
 * {type: 'message', conv, convName, convKind, seq, from, kind, text?, mention, badge}) shows one
 * notification per conversation (tagged with it: a newer push replaces the older); a click focuses
 * the page and opens that conversation, or opens the page at it.
 */
interface PushPayload { type?: string, conv?: string, convName?: string | null, convKind?: string, from?: string, kind?: string, text?: string, mention?: boolean, badge?: number }
interface NotificationLike { data: unknown, close: () => void }
interface WindowClientLike { url: string, focus: () => Promise<unknown>, postMessage: (m: unknown) => void }
interface SwScope {
  addEventListener: ((type: 'push', fn: (e: { data: { json: () => unknown } | null, waitUntil: (p: Promise<unknown>) => void }) => void) => void) &
  ((type: 'notificationclick', fn: (e: { notification: NotificationLike, waitUntil: (p: Promise<unknown>) => void }) => void) => void) &
  ((type: 'install' | 'activate', fn: (e: { waitUntil: (p: Promise<unknown>) => void }) => void) => void)
  registration: { showNotification: (title: string, options: Record<string, unknown>) => Promise<void> }
  clients: { matchAll: (o: { type: 'window', includeUncontrolled: boolean }) => Promise<WindowClientLike[]>, openWindow: (url: string) => Promise<unknown>, claim: () => Promise<void> }
  skipWaiting: () => Promise<void>
  location: { origin: string }
}

const sw = self as unknown as SwScope

/** What a push shows: the conversation as title; the sender and text (or what kind of message) as body. */
function notificationOf (p: PushPayload): { title: string, body: string, tag: string } {
  const conv = typeof p.conv === 'string' ? p.conv : ''
  const from = typeof p.from === 'string' ? p.from : 'someone'
  const title = p.convKind === 'group' && typeof p.convName === 'string' ? p.convName : from
  const what = p.kind === 'file' ? `sent a file${typeof p.text === 'string' ? `: ${p.text}` : ''}` : typeof p.text === 'string' ? p.text : p.kind === 'text' ? 'sent a message' : `sent a ${p.kind ?? 'message'}`
  const body = `${p.mention === true ? '(mentioned you) ' : ''}${p.convKind === 'group' ? `${from}: ` : ''}${what}`
  return { title, body, tag: `conv:${conv}` }
}

sw.addEventListener('install', e => { e.waitUntil(sw.skipWaiting()) })
sw.addEventListener('activate', e => { e.waitUntil(sw.clients.claim()) })

sw.addEventListener('push', e => {
  let payload: PushPayload = {}
  try {
    payload = (e.data?.json() ?? {})
  } catch {
    // not JSON: shown as a bare "new message"
  }
  const n = notificationOf(payload)
  e.waitUntil(sw.registration.showNotification(n.title, { body: n.body, tag: n.tag, renotify: true, data: { conv: payload.conv ?? '' } }))
})

sw.addEventListener('notificationclick', e => {
  e.notification.close()
  const data = e.notification.data as { conv?: unknown } | null
  const conv = typeof data?.conv === 'string' ? data.conv : ''
  e.waitUntil((async () => {
    const windows = await sw.clients.matchAll({ type: 'window', includeUncontrolled: true })
    const page = windows.find(w => w.url.startsWith(sw.location.origin))
    if (page !== undefined) {
      page.postMessage({ type: 'mqim.open', conv })
      await page.focus().catch(() => {})
      return
    }
    await sw.clients.openWindow(conv === '' ? '/' : `/#c=${encodeURIComponent(conv)}`)
  })())
})
