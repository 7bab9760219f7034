/**
 * The soak's traffic, open loop on three clocks (the n-th event is due at start + n / rate,
 * whatever happened to the earlier ones; an event-loop stall makes the due ones go out together):
 *
 * - sends: `rate` per second in all; a direct chat with probability `directShare`, else a group,
 *   each chosen uniformly among those with a member online; the sender is a random online member.
 *   A send whose sender's window is full is not made (and not achieved);
 * - reconnects: `reconnectsPerSecond` in all, of random idle devices (half of the devices have
 *   persistent sessions, half clean ones); each stays away 1-5 s, then syncs (see device.ts);
 * - changes: `changesPerSecond`, each a new direct chat between two users that have none, a member
 *   added to a group (below the largest group size), or one removed (above the smallest), by the
 *   group's owner.
 */
import type { Metrics } from './metrics.js'
import { World, type Conv, type Device } from './device.js'
import { random } from '../lib/random.js'

export interface MixOptions {
  rate: number
  directShare: number
  reconnectsPerSecond: number
  changesPerSecond: number
  groupMin: number
  groupMax: number
  reconnectTimeoutMs: number
}

/** Changes in flight at most; a change due beyond it is skipped. */
const CHANGES_IN_FLIGHT = 8

function pick<T> (items: readonly T[]): T | undefined {
  return items.length === 0 ? undefined : items[Math.floor(random() * items.length)]
}

export class Mix {
  /** Sends due so far (offered), and how many of them were not made. */
  sendsDue = 0
  notSentNoMemberOnline = 0
  notSentWindowFull = 0
  reconnectsDue = 0
  changesDue = 0
  private readonly devices: Device[]
  private readonly accounts: string[]
  private timers: NodeJS.Timeout[] = []
  private t0 = 0
  private changesInFlight = 0

  constructor (private readonly world: World, private readonly metrics: Metrics, private readonly opts: MixOptions) {
    this.devices = [...world.devices.values()]
    this.accounts = this.devices.map(d => d.id)
  }

  start (t0: number): void {
    this.t0 = t0
    this.timers = [
      setInterval(() => this.sendTick(), 5),
      setInterval(() => this.churnTick(), 20),
      setInterval(() => this.changeTick(), 50)
    ]
  }

  stop (): void {
    for (const t of this.timers) clearInterval(t)
    this.timers = []
  }

  private due (rate: number): number {
    return Math.floor((Date.now() - this.t0) * rate / 1000)
  }

  private sendTick (): void {
    const due = this.due(this.opts.rate)
    for (; this.sendsDue < due; this.sendsDue++) this.sendOne()
  }

  /** One send: a conversation with a member online (drawn again, up to 20 times, while none is), from a random online member. */
  private sendOne (): void {
    const { world } = this
    const useDirect = random() < this.opts.directShare ? world.directs.length > 0 : world.groups.length === 0
    for (let draw = 0; draw < 20; draw++) {
      const conv = pick(useDirect ? world.directs : world.groups)
      if (conv === undefined) break
      const online: Device[] = []
      for (const m of conv.members) {
        const d = world.devices.get(m)
        if (d?.online === true) online.push(d)
      }
      const sender = pick(online)
      if (sender === undefined) continue
      if (!sender.send(conv.id)) this.notSentWindowFull++
      return
    }
    this.notSentNoMemberOnline++
  }

  private churnTick (): void {
    const due = this.due(this.opts.reconnectsPerSecond)
    for (; this.reconnectsDue < due; this.reconnectsDue++) {
      let device: Device | undefined
      for (let i = 0; i < 20 && device === undefined; i++) {
        const d = pick(this.devices)
        if (d?.churnable === true) device = d
      }
      if (device === undefined) {
        this.metrics.count('reconnects_skipped')
        continue
      }
      this.metrics.count(device.clean ? 'reconnects_clean' : 'reconnects_persistent')
      const offlineMs = 1000 + random() * 4000
      void device.churn(offlineMs, this.opts.reconnectTimeoutMs).then(ok => this.metrics.count(ok ? 'reconnects' : 'reconnects_failed'))
    }
  }

  private changeTick (): void {
    const due = this.due(this.opts.changesPerSecond)
    for (; this.changesDue < due; this.changesDue++) {
      if (this.changesInFlight >= CHANGES_IN_FLIGHT) {
        this.metrics.count('changes_skipped')
        continue
      }
      const kinds = ['direct', 'add', 'remove'] as const
      const first = Math.floor(random() * kinds.length)
      let started = false
      // the chosen kind first; when it cannot be made now (owner offline, ...), the next one
      for (let i = 0; i < kinds.length && !started; i++) {
        const kind = kinds[(first + i) % kinds.length]
        const change = kind === 'direct' ? this.newDirect() : kind === 'add' ? this.addMember() : this.removeMember()
        if (change !== null) {
          started = true
          this.changesInFlight++
          void change.finally(() => { this.changesInFlight-- })
        }
      }
      if (!started) this.metrics.count('changes_skipped')
    }
  }

  private onlineDevice (): Device | undefined {
    for (let i = 0; i < 20; i++) {
      const d = pick(this.devices)
      if (d?.online === true) return d
    }
    return undefined
  }

  private newDirect (): Promise<void> | null {
    const a = this.onlineDevice()
    if (a === undefined) return null
    let b: string | undefined
    for (let i = 0; i < 20 && b === undefined; i++) {
      const c = pick(this.accounts)
      if (c !== undefined && c !== a.id && !this.world.pairs.has(World.pairKey(a.id, c))) b = c
    }
    if (b === undefined) return null
    const peer = b
    this.world.pairs.add(World.pairKey(a.id, peer))
    return (async () => {
      const r = await a.request<{ conv: string }>('direct', { user: peer })
      if (r === null) {
        this.world.pairs.delete(World.pairKey(a.id, peer))
        return
      }
      this.world.addConv({ id: r.conv, kind: 'direct', members: [a.id, peer], owner: null })
      this.metrics.count('changes_direct')
    })()
  }

  /** A group whose owner is online and that passes `ok`. */
  private group (ok: (g: Conv) => boolean): { g: Conv, owner: Device } | null {
    for (let i = 0; i < 20; i++) {
      const g = pick(this.world.groups)
      const owner = g?.owner === null || g?.owner === undefined ? undefined : this.world.devices.get(g.owner)
      if (g !== undefined && owner?.online === true && ok(g)) return { g, owner }
    }
    return null
  }

  private addMember (): Promise<void> | null {
    const found = this.group(g => g.members.length + g.changing.size < this.opts.groupMax)
    if (found === null) return null
    const { g, owner } = found
    let user: string | undefined
    for (let i = 0; i < 20 && user === undefined; i++) {
      const c = pick(this.accounts)
      if (c !== undefined && !g.members.includes(c) && !g.changing.has(c)) user = c
    }
    if (user === undefined) return null
    const u = user
    g.changing.add(u)
    return (async () => {
      try {
        const r = await owner.request('add-members', { conv: g.id, members: [u] }, g.id)
        if (r !== null) {
          this.world.addMember(g, u)
          this.metrics.count('changes_add')
        }
      } finally {
        g.changing.delete(u)
      }
    })()
  }

  private removeMember (): Promise<void> | null {
    const found = this.group(g => g.members.length > this.opts.groupMin)
    if (found === null) return null
    const { g, owner } = found
    const candidates = g.members.filter(m => m !== g.owner && !g.changing.has(m))
    const u = pick(candidates)
    if (u === undefined) return null
    g.changing.add(u)
    // out of the model first: no send from them is made after this
    this.world.removeMember(g, u)
    return (async () => {
      try {
        const r = await owner.request('remove-member', { conv: g.id, user: u }, g.id)
        if (r !== null) this.metrics.count('changes_remove')
      } finally {
        g.changing.delete(u)
      }
    })()
  }
}
