/** The memory persistence class of aedes-persistence 11 (its own types do not cover this subpath). */
declare module 'aedes-persistence/asyncPersistence.js' {
  import type { Readable } from 'node:stream'
  export default class MemoryPersistence {
    constructor ()
    setup (broker: unknown): Promise<void>
    addSubscriptions (client: { id: string }, subs: Array<{ topic: string, qos: number }>): Promise<void>
    outgoingEnqueue (sub: { clientId: string }, packet: unknown): Promise<void>
    outgoingEnqueueCombi (subs: Array<{ clientId: string }>, packet: unknown): Promise<void>
    outgoingUpdate (client: { id: string }, packet: unknown): Promise<void>
    outgoingClearMessageId (client: { id: string }, packet: unknown): Promise<{ payload?: unknown } | undefined>
    outgoingStream (client: { id: string }): Readable
    delWill (client: { id: string }): Promise<unknown>
  }
}
