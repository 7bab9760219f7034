/**
 * The worker behind web/src/timers.ts, built to web/dist/timer-worker.js: runs intervals and posts
 * each tick's id back. Browsers do not slow a dedicated worker's timers down in a hidden tab.
 */
interface Command { op: 'set' | 'clear', id: number, ms?: number }
interface WorkerScope {
  onmessage: ((e: MessageEvent<Command>) => void) | null
  postMessage: (id: number) => void
}

const scope = self as unknown as WorkerScope
const intervals = new Map<number, ReturnType<typeof setInterval>>()

scope.onmessage = ({ data }) => {
  clearInterval(intervals.get(data.id))
  intervals.delete(data.id)
  if (data.op === 'set') intervals.set(data.id, setInterval(() => { scope.postMessage(data.id) }, data.ms))
}
