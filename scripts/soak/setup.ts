/**
 * The soak's set-up: its own services (scripts/services.sh on free ports, in a temporary
 * directory), fresh databases, accounts (made with the admin tooling, straight into MySQL as the
 * drills do), one or two mqim nodes with --trace-gc and the load limits lifted, one connected
 * device per account, groups and direct chats.
 */
import { randomBytes } from 'node:crypto'
import { appendFileSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { createBot, createUser } from '../../src/admin/accounts.js'
import { MySqlMetadataStore } from '../../src/store/metadata-mysql.js'
import { liftedConfig } from '../bench/lib/targets.js'
import { MqimNode } from '../lib/node.js'
import { onCleanup } from '../lib/procs.js'
import { freshDatabases, installServices, readServicesEnv, ROOT, startServices, stopService, stopServices } from '../lib/services.js'
import { Device, World, type Account } from './device.js'
import { GcTrace, type Metrics, type ProcRef } from './metrics.js'
import { random } from '../lib/random.js'

export interface SetupOptions {
  users: number
  groups: number
  groupMin: number
  groupMax: number
  /** Direct chats made before the load, between random pairs. */
  directs: number
  cluster: boolean
  /** Every n-th account is a bot (API key login), the others users (password, scrypt). */
  botEvery: number
  metrics: Metrics
  log: (line: string) => void
}

export interface Soak {
  world: World
  nodes: MqimNode[]
  gcs: GcTrace[]
  services: ProcRef[]
  nodeExits: string[]
  /** Stops the devices and the nodes (the services are stopped by the cleanups). */
  close: () => Promise<void>
}

/** Runs `fn` over `items`, `concurrency` at a time. */
export async function eachLimited<T> (items: readonly T[], concurrency: number, fn: (item: T, index: number) => Promise<void>): Promise<void> {
  let next = 0
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, async () => {
    while (next < items.length) {
      const i = next++
      await fn(items[i] as T, i)
    }
  }))
}

function sample<T> (items: readonly T[], n: number): T[] {
  const copy = [...items]
  for (let i = copy.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = copy[i] as T
    copy[i] = copy[j] as T
    copy[j] = t
  }
  return copy.slice(0, n)
}

export async function setUp (opts: SetupOptions): Promise<Soak> {
  const { log, metrics } = opts
  log('installing/checking the services (scripts/services.sh install)')
  await installServices()
  // short path: MariaDB's socket path is limited
  const dir = mkdtempSync(path.join(tmpdir(), 'mqim-soak-'))
  onCleanup(async () => {
    await stopServices(dir).catch(() => {})
    rmSync(dir, { recursive: true, force: true })
  })
  const urls = await startServices(dir)
  const env = readServicesEnv(dir)
  const db = await freshDatabases(urls, 0)
  const services: ProcRef[] = [{ name: 'ferretdb', pid: Number(env.MQIM_MONGO_PID) }, { name: 'mariadb', pid: Number(env.MQIM_MYSQL_PID) }]
  if (opts.cluster) {
    services.push({ name: 'redis', pid: Number(env.MQIM_REDIS_PID) })
  } else {
    // one node: no Redis (an empty MQIM_REDIS_URL leaves the embedded broker persistence)
    await stopService(dir, 'redis')
    db.redisUrl = ''
  }
  log(`services started in ${dir} (FerretDB pid ${env.MQIM_MONGO_PID}, MariaDB pid ${env.MQIM_MYSQL_PID}${opts.cluster ? `, Redis pid ${env.MQIM_REDIS_PID}` : ''})`)

  // accounts
  const tag = randomBytes(3).toString('hex')
  const accounts: Account[] = []
  const meta = new MySqlMetadataStore({ url: db.mysqlUrl })
  try {
    await meta.init()
    await eachLimited(Array.from({ length: opts.users }, (_, i) => i), 16, async (i) => {
      if (i % opts.botEvery === opts.botEvery - 1) {
        const id = `soak-${tag}-b${i}`
        const { apiKey } = await createBot(meta, { id })
        accounts[i] = { id, kind: 'bot', secret: apiKey }
      } else {
        const id = `soak-${tag}-u${i}`
        const password = `soak-pw-${id}`
        await createUser(meta, { id, password })
        accounts[i] = { id, kind: 'user', secret: password }
      }
    })
  } finally {
    await meta.close()
  }
  log(`${accounts.filter(a => a.kind === 'user').length} users and ${accounts.filter(a => a.kind === 'bot').length} bots created`)

  // nodes
  const workDir = mkdtempSync(path.join(tmpdir(), 'mqim-soak-nodes-'))
  onCleanup(() => rmSync(workDir, { recursive: true, force: true }))
  const nodeExits: string[] = []
  const gcs: GcTrace[] = []
  const logDir = process.env.MQIM_SOAK_LOG_DIR
  const nodes = Array.from({ length: opts.cluster ? 2 : 1 }, (_, i) => {
    const gc = new GcTrace()
    gcs.push(gc)
    // the GC trace lines (consumed here, not part of the node's log) kept beside it
    const gcLog = logDir !== undefined ? path.join(logDir, `node${i + 1}.gc.log`) : undefined
    return new MqimNode({
      id: `soak-${tag}-n${i + 1}`,
      db,
      dataDir: path.join(workDir, `node${i + 1}`),
      config: liftedConfig(ROOT),
      nodeArgs: [
        '--trace-gc',
        ...(process.env.MQIM_SOAK_PROF_DIR !== undefined ? ['--cpu-prof', `--cpu-prof-dir=${process.env.MQIM_SOAK_PROF_DIR}`] : []),
        ...(process.env.MQIM_SOAK_NODE_ARGS ?? '').split(' ').filter(a => a !== '')
      ],
      onStdoutLine: (line) => {
        const consumed = gc.line(line)
        if (consumed && gcLog !== undefined) appendFileSync(gcLog, line + '\n')
        return consumed
      },
      logFile: logDir !== undefined ? path.join(logDir, `node${i + 1}.log`) : undefined,
      onUnexpectedExit: (n) => {
        const what = `${n.id} (pid ${n.pid}) exited on its own (${n.exit?.code ?? n.exit?.signal})`
        nodeExits.push(what)
        log(`${what}; its last output:\n${n.log.slice(-4000)}`)
      }
    })
  })
  await Promise.all(nodes.map(async n => await n.start()))
  log(`nodes up: ${nodes.map(n => `${n.id} pid ${n.pid} mqtt ${n.mqttPort}`).join('; ')}`)

  // devices: home nodes alternate, the other node is the failover
  const world = new World()
  const ctx = { world, metrics }
  accounts.forEach((a, i) => {
    const home = i % nodes.length
    const ports = [...nodes.slice(home), ...nodes.slice(0, home)].map(n => n.mqttPort)
    world.devices.set(a.id, new Device(a, i % 2 === 1, ports, ctx))
  })
  const devices = [...world.devices.values()]
  const close = async (): Promise<void> => {
    await Promise.allSettled(devices.map(async d => await d.stop()))
    await Promise.allSettled(nodes.map(async n => await n.kill('SIGTERM', 15_000)))
  }
  try {
    const t0 = Date.now()
    await eachLimited(devices, 32, async (d) => {
      if (!(await d.connect(60_000))) throw new Error(`${d.id} could not connect within 60 s`)
    })
    log(`${devices.length} devices connected in ${((Date.now() - t0) / 1000).toFixed(1)} s`)

    // groups: distinct owners, random members
    const t1 = Date.now()
    const ids = accounts.map(a => a.id)
    const owners = sample(ids, opts.groups)
    await eachLimited(owners, 8, async (owner, k) => {
      const size = opts.groupMin + Math.floor(random() * (opts.groupMax - opts.groupMin + 1))
      const members = sample(ids.filter(id => id !== owner), size - 1)
      const client = world.devices.get(owner)?.client
      if (client == null) throw new Error(`no device for ${owner}`)
      const r = await client.call<{ conv: string, members: string[] }>('create-group', { name: `soak group ${k}`, members })
      world.addConv({ id: r.conv, kind: 'group', members: r.members, owner })
    })
    // direct chats between random pairs
    const pairs: Array<[string, string]> = []
    for (let tries = 0; pairs.length < opts.directs && tries < opts.directs * 20; tries++) {
      const [a, b] = sample(ids, 2)
      if (a === undefined || b === undefined || world.pairs.has(World.pairKey(a, b))) continue
      world.pairs.add(World.pairKey(a, b))
      pairs.push([a, b])
    }
    await eachLimited(pairs, 16, async ([a, b]) => {
      const client = world.devices.get(a)?.client
      if (client == null) throw new Error(`no device for ${a}`)
      const r = await client.call<{ conv: string }>('direct', { user: b })
      world.addConv({ id: r.conv, kind: 'direct', members: [a, b], owner: null })
    })
    const sizes = world.groups.map(g => g.members.length)
    log(`${world.groups.length} groups (${Math.min(...sizes)}-${Math.max(...sizes)} members, ${sizes.reduce((a, b) => a + b, 0)} memberships) and ${world.directs.length} direct chats made in ${((Date.now() - t1) / 1000).toFixed(1)} s`)
  } catch (err) {
    await close()
    throw err
  }
  return { world, nodes, gcs, services, nodeExits, close }
}
