/**
 * The persistent-sessions-per-user bound, checked from outside with mqtt.js (CONNACK's
 * sessionPresent tells whether the broker kept a session). `nodes` may be one server or the
 * nodes of a cluster; the connects alternate between them.
 */
import mqtt, { type IConnackPacket, type MqttClient } from 'mqtt'
import { url } from './im.js'
import type { MqimServer } from '../../src/server.js'

async function session (server: MqimServer, user: string, device: string, clean: boolean): Promise<{ client: MqttClient, sessionPresent: boolean }> {
  const client = mqtt.connect(url(server, 'tcp'), {
    clientId: `${user}:${device}`, username: user, password: `password-${user}`, clean, reconnectPeriod: 0, protocolVersion: 4, connectTimeout: 10_000
  })
  const connack = await new Promise<IConnackPacket>((resolve, reject) => {
    client.once('connect', resolve)
    client.once('error', reject)
  })
  return { client, sessionPresent: connack.sessionPresent }
}

/** Connects `user:device`, subscribes its messages at QoS 1, disconnects; resolves with CONNACK's sessionPresent. */
export async function visit (server: MqimServer, user: string, device: string, clean = false): Promise<boolean> {
  const { client, sessionPresent } = await session(server, user, device, clean)
  await client.subscribeAsync(`im/u/${user}/m`, { qos: 1 })
  await client.endAsync()
  return sessionPresent
}

/**
 * With limits.persistentSessionsPerUser = `cap`: `cap` devices keep their sessions; one more
 * connects but gets a clean session (not kept); a clean connect of a kept device frees its place.
 */
export async function checkSessionCap (nodes: MqimServer[], user: string, cap: number): Promise<void> {
  const at = (i: number): MqimServer => nodes[i % nodes.length] as MqimServer
  for (let i = 0; i < cap; i++) expect(await visit(at(i), user, `d${i}`)).toBe(false)
  // every kept session is there on return
  for (let i = 0; i < cap; i++) expect(await visit(at(i + 1), user, `d${i}`)).toBe(true)
  // one more device: it connects, but nothing is kept for it
  expect(await visit(at(0), user, 'extra')).toBe(false)
  expect(await visit(at(1), user, 'extra')).toBe(false)
  // a clean connect wipes d0's session: its place goes to the next persistent device
  expect(await visit(at(0), user, 'd0', true)).toBe(false)
  expect(await visit(at(1), user, 'extra')).toBe(false)
  expect(await visit(at(0), user, 'extra')).toBe(true)
  expect(await visit(at(1), user, 'd0')).toBe(false)
  expect(await visit(at(0), user, 'd0')).toBe(false)
}
