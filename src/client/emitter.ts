/** A tiny typed event emitter (no Node `events`, so it runs in the browser unchanged). */
/** Any listener: every function type is assignable to this one (its parameters are checked per event). */
type Listener = (...args: never[]) => void

export class Emitter<Events extends { [E in keyof Events]: Listener }> {
  private readonly listeners = new Map<keyof Events, Set<Listener>>()

  on<E extends keyof Events>(event: E, fn: Events[E]): () => void {
    let set = this.listeners.get(event)
    if (set === undefined) {
      set = new Set()
      this.listeners.set(event, set)
    }
    set.add(fn)
    return () => { set.delete(fn) }
  }

  /** Calls every listener; a throwing listener is reported through `onListenerError`, never to the emitter's caller. */
  emit<E extends keyof Events>(event: E, ...args: Parameters<Events[E]>): void {
    const set = this.listeners.get(event)
    if (set === undefined) return
    for (const fn of [...set]) {
      try {
        fn(...args)
      } catch (err) {
        this.onListenerError(err, event)
      }
    }
  }

  listenerCount (event: keyof Events): number {
    return this.listeners.get(event)?.size ?? 0
  }

  onListenerError: (err: unknown, event: keyof Events) => void = (err) => { setTimeout(() => { throw err }, 0) }
}
