/**
 * Stream 1 executor: one raw connection per case. Logs in first when the case says so (that
 * login must succeed), writes the case's mutated packets, then a PINGREQ as a probe, and sorts
 * the connection into closed (the server hung up: fine), alive (PINGRESP: fine) or unanswered
 * (the parser still waits for bytes a mutated length promised: fine, we hang up).
 *
 * Checked on every case: the server's bytes parse as MQTT; every reply it sends has the
 * documented form and a documented code; every message or event it sends is JSON. A logged-in
 * case whose packets are all unmutated and legal for a client must stay alive; a first packet
 * whose length field claims more than the limit (limits.maxConnectPacketBytes before the login,
 * maxPacketBytes after it), or is malformed, must be closed.
 */
import type { Packet } from 'mqtt-packet'
import { RawClient } from '../lib/raw-mqtt.js'
import { encode, keepsConnection, PINGREQ, RAW_USER, WILL_PAYLOAD, WILL_TOPIC, type PacketCase } from './packets.js'
import { replyShapeProblem } from './oracle.js'

export type PacketOutcome = 'closed' | 'alive' | 'unanswered'

export interface PacketResult {
  outcome: PacketOutcome
  problem: string | null
  /** Packets written (login excluded) and their bytes. */
  packets: number
  bytes: number
  /** CONNACK return codes the fuzzed packets got (the login's excluded). */
  connacks: number[]
  /** Replies received and checked. */
  replies: number
  /** The case's CONNECT carried the settings will and was accepted: a will the server must never publish. */
  armedWill: boolean
  /** The first packet claimed a length over the limit (or a malformed one): the server had to close. */
  mustClose: boolean
  /** The bytes written, hex (for reports). */
  hex: string
}

export interface PacketContext {
  mqttPort: number
  httpPort: number
  /** API key of RAW_USER. */
  key: string
  /** Wait this long for the probe's PINGRESP, or `legalProbeMs` when the connection must stay alive. */
  probeMs: number
  legalProbeMs: number
  /** limits.maxConnectPacketBytes and limits.maxPacketBytes of the server. */
  maxConnectPacketBytes: number
  maxPacketBytes: number
}

const REPLY_PREFIX = `im/u/${RAW_USER}/r/`

function split (bytes: Buffer, chunks: number): Buffer[] {
  if (chunks <= 1 || bytes.length < chunks) return [bytes]
  const size = Math.ceil(bytes.length / chunks)
  const out: Buffer[] = []
  for (let i = 0; i < bytes.length; i += size) out.push(bytes.subarray(i, i + size))
  return out
}

function count (packets: Packet[], cmd: string): number {
  return packets.filter(p => p.cmd === cmd).length
}

/** Problems in what the server sent: malformed bytes, replies not of the documented form, non-JSON payloads. */
function checkReceived (conn: RawClient): { problem: string | null, replies: number } {
  if (conn.malformed !== null) return { problem: `the server sent bytes that do not parse as MQTT: ${conn.malformed}`, replies: 0 }
  let replies = 0
  for (const p of conn.packets) {
    if (p.cmd !== 'publish') continue
    const text = Buffer.from(p.payload).toString('utf8')
    let value: unknown
    try { value = JSON.parse(text) } catch { return { problem: `the server published non-JSON on ${p.topic}: ${text.slice(0, 200)}`, replies } }
    if (p.topic.startsWith(REPLY_PREFIX)) {
      replies++
      const shape = replyShapeProblem(value)
      if (shape !== null) return { problem: `reply on ${p.topic}: ${shape}: ${text.slice(0, 300)}`, replies }
    }
  }
  return { problem: null, replies }
}

/**
 * The remaining length the first packet of `stream` claims, as the server's parser reads it:
 * 'malformed' when four length bytes all carry the continuation bit, null when the stream ends
 * before the length does.
 */
export function claimedLength (stream: Buffer): number | 'malformed' | null {
  let value = 0
  for (let i = 1; i <= 4; i++) {
    if (i >= stream.length) return null
    const byte = stream.readUInt8(i)
    value += (byte & 0x7f) * 128 ** (i - 1)
    if ((byte & 0x80) === 0) return value
  }
  return 'malformed'
}

export async function runPacketCase (c: PacketCase, device: string, ctx: PacketContext): Promise<PacketResult> {
  const encoded = c.packets.map(p => encode(p, ctx.key))
  const bytes = Buffer.concat(encoded)
  const result: PacketResult = { outcome: 'unanswered', problem: null, packets: encoded.length, bytes: bytes.length, connacks: [], replies: 0, armedWill: false, mustClose: false, hex: bytes.subarray(0, 2048).toString('hex') }
  let conn: RawClient
  try {
    conn = await RawClient.open(c.transport === 'tcp' ? ctx.mqttPort : ctx.httpPort, { transport: c.transport })
  } catch (err) {
    result.problem = `could not open a ${c.transport} connection: ${(err as Error).message}`
    return result
  }
  try {
    if (c.login) {
      const code = await conn.connect(RAW_USER, device, ctx.key).catch(() => null)
      if (code !== 0) {
        result.problem = code === null ? `a valid login got no CONNACK (${conn.closed ? 'closed' : 'timeout'})` : `a valid login got CONNACK ${code}`
        return result
      }
    }
    const before = conn.packets.length
    for (const chunk of split(bytes, c.chunks)) {
      conn.write(chunk)
      await new Promise(resolve => setImmediate(resolve))
    }
    const legal = c.login && c.packets.every(p => p.mutations.length === 0 && keepsConnection(p.base))
    // a length over the limit is refused from the length field alone: the connection must close
    // (the CONNECT's limit applies to a connection's first packet, the other one after it)
    const limit = c.login ? ctx.maxPacketBytes : ctx.maxConnectPacketBytes
    const claimed = claimedLength(Buffer.concat([bytes, PINGREQ]))
    const mustClose = claimed === 'malformed' ? 'a malformed remaining length' : claimed !== null && claimed > limit ? `a remaining length of ${claimed} bytes over the limit of ${limit}` : null
    const pongs = (): number => count(conn.packets.slice(before), 'pingresp')
    const expected = 1 + c.packets.filter(p => p.mutations.length === 0 && p.base.cmd === 'pingreq').length
    conn.write(PINGREQ)
    const answered = mustClose !== null
      ? !(await conn.until(() => conn.closed, ctx.legalProbeMs)) && pongs() > 0
      : await conn.until(() => pongs() >= (legal ? expected : 1), legal ? ctx.legalProbeMs : ctx.probeMs)
    result.outcome = answered ? 'alive' : conn.closed ? 'closed' : 'unanswered'
    result.mustClose = mustClose !== null
    result.connacks = conn.packets.slice(before).filter(p => p.cmd === 'connack').map(p => (p as { returnCode?: number }).returnCode ?? -1)
    const first = c.packets[0]?.base
    result.armedWill = !c.login && result.connacks[0] === 0 && first?.cmd === 'connect' && first.will?.topic === WILL_TOPIC && first.will.payload === WILL_PAYLOAD
    const received = checkReceived(conn)
    result.replies = received.replies
    result.problem = received.problem
    if (result.problem === null && mustClose !== null && result.outcome !== 'closed') {
      result.problem = `${mustClose} left the connection ${result.outcome}`
    }
    if (result.problem === null && legal && result.outcome !== 'alive') {
      result.problem = `a logged-in client's legal, unmutated packets ended ${result.outcome === 'closed' ? 'with the connection closed' : 'without an answer to PINGREQ'}`
    }
    return result
  } finally {
    conn.end()
  }
}
