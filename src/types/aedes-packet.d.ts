declare module 'aedes-packet' {
  /** The packet shape aedes-persistence-redis stores (fields copied from `original`). */
  class Packet {
    constructor (original: object, broker?: unknown)
    cmd: string
    brokerId: string
    brokerCounter: number
    topic: string
    payload: Buffer
    qos: number
    retain: boolean
    dup: boolean
    messageId?: number
    /** Kept when Aedes copies a packet for each subscriber (the connection FanOut leaves out). */
    clientId?: string
  }
  export default Packet
}
