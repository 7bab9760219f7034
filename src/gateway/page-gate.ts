/**
 * Requests whose replies are pages (`history`, `list`: up to limits.pageBytes of JSON each) cost
 * memory while they run, several times the page: the messages read, the reply object, its JSON,
 * the packet. The request rate bounds how many a user may ask for per second, not how many run at
 * once across users, so they pass through this gate: at most `max` at once on the node, at most
 * `maxPerUser` of one user, the others waiting in arrival order (a user's waiting requests do not
 * hold up other users': the first one that may run goes). At most `maxWaiting` wait; beyond, the
 * request is refused at once.
 */
export class PageGateFullError extends Error {
  constructor () {
    super('too many page requests waiting')
    this.name = 'PageGateFullError'
  }
}

interface Waiter { userId: string, go: () => void }

export class PageGate {
  private running = 0
  private readonly perUser = new Map<string, number>()
  private readonly waiting: Waiter[] = []

  constructor (private readonly max: number, private readonly maxPerUser: number, private readonly maxWaiting = 10_000) {}

  /** Resolves with the release function once the request may run; throws PageGateFullError if the line is full. */
  async enter (userId: string): Promise<() => void> {
    if (this.mayRun(userId)) {
      this.take(userId)
    } else {
      if (this.waiting.length >= this.maxWaiting) throw new PageGateFullError()
      // the slot is taken for this waiter by `next` before it is woken
      await new Promise<void>(resolve => this.waiting.push({ userId, go: resolve }))
    }
    let left = false
    return () => {
      if (left) return
      left = true
      this.running--
      const n = (this.perUser.get(userId) ?? 1) - 1
      if (n > 0) this.perUser.set(userId, n)
      else this.perUser.delete(userId)
      this.next()
    }
  }

  /** Running and waiting (for tests and health). */
  load (): { running: number, waiting: number } {
    return { running: this.running, waiting: this.waiting.length }
  }

  private mayRun (userId: string): boolean {
    return this.running < this.max && (this.perUser.get(userId) ?? 0) < this.maxPerUser
  }

  private take (userId: string): void {
    this.running++
    this.perUser.set(userId, (this.perUser.get(userId) ?? 0) + 1)
  }

  private next (): void {
    while (this.running < this.max) {
      const i = this.waiting.findIndex(w => this.mayRun(w.userId))
      if (i < 0) return
      const [w] = this.waiting.splice(i, 1)
      if (w === undefined) return
      this.take(w.userId)
      w.go()
    }
  }
}
