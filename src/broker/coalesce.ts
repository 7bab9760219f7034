/**
 * Write coalescing: one socket write per connection per commit instead of one per packet.
 *
 * Aedes writes every packet in its own turn of the event loop (a PUBACK inside the publish
 * handler's callback, each delivery in its own setImmediate), and each of those leaves in its
 * own writev syscall: a `send` cost the requester's socket three (PUBACK, reply, its own copy)
 * and every recipient's one per message. The sequencer commits messages in batches; before each
 * message or event is published, the connections of its recipients are corked (Publisher
 * holdWrites), as is a requester's before its reply and PUBACK (BrokerHooks), and they are
 * uncorked one loop turn after the deliveries were queued, so everything written to a connection
 * for that batch leaves in one syscall. Nothing is held past that next turn, and each connection
 * is corked at most once per turn.
 */
import type { Writable } from 'node:stream'

const HELD = Symbol('mqim.held')

type Holdable = Writable & { [HELD]?: boolean }

export class WriteCoalescer {
  private held: Holdable[] = []
  private scheduled = false

  /** Holds the connection's writes until the turn after the deliveries queued so far. */
  hold (conn: Holdable | undefined): void {
    if (conn === undefined || conn[HELD] === true || conn.destroyed || typeof conn.cork !== 'function') return
    conn[HELD] = true
    conn.cork()
    this.held.push(conn)
    if (!this.scheduled) {
      this.scheduled = true
      // Aedes queues each delivery in a setImmediate from the microtasks that follow a publish:
      // the outer immediate runs after them in this turn, the inner one in the next turn, after
      // whatever they queued in turn.
      setImmediate(() => setImmediate(this.release))
    }
  }

  /** Uncorks everything held now. */
  readonly release = (): void => {
    const held = this.held
    this.held = []
    this.scheduled = false
    for (const c of held) {
      c[HELD] = false
      if (!c.destroyed) c.uncork()
    }
  }
}
