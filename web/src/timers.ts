/**
 * The SDK's keepalive intervals (ImClientOptions.keepaliveTimer), run by timer-worker.js, a Worker of
 * this origin: the CSP's script-src 'self' allows it (mqtt.js's own blob: worker it blocks), and a
 * hidden tab's pings stay on time. Should the worker fail to start, the intervals move to the page's
 * own setInterval.
 */
import type { IntervalTimer } from '../../src/client/index.js'

export function workerIntervals (url = 'timer-worker.js'): IntervalTimer {
  const callbacks = new Map<number, { fn: () => void, ms: number }>()
  const native = new Map<number, ReturnType<typeof setInterval>>()
  let worker: Worker | null = null
  let next = 1

  const fallBack = (): void => {
    worker?.terminate()
    worker = null
    for (const [id, { fn, ms }] of callbacks) native.set(id, setInterval(fn, ms))
  }
  try {
    worker = new Worker(url)
    worker.onmessage = (e: MessageEvent<number>) => { callbacks.get(e.data)?.fn() }
    worker.onerror = (e) => {
      e.preventDefault()
      console.warn(`${url} failed; keepalive on the page's own timers`)
      fallBack()
    }
  } catch {
    worker = null
  }

  return {
    set (fn, ms) {
      const id = next++
      callbacks.set(id, { fn, ms })
      if (worker !== null) worker.postMessage({ op: 'set', id, ms })
      else native.set(id, setInterval(fn, ms))
      return id
    },
    clear (id) {
      callbacks.delete(id)
      clearInterval(native.get(id))
      native.delete(id)
      worker?.postMessage({ op: 'clear', id })
    }
  }
}
