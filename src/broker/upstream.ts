/**
 * Every workaround for a behaviour of a dependency lives here, named after what it works around.
 * The packages touched are pinned to exact versions in package.json, and test/upstream.test.ts
 * checks each upstream behaviour directly: when an upgrade changes one, that test fails and says
 * which workaround to revisit. What is worth reporting upstream is listed in ARCHITECTURE.md.
 *
 *   aedes 1.2.0
 *     1. publishes of handled requests are re-pointed at SINK_TOPIC and skip Aedes' pipeline
 *        (skipSinkPublishes);
 *     2. the MQTT parser buffers a packet up to its claimed length (256 MB) before anything sees
 *        it: the length is checked as soon as it is parsed (limitPacketSize, mqtt-packet 9.0.2);
 *     3. a delivery to a socket that does not drain holds a slot of the shared emitter until the
 *        socket drains or drainTimeout passes, stalling every other delivery: writes never wait
 *        (neverWaitForDrain); the caller bounds what a connection may queue instead;
 *     4. the granted QoS of a subscription is recorded before authorizeSubscribe runs, so a QoS 2
 *        request is answered SUBACK 2 even if the hook lowers it: SUBSCRIBE packets are clamped
 *        to QoS 1 before Aedes sees them (grantAtMostQos1);
 *     5. Aedes calls persistence.addSubscriptions once per topic of a SUBSCRIBE, which with
 *        aedes-persistence-redis 11.2.2 + mqemitter-redis hangs multi-topic SUBSCRIBEs of
 *        persistent sessions; and its (un)subscribe calls wait without a bound for a broadcast
 *        that a Redis outage can lose (coalesceAddSubscriptions).
 *     9. a message routed to a persistent session between the restore of its subscriptions and
 *        its CONNACK is written before the CONNACK [against MQTT-3.2.0-1]; mqtt.js then waits for
 *        the PUBACK it queued for that PUBLISH and never reads the CONNACK (the connect times out):
 *        deliveries to a client wait until it is connected (connackFirst).
 *    10. a QoS 1 message is queued for the persistent sessions it matches before it is routed
 *        (enqueueOffline, then emit): a session that reconnects in between gets it twice, once
 *        from its queue and once live (over Redis the gap is a round trip); what the queue
 *        replayed is remembered for a while and not delivered again live (dropQueueReplays).
 *    11. authenticate cannot turn a persistent session into a clean one: Aedes reads the CONNECT
 *        packet's own flag after it (fetchSubs, cleanIncoming); the packet is kept from the parser
 *        so that the flag can be changed (keepConnectPacket, makeSessionClean).
 *    25. a CONNECT that fails after authenticate (a persistence call of the connect fails: Redis
 *        down, or hung until the node notices) ends the connection without a CONNACK, so the
 *        client cannot tell the server's outage from a lost network: it is answered CONNACK 3
 *        (server unavailable) first, as a refused login is (answerFailedConnect).
 *    13. a client whose connection closes while its CONNECT is between authenticate and
 *        registerClient (the persistence calls: slow with aedes-persistence-redis) is registered
 *        after it closed, and stays in broker.clients for good (close() unregistered nothing, as
 *        it was not registered yet): unregistered as it is registered (unregisterClosedClients).
 *    12. client.pause()/resume() lose count of the packets in hand: each packet that finishes
 *        while the client is paused is not counted done, so after resume() the client reads
 *        again only after that many more chunks have arrived (a client waiting for a reply
 *        waits for its keepalive): pauseReading resumes with the count reset.
 *   mqtt-packet 9.0.2 + debug 4.4.3
 *    17. debug() is called several times per packet parsed or written, and gathers its arguments
 *        even when disabled (~9 % of the broker's throughput): mqtt-packet gets no-op instances
 *        unless DEBUG enables them at start-up (src/broker/quiet-debug.ts, loaded before Aedes).
 *    18. writeToStream writes a PUBLISH in six stream writes (header, length, topic length, topic,
 *        message id, payload) and a PUBACK in three; on a held (corked) connection each becomes a
 *        buffered write request with its own objects: the PUBLISH and PUBACK packets of MQTT
 *        3.1.1 that the broker writes are built in one buffer and written once (wholePacketWrites).
 *   aedes-persistence 11.0.0 (the embedded broker's memory persistence)
 *     6. offline queues of persistent sessions are unbounded (BoundedMemoryPersistence).
 *   mqemitter 7.1.0
 *     7. with a concurrency limit, releasing a queue of messages whose handlers finish
 *        synchronously recurses once per message (stack overflow under load): the emitter runs
 *        without a limit (createEmitter), which never queues; 3. keeps deliveries from piling up.
 *   aedes-persistence-redis 11.2.2
 *    14. a persistent session's offline queue (a Redis list of packet keys) grows without bound
 *        (packets expire after packetTTL, their list entries do not; a reconnect replays only the
 *        oldest maxSessionDelivery): each list is trimmed to its newest `max` entries as it grows,
 *        in the one script that queues the packet (boundRedisQueues);
 *    15. each delivery to a persistent session writes the packet again, and acknowledging it reads
 *        the packet back to find its keys and takes four sequential commands (and a live
 *        delivery's count stays at -1 for good): no write at delivery, a key remembered then, and
 *        one script for the acknowledgements of one turn of the event loop (leanRedisAcks).
 *    21. a will is stored at each CONNECT that has one and deleted at each CONNECT with commands
 *        it does not await (rejected unhandled when Redis refuses a write), a refused write fails
 *        the connect, and a stopped broker's wills go to Aedes' sweep, whose authorizePublish
 *        sees a device connected under that client id as their publisher: mqim, which never
 *        publishes wills, stores none and hands none out (noRedisWills).
 *    22. a reconnecting session's queue is replayed one GET per packet, each after the last, and
 *        an entry whose packet expired is removed with an LREM it does not await (rejected
 *        unhandled while Redis refuses writes): MGET a page at a time, the removals' errors
 *        kept in a pipeline's results (batchRedisReplays).
 *    19. its matcher of offline sessions' subscriptions (a private trie) is kept by broadcasts
 *        only: what was broadcast while this node's Redis subscriber connection was down, or
 *        while the trie was being built at start, is missed for good; once built and after each
 *        reconnect it is put right from Redis (repairSubscriptionMatcher).
 *   ioredis 6.0.0
 *    23. socketTimeout destroys a connection from an expired timer, which Node runs before it reads
 *        sockets: after an event-loop stall as long as the timeout, connections whose answers are
 *        already waiting are destroyed: the timer looks again after the socket reads
 *        (socketTimeoutAfterReads).
 *    24. with autoResendUnfulfilledCommands false, the commands a lost connection had written and
 *        not had answered are forgotten at the next connection, their promises never settled: they
 *        fail when it closes (failUnanswered).
 *   mqemitter-redis 7.2.1
 *     8. close() quits its Redis connections without handling the promises: an already closed
 *        connection rejects unhandled and kills the process on a graceful stop (closeEmitterQuietly).
 *    16. a message on one of its Redis channels that is not one of its own (not msgpack, or not
 *        {id, msg}) throws out of the subscriber connection's handler, an uncaught exception that
 *        ends the process: its two handlers are replaced by the same steps, and such a message is
 *        dropped and reported (guardEmitterDecode).
 *    20. its channels are named by the topics alone, and Redis pub/sub ignores the database: two
 *        deployments (or test clusters) on one Redis server with different databases hear each
 *        other (a message to a user delivered to the other's devices of that user id, sequencer
 *        notices, subscription broadcasts): on a database other than 0 the channels are named
 *        after it too (scopeChannelsToDatabase).
 */
import type { Aedes, Client, PublishPacket } from 'aedes'
import MemoryPersistence from 'aedes-persistence/asyncPersistence.js'
import { ReplyError, type Redis } from 'ioredis'
import { Transform, pipeline, type Readable } from 'node:stream'
import { randomUUID } from 'node:crypto'
import mqemitter from 'mqemitter'
import mqemitterRedis from 'mqemitter-redis'
import { SINK_TOPIC } from '../protocol/topics.js'
import msgpack from 'msgpack-lite'
import Packet from 'aedes-packet'
import mqttPacket from 'mqtt-packet'
import type { Logger } from '../log.js'
import { within } from '../within.js'

/** The parts of an Aedes client that Aedes does not type but the workarounds touch. */
type Deliver = (packet: unknown, done: () => void) => void

interface ClientInternals {
  _parser: MqttParser
  waitForDrain: (callback: (err: Error | null, client: Client) => void) => void
  deliverQoS: Deliver
  deliver0: Deliver
  will?: unknown
  errored?: boolean
  _parsingBatch: number
  pause: () => void
  resume: () => void
}

/** The parts of the broker that Aedes does not type but workaround 13 touches. */
interface BrokerInternals {
  clients: Record<string, Client | undefined>
  unregisterClient: (client: Client) => void
}

/** The parts of mqtt-packet's Parser that limitPacketSize relies on. */
interface MqttParser {
  packet: { length: number }
  _parseLength: () => boolean
  _emitError: (err: Error) => void
  prependListener: (event: 'packet', listener: (packet: { cmd: string, clean?: boolean, subscriptions?: Array<{ qos: number }> }) => void) => unknown
}

function internals (client: Client): ClientInternals {
  return client as unknown as ClientInternals
}

/** The will packet Aedes passes to authorizePublish when it publishes a client's will. */
export function isWillOf (client: Client, packet: PublishPacket): boolean {
  return packet === internals(client).will
}

/** Aedes' own `errored` flag: set once the connection failed (writes would be lost). */
export function hasErrored (client: Client): boolean {
  return internals(client).errored === true
}

/** The largest remaining length MQTT can encode (four bytes of variable-length integer). */
const MAX_REMAINING_LENGTH = 268_435_455

type PacketWriter = (packet: object, stream: NodeJS.WritableStream, opts?: unknown) => boolean
const wholeWriter = Symbol('mqim.wholePacketWrites')

function uncork (stream: NodeJS.WritableStream & { uncork: () => void }): void {
  stream.uncork()
}

/** Options of an MQTT 3.1 or 3.1.1 writer (mqtt.js passes its client's): no MQTT 5 fields. */
function isMqtt3 (opts: unknown): boolean {
  if (typeof opts !== 'object' || opts === null) return false
  const version = (opts as { protocolVersion?: unknown }).protocolVersion
  return version === undefined || version === 3 || version === 4
}

/** An MQTT packet identifier (two bytes). */
function isPacketId (id: unknown): id is number {
  return Number.isInteger(id) && (id as number) >= 0 && (id as number) <= 0xffff
}

/**
 * The PUBLISH or PUBACK packet of MQTT 3.1.1 in one buffer, or null for anything else (another
 * packet type, MQTT 5 options or properties, a payload that is not a Buffer, an invalid field):
 * those are left to mqtt-packet, errors included. The bytes are mqtt-packet's own
 * (test/unit/upstream.test.ts compares them with generate()).
 */
export function wholePacket (packet: { cmd?: unknown, properties?: unknown, topic?: unknown, payload?: unknown, qos?: unknown, messageId?: unknown, dup?: unknown, retain?: unknown }): Buffer | null {
  if (packet.properties !== undefined) return null
  const id = packet.messageId
  if (packet.cmd === 'puback') {
    if (!isPacketId(id)) return null
    const bytes = Buffer.allocUnsafe(4)
    bytes[0] = 0x40
    bytes[1] = 2
    bytes.writeUInt16BE(id, 2)
    return bytes
  }
  if (packet.cmd !== 'publish') return null
  const { topic, payload } = packet
  const qos = packet.qos === undefined ? 0 : packet.qos
  if (typeof topic !== 'string' || !Buffer.isBuffer(payload) || (qos !== 0 && qos !== 1 && qos !== 2)) return null
  if (qos > 0 && !isPacketId(id)) return null
  const topicBytes = Buffer.byteLength(topic)
  if (topicBytes > 0xffff) return null
  const length = 2 + topicBytes + (qos > 0 ? 2 : 0) + payload.length
  if (length > MAX_REMAINING_LENGTH) return null
  const lengthBytes = length < 128 ? 1 : length < 16_384 ? 2 : length < 2_097_152 ? 3 : 4
  const bytes = Buffer.allocUnsafe(1 + lengthBytes + length)
  // dup and retain as mqtt-packet reads them (truthy)
  const dup = Boolean(packet.dup)
  const retain = Boolean(packet.retain)
  bytes[0] = 0x30 | (dup ? 0x08 : 0) | (qos << 1) | (retain ? 0x01 : 0)
  let at = 1
  let left = length
  do {
    const digit = left % 128
    left = Math.floor(left / 128)
    bytes[at++] = left > 0 ? digit | 0x80 : digit
  } while (left > 0)
  bytes.writeUInt16BE(topicBytes, at)
  at += 2
  at += bytes.write(topic, at)
  if (qos > 0) {
    bytes.writeUInt16BE(id as number, at)
    at += 2
  }
  payload.copy(bytes, at)
  return bytes
}

/**
 * 18. mqtt-packet's writeToStream, as Aedes calls it (no options: MQTT 3.1.1), writes a PUBLISH or
 * PUBACK in one buffer, corking the stream until the next tick as writeToStream does (packets
 * written in the same tick still leave together); everything else goes to mqtt-packet. The module
 * export is replaced (Aedes looks it up at each write, and so does mqtt.js, which passes its
 * options: those of MQTT 3.1 and 3.1.1, whose PUBLISH and PUBACK are the same, are written whole
 * too), once per process.
 */
export function wholePacketWrites (): void {
  const target = mqttPacket as unknown as { writeToStream: PacketWriter & { [wholeWriter]?: true } }
  if (target.writeToStream[wholeWriter] === true) return
  const original = target.writeToStream
  const write: PacketWriter & { [wholeWriter]?: true } = (packet, stream, opts) => {
    const bytes = opts === undefined || isMqtt3(opts) ? wholePacket(packet) : null
    if (bytes === null) return original(packet, stream, opts)
    const corkable = stream as NodeJS.WritableStream & { cork?: () => void, uncork: () => void }
    if (typeof corkable.cork === 'function') {
      corkable.cork()
      process.nextTick(uncork, corkable)
    }
    return stream.write(bytes)
  }
  write[wholeWriter] = true
  // mqtt.js sets writeToStream.cacheNumbers (its writeCache option): mqtt-packet's own writer reads it
  Object.defineProperty(write, 'cacheNumbers', {
    get: () => (original as unknown as { cacheNumbers: boolean }).cacheNumbers,
    set: (value: boolean) => { (original as unknown as { cacheNumbers: boolean }).cacheNumbers = value }
  })
  target.writeToStream = write
}

/** 1. Publishes to SINK_TOPIC complete at once without routing (handled requests). */
export function skipSinkPublishes (broker: Aedes): void {
  type Done = (err?: Error) => void
  const target = broker as unknown as { publish: (packet: PublishPacket, client?: unknown, done?: Done) => void }
  const publish = target.publish.bind(broker)
  target.publish = (packet, client, done) => {
    if (packet.topic !== SINK_TOPIC) { publish(packet, client, done); return }
    const cb = typeof client === 'function' ? client as Done : done
    if (cb !== undefined) process.nextTick(cb)
  }
}

export class PacketTooLargeError extends Error {
  constructor (readonly length: number, readonly limit: number) {
    super(`MQTT packet of ${length} bytes exceeds the limit of ${limit} bytes`)
    this.name = 'PacketTooLargeError'
  }
}

/**
 * 2. The first packet of a connection (CONNECT) may claim at most `connectLimit` bytes, every
 * later one `limit`. The check runs as soon as the remaining-length field is parsed, before the
 * body is buffered; a packet over the limit is a parser error, and Aedes closes the connection.
 */
export function limitPacketSize (client: Client, connectLimit: number, limit: number): void {
  const parser = internals(client)._parser
  const parseLength = parser._parseLength
  let first = true
  parser._parseLength = function (this: MqttParser): boolean {
    const parsed = parseLength.call(this)
    if (!parsed) return false
    const max = first ? connectLimit : limit
    first = false
    if (this.packet.length > max) {
      this._emitError(new PacketTooLargeError(this.packet.length, max))
      return false
    }
    return true
  }
}

/**
 * 3. When a write finds the socket's buffer full, Aedes would wait for 'drain' before completing
 * the delivery (and freeing its emitter slot). Instead the delivery completes at once and
 * `onBackpressure` is told: the caller bounds the bytes queued and the time without draining.
 */
export function neverWaitForDrain (client: Client, onBackpressure: (client: Client) => void): void {
  internals(client).waitForDrain = (callback) => {
    onBackpressure(client)
    setImmediate(callback, null, client)
  }
}

/**
 * 13. A client registered after its connection closed (see the list above) is unregistered at
 * once, through Aedes' own unregisterClient (clientDisconnect is emitted as for any other).
 */
export function unregisterClosedClients (broker: Aedes): void {
  const b = broker as unknown as BrokerInternals
  broker.on('client', (client: Client) => {
    if (client.closed && b.clients[client.id] === client) b.unregisterClient(client)
  })
}

const pausedReading = new WeakSet<Client>()

/**
 * 12. Reads nothing more from the client for `ms` (the socket's buffer fills, then TCP holds the
 * sender back), then reads on. Aedes counts the packets it has handed on and reads the next chunk
 * when they are done; a packet finishing during pause() is not counted, so resume() alone can
 * leave the count above zero and the client unread: it is reset (every packet read before has
 * been handed on; those still running finish as they would). A client already paused here is left
 * as it is.
 */
export function pauseReading (client: Client, ms: number): void {
  if (ms <= 0 || pausedReading.has(client)) return
  pausedReading.add(client)
  const c = internals(client)
  c.pause()
  setTimeout(() => {
    pausedReading.delete(client)
    if (stoppedReading.has(client)) return
    c._parsingBatch = 1
    c.resume()
  }, ms).unref()
}

const stoppedReading = new WeakSet<Client>()

/**
 * 12. Hands nothing more the client sends to Aedes, for good: what arrives is read and dropped
 * (so the socket sees the peer's end and closes cleanly instead of being reset with unread data,
 * which would also drop what was still to be sent to it). Packets already parsed finish as they
 * would.
 */
export function stopReading (client: Client): void {
  if (stoppedReading.has(client)) return
  stoppedReading.add(client)
  internals(client).pause()
  const conn = client.conn
  conn.removeAllListeners('readable')
  conn.on('data', () => {})
}

/** CONNACK with return code 3 (server unavailable) and no session present, as MQTT 3.1 and 3.1.1 write it. */
const CONNACK_UNAVAILABLE = Buffer.from([0x20, 0x02, 0x00, 0x03])

/**
 * 25. An error while the client's CONNECT is set up after authenticate (Aedes' persistence calls:
 * fetchSubs, storeWill, cleanIncoming; or its keepalive running out meanwhile) is answered
 * CONNACK 3 before Aedes closes the connection: written to the connection directly, as Aedes'
 * error handler destroys it in the same turn. Not once anything was written to the connection
 * (a CONNACK: nothing else goes before it, see connackFirst; Aedes marks it sent only a turn after
 * writing it, so its flag is not enough), nor before a login, nor to a connection closed or gone.
 * The watch on the connection's writes ends once the client is connected.
 */
export function answerFailedConnect (client: Client): void {
  const c = client as unknown as ClientInternals & { _authorized?: boolean, closed?: boolean }
  type Write = (...args: unknown[]) => boolean
  const conn = client.conn as unknown as { write: Write, destroyed?: boolean, writable?: boolean }
  const write = conn.write
  let wrote = false
  const watched: Write = function (this: unknown, ...args) {
    wrote = true
    return write.apply(this, args)
  }
  conn.write = watched
  const answer = (): void => {
    if (!wrote && c._authorized === true && c.closed !== true && c.errored !== true && conn.destroyed !== true && conn.writable === true) write.call(conn, CONNACK_UNAVAILABLE)
  }
  client.prependListener('error', answer)
  client.once('connected', () => {
    client.off('error', answer)
    // the stream's own write again, unless something wrapped it since (assigned, not deleted: a
    // deleted property turns a socket's object into a slower dictionary in V8)
    if (conn.write === watched) conn.write = write
  })
}

const connectPackets = new WeakMap<object, { clean?: boolean }>()

/** 11. Keeps the client's CONNECT packet, the object Aedes' connect handler reads. */
export function keepConnectPacket (client: Client): void {
  internals(client)._parser.prependListener('packet', (packet) => {
    if (packet.cmd === 'connect') connectPackets.set(client, packet)
  })
}

/**
 * 11. During authenticate: the session being set up is clean (nothing restored, nothing kept
 * after the connection), whatever the CONNECT asked for. False if the packet was not kept.
 */
export function makeSessionClean (client: Client): boolean {
  const packet = connectPackets.get(client)
  if (packet === undefined) return false
  packet.clean = true
  client.clean = true
  return true
}

/** 4. SUBSCRIBE requests for QoS 2 become QoS 1 before Aedes records (and acknowledges) them. */
export function grantAtMostQos1 (client: Client): void {
  internals(client)._parser.prependListener('packet', (packet) => {
    if (packet.cmd !== 'subscribe' || packet.subscriptions === undefined) return
    for (const s of packet.subscriptions) if (s.qos > 1) s.qos = 1
  })
}

/**
 * 9. Deliveries to a client that is not connected yet (CONNACK and, for a persistent session, its
 * queued messages not yet written) wait, in order, and go out once it is: after the queue, so a
 * device still gets a conversation's messages in seq order (one both queued and routed live is
 * written once: see 10). The emitter is told at once that the
 * delivery is done (the connect may itself wait for the publish). At most `max` wait; beyond,
 * they are not delivered live (clients sync by seq). If the connection ends first, they are dropped.
 */
export function connackFirst (client: Client, max = 1000): void {
  const c = internals(client)
  let waiting: Array<{ deliver: Deliver, packet: unknown }> | null = []
  const defer = (deliver: Deliver): Deliver => (packet, done) => {
    if (waiting === null) { deliver(packet, done); return }
    // the emitter is released at once: the connect itself may be waiting for this publish
    setImmediate(done)
    if (waiting.length < max) waiting.push({ deliver, packet })
  }
  c.deliverQoS = defer(c.deliverQoS)
  c.deliver0 = defer(c.deliver0)
  client.once('connected', () => {
    const ready = waiting ?? []
    waiting = null
    for (const w of ready) w.deliver(w.packet, noop)
  })
  client.conn.once('close', () => { waiting = null })
}

function noop (): void {}

interface QueuedIdentity { brokerId?: string, brokerCounter?: number }

/** The messages a session's queue replayed on its connection, by the broker's own identity. */
const replayed = new WeakMap<object, Set<string>>()

function identity (packet: QueuedIdentity): string | undefined {
  return typeof packet.brokerId === 'string' && typeof packet.brokerCounter === 'number'
    ? `${packet.brokerId}\u0000${packet.brokerCounter}`
    : undefined
}

interface OutgoingStreamStore { outgoingStream: (client: object) => Readable }

/**
 * 10 (the persistence half). Aedes reads a reconnecting session's queue with
 * persistence.outgoingStream(client) and writes every packet it yields; each packet's identity
 * (brokerId, brokerCounter, the same on the live copy) is remembered for that client, at most
 * `max` (the queue's own bound).
 */
export function recordQueueReplays<T> (persistence: T, max: number): T {
  const store = persistence as unknown as OutgoingStreamStore
  const stream = store.outgoingStream.bind(store)
  store.outgoingStream = (client) => {
    // a clean session has no queue to replay (Aedes reads it anyway)
    if ((client as { clean?: boolean }).clean === true) return stream(client)
    const keys = new Set<string>()
    replayed.set(client, keys)
    const tap = new Transform({
      objectMode: true,
      transform (packet: QueuedIdentity, _enc, next) {
        const key = identity(packet)
        if (key !== undefined && keys.size < max) keys.add(key)
        next(null, packet)
      }
    })
    // an error of the source destroys `tap` with it, which is what Aedes' own pipeline sees
    pipeline(stream(client), tap, noop)
    return tap
  }
  return persistence
}

/**
 * 10 (the client half). A live delivery of a message the client's queue already replayed is
 * dropped (the queued copy is the one awaiting PUBACK). Installed before connackFirst, so the
 * deliveries held until the queue is written are checked when they are released. The memory of
 * replays ends `windowMs` after the client is connected: by then the live copy of anything that
 * was queued has long been routed.
 */
export function dropQueueReplays (client: Client, windowMs = 10_000): void {
  const c = internals(client)
  const deliver = c.deliverQoS
  c.deliverQoS = (packet, done) => {
    const keys = replayed.get(client)
    const key = keys === undefined ? undefined : identity(packet as QueuedIdentity)
    if (key !== undefined && keys?.delete(key) === true) { setImmediate(done); return }
    deliver(packet, done)
  }
  client.once('connected', () => {
    if (replayed.has(client)) setTimeout(() => replayed.delete(client), windowMs).unref()
  })
}

interface SubscriptionStore {
  addSubscriptions: (client: { id: string, closed?: boolean }, subs: Array<{ topic: string, qos: number }>) => Promise<unknown>
  removeSubscriptions?: (client: { id: string, closed?: boolean }, topics: string[]) => Promise<unknown>
  cleanSubscriptions?: (client: { id: string, closed?: boolean }) => Promise<unknown>
}

/** How long a persistent session's (un)subscribe waits for its broadcast to come back (5.). */
export const SUBSCRIPTION_BROADCAST_TIMEOUT_MS = 5000

/** Thrown when a (un)subscribe's broadcast did not come back in time (5.). */
export class SubscriptionBroadcastTimeoutError extends Error {
  constructor (call: string, ms: number) {
    super(`${call}: the subscription broadcast did not come back within ${ms} ms`)
    this.name = 'SubscriptionBroadcastTimeoutError'
  }
}

/**
 * 5. Aedes 1.2 calls persistence.addSubscriptions(client, allSubscriptionsOfThePacket) once per
 * subscription of a SUBSCRIBE packet, concurrently. aedes-persistence-redis then waits for its
 * own `$SYS/sub/add` broadcast to come back through the emitter, keyed by (client, first topic):
 * a second call with the same key overwrites the first's waiter, the first broadcast back answers
 * the second call, and the first call waits for good. With mqemitter-redis the broadcasts come
 * back after all the calls have registered, so a multi-topic SUBSCRIBE of a clean=false client
 * never got its SUBACK; two SUBSCRIBEs of one client that start with the same topic (in one
 * read, or a client's and the server's own on a channel join) do the same. So a client's calls
 * run one after the other (removals likewise, on a lane of their own), and identical calls
 * waiting or running together are made once and share the result.
 *
 * That wait (and removeSubscriptions', for an UNSUBSCRIBE, and so cleanSubscriptions', for a clean
 * CONNECT of a session that was persistent) has no bound: a broadcast published while this node's
 * subscriber connection to Redis is down, or re-subscribing after an outage, never comes back.
 * The call then hung for good, and with it, shared, every later SUBSCRIBE of the same client and
 * topics: the session could not subscribe again until the process restarted (the CI run of
 * 4624558: a drill's two persistent receivers, after a Redis outage). Each call now fails after
 * `timeoutMs` (`onTimeout` is told; Aedes closes the connection; the client reconnects and
 * subscribes again, afresh); a call whose turn comes after its connection closed fails at once.
 * What a lost broadcast leaves (the subscription stored in Redis, the nodes' matchers of offline
 * sessions not told) is repaired by the next SUBSCRIBE of the same topics.
 */
export function coalesceAddSubscriptions<T> (persistence: T, timeoutMs = SUBSCRIPTION_BROADCAST_TIMEOUT_MS, onTimeout?: (call: string, clientId: string) => void): T {
  const store = persistence as unknown as SubscriptionStore
  /** `add|rm \0 clientId` -> the end of the client's last call on that lane */
  const lanes = new Map<string, Promise<unknown>>()
  const inLane = async (lane: 'add' | 'rm', client: { id: string, closed?: boolean }, call: string, run: () => Promise<unknown>): Promise<unknown> => {
    const key = `${lane}\u0000${client.id}`
    const p = (lanes.get(key) ?? Promise.resolve()).catch(() => {}).then(async () => {
      if (client.closed === true) throw new Error(`${call}: the connection closed`)
      try {
        return await within(run(), timeoutMs, () => new SubscriptionBroadcastTimeoutError(call, timeoutMs))
      } catch (err) {
        if (err instanceof SubscriptionBroadcastTimeoutError) onTimeout?.(call, client.id)
        throw err
      }
    })
    lanes.set(key, p)
    const forget = (): void => { if (lanes.get(key) === p) lanes.delete(key) }
    p.then(forget, forget)
    return await p
  }
  const add = store.addSubscriptions.bind(store)
  const inFlight = new Map<string, Promise<unknown>>()
  store.addSubscriptions = async (client, subs) => {
    const key = `${client.id}\u0000${subs.map(s => `${s.topic}\u0001${s.qos}`).join('\u0000')}`
    const running = inFlight.get(key)
    if (running !== undefined) return await running
    const p = inLane('add', client, 'addSubscriptions', async () => await add(client, subs)).finally(() => inFlight.delete(key))
    inFlight.set(key, p)
    return await p
  }
  const remove = store.removeSubscriptions?.bind(store)
  if (remove !== undefined) store.removeSubscriptions = async (client, topics) => await inLane('rm', client, 'removeSubscriptions', async () => await remove(client, topics))
  const clean = store.cleanSubscriptions?.bind(store)
  if (clean !== undefined) store.cleanSubscriptions = async (client) => await inLane('rm', client, 'cleanSubscriptions', async () => await clean(client))
  return persistence
}

interface QueuedPacket { payload?: unknown }

export interface SessionQueueLimits {
  /** Messages kept per session; later ones are not queued. */
  messages: number
  /** Payload bytes kept per session. */
  bytes: number
}

/**
 * 6. Aedes' memory persistence with bounded offline queues: a persistent session (clean=false)
 * keeps at most `limits.messages` queued messages and `limits.bytes` of their payloads; messages
 * beyond are not queued (the client fills the gap by seq with `history`). Counts go down when a
 * queued message is acknowledged (outgoingClearMessageId), the only way one leaves the queue.
 * A payload that is a view of a larger buffer (an envelope in the envelope cache's slab, a slice
 * of Node's Buffer pool) is queued as a copy of its own: a queued message holds its bytes only,
 * not the whole slab, so the byte bound is what the queue holds.
 */
export class BoundedMemoryPersistence extends MemoryPersistence {
  private readonly queued = new Map<string, { messages: number, bytes: number }>()
  /** Messages not queued because a session's queue was full. */
  dropped = 0

  constructor (private readonly limits: SessionQueueLimits) {
    super()
  }

  private admit (clientId: string, packet: QueuedPacket): boolean {
    const size = payloadSize(packet)
    const q = this.queued.get(clientId) ?? { messages: 0, bytes: 0 }
    if (q.messages + 1 > this.limits.messages || q.bytes + size > this.limits.bytes) {
      this.dropped++
      return false
    }
    q.messages++
    q.bytes += size
    this.queued.set(clientId, q)
    return true
  }

  override async outgoingEnqueue (sub: { clientId: string }, packet: QueuedPacket): Promise<void> {
    if (this.admit(sub.clientId, packet)) await super.outgoingEnqueue(sub, ownPayload(packet))
  }

  override async outgoingEnqueueCombi (subs: Array<{ clientId: string }>, packet: QueuedPacket): Promise<void> {
    const admitted = subs.filter(s => this.admit(s.clientId, packet))
    if (admitted.length > 0) await super.outgoingEnqueueCombi(admitted, ownPayload(packet))
  }

  /**
   * A live delivery to a connected persistent session whose queue was full (so the message was not
   * queued): the memory persistence throws "no such packet", and Aedes then errors the client,
   * which closes the connection (a session replaying a full queue lost its connection to the next
   * live message). Such a message is sent untracked instead: if the device goes before it
   * acknowledges it, it syncs it by seq like everything else the bound kept out.
   */
  override async outgoingUpdate (client: { id: string }, packet: QueuedPacket): Promise<void> {
    try {
      await super.outgoingUpdate(client, packet)
    } catch (err) {
      if ((err as Error).message !== 'no such packet') throw err
      this.untracked++
    }
  }

  /** Live deliveries sent untracked because the session's queue was full (see outgoingUpdate). */
  untracked = 0

  override async outgoingClearMessageId (client: { id: string }, packet: { messageId?: number }): Promise<QueuedPacket | undefined> {
    const removed: QueuedPacket | undefined = await super.outgoingClearMessageId(client, packet)
    const q = this.queued.get(client.id)
    if (removed !== undefined && q !== undefined) {
      q.messages--
      q.bytes -= payloadSize(removed)
      if (q.messages <= 0) this.queued.delete(client.id)
    }
    return removed
  }

  /** Queued messages of one session as counted here (for tests and health). */
  queuedOf (clientId: string): { messages: number, bytes: number } {
    return { ...(this.queued.get(clientId) ?? { messages: 0, bytes: 0 }) }
  }
}

/** The packet with its payload in a buffer of its own (the same packet when it already is). */
function ownPayload (packet: QueuedPacket): QueuedPacket {
  const payload = packet.payload
  if (!Buffer.isBuffer(payload) || payload.byteLength === payload.buffer.byteLength) return packet
  const own = Buffer.allocUnsafeSlow(payload.length)
  payload.copy(own)
  packet.payload = own
  return packet
}

function payloadSize (packet: QueuedPacket): number {
  const p = packet.payload
  return Buffer.isBuffer(p) ? p.length : typeof p === 'string' ? Buffer.byteLength(p) : 0
}

/**
 * 7. The embedded broker's emitter, without a concurrency limit: with one, messages beyond the
 * limit are queued and released recursively (mqemitter's `released` -> `_do` -> `released` ...
 * when handlers complete synchronously, e.g. a message nobody subscribes to), which overflowed the
 * stack after a stuck socket had filled the slots. Deliveries no longer hold slots (3.), so a limit
 * would only add that hazard.
 */
export function createEmitter (): unknown {
  return mqemitter({ concurrency: 0, matchEmptyLevels: true })
}

/**
 * The cluster's emitter: mqemitter-redis on two connections of the project's ioredis. Its typings
 * name its own ioredis (5), whose Redis type ioredis 6's does not match; the calls it makes on the
 * connections are the same in both.
 */
export function createRedisEmitter (pubConn: Redis, subConn: Redis): unknown {
  return mqemitterRedis({ pubConn, subConn, matchEmptyLevels: true } as unknown as Parameters<typeof mqemitterRedis>[0])
}

/** The Redis channel (or pattern) of an emitter topic on database `db` (see scopeChannelsToDatabase). */
export function emitterChannel (db: number, topic: string): string {
  return db === 0 ? topic : `mqim/db${db}/${topic}`
}

/**
 * 20. The emitter's Redis channels prefixed with `mqim/db<db>/` when `db` is not 0 (on 0 they stay
 * as they were: nodes of an earlier version on database 0 still hear these). Subscriptions go
 * through _subTopic, publishes through emit (mqemitter-redis 7.2.1's steps, on the prefixed
 * channel); what is received carries its own topic, so delivery is unchanged. (A filter starting
 * with a wildcard on database 0 would match other databases' channels, Redis' `*` matching `/`:
 * the filters that reach the emitter are mqim's own and those authorizeSubscribe grants clients,
 * none of which starts with one.)
 * Returns the emitter.
 */
export function scopeChannelsToDatabase<T> (mq: T, db: number): T {
  if (db === 0) return mq
  const prefix = emitterChannel(db, '')
  const e = mq as unknown as { _subTopic: (topic: string) => string, emit: (msg: { topic: string }, done?: (err?: Error) => void) => void, closed?: boolean, pubConn: Redis, _onError: (err?: Error) => void }
  if (typeof e._subTopic !== 'function' || typeof e._onError !== 'function' || typeof e.pubConn?.publish !== 'function') throw new Error('mqemitter-redis without _subTopic, _onError or pubConn (workaround 20 needs revisiting)')
  const subTopic = e._subTopic.bind(e)
  e._subTopic = (topic) => prefix + subTopic(topic)
  e.emit = (msg, done) => {
    const callback = done ?? e._onError
    if (e.closed === true) {
      callback(new Error('mqemitter-redis is closed'))
      return
    }
    e.pubConn.publish(prefix + msg.topic, msgpack.encode({ id: randomUUID(), msg })).then(() => { callback() }, callback)
      .catch((err: Error) => { e._onError(err) })
  }
  return mq
}

/** mqemitter-redis' `state` emitter (not in its typings), where it re-emits its connections' errors. */
export function emitterState (mq: unknown): NodeJS.EventEmitter {
  return (mq as { state: NodeJS.EventEmitter }).state
}

/**
 * The emitter's delivery to this node's own subscribers only (mqemitter-redis keeps MQEmitter's
 * emit as `_emit`, which is what it calls with each message its subscriber connection receives;
 * on the in-process emitter, emit itself). Used by the fan-out (src/broker/fanout.ts).
 */
export function localEmitter (mq: unknown): (message: object) => void {
  const e = mq as { _emit?: (message: object) => void, emit: (message: object) => void }
  const emit = e._emit ?? e.emit
  if (typeof emit !== 'function') throw new Error('emitter without emit: src/broker/fanout.ts needs revisiting')
  return (message) => { emit.call(e, message) }
}

/** What workaround 16 replaces of mqemitter-redis 7.2.1 (none of it is in its typings). */
interface RedisEmitterInternals {
  subConn: Redis
  _ignoredTopicsSet: Set<string>
  _cache: { get: (id: string) => unknown, set: (id: string, value: boolean) => unknown }
  _emit: (msg: unknown) => void
}

type Listener = (...args: unknown[]) => void

/**
 * 16. mqemitter-redis' two subscriber listeners (`messageBuffer`, `pmessageBuffer`, one each:
 * anything else means the package changed, and start-up fails) are replaced by the same steps
 * with the decode guarded: a message that is not one of the emitter's (anything published on its
 * channels by something else with access to Redis) is reported and dropped instead of throwing
 * inside ioredis' reply handler; so is one whose local delivery throws (a topic of more levels than
 * the emitter's matcher takes). The codec stays msgpack-lite (msgpackr was tried: no CPU saved in
 * the cluster soak, and each node's RSS 200 MB higher). Returns the emitter.
 */
export function guardEmitterDecode<T> (mq: T, onUndecodable: (err: Error, topic: string) => void): T {
  const e = mq as unknown as RedisEmitterInternals
  for (const event of ['messageBuffer', 'pmessageBuffer']) {
    if (e.subConn.listenerCount(event) !== 1) throw new Error(`mqemitter-redis: expected one '${event}' listener on its subscriber connection, found ${e.subConn.listenerCount(event)} (workaround 16 needs revisiting)`)
    e.subConn.removeAllListeners(event)
  }
  const handle = (topicBuffer: Buffer, payload: Buffer): void => {
    const topic = topicBuffer.toString('utf8')
    if (e._ignoredTopicsSet.has(topic)) return
    let packet: { id?: unknown, msg?: unknown }
    try {
      packet = msgpack.decode(payload) as typeof packet
    } catch (err) {
      onUndecodable(err as Error, topic)
      return
    }
    if (typeof packet !== 'object' || packet === null || packet.id === undefined || packet.id === null ||
      typeof packet.msg !== 'object' || packet.msg === null || typeof (packet.msg as { topic?: unknown }).topic !== 'string') {
      onUndecodable(new Error('not an mqemitter-redis message'), topic)
      return
    }
    const id = String(packet.id)
    // a message that matches several of this connection's subscriptions comes once per match
    if (e._cache.get(id) !== undefined) return
    e._cache.set(id, true)
    try {
      e._emit(packet.msg)
    } catch (err) {
      // e.g. a topic of more levels than the emitter's matcher takes (it throws `too many words`)
      onUndecodable(err as Error, topic)
    }
  }
  e.subConn.on('messageBuffer', ((topic: Buffer, message: Buffer) => { handle(topic, message) }) as Listener)
  e.subConn.on('pmessageBuffer', ((_pattern: Buffer, topic: Buffer, message: Buffer) => { handle(topic, message) }) as Listener)
  return mq
}

/**
 * 8. mqemitter-redis' close() (called by Aedes' broker.close()) quits both of its connections
 * without handling the promises. Close only the emitter; the owner quits the connections.
 */
export function closeEmitterQuietly (mq: unknown): void {
  const emitter = mq as { closing: boolean, _close: (cb: () => void) => void, close: (cb?: () => void) => void }
  emitter.close = (cb) => {
    emitter.closing = true
    emitter._close(cb ?? (() => {}))
  }
}

/** The parts of aedes-persistence-redis 11 that workarounds 14 and 15 replace. */
interface RedisOutgoingStore {
  outgoingEnqueueCombi: (subs: Array<{ clientId: string }> | null | undefined, packet: object) => Promise<void>
  /** Added by boundRedisQueues: several packets, each with the subscriptions it is queued for, in one script. */
  outgoingEnqueueMany: (entries: Array<{ subs: Array<{ clientId: string }>, packet: object }>) => Promise<void>
  outgoingUpdate: (client: { id: string }, packet: OutgoingPacket) => Promise<void>
  outgoingClearMessageId: (client: { id: string }, packet: { messageId?: number }) => Promise<unknown>
}

interface OutgoingPacket { cmd?: string, qos?: number, messageId?: number, brokerId?: string, brokerCounter?: number }

/** The Redis key of a session's offline queue in aedes-persistence-redis 11 (its outgoingKey). */
export function redisQueueKey (clientId: string): string {
  return `outgoing:${encodeURIComponent(clientId)}`
}

/** The key of a stored packet in aedes-persistence-redis 11 (its packetKey). */
export function redisPacketKey (brokerId: string, brokerCounter: number | string): string {
  return `packet:${brokerId}:${brokerCounter}`
}

/** The key of a stored packet's count of queues holding it (its packetCountKey; ENQUEUE_LUA derives it the same way). */
function redisCountKey (packetKey: string): string {
  return `${packetKey}:offlineCount`
}

/**
 * Stores packets and queues them: ARGV[1] is the expiry in seconds (0: never) and ARGV[2] the
 * bound of a queue, then per packet ARGV holds its number of queues n and its encoded bytes, and
 * KEYS its key, its count's key and its n queues. Each packet is stored with its count of queues
 * (both expiring), appended to each of its queues, and each queue trimmed to its newest entries;
 * each packet trimmed off loses one reference and is deleted with its count when none is left (as
 * an acknowledgement would do). Keys of trimmed packets are derived from the list's entries, as
 * the persistence itself does: a single Redis, not Redis Cluster. Returns the entries appended.
 */
const ENQUEUE_LUA = `
local ttl = tonumber(ARGV[1])
local max = tonumber(ARGV[2])
local k = 1
local appended = 0
for a = 3, #ARGV, 2 do
  local queues = tonumber(ARGV[a])
  local packet = KEYS[k]
  if ttl > 0 then
    redis.call('SET', packet, ARGV[a + 1], 'EX', ttl)
    redis.call('SET', KEYS[k + 1], queues, 'EX', ttl)
  else
    redis.call('SET', packet, ARGV[a + 1])
    redis.call('SET', KEYS[k + 1], queues)
  end
  for i = k + 2, k + 1 + queues do
    redis.call('RPUSH', KEYS[i], packet)
    local extra = redis.call('LLEN', KEYS[i]) - max
    if extra > 0 then
      local old = redis.call('LRANGE', KEYS[i], 0, extra - 1)
      redis.call('LTRIM', KEYS[i], extra, -1)
      for _, key in ipairs(old) do
        if redis.call('DECR', key .. ':offlineCount') <= 0 then redis.call('DEL', key, key .. ':offlineCount') end
      end
    end
  end
  k = k + 2 + queues
  appended = appended + queues
end
return appended`

/**
 * Acknowledged packets, three keys each: a packet (KEYS[i + 1]) leaves its session's queue (KEYS[i])
 * and loses the references (KEYS[i + 2]) its entries there held; with none left it is deleted with
 * its count. A packet no longer in this queue (trimmed off, which released its reference already;
 * or delivered live to a session it was not queued for) loses nothing, and is deleted only if no
 * queue counts it at all. In order, as separate scripts would.
 */
const ACKS_LUA = `
for i = 1, #KEYS, 3 do
  local removed = redis.call('LREM', KEYS[i], 0, KEYS[i + 1])
  if removed > 0 then
    if redis.call('DECRBY', KEYS[i + 2], removed) <= 0 then redis.call('DEL', KEYS[i + 1], KEYS[i + 2]) end
  elseif redis.call('EXISTS', KEYS[i + 2]) == 0 then
    redis.call('DEL', KEYS[i + 1])
  end
end
return 0`

type ScriptedRedis = Redis & {
  mqimEnqueue: (...args: Array<string | number | Buffer>) => Promise<number>
  mqimAcks: (...args: Array<string | number>) => Promise<number>
}

function scripted (conn: Redis): ScriptedRedis {
  if (!('mqimEnqueue' in conn)) conn.defineCommand('mqimEnqueue', { lua: ENQUEUE_LUA })
  if (!('mqimAcks' in conn)) conn.defineCommand('mqimAcks', { lua: ACKS_LUA })
  return conn as ScriptedRedis
}

/**
 * Acknowledgements released by one script at most (a bigger batch goes in several): each LREM
 * walks its queue, up to `max` entries, and a script holds Redis for all of them, so a script
 * walks about a million entries at most, whatever the queues' bound.
 */
export function acksPerScript (queueMax: number): number {
  return Math.max(16, Math.min(1000, Math.floor(1_000_000 / Math.max(1, queueMax))))
}

/** Keys of one enqueue script at most (outgoingEnqueueMany sends more in several). */
const ENQUEUE_KEYS_PER_SCRIPT = 4096

/**
 * 14. A packet queued for sessions is stored, counted, appended to each session's queue and each
 * queue trimmed to its newest `max` entries, in one script (one command instead of 4 + 2 per
 * session; the packets trimmed off released as if acknowledged). outgoingEnqueueMany (added here,
 * used by the fan-out) queues the packets of several topics in one script. What is trimmed is the oldest: a
 * reconnect replays what is left, the client syncs the rest by seq. The packet is stored as the
 * persistence stores it (msgpack of an aedes-packet Packet), so its own reader (outgoingStream)
 * reads it unchanged.
 */
export function boundRedisQueues<T> (persistence: T, conn: Redis, opts: { max: number, ttlSeconds: number }): T {
  const store = persistence as unknown as RedisOutgoingStore
  const redis = scripted(conn)
  store.outgoingEnqueueCombi = async (subs, packet) => {
    if (subs === null || subs === undefined || subs.length === 0) return
    await store.outgoingEnqueueMany([{ subs, packet }])
  }
  store.outgoingEnqueueMany = async (entries) => {
    // several scripts for many entries (a script's arguments are spread into one call), sent in order
    const scripts: Array<Promise<number>> = []
    let keys: string[] = []
    let args: Array<string | number | Buffer> = [opts.ttlSeconds, opts.max]
    for (const { subs, packet } of entries) {
      if (subs.length === 0) continue
      const p = packet as { brokerId: string, brokerCounter: number }
      const key = redisPacketKey(p.brokerId, p.brokerCounter)
      keys.push(key, redisCountKey(key))
      for (const sub of subs) keys.push(redisQueueKey(sub.clientId))
      args.push(subs.length, msgpack.encode(new Packet(packet)))
      if (keys.length >= ENQUEUE_KEYS_PER_SCRIPT) {
        scripts.push(redis.mqimEnqueue(keys.length, ...keys, ...args))
        keys = []
        args = [opts.ttlSeconds, opts.max]
      }
    }
    if (keys.length > 0) scripts.push(redis.mqimEnqueue(keys.length, ...keys, ...args))
    await Promise.all(scripts)
  }
  return persistence
}

/**
 * 15. Keys kept per connection for its acknowledgements: well beyond what a session's queue holds
 * (a session's queue keeps its newest maxSessionDelivery; older keys release nothing more there),
 * ~120 KB per connection at most.
 */
export function ackKeysPerConnection (maxSessionDelivery: number): number {
  return Math.max(1024, 2 * maxSessionDelivery)
}

export interface AckReports {
  /** A release (a script of them, or one the persistence's own code made) failed: `acks` wait for Redis. */
  onFailure?: (err: unknown, acks: number) => void
  /** Releases that had failed were run again and done. */
  onRetried?: (acks: number) => void
  /** Failed releases given up (more waiting than UNRELEASED_MAX): their messages come again after a reconnect. */
  onGivenUp?: (acks: number) => void
}

/** Failed releases kept to run again (~300 bytes each, ~15 MB at most); beyond, the oldest are given up. */
export const UNRELEASED_MAX = 50_000

/**
 * 15. Each QoS 1 delivery to a persistent session is written to Redis before it is sent (the
 * whole packet again, payload included, with its message id: outgoingUpdate; a fifth of a busy
 * cluster's Redis commands) and released when acknowledged (outgoingClearMessageId: a GET and
 * msgpack decode of the packet only to find its keys again, then LREM, DECR and DEL: four
 * sequential commands). Here the update only keeps the packet's key by message id in a map of
 * the connection's own (it goes with the connection: a delivery never acknowledged, because the
 * connection ended first, leaves nothing behind; at most `perConnection` entries, the oldest
 * forgotten first: a client that never acknowledges holds no more, and an acknowledgement of a
 * forgotten one goes to the persistence's own code, which finds nothing to release: the message
 * stays queued and comes again after a reconnect), and the acknowledgement is released from it by
 * a script, with no read of the packet, one script for all that arrive in one turn of the event
 * loop (Aedes passes the packet read only to its 'ack' event, which mqim does not use: it gets
 * undefined). A count that was never set no longer stays at -1 without expiry. What a reconnect
 * replays is the packet as it was queued, under a fresh message id. Anything else (QoS 2, an id
 * the map does not have) goes to the persistence's own code.
 */
export function leanRedisAcks<T> (persistence: T, conn: Redis, opts: { perConnection: number, queueMax: number } & AckReports): T {
  const store = persistence as unknown as RedisOutgoingStore
  const redis = scripted(conn)
  const update = store.outgoingUpdate.bind(store)
  const clear = store.outgoingClearMessageId.bind(store)
  // Aedes passes its Client object: one map per connection, not per client id (a reconnect is a
  // new connection, whose ids restart elsewhere; what the old one left unacknowledged is replayed
  // from the queue under new ids)
  const keys = new WeakMap<object, Map<number, string>>()
  store.outgoingUpdate = async (client, packet) => {
    if (packet.cmd !== 'publish' || packet.qos !== 1 || packet.brokerId === undefined || packet.brokerCounter === undefined || packet.messageId === undefined) {
      await update(client, packet)
      return
    }
    // The packet is not written again with its message id: every queue entry was stored when it was
    // queued (a copy written for a delivery that was never queued is never replayed: a replay reads
    // the queue), and a replay after a reconnect takes a fresh id from the new connection's own
    // counter (the earlier connection's id could be one the new one uses for a live delivery).
    // MQTT-4.4.0-1 asks for the original id on a resend; a QoS 1 client that de-duplicates by
    // message, as mqim's must (by conv and seq), does not see the difference.
    let mine = keys.get(client)
    if (mine === undefined) keys.set(client, mine = new Map())
    // (a Map iterates in insertion order: its first key is the oldest)
    if (mine.size >= opts.perConnection && !mine.has(packet.messageId)) mine.delete(mine.keys().next().value as number)
    mine.set(packet.messageId, redisPacketKey(packet.brokerId, packet.brokerCounter))
  }
  // The acknowledgements that arrive in one turn of the event loop (the PUBACKs of one read of many
  // sockets) are released by one script, after it: each with its own command cost the node more
  // than the release itself (~1,500 a second in the cluster soak). A script that fails (Redis down
  // or gone away) costs no client its connection: failing the acknowledgements made Aedes close
  // every connection of the batch at once, up to a thousand clients reconnecting into a Redis that
  // is not there. Its releases are kept (at most UNRELEASED_MAX) and run again when the connection
  // is ready again, or after the next script that succeeds: the script can run twice (a second
  // LREM finds nothing and counts nothing). Only what this process could not release before it
  // ended, or gave up, stays queued and comes again after the client's next reconnect.
  let batch: Array<{ keys: [string, string, string], settle: () => void }> = []
  const perScript = acksPerScript(opts.queueMax)
  const report = (fn: (() => void)): void => { try { fn() } catch {} }
  let unreleased: Array<[string, string, string]> = []
  let retrying = false
  let readyMeanwhile = false
  /** Keeps failed releases, `older` before those kept meanwhile; beyond UNRELEASED_MAX the oldest are given up. */
  const keep = (failed: Array<[string, string, string]>, older = false): void => {
    unreleased = older ? failed.concat(unreleased) : unreleased.concat(failed)
    const over = unreleased.length - UNRELEASED_MAX
    if (over > 0) {
      unreleased.splice(0, over)
      report(() => opts.onGivenUp?.(over))
    }
  }
  const script = async (keys: Array<[string, string, string]>): Promise<void> => {
    await redis.mqimAcks(keys.length * 3, ...keys.flat())
  }
  // Runs the kept releases, a script at a time. Redis unreachable: the rest is kept for the next
  // 'ready' or success. An error Redis answered (the script refused, e.g. writes refused on a
  // replica; not out of memory: the script's first write is an LREM, which Redis does not refuse
  // for memory, and once a script has written Redis no longer refuses it for memory or writes):
  // that script's releases are given up, or they would fail again at every retry; the rest go on.
  const retry = (): void => {
    if (retrying) {
      readyMeanwhile = true
      return
    }
    if (unreleased.length === 0) return
    retrying = true
    readyMeanwhile = false
    const taken = unreleased
    unreleased = []
    let done = 0
    void (async () => {
      for (let start = 0; start < taken.length; start += perScript) {
        const chunk = taken.slice(start, start + perScript)
        try {
          await script(chunk)
          done += chunk.length
        } catch (err) {
          report(() => opts.onFailure?.(err, chunk.length))
          if (err instanceof ReplyError) {
            report(() => opts.onGivenUp?.(chunk.length))
            continue
          }
          keep(taken.slice(start), true)
          return
        }
      }
    })().finally(() => {
      retrying = false
      if (done > 0) report(() => opts.onRetried?.(done))
      // releases kept while this ran, or a reconnect meanwhile: once more, after this turn
      if (unreleased.length > 0 && (readyMeanwhile || done > 0)) setImmediate(retry)
    })
  }
  conn.on('ready', retry)
  const release = (): void => {
    const taken = batch
    batch = []
    for (let start = 0; start < taken.length; start += perScript) {
      const chunk = taken.slice(start, start + perScript)
      const settled = (): void => { for (const a of chunk) a.settle() }
      const failed = (err: unknown): void => {
        keep(chunk.map(a => a.keys))
        report(() => opts.onFailure?.(err, chunk.length))
        settled()
      }
      // (an async function: a throw inside it is a rejection)
      script(chunk.map(a => a.keys)).then(() => {
        settled()
        retry()
      }, failed)
    }
  }
  store.outgoingClearMessageId = async (client, packet) => {
    const mine = keys.get(client)
    const id = packet.messageId
    const key = id === undefined ? undefined : mine?.get(id)
    if (id === undefined || mine === undefined || key === undefined) {
      // (the persistence's own release: no keys to keep; what it did not release comes again after a reconnect)
      return await clear(client, packet).catch((err: unknown) => {
        report(() => opts.onFailure?.(err, 1))
        return undefined
      })
    }
    mine.delete(id)
    await new Promise<void>(resolve => {
      if (batch.length === 0) setImmediate(release)
      batch.push({ keys: [redisQueueKey(client.id), key, redisCountKey(key)], settle: resolve })
    })
    return undefined
  }
  return persistence
}

/** aedes-persistence-redis 11's list of stored wills (each entry `will:<broker id>:<client id>`, the will's key). */
const REDIS_WILLS = 'will'

interface RedisWillStore {
  putWill: (client: { id: string }, packet: object) => Promise<void>
  delWill: (client: { id: string, brokerId?: string }) => Promise<unknown>
  streamWill: (brokers?: Record<string, unknown>) => AsyncIterable<unknown>
}

/**
 * 21. aedes-persistence-redis stores a will at every CONNECT that has one (LREM, RPUSH and SET,
 * the first two not awaited) and deletes at every CONNECT, will or not (LREM not awaited, then GET
 * and DEL; Aedes passes its Client there, which has no broker id, so the key it deletes is
 * `will:undefined:<id>`). A write Redis refuses or cannot take (writes refused, Redis gone) makes
 * the promises nobody awaits reject unhandled (a line of error per connect in mqim's log; fatal
 * in a process that has no handler), and fails the connect of a client with a will. mqim never
 * publishes a will (the gateway's authorizePublish sinks it): nothing is stored or deleted at
 * connect or close; what an earlier version stored is deleted by streamWill once its broker has
 * stopped, every command awaited, and never handed to Aedes.
 */
export function noRedisWills<T> (persistence: T, conn: Redis): T {
  const store = persistence as unknown as RedisWillStore
  store.putWill = async () => {}
  // (Aedes asks at connect, with no broker id, and at each close of a client with a will, with this
  // start's broker id, under which nothing is ever stored; what Aedes' sweep would delete, streamWill
  // does)
  store.delWill = async () => null
  // Aedes' sweep (every 4 heartbeats) publishes each will streamed here whose broker stopped, after
  // authorizePublish: with a device of that client id connected to this node, the gateway would
  // take a will read back from Redis (not the object it knows as the device's will) for a publish
  // of that device, a request. Nothing is streamed: a stopped broker's wills are deleted here. (An
  // error waits for the next sweep: thrown, it would reach Aedes' 'error' event.)
  store.streamWill = async function * (brokers) {
    try {
      // (as many as the persistence reads at a time, its maxWills default)
      for (const key of await conn.lrange(REDIS_WILLS, 0, 10_000)) {
        if (brokers?.[key.split(':')[1] ?? ''] !== undefined) continue
        await conn.multi().lrem(REDIS_WILLS, 0, key).del(key).exec()
      }
    } catch {}
    yield * []
  }
  return persistence
}

/**
 * Packets read by one MGET of a queue replay (batchRedisReplays): as many as the stock stream
 * reads ahead (a Readable's 16 objects), so a replay holds no more packets at a time than it did.
 */
const REPLAY_PAGE = 16

interface RedisReplayStore { outgoingStream: (client: { id: string }) => AsyncIterable<unknown> }

/**
 * 22. aedes-persistence-redis 11 replays a reconnecting persistent session's queue (outgoingStream)
 * one GET per queued packet, each waiting for the last (up to maxSessionDelivery + 1 round trips
 * before the session has its messages), and removes an entry whose packet is gone (expired) with an
 * LREM whose rejection nobody handles (one per such entry while Redis refuses writes). Here the
 * packets are read in queue order with MGET, REPLAY_PAGE at a time; entries whose packet is gone,
 * or is not one the persistence could decode, are removed in one pipeline once the last packet is
 * handed over (its errors kept in its results); a removal Redis refuses is left for the next replay
 * (such an entry costs that replay one key read). A failed LRANGE or MGET ends the stream with its error,
 * as the stock one does.
 */
export function batchRedisReplays<T> (persistence: T, conn: Redis, maxSessionDelivery: number): T {
  const store = persistence as unknown as RedisReplayStore
  store.outgoingStream = async function * (client) {
    const queue = redisQueueKey(client.id)
    // (the stock range: entries 0..maxSessionDelivery)
    const keys = await conn.lrange(queue, 0, maxSessionDelivery)
    const gone: string[] = []
    for (let i = 0; i < keys.length; i += REPLAY_PAGE) {
      const page = keys.slice(i, i + REPLAY_PAGE)
      const values = await conn.mgetBuffer(...page)
      for (let j = 0; j < page.length; j++) {
        const packet = decodeStored(values[j])
        if (packet === undefined) gone.push(page[j] as string)
        else yield packet
      }
    }
    if (gone.length === 0) return
    // (not awaited: the connect does not wait on them; a pipeline's exec settles with each
    // command's error in its results, never rejecting unhandled)
    const removals = conn.pipeline()
    for (const key of gone) removals.lrem(queue, 0, key)
    void removals.exec().catch(() => {})
  }
  return persistence
}

/** A stored packet as the persistence decodes it, or undefined when gone or not msgpack of an object. */
function decodeStored (value: Buffer | null | undefined): object | undefined {
  if (value === null || value === undefined) return undefined
  try {
    const decoded: unknown = msgpack.decode(value)
    return typeof decoded === 'object' && decoded !== null ? decoded : undefined
  } catch {
    return undefined
  }
}

interface SocketTimeoutInternals {
  stream: NodeJS.EventEmitter & { destroy: (err: Error) => void }
  socketTimeoutTimer: NodeJS.Timeout | undefined
  commandQueue: { length: number }
  options: { socketTimeout?: number }
  setSocketTimeout: () => void
}

/**
 * 23. ioredis 6.0's socketTimeout destroys the connection from a timer that runs when it expires,
 * and Node runs expired timers before it reads sockets: an event loop stalled for the timeout (a
 * long GC pause, a throttled container) after a command was written destroys a connection whose
 * answer is already waiting to be read, and with the liveness pings every connection of the node
 * at once. Here the expired timer looks again after this turn's socket reads (setImmediate runs
 * after them): an answer read meanwhile has cleared or replaced the timer, and nothing is
 * destroyed. Same timer, same error, same re-arming on data as ioredis' own.
 */
export function socketTimeoutAfterReads (conn: Redis): void {
  const c = conn as unknown as SocketTimeoutInternals
  const ms = c.options.socketTimeout
  if (ms === undefined) return
  c.setSocketTimeout = function () {
    const stream = c.stream
    const timer: NodeJS.Timeout = setTimeout(() => {
      setImmediate(() => {
        if (c.socketTimeoutTimer !== timer) return
        stream.destroy(new Error(`Socket timeout. Expecting data, but didn't receive any in ${ms}ms.`))
        c.socketTimeoutTimer = undefined
      })
    }, ms)
    c.socketTimeoutTimer = timer
    stream.once('data', () => {
      clearTimeout(c.socketTimeoutTimer)
      c.socketTimeoutTimer = undefined
      if (c.commandQueue.length === 0) return
      c.setSocketTimeout()
    })
  }
}

interface UnansweredInternals {
  prevCommandQueue: { shift: () => { command: { reject: (err: Error) => void } } | undefined } | null
}

/** What a command written to a Redis connection that was lost before it answered fails with (failUnanswered). */
export class RedisUnansweredError extends Error {
  override name = 'RedisUnansweredError'
  constructor () { super('Redis connection lost before it answered: not sent again (it may have run)') }
}

/**
 * 24. ioredis 6.0 with autoResendUnfulfilledCommands false drops the commands a lost connection had
 * written and not had answered: when the next connection is ready it forgets them, and their
 * promises never settle (a caller awaiting one waits for good). Here they fail when the connection
 * closes (its 'close' event comes after ioredis has set them aside), with RedisUnansweredError.
 */
export function failUnanswered (conn: Redis): void {
  const c = conn as unknown as UnansweredInternals
  conn.on('close', () => {
    const queue = c.prevCommandQueue
    if (queue === null || queue === undefined) return
    c.prevCommandQueue = null
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) item.command.reject(new RedisUnansweredError())
  })
}

/** An emitter handler (mqemitter's notify). */
type Notify = (packet: { topic: string, payload: unknown }, cb: () => void) => void
/** A subscription as aedes-persistence-redis 11 keeps it (msgpack in the session's hash) and broadcasts it. */
interface StoredSubscription { topic: string, qos: number, [field: string]: unknown }
/** QoS > 0 subscriptions (what the matcher holds, see repairSubscriptionMatcher): clientId -> topic -> V. */
type MatcherState<V> = Map<string, Map<string, V>>

/** Applies one `$SYS/sub/add|rm` broadcast to `state` as BroadcastPersistence applies it to its trie. */
function applySubscriptionBroadcast<V> (state: MatcherState<V>, add: boolean, clientId: string, subs: readonly StoredSubscription[], value: (sub: StoredSubscription) => V): void {
  let topics = state.get(clientId)
  for (const sub of subs) {
    if (add && sub.qos > 0) {
      if (topics === undefined) state.set(clientId, topics = new Map())
      topics.set(sub.topic, value(sub))
    } else {
      topics?.delete(sub.topic)
    }
  }
  if (topics !== undefined && topics.size === 0) state.delete(clientId)
}
const asQos = (sub: StoredSubscription): number => sub.qos
const asIs = (sub: StoredSubscription): StoredSubscription => sub

/**
 * The subscription broadcasts' payload ({clientId, subs}), or null when it is not one. An add's
 * subscriptions carry a QoS; a removal's may carry the topic only (aedes-persistence's own do).
 */
function subscriptionBroadcast (payload: unknown, add: boolean): { clientId: string, subs: StoredSubscription[] } | null {
  try {
    const text = Buffer.isBuffer(payload) ? payload.toString('utf8') : typeof payload === 'string' ? payload : null
    if (text === null) return null
    const decoded = JSON.parse(text) as { clientId?: unknown, subs?: unknown }
    if (typeof decoded.clientId !== 'string' || !Array.isArray(decoded.subs)) return null
    const subs = decoded.subs.filter((s): s is StoredSubscription => typeof s === 'object' && s !== null && typeof (s as { topic?: unknown }).topic === 'string' &&
      (!add || typeof (s as { qos?: unknown }).qos === 'number'))
    return { clientId: decoded.clientId, subs }
  } catch {
    return null
  }
}

export const SUBSCRIPTION_ADD_TOPIC = '$SYS/sub/add'
export const SUBSCRIPTION_RM_TOPIC = '$SYS/sub/rm'
/** Session ids asked per SSCAN step, and sessions whose subscriptions are read at once. */
const REPAIR_PAGE = 100
/**
 * How long after the subscriber connection is ready again the repair reads Redis (plus up to as
 * much again at random, so that the nodes of a cluster do not all read at once): ioredis sends the
 * connection's subscriptions again as it becomes ready; a broadcast sent before they are in place
 * is found in Redis, one after comes through.
 */
const REPAIR_DELAY_MS = 250
/** A read that failed is tried again after this long, doubling up to REPAIR_RETRY_MAX_MS. */
const REPAIR_RETRY_MS = 1000
const REPAIR_RETRY_MAX_MS = 30_000
/** Removals remembered until the first read (beyond: not remembered; the node's restart rebuilds). */
const REMOVED_EARLY_MAX = 100_000

export interface SubscriptionMatcherRepair {
  /** Called once the persistence's own start-up build of its trie is done: the first read. */
  start: () => void
  /** Reads of Redis done (the first, then one after each reconnect of the subscriber connection). */
  repairs: () => number
  /** What the reads did, for /metrics. */
  stats: () => SubscriptionRepairStats
  close: () => void
}

/** Counts since start (see repairSubscriptionMatcher). */
export interface SubscriptionRepairStats {
  /** Reads of Redis done. */
  reads: number
  /** Reads that failed (each tried again later). */
  failures: number
  /**
   * Subscriptions handed to the matcher by the reads after the first (missed broadcasts), added and
   * removed; may include a few (un)made while the read ran, whose broadcast had not arrived yet.
   */
  added: number
  removed: number
  /**
   * Sessions with QoS 1 subscriptions the last read found (about: SSCAN may show a session twice
   * when Redis rehashes the set meanwhile), and how long it took (seconds, reading and handing over).
   */
  lastSessions: number
  lastSeconds: number
}

/**
 * 19. aedes-persistence-redis matches the subscriptions of sessions (for queueing a message for the
 * offline ones) with a trie of its own, private: built from Redis at start (one session after
 * another, before it listens to the broadcasts), then kept by the `$SYS/sub/add|rm` broadcasts
 * that every node sends through the emitter when a session (un)subscribes. A broadcast sent while
 * this node's subscriber connection to Redis is down (an outage, a failover), or during that
 * start-up build, never reaches it, and nothing reads Redis again: this node then queues nothing
 * for a session whose SUBSCRIBE it missed (the device gets those messages only when it syncs),
 * and keeps queueing for one that unsubscribed. Here a copy of what the trie holds is kept from
 * the same broadcasts. Once the trie is built (start), and after each reconnect of the subscriber
 * connection, every session's subscriptions are read from Redis, a page of REPAIR_PAGE sessions at
 * a time (SSCAN of `clients`, then their hashes, on `conn`, not the broker's), each page compared
 * with the copy as it arrives (the broadcasts since it was asked for applied on top, in order:
 * Redis is written before a broadcast is sent), and the difference handed to this node's own
 * emitter as `$SYS/sub/add|rm`, which the trie applies (the first read hands it every
 * subscription, adding one it has replaces it, and the removals broadcast before it that Redis
 * agrees with). A read is also made after each reconnect of the connections `alsoAfterBreaksOf`
 * (the broker's persistence connection: a subscription written just before it broke is reported
 * failed, not sent again, although Redis may hold it, and no broadcast of it was sent). Sessions the copy holds that no page showed are handed over as removed, but for
 * what was broadcast of them during the read. A read that fails is tried again (REPAIR_RETRY_MS,
 * doubling); so is one during which `conn` closed (a cursor of one server means nothing to
 * another after a failover, whose set may be laid out differently, so sessions there all along may
 * be skipped): what its pages showed is handed over, not the removals of sessions no page showed. Only QoS 1 subscriptions are compared: a broadcast of a QoS 0 one removes it from the
 * trie (the start-up build adds them; left as they are). Bounded like the trie: one entry per QoS 1
 * subscription of a persistent session (its QoS); a read adds one page, the broadcasts of a page's
 * time, and the set of sessions of the copy that no page has shown yet (a reference each).
 */
export function repairSubscriptionMatcher (mq: unknown, conn: Redis, subConn: Redis, logger: Logger, alsoAfterBreaksOf: readonly Redis[] = []): SubscriptionMatcherRepair {
  const emitter = mq as { on: (topic: string, notify: Notify, done?: () => void) => void, removeListener: (topic: string, notify: Notify, done?: () => void) => void }
  const emitLocal = localEmitter(mq)
  /** The copy of what the trie holds (QoS of each subscription). */
  const held: MatcherState<number> = new Map()
  /**
   * Until the first read: the subscriptions broadcast as removed (while the trie was being built it
   * may have missed those), handed to the trie as removed by the first read if Redis agrees.
   */
  let removedEarly: MatcherState<true> | null = new Map()
  let removedEarlyCount = 0
  /** While a read of Redis runs: told of every broadcast (see sync). */
  let during: ((add: boolean, clientId: string, subs: StoredSubscription[]) => void) | null = null
  const onBroadcast: Notify = (packet, cb) => {
    const add = packet.topic === SUBSCRIPTION_ADD_TOPIC
    const message = add || packet.topic === SUBSCRIPTION_RM_TOPIC ? subscriptionBroadcast(packet.payload, add) : null
    if (message !== null) {
      applySubscriptionBroadcast(held, add, message.clientId, message.subs, asQos)
      during?.(add, message.clientId, message.subs)
      if (removedEarly !== null) {
        for (const sub of message.subs) {
          const gone = !add || sub.qos === 0
          if (gone && removedEarlyCount < REMOVED_EARLY_MAX) {
            let topics = removedEarly.get(message.clientId)
            if (topics === undefined) removedEarly.set(message.clientId, topics = new Map())
            if (!topics.has(sub.topic)) removedEarlyCount++
            topics.set(sub.topic, true)
          } else if (!gone && removedEarly.get(message.clientId)?.delete(sub.topic) === true) {
            removedEarlyCount--
          }
        }
      }
    }
    cb()
  }
  emitter.on('$SYS/sub/+', onBroadcast)

  /** The QoS 1 subscriptions of these sessions in Redis (a session without any is left out). */
  const readSessions = async (clientIds: readonly string[]): Promise<MatcherState<StoredSubscription>> => {
    const state: MatcherState<StoredSubscription> = new Map()
    const hashes = await Promise.all(clientIds.map(async id => await conn.hgetallBuffer(`client:${encodeURIComponent(id)}`)))
    clientIds.forEach((clientId, i) => {
      const subs: StoredSubscription[] = []
      for (const value of Object.values(hashes[i] ?? {})) {
        try {
          const sub = msgpack.decode(value) as StoredSubscription | null
          if (typeof sub?.topic === 'string' && typeof sub.qos === 'number') subs.push(sub)
        } catch {
          // not one of the persistence's entries: skipped (its start-up build throws on it)
        }
      }
      applySubscriptionBroadcast(state, true, clientId, subs, asIs)
    })
    return state
  }

  /** Times `conn` closed (a read that spans one does not remove what it did not see). */
  let connBreaks = 0
  const onConnClose = (): void => { connBreaks++ }
  conn.on('close', onConnClose)
  const stats: SubscriptionRepairStats = { reads: 0, failures: 0, added: 0, removed: 0, lastSessions: 0, lastSeconds: 0 }
  let started = false
  let closed = false
  /** A read is wanted (start, a reconnect, a failed read), and the loop that does them. */
  let wanted = false
  let loop: Promise<void> | null = null
  const timers = new Set<NodeJS.Timeout>()
  const later = (ms: number, f: () => void): void => {
    const timer = setTimeout(() => { timers.delete(timer); f() }, ms)
    timer.unref()
    timers.add(timer)
  }
  /** Hands the trie the subscriptions of `clientId` as removed. */
  const emitRemoved = (clientId: string, topics: Iterable<string>): number => {
    const gone = [...new Set(topics)].map(topic => ({ topic }))
    if (gone.length > 0) emitLocal(new Packet({ topic: SUBSCRIPTION_RM_TOPIC, payload: JSON.stringify({ clientId, subs: gone }) }))
    return gone.length
  }
  const sync = async (): Promise<void> => {
    // behind the subscriptions ioredis sends again on a reconnect: a broadcast after them comes through
    await subConn.ping().catch(() => {})
    const began = performance.now()
    const breaksAtStart = connBreaks
    // the first read: every subscription, as the trie may have missed broadcasts while it was built
    const everything = stats.reads === 0
    const early = removedEarly ?? new Map<string, Map<string, true>>()
    /** Sessions the copy holds (or whose removal the trie may have missed) that no page has shown yet. */
    const unseen = new Set([...held.keys(), ...early.keys()])
    /**
     * The broadcasts since the read began of sessions not shown yet, applied to nothing: what Redis
     * holds of a session that no page shows (SSCAN shows every session there from its start to its
     * end; one that was not is known by its broadcasts).
     */
    const heard: MatcherState<StoredSubscription> = new Map()
    /** The broadcasts since the current page's subscriptions were asked for, in order. */
    let window: Array<[boolean, string, StoredSubscription[]]> = []
    during = (add, clientId, subs) => {
      window.push([add, clientId, subs])
      if (unseen.has(clientId)) applySubscriptionBroadcast(heard, add, clientId, subs, asIs)
    }
    let added = 0
    let removed = 0
    /** Corrections (not the first read's hand-over), counted as they are handed over: a read that fails later has made them. */
    const corrected = (a: number, r: number): void => {
      if (everything) return
      added += a
      removed += r
      stats.added += a
      stats.removed += r
    }
    let sessions = 0
    try {
      let cursor = '0'
      do {
        const [next, clientIds] = await conn.sscan('clients', cursor, 'COUNT', REPAIR_PAGE)
        if (closed) return
        cursor = next
        window = []
        const page = await readSessions(clientIds)
        if (closed) return
        // the page's sessions as Redis holds them now: the broadcasts since it was asked for on top
        // (Redis is written before a broadcast is sent)
        const ids = new Set(clientIds)
        for (const [add, clientId, subs] of window) if (ids.has(clientId)) applySubscriptionBroadcast(page, add, clientId, subs, asIs)
        // compared with the copy now: a broadcast from here on is of a change made after the read
        // (or one the page already has: handing it over again changes nothing)
        for (const clientId of ids) {
          unseen.delete(clientId)
          heard.delete(clientId)
          const topics = page.get(clientId)
          const have = held.get(clientId)
          if (topics !== undefined) {
            sessions++
            const missing = [...topics.values()].filter(sub => everything || have?.get(sub.topic) !== sub.qos)
            if (missing.length > 0) {
              emitLocal(new Packet({ topic: SUBSCRIPTION_ADD_TOPIC, payload: JSON.stringify({ clientId, subs: missing }) }))
              corrected(missing.length, 0)
            }
          }
          const stale = [...(have?.keys() ?? []), ...(early.get(clientId)?.keys() ?? [])].filter(topic => topics?.has(topic) !== true)
          corrected(0, emitRemoved(clientId, stale))
        }
      } while (cursor !== '0')
      // A scan that went on over a new connection (ioredis sends an unanswered SSCAN again, after a
      // failover to a server whose set is laid out differently) may have skipped sessions that were
      // there all along: what the pages showed is handed over, the removals wait for a whole read.
      if (connBreaks !== breaksAtStart) throw new Error('the Redis connection closed during the read')
      // sessions no page showed: gone from Redis, but for what was broadcast of them meanwhile (and
      // while this hands them over, yielding now and then: those broadcasts still count)
      during = (add, clientId, subs) => {
        if (unseen.has(clientId)) applySubscriptionBroadcast(heard, add, clientId, subs, asIs)
      }
      let step = 0
      for (const clientId of unseen) {
        if (++step % REPAIR_PAGE === 0) {
          await new Promise(resolve => setImmediate(resolve))
          if (closed) return
        }
        const keep = heard.get(clientId)
        corrected(0, emitRemoved(clientId, [...(held.get(clientId)?.keys() ?? []), ...(early.get(clientId)?.keys() ?? [])].filter(topic => keep?.has(topic) !== true)))
      }
      removedEarly = null
      removedEarlyCount = 0
      stats.reads++
      stats.lastSessions = sessions
      stats.lastSeconds = (performance.now() - began) / 1000
      if (added + removed > 0) logger.warn({ added, removed }, 'subscriptions (un)made on other nodes while this node\'s Redis link was down: its matcher of offline sessions put right from Redis')
    } finally {
      during = null
    }
  }
  const run = (): void => {
    if (closed || loop !== null) return
    loop = (async () => {
      let retryMs = REPAIR_RETRY_MS
      while (wanted) {
        wanted = false
        if (closed) return
        try {
          await sync()
          retryMs = REPAIR_RETRY_MS
        } catch (err) {
          if (closed) return
          stats.failures++
          logger.warn({ err, retryMs }, 'reading the sessions\' subscriptions from Redis failed; read again later')
          wanted = true
          await new Promise<void>(resolve => { later(retryMs, resolve) })
          retryMs = Math.min(retryMs * 2, REPAIR_RETRY_MAX_MS)
        }
      }
    })().finally(() => { loop = null })
  }
  // each time a watched connection is ready again after a break (its first ready is the start's)
  const watched = [subConn, ...alsoAfterBreaksOf].map(c => {
    let connected = c.status === 'ready'
    const onReady = (): void => {
      if (!connected) {
        connected = true
        return
      }
      if (!started) return
      later(REPAIR_DELAY_MS * (1 + Math.random()), () => {
        wanted = true
        run()
      })
    }
    c.on('ready', onReady)
    return { c, onReady }
  })
  return {
    start: () => {
      if (started) return
      started = true
      wanted = true
      run()
    },
    repairs: () => stats.reads,
    stats: () => ({ ...stats }),
    close: () => {
      closed = true
      for (const timer of timers) clearTimeout(timer)
      for (const { c, onReady } of watched) c.removeListener('ready', onReady)
      conn.removeListener('close', onConnClose)
      emitter.removeListener('$SYS/sub/+', onBroadcast)
    }
  }
}
