declare module 'aedes-persistence-redis' {
  import type { Redis } from 'ioredis'
  interface AedesPersistenceRedisOptions {
    conn?: Redis
    maxSessionDelivery?: number
    packetTTL?: (packet: unknown) => number
    [key: string]: unknown
  }
  function aedesPersistenceRedis (opts?: AedesPersistenceRedisOptions): unknown
  export default aedesPersistenceRedis
}
