/** MQTT over TLS when a certificate is configured (self-signed here, made with openssl). */
import { execFileSync } from 'node:child_process'
import { readFileSync } from 'node:fs'
import path from 'node:path'
import mqtt from 'mqtt'
import { startServer, addUser } from './helpers/im.js'
import { tempDir } from './helpers/tmp.js'

test('mqtts:// with the configured certificate: login, request, reply', async () => {
  const dir = tempDir('mqim-tls-')
  const cert = path.join(dir, 'cert.pem')
  const key = path.join(dir, 'key.pem')
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' })
  const server = await startServer({ tls: { port: 0, cert, key } })
  try {
    expect(server.ports.tls).not.toBeNull()
    await addUser(server, 'tina')
    const client = await mqtt.connectAsync(`mqtts://127.0.0.1:${server.ports.tls}`, {
      clientId: 'tina:tls', username: 'tina', password: 'password-tina', protocolVersion: 4, reconnectPeriod: 0, ca: readFileSync(cert)
    })
    const got = new Promise<string>(resolve => client.on('message', (_t, p) => resolve(p.toString())))
    await client.subscribeAsync('im/u/tina/r/tls', { qos: 1 })
    await client.publishAsync('im/req/list', JSON.stringify({ id: 'q1' }), { qos: 1 })
    expect(JSON.parse(await got)).toEqual({ id: 'q1', op: 'list', ok: true, result: { conversations: [], next: null } })
    await client.endAsync()
    // an untrusted certificate is refused by the client: proves this really is TLS
    await expect(mqtt.connectAsync(`mqtts://127.0.0.1:${server.ports.tls}`, { clientId: 'tina:x', username: 'tina', password: 'password-tina', protocolVersion: 4, reconnectPeriod: 0 })).rejects.toThrow()
  } finally {
    await server.stop()
  }
})
