/**
 * Proves that the real test services started by scripts/test.sh (scripts/services.sh) are reachable:
 * MariaDB through mysql2, FerretDB through the mongodb driver, Redis through a raw socket.
 */
import { connect } from 'node:net'
import mysql from 'mysql2/promise'
import { MongoClient, MongoServerError } from 'mongodb'
import { freshMongo, freshMysqlUrl, redisUrl } from './helpers/db.js'

describe('test services', () => {
  test('MySQL (MariaDB) answers SELECT 1', async () => {
    const url = await freshMysqlUrl()
    const conn = await mysql.createConnection(url)
    try {
      const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT 1 AS one')
      expect(Number(rows[0]?.one)).toBe(1)
    } finally {
      await conn.query(`DROP DATABASE \`${new URL(url).pathname.slice(1)}\``)
      await conn.end()
    }
  })

  test('MongoDB (FerretDB) answers ping and enforces unique indexes with code 11000', async () => {
    const { url, dbName } = freshMongo()
    const client = new MongoClient(url, { serverSelectionTimeoutMS: 10_000 })
    await client.connect()
    try {
      const db = client.db(dbName)
      expect((await db.command({ ping: 1 })).ok).toBe(1)

      const coll = db.collection<{ key: string }>('uniq')
      await coll.createIndex({ key: 1 }, { unique: true })
      await coll.insertOne({ key: 'a' })
      const second = await coll.insertOne({ key: 'a' }).then(() => null, (err: unknown) => err)
      expect(second).toBeInstanceOf(MongoServerError)
      expect((second as MongoServerError).code).toBe(11000)
      expect(await coll.countDocuments({ key: 'a' })).toBe(1)
    } finally {
      await client.db(dbName).dropDatabase()
      await client.close()
    }
  })

  test('Redis answers PING with +PONG', async () => {
    const { hostname, port } = new URL(redisUrl())
    const reply = await new Promise<string>((resolve, reject) => {
      const socket = connect({ host: hostname, port: Number(port || 6379) })
      let data = ''
      socket.setTimeout(10_000, () => socket.destroy(new Error('Redis did not answer PING within 10 s')))
      socket.on('connect', () => socket.write('PING\r\n'))
      socket.on('data', (chunk) => {
        data += chunk.toString('utf8')
        if (data.includes('\r\n')) {
          socket.end()
          resolve(data.split('\r\n')[0] ?? '')
        }
      })
      socket.on('error', reject)
    })
    expect(reply).toBe('+PONG')
  })
})
