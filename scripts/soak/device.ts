/**
 * The soak's model of the world (accounts, conversations and their members, as the mix made them)
 * and its devices: one DrillClient per account that sends, receives, answers every batch of
 * received messages with a debounced `read`, and after every (re)connect syncs with `list` (all
 * pages) and `history {after: last seen seq}` for the conversations that had news.
 */
import type { MessageEnvelope } from '../../src/protocol/schemas.js'
import { DrillClient, RequestError } from '../lib/client.js'
import { sleep } from '../lib/procs.js'
import type { Metrics, Op } from './metrics.js'
import { random } from '../lib/random.js'

/** Sends one device may have in flight; a send due while its window is full is not made. */
export const SEND_WINDOW = 4
/**
 * Requests one device may have published without their PUBACK yet (replies and timed-out
 * requests included): beyond it no send is made and reads wait, so that a server that stops
 * acknowledging cannot make the generator hold an ever longer queue.
 */
export const UNACKED_MAX = 16
/** A request without a reply in this time counts as a timeout (and in the latencies at this value). */
export const REQUEST_TIMEOUT_MS = 10_000
/** At most one `read` per conversation per device in this time. */
export const READ_DEBOUNCE_MS = 200
/** `history` requests one device runs at once while syncing (the server's per-user page limit is 4). */
const HISTORY_CONCURRENCY = 4
/** History pages one sync fetches per conversation before it jumps to the end. */
const HISTORY_PAGES_MAX = 10
/** A NOT_MEMBER this soon after the mix removed the user from the conversation is expected. */
const REMOVAL_RACE_MS = 60_000

export interface Account { id: string, kind: 'user' | 'bot', secret: string }

export interface Conv {
  id: string
  kind: 'direct' | 'group'
  members: string[]
  owner: string | null
  /** Members being added or removed right now (not picked for another change). */
  changing: Set<string>
}

/** What the mix has made: conversations, memberships, and the removals that sends or reads may race. */
export class World {
  readonly convs = new Map<string, Conv>()
  readonly directs: Conv[] = []
  readonly groups: Conv[] = []
  readonly pairs = new Set<string>()
  readonly devices = new Map<string, Device>()
  private readonly removed = new Map<string, number>()
  /** True while the load runs (connects then sync). */
  loading = false

  static pairKey (a: string, b: string): string {
    return a < b ? `${a}|${b}` : `${b}|${a}`
  }

  addConv (c: Omit<Conv, 'changing'>): Conv {
    const known = this.convs.get(c.id)
    if (known !== undefined) return known
    const conv: Conv = { ...c, members: [...c.members], changing: new Set() }
    this.convs.set(conv.id, conv)
    if (conv.kind === 'direct') {
      this.directs.push(conv)
      const [a, b] = conv.members
      if (a !== undefined && b !== undefined) this.pairs.add(World.pairKey(a, b))
    } else {
      this.groups.push(conv)
    }
    return conv
  }

  addMember (conv: Conv, user: string): void {
    if (!conv.members.includes(user)) conv.members.push(user)
  }

  /** Takes `user` out of the model at once (no more sends from them), remembering when. */
  removeMember (conv: Conv, user: string): void {
    conv.members = conv.members.filter(m => m !== user)
    const now = Date.now()
    this.removed.set(`${conv.id}|${user}`, now)
    if (this.removed.size > 1000) {
      for (const [k, t] of this.removed) if (now - t > REMOVAL_RACE_MS) this.removed.delete(k)
    }
  }

  recentlyRemoved (conv: string, user: string): boolean {
    const t = this.removed.get(`${conv}|${user}`)
    return t !== undefined && Date.now() - t < REMOVAL_RACE_MS
  }
}

interface ConvState {
  /** highest seq this device has received (push or history) */
  highest: number
  /** highest seq it has acknowledged with `read` */
  readSent: number
  /** a seq above readSent came from someone else */
  news: boolean
  lastReadAt: number
  timer: NodeJS.Timeout | null
  reading: boolean
}

interface ListItem { conv: string, lastSeq: number }

export interface DeviceContext {
  world: World
  metrics: Metrics
}

let msgCounter = 0
const WORDS = 'ok sure see you at the meeting tomorrow lunch build passed shipping now thanks on my way can you review the pull request please done later'.split(' ')

function textBody (): string {
  const n = 3 + Math.floor(random() * 25)
  const words: string[] = []
  for (let i = 0; i < n; i++) words.push(WORDS[Math.floor(random() * WORDS.length)] ?? 'ok')
  return words.join(' ')
}

/** One device (clientId `<user>:phone`) of one account. */
export class Device {
  client: DrillClient | null = null
  /** Requests of any kind awaiting their reply. */
  inFlight = 0
  sendsInFlight = 0
  /** Disconnecting, offline for churn, or reconnecting: not picked for churn again. */
  busy = false
  private leaving = false
  private stopped = false
  private syncing = false
  private syncAgain = false
  private readonly known = new Map<string, ConvState>()

  constructor (
    readonly account: Account,
    /** false: persistent session (clean=false) */
    readonly clean: boolean,
    private readonly ports: number[],
    private readonly ctx: DeviceContext
  ) {}

  get id (): string { return this.account.id }
  /** Connected and not leaving: may send. */
  get online (): boolean { return !this.leaving && this.client?.connected === true }
  /** Online and neither churning nor syncing: may be picked for the next reconnect. */
  get churnable (): boolean { return !this.busy && !this.syncing && this.online }

  /** Connects (a new DrillClient); resolves true once connected, false after `timeoutMs` (it keeps trying). */
  async connect (timeoutMs: number): Promise<boolean> {
    if (this.stopped) return false
    const client = new DrillClient({
      userId: this.id,
      deviceId: 'phone',
      password: this.account.secret,
      ports: this.ports,
      clean: this.clean,
      inbox: true,
      events: true,
      onMessage: (m) => this.onPush(m),
      onEvent: (e) => this.ctx.metrics.count(`events_${typeof e.type === 'string' ? e.type : 'other'}`),
      onConnect: ({ count }) => {
        if (count > 1) this.ctx.metrics.count('reconnects_unplanned')
        if (this.ctx.world.loading) void this.sync()
      }
    })
    this.client = client
    const t0 = Date.now()
    const p0 = performance.now()
    try {
      await client.start(timeoutMs)
    } catch {
      if (this.ctx.world.loading) this.ctx.metrics.failure('connect', 'not-connected', false)
      return false
    }
    if (this.ctx.world.loading) this.ctx.metrics.success('connect', t0, performance.now() - p0)
    return true
  }

  /**
   * Reconnect churn: stops sending, lets the requests in flight finish (answered or timed out, so
   * that slow ones count in the latencies rather than vanish), closes the connection, stays away
   * `offlineMs`, and connects again (the sync follows from onConnect).
   */
  async churn (offlineMs: number, connectTimeoutMs: number): Promise<boolean> {
    this.busy = true
    this.leaving = true
    try {
      const deadline = Date.now() + REQUEST_TIMEOUT_MS + 1000
      while (this.inFlight > 0 && Date.now() < deadline) await sleep(20)
      await this.client?.stop()
      this.client = null
      await sleep(offlineMs)
      this.leaving = false
      return await this.connect(connectTimeoutMs)
    } finally {
      this.leaving = false
      this.busy = false
    }
  }

  async stop (): Promise<void> {
    this.stopped = true
    this.leaving = true
    for (const st of this.known.values()) if (st.timer !== null) clearTimeout(st.timer)
    await this.client?.stop()
  }

  /** Publishes a send unless the window is full; false when it was not made. */
  send (conv: string): boolean {
    if (this.sendsInFlight >= SEND_WINDOW || (this.client?.unacked ?? 0) >= UNACKED_MAX) return false
    this.sendsInFlight++
    const msgId = `${this.id.replaceAll('.', '_')}-${++msgCounter}`
    void this.request('send', { conv, msgId, kind: 'text', body: textBody() }, conv)
      .finally(() => { this.sendsInFlight-- })
    return true
  }

  /** A request, timed and classified; resolves with the result, or null after recording the failure. */
  async request<T> (op: Op, body: Record<string, unknown>, conv?: string): Promise<T | null> {
    const { metrics, world } = this.ctx
    const client = this.client
    if (client === null || !client.connected) {
      metrics.failure(op, 'not-connected', this.leaving)
      return null
    }
    this.inFlight++
    const t0 = Date.now()
    const p0 = performance.now()
    try {
      const reply = await client.request(op, body, REQUEST_TIMEOUT_MS)
      const ms = performance.now() - p0
      if (reply.ok) {
        metrics.success(op, t0, ms)
        return reply.result as T
      }
      const expected = reply.error.code === 'NOT_MEMBER' && conv !== undefined && world.recentlyRemoved(conv, this.id)
      metrics.failure(op, reply.error.code, expected, t0, ms)
      return null
    } catch (err) {
      if (!(err instanceof RequestError)) throw err
      if (err.kind === 'timeout') metrics.failure(op, 'timeout', false, t0, REQUEST_TIMEOUT_MS)
      // stopped: our own churn closed the connection under it
      else metrics.failure(op, err.kind === 'stopped' ? 'dropped-by-churn' : err.kind, err.kind === 'stopped')
      return null
    } finally {
      this.inFlight--
    }
  }

  private state (conv: string): ConvState {
    let st = this.known.get(conv)
    if (st === undefined) this.known.set(conv, st = { highest: 0, readSent: 0, news: false, lastReadAt: 0, timer: null, reading: false })
    return st
  }

  private onPush (m: MessageEnvelope): void {
    this.ctx.metrics.count('deliveries')
    this.take(m.conv, m.seq, m.from)
  }

  private take (conv: string, seq: number, from: string): void {
    const st = this.state(conv)
    if (seq > st.highest) st.highest = seq
    if (from !== this.id && seq > st.readSent) {
      st.news = true
      this.scheduleRead(conv, st)
    }
  }

  /** One `read` up to the highest seq received, at most one per READ_DEBOUNCE_MS and one in flight per conversation. */
  private scheduleRead (conv: string, st: ConvState): void {
    if (st.timer !== null || st.reading) return
    const delay = Math.max(0, st.lastReadAt + READ_DEBOUNCE_MS - Date.now())
    st.timer = setTimeout(() => {
      st.timer = null
      if (!st.news || st.highest <= st.readSent || !this.online) return
      if ((this.client?.unacked ?? 0) >= UNACKED_MAX) {
        // the server is not acknowledging: try again later
        this.ctx.metrics.count('reads_deferred')
        st.lastReadAt = Date.now()
        this.scheduleRead(conv, st)
        return
      }
      const seq = st.highest
      st.news = false
      st.reading = true
      st.lastReadAt = Date.now()
      void this.request('read', { conv, seq }, conv).then(r => {
        if (r !== null && seq > st.readSent) st.readSent = seq
      }).finally(() => {
        st.reading = false
        if (st.news && st.highest > st.readSent) this.scheduleRead(conv, st)
      })
    }, delay)
  }

  /** After a connect: every page of `list`, then `history {after}` of the conversations with news, then reads. */
  async sync (): Promise<void> {
    if (this.syncing) {
      this.syncAgain = true
      return
    }
    this.syncing = true
    const { metrics } = this.ctx
    try {
      do {
        this.syncAgain = false
        const stale: ListItem[] = []
        let cursor: string | null = null
        let complete = false
        for (let page = 0; page < 100; page++) {
          const r: { conversations: ListItem[], next: string | null } | null = await this.request('list', cursor === null ? {} : { cursor })
          if (r === null) break
          metrics.count('list_pages')
          for (const c of r.conversations) {
            const st = this.known.get(c.conv)
            if (c.lastSeq > (st?.highest ?? 0)) stale.push({ conv: c.conv, lastSeq: c.lastSeq })
          }
          cursor = r.next
          if (cursor === null) { complete = true; break }
        }
        if (!complete) return
        metrics.count('lists')
        let next = 0
        await Promise.all(Array.from({ length: HISTORY_CONCURRENCY }, async () => {
          while (next < stale.length && this.online) {
            const item = stale[next++] as ListItem
            await this.catchUp(item.conv)
          }
        }))
        // reads that were due while the device was away
        for (const [conv, st] of this.known) if (st.news && st.highest > st.readSent) this.scheduleRead(conv, st)
      } while (this.syncAgain && this.online)
    } finally {
      this.syncing = false
    }
  }

  private async catchUp (conv: string): Promise<void> {
    const { metrics } = this.ctx
    type Page = { messages: MessageEnvelope[], lastSeq: number, hasMore: boolean }
    const st = this.known.get(conv)
    if (st === undefined) {
      // a conversation this device never saw (joined while away): the newest page, as a new screen would
      const r = await this.request<Page>('history', { conv, limit: 50 }, conv)
      if (r === null) return
      metrics.count('history_pages')
      metrics.count('histories')
      metrics.count('history_messages', r.messages.length)
      for (const m of r.messages) this.take(conv, m.seq, m.from)
      return
    }
    for (let page = 0; page < HISTORY_PAGES_MAX; page++) {
      const r = await this.request<Page>('history', { conv, after: st.highest }, conv)
      if (r === null) return
      metrics.count('history_pages')
      metrics.count('history_messages', r.messages.length)
      for (const m of r.messages) this.take(conv, m.seq, m.from)
      if (!r.hasMore || r.messages.length === 0) break
      if (page === HISTORY_PAGES_MAX - 1) {
        metrics.count('history_truncated')
        st.highest = Math.max(st.highest, r.lastSeq)
      }
    }
    metrics.count('histories')
  }
}
