/** The memory persistence class of aedes-persistence 11 (its own types do not cover this subpath). */
declare module 'aedes-persistence/asyncPersistence.js' {
  export default class MemoryPersistence {
    constructor ()
    setup (broker: unknown): Promise<void>
    outgoingEnqueue (sub: { clientId: string }, packet: unknown): Promise<void>
    outgoingEnqueueCombi (subs: Array<{ clientId: string }>, packet: unknown): Promise<void>
    outgoingClearMessageId (client: { id: string }, packet: unknown): Promise<{ payload?: unknown } | undefined>
  }
}
