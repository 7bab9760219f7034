/** ImClient: the public face of the SDK, wiring the connection, ordering, outbox and read batching together. */
import type { ConversationSummary, ImEvent, MessageEnvelope, OpName, RequestOf } from '../protocol/schemas.js'
import { DEVICE_ID_PATTERN, USER_ID_PATTERN } from '../protocol/topics.js'
import { Connection } from './connection.js'
import { Emitter } from './emitter.js'
import { ImClientError } from './errors.js'
import { randomId } from './ids.js'
import { LIST_PAGE_LIMIT, LIST_PAGES_MAX, listAll, type ConversationList, type ListPage } from './list.js'
import { Outbox } from './outbox.js'
import { ReadBatcher } from './reads.js'
import { MemoryStorage, readState, StateStore, type OutboxEntry, type PersistedState } from './storage.js'
import { ConversationSync } from './sync.js'
import type {
  AddMembersResult, ClientStorage, ConnectionState, CreateGroupResult, DirectResult, HistoryQuery, HistoryResult, ImClientEvents,
  ImClientOptions, LeaveResult, MembersResult, MuteResult, PresenceResult, ReadResult, ReceiptsResult, RemoveMemberResult, RenameResult,
  Role, SendOptions, SendResult, SetRoleResult, TypingResult, BlockResult, BlocksResult, PostPolicy,
  PushRegisterResult, PushTargetInput, PushTargetsResult, PushUnregisterResult, CreateChannelResult, JoinResult, ChannelInfoResult,
  CreateInviteResult, InvitesResult, RevokeInviteResult
} from './types.js'
import { applyChange } from './changes.js'
import { defaultUploader, describeSource, httpBaseOf, resolveFileUrl, uploadError, type FileSource, type SendFileOptions } from './files.js'
import type { DownloadGrant, UploadGrant } from '../files/service.js'

/** The `result` of each operation's reply (topics.md, "Operations"). */
export interface Results extends Record<OpName, unknown> {
  send: SendResult
  history: HistoryResult
  read: ReadResult
  mute: MuteResult
  list: ListPage
  direct: DirectResult
  'create-group': CreateGroupResult
  'add-members': AddMembersResult
  'remove-member': RemoveMemberResult
  leave: LeaveResult
  rename: RenameResult
  'set-role': SetRoleResult
  members: MembersResult
  receipts: ReceiptsResult
  presence: PresenceResult
  edit: SendResult
  delete: SendResult
  block: BlockResult
  unblock: BlockResult
  blocks: BlocksResult
  react: SendResult
  typing: TypingResult
  'push-register': PushRegisterResult
  'push-unregister': PushUnregisterResult
  'push-targets': PushTargetsResult
  upload: UploadGrant
  'file-url': DownloadGrant
  'create-channel': CreateChannelResult
  join: JoinResult
  'channel-info': ChannelInfoResult
  'create-invite': CreateInviteResult
  invites: InvitesResult
  'revoke-invite': RevokeInviteResult
}

/** Same pattern as ClientMsgId in src/protocol/schemas.ts. */
const MSG_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/

const DEFAULTS = { requestTimeoutMs: 10000, readDebounceMs: 500, reconnectPeriodMs: 1000, connectTimeoutMs: 10000, maxBackfill: 100, saveIntervalMs: 200 }

export class ImClient {
  readonly userId: string
  readonly deviceId: string
  state: ConnectionState = 'connecting'

  private readonly events = new Emitter<ImClientEvents>()
  private readonly conn: Connection
  private readonly sync: ConversationSync
  private readonly outbox: Outbox
  private readonly reads: ReadBatcher
  private readonly store: StateStore
  private readonly options: ImClientOptions & typeof DEFAULTS
  private onlineWaiters: Array<{ resolve: () => void, reject: (err: ImClientError) => void }> = []
  private syncing: Promise<void> | null = null
  private syncAgain = false

  /**
   * Connects and resolves once online with the initial sync done; rejects (and closes) on bad
   * credentials or after `connectTimeoutMs`. Messages the initial sync emits reach the listeners
   * given in `options.on` (listeners added with `on()` afterwards see what comes later).
   */
  static async connect (options: ImClientOptions): Promise<ImClient> {
    if (!USER_ID_PATTERN.test(options.userId)) throw new ImClientError('BAD_REQUEST', `not a user id: ${options.userId}`)
    if (!DEVICE_ID_PATTERN.test(options.deviceId)) throw new ImClientError('BAD_REQUEST', `not a device id (1-64 of A-Z a-z 0-9 _ -): ${options.deviceId}`)
    const storage = options.storage ?? new MemoryStorage()
    const key = `mqim:${options.userId}:${options.deviceId}`
    const client = new ImClient({ ...DEFAULTS, ...stripUndefined(options) }, storage, key, await readState(storage, key))
    const timeoutMs = client.options.connectTimeoutMs
    let timer: ReturnType<typeof setTimeout> | undefined
    try {
      await Promise.race([
        client.whenOnline(),
        new Promise<never>((_resolve, reject) => { timer = setTimeout(() => { reject(new ImClientError('TIMEOUT', `not online within ${timeoutMs} ms`)) }, timeoutMs) })
      ])
    } catch (err) {
      await client.close()
      throw err
    } finally {
      clearTimeout(timer)
    }
    return client
  }

  private constructor (options: ImClientOptions & typeof DEFAULTS, storage: ClientStorage, key: string, state: PersistedState) {
    this.options = options
    this.userId = options.userId
    this.deviceId = options.deviceId
    const emitError = (err: ImClientError): void => { this.events.emit('error', err) }
    const store = this.store = new StateStore(storage, key, state, {
      saveIntervalMs: options.saveIntervalMs,
      onError: (err) => { emitError(new ImClientError('INTERNAL', `storage: ${String(err)}`)) }
    })
    const isClosed = (): boolean => this.state === 'closed'
    this.events.onListenerError = (err, event) => {
      if (event === 'error') setTimeout(() => { throw err }, 0) // an error listener that throws: like an unhandled error
      else emitError(new ImClientError('INTERNAL', `a ${String(event)} listener threw: ${String(err)}`))
    }
    for (const [event, fn] of Object.entries(options.on ?? {})) if (fn !== undefined) this.events.on(event as keyof ImClientEvents, fn)
    this.sync = new ConversationSync({
      store,
      history: async (conv, after) => await this.call('history', { conv, after }),
      emitMessage: (m) => { this.events.emit('message', m) },
      emitUpdated: (m) => { this.events.emit('updated', m) },
      emitSynced: (conv, seq) => { this.events.emit('synced', conv, seq) },
      emitError,
      maxBackfill: options.maxBackfill,
      retryMs: options.reconnectPeriodMs,
      isClosed
    })
    this.outbox = new Outbox({
      store,
      send: async (e) => await this.call('send', { ...e, body: e.body as RequestOf<'send'>['body'] }),
      whenOnline: async () => { await this.whenOnline() },
      emitSent: (r) => { this.events.emit('sent', r) },
      emitError,
      retryMs: Math.max(50, Math.min(options.reconnectPeriodMs, 500)),
      isClosed
    })
    this.reads = new ReadBatcher({
      debounceMs: options.readDebounceMs,
      read: async (conv, seq) => {
        const r = await this.call('read', { conv, seq })
        // the server's read event goes to this user's other devices: this one has the reply
        this.events.emit('read', { type: 'read', conv: r.conv, readSeq: r.readSeq, unread: r.unread })
        return r
      },
      emitError,
      isClosed
    })
    this.conn = new Connection(options, {
      up: () => { this.onUp() },
      down: () => { if (this.state !== 'closed') this.setState('offline') },
      failure: (err) => { this.onFailure(err) },
      message: (m) => { this.sync.receive(m as MessageEnvelope) },
      event: (e) => { this.onEvent(e as ImEvent) }
    })
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<E extends keyof ImClientEvents>(event: E, fn: ImClientEvents[E]): () => void {
    return this.events.on(event, fn)
  }

  /** Sends a text message. Resolves with the acknowledged seq; retried (same msgId) until acked; rejects only on permanent errors or close(). */
  async send (conv: string, text: string, opts: SendOptions = {}): Promise<SendResult> {
    return await this.enqueue({ conv, msgId: opts.msgId ?? randomId(), kind: 'text', body: text, ...replyTo(opts), ...mentions(opts) })
  }

  /** Sends any JSON value as a `custom` message (cards, bot commands …). */
  async sendCustom (conv: string, body: unknown, opts: SendOptions = {}): Promise<SendResult> {
    return await this.enqueue({ conv, msgId: opts.msgId ?? randomId(), kind: 'custom', body, ...replyTo(opts), ...mentions(opts) })
  }

  /**
   * Sends a file: asks for an upload URL (`upload`), PUTs the bytes (progress: `onProgress` and
   * the `upload` event), then sends a message of kind `file` through the outbox like `send`.
   * Rejects with the server's code when the upload is refused (TOO_LARGE, UNSUPPORTED_TYPE, LIMIT_REACHED …).
   */
  async sendFile (conv: string, file: FileSource, opts: SendFileOptions = {}): Promise<SendResult & { file: string }> {
    const { name, mime, size } = describeSource(file, opts)
    const msgId = opts.msgId ?? randomId()
    if (!MSG_ID_PATTERN.test(msgId)) throw new ImClientError('BAD_REQUEST', 'sendFile: msgId must be 1-64 of A-Z a-z 0-9 _ -', 'send')
    const grant = await this.call('upload', { conv, name, size, mime })
    const progress = (sent: number): void => {
      const p = { conv, file: grant.id, name, sent, total: size }
      opts.onProgress?.(p)
      this.events.emit('upload', p)
    }
    const uploader = this.options.uploader ?? defaultUploader()
    const url = resolveFileUrl(grant.url, this.httpBase())
    const { status, text } = await uploader({ url, method: grant.method, headers: grant.headers, body: file, size, onProgress: progress })
    if (status < 200 || status >= 300) throw uploadError(status, text)
    const sent = await this.enqueue({ conv, msgId, kind: 'file', body: { id: grant.id } })
    return { ...sent, file: grant.id }
  }

  /** A short-lived URL of a file of a message (or of its thumbnail), absolute. Members only. */
  async fileUrl (conv: string, file: string, variant: 'original' | 'thumb' = 'original'): Promise<DownloadGrant> {
    const grant = await this.call('file-url', { conv, file, variant })
    return { ...grant, url: resolveFileUrl(grant.url, this.httpBase()) }
  }

  private httpBase (): string | null {
    return this.options.httpUrl ?? httpBaseOf(this.options.url)
  }

  /**
   * Edits my message `target` (within the server's edit window). The local copy shows the new body
   * at once, and goes back if the server refuses (the promise then rejects with its code). Resending
   * with the same `msgId` is safe.
   */
  async edit (conv: string, target: number, body: unknown, opts: { msgId?: string } = {}): Promise<SendResult> {
    return await this.change('edit', conv, target, { body }, opts.msgId, m => ({ ...m, body, edited: { seq: 0, ts: Date.now() } }))
  }

  /** Deletes message `target` for everyone (mine; in groups admins and the owner: anyone's). Optimistic, like edit. */
  async deleteMessage (conv: string, target: number, opts: { msgId?: string } = {}): Promise<SendResult> {
    return await this.change('delete', conv, target, {}, opts.msgId, m => applyChange(m, { kind: 'delete', seq: 0, ts: Date.now(), from: this.userId, body: null }))
  }

  /** Adds my reaction `emoji` to message `target`, or takes it back (`remove`). Optimistic, like edit. */
  async react (conv: string, target: number, emoji: string, opts: { remove?: boolean, msgId?: string } = {}): Promise<SendResult> {
    const remove = opts.remove === true
    return await this.change('react', conv, target, { emoji, remove }, opts.msgId, m => applyChange(m, { kind: 'react', seq: 0, ts: Date.now(), from: this.userId, body: { emoji, remove } }))
  }

  /** Blocks a user: they cannot open or write to a direct conversation with me, add me to groups, or see my presence. */
  async block (user: string): Promise<BlockResult> { return await this.call('block', { user }) }
  async unblock (user: string): Promise<BlockResult> { return await this.call('unblock', { user }) }
  /** Whom I block, with when. */
  async blocks (): Promise<BlocksResult> { return await this.call('blocks', {}) }

  /**
   * Pushes to this device (or `device`) while I am offline: a browser's PushSubscription.toJSON()
   * as `{webPush}`, or an app's token as `{gateway: {name, token, platform}}`. Registering again
   * replaces the device's target.
   */
  async pushRegister (target: PushTargetInput, device?: string): Promise<PushRegisterResult> {
    return await this.call('push-register', { ...target, ...(device === undefined ? {} : { device }) })
  }

  /** No more pushes to this device (or `device`). */
  async pushUnregister (device?: string): Promise<PushUnregisterResult> {
    return await this.call('push-unregister', device === undefined ? {} : { device })
  }

  /** My devices' push targets, the VAPID public key browsers subscribe with, and the server's gateways. */
  async pushTargets (): Promise<PushTargetsResult> { return await this.call('push-targets', {}) }

  /** Tells the other members (online) that I am typing, or stopped. The server sends at most one a second. */
  async typing (conv: string, typing = true): Promise<TypingResult> {
    return await this.call('typing', { conv, typing })
  }

  /** Messages stored in the outbox and not acknowledged yet. */
  get unacked (): number {
    return this.outbox.size
  }

  /** Every conversation of mine (all pages), newest last message first. */
  async list (): Promise<ConversationSummary[]> {
    return (await this.listAll()).conversations
  }

  /** One page of history; the messages also join the local copy (`messages(conv)`). */
  async history (conv: string, q: HistoryQuery = {}): Promise<HistoryResult> {
    const result = await this.call('history', { conv, ...stripUndefined(q) })
    this.sync.merge(conv, result.messages)
    return result
  }

  /** The local copy of a conversation: emitted messages and fetched history, seq ascending, no duplicates. */
  messages (conv: string): MessageEnvelope[] {
    return this.sync.messages(conv)
  }

  async direct (user: string): Promise<DirectResult> { return await this.call('direct', { user }) }
  async createGroup (name: string, members: string[]): Promise<CreateGroupResult> { return await this.call('create-group', { name, members }) }
  async addMembers (conv: string, members: string[]): Promise<AddMembersResult> { return await this.call('add-members', { conv, members }) }
  async removeMember (conv: string, user: string): Promise<RemoveMemberResult> { return await this.call('remove-member', { conv, user }) }
  async leave (conv: string): Promise<LeaveResult> { return await this.call('leave', { conv }) }
  async rename (conv: string, name: string): Promise<RenameResult> { return await this.call('rename', { conv, name }) }
  async setRole (conv: string, user: string, role: Role): Promise<SetRoleResult> { return await this.call('set-role', { conv, user, role }) }
  /** Members of a group (all of them), or one page of a channel's (`after`: the previous page's `next`). */
  async members (conv: string, page: { after?: string, limit?: number } = {}): Promise<MembersResult> { return await this.call('members', { conv, ...page }) }
  /**
   * Creates a channel (see topics.md "Channels"): by default private (members are added by admins)
   * and posted to by its admins and owner only.
   */
  async createChannel (name: string, opts: { public?: boolean, postPolicy?: PostPolicy } = {}): Promise<CreateChannelResult> {
    return await this.call('create-channel', { name, ...opts })
  }

  /** Joins a public channel; its messages arrive as `message` events from the join on. */
  async join (conv: string): Promise<JoinResult> {
    const r = await this.call('join', { conv })
    await this.channelJoined(conv, r.lastSeq)
    return r
  }

  /** A channel's settings, member count, last seq and the caller's role (public channels also for non-members). */
  async channelInfo (conv: string): Promise<ChannelInfoResult> { return await this.call('channel-info', { conv }) }

  /**
   * A new invite code of a channel (admins and the owner): it admits `maxUses` joins (default: any
   * number) until `expiresInMs` from now (default: the server's, 7 days). The code is in this
   * result only; share it (e.g. as a link) and keep its codeId to revoke it.
   */
  async createInvite (conv: string, opts: { maxUses?: number, expiresInMs?: number } = {}): Promise<CreateInviteResult> {
    return await this.call('create-invite', { conv, ...opts })
  }

  /** Joins the channel an invite code belongs to (public or private); its messages arrive as `message` events from the join on. */
  async joinByInvite (code: string): Promise<JoinResult> {
    const r = await this.call('join', { invite: code })
    await this.channelJoined(r.conv, r.lastSeq)
    return r
  }

  /** The live invites of a channel (admins and the owner), without their codes. */
  async invites (conv: string): Promise<InvitesResult> { return await this.call('invites', { conv }) }
  /** Revokes an invite by its codeId: the code stops working at once. */
  async revokeInvite (conv: string, codeId: string): Promise<RevokeInviteResult> { return await this.call('revoke-invite', { conv, codeId }) }
  async mute (conv: string, muted: boolean): Promise<MuteResult> { return await this.call('mute', { conv, muted }) }
  async receipts (conv: string, seq: number): Promise<ReceiptsResult> { return await this.call('receipts', { conv, seq }) }
  /** Online state and last-seen of users who share a conversation with me (others look offline). */
  async presence (users: string[]): Promise<PresenceResult> { return await this.call('presence', { users }) }

  /** Marks everything up to `seq` read. Batched: debounced by `readDebounceMs`, only the highest seq per conversation is sent. */
  markRead (conv: string, seq: number): void {
    this.reads.mark(conv, seq)
  }

  /** Sends pending read marks now. */
  async flushReads (): Promise<void> {
    await this.reads.flush()
  }

  /**
   * Writes the state, sends pending read marks (when online), then disconnects. Unacked sends stay in
   * storage for the next run. The state is written first, in this tick: a page being hidden may get no
   * further turn.
   */
  async close (): Promise<void> {
    if (this.state === 'closed') return
    const saved = this.store.flush()
    if (this.state === 'online') await this.reads.flush().catch(() => {})
    this.setState('closed')
    this.reads.stop()
    this.sync.stop()
    this.outbox.stop()
    for (const w of this.onlineWaiters) w.reject(new ImClientError('CLOSED', 'the client was closed'))
    this.onlineWaiters = []
    await this.conn.close()
    await saved
    await this.store.close()
  }

  /**
   * Sends a request and awaits its reply, resending after RATE_LIMITED for up to `requestTimeoutMs`. The fields are typed by the server's zod schemas
   * (`RequestOf`); the schemas themselves are not bundled (zod would double the browser bundle), so
   * the server validates and answers BAD_REQUEST.
   */
  private async call<K extends OpName>(op: K, fields: Omit<RequestOf<K>, 'id'>): Promise<Results[K]> {
    // RATE_LIMITED is decided before anything else runs, so resending is safe for every operation.
    const deadline = Date.now() + this.options.requestTimeoutMs
    for (let delay = 50; ; delay = Math.min(delay * 2, 2000)) {
      if (this.state === 'closed') throw new ImClientError('CLOSED', 'the client is closed', op)
      try {
        return await this.conn.request<Results[K]>(op, fields)
      } catch (err) {
        if (!(err instanceof ImClientError) || err.code !== 'RATE_LIMITED' || Date.now() + delay > deadline) throw err
      }
      await new Promise(resolve => setTimeout(resolve, delay))
    }
  }

  /** All pages of `list`; an incomplete list (the page bound was hit) is reported as an error event. */
  private async listAll (): Promise<ConversationList> {
    const list = await listAll(async (cursor) => await this.call('list', cursor === undefined ? {} : { cursor, limit: LIST_PAGE_LIMIT }))
    // channels arrive on their own topics: subscribed before their history is pulled (catchUp),
    // so that nothing falls between the two
    const channels = list.conversations.filter(c => c.kind === 'channel').map(c => c.conv)
    const refused = await this.conn.subscribeChannels(channels)
    if (refused.length > 0) this.events.emit('error', new ImClientError('LIMIT_REACHED', `${refused.length} channel(s) not subscribed (server limit channels.subscriptionsPerConnection): their messages arrive on reconnect only`))
    for (const c of list.conversations) this.reads.known(c.conv, c.readSeq)
    if (!list.complete) this.events.emit('error', new ImClientError('INTERNAL', `list: gave up after ${LIST_PAGES_MAX} pages; the list is incomplete`, 'list'))
    return list
  }

  /**
   * A change: applied to the local copy at once; when the server refuses it, the copy goes back to
   * what it was (unless something else changed it meanwhile) and the promise rejects.
   */
  private async change<K extends 'edit' | 'delete' | 'react'> (op: K, conv: string, target: number, fields: Record<string, unknown>, msgId: string | undefined, optimistic: (m: MessageEnvelope) => MessageEnvelope): Promise<SendResult> {
    const id = msgId ?? randomId()
    if (!MSG_ID_PATTERN.test(id)) throw new ImClientError('BAD_REQUEST', `${op}: msgId must be 1-64 of A-Z a-z 0-9 _ -`, op)
    let applied: MessageEnvelope | undefined
    const before = this.sync.updateLocal(conv, target, m => { applied = optimistic(m); return applied })
    try {
      return await this.call(op, { conv, msgId: id, target, ...fields } as unknown as Omit<RequestOf<K>, 'id'>)
    } catch (err) {
      if (before !== undefined) this.sync.updateLocal(conv, target, m => m === applied ? before : m)
      throw err
    }
  }

  /** Checks what would make a stored send fail for ever (msgId, text body) before it enters the outbox. */
  private async enqueue (entry: OutboxEntry): Promise<SendResult> {
    if (this.state === 'closed') throw new ImClientError('CLOSED', 'the client is closed', 'send')
    if (!MSG_ID_PATTERN.test(entry.msgId)) throw new ImClientError('BAD_REQUEST', 'send: msgId must be 1-64 of A-Z a-z 0-9 _ -', 'send')
    if (entry.kind === 'text' && (typeof entry.body !== 'string' || entry.body.length === 0)) throw new ImClientError('BAD_REQUEST', 'send: a text message needs a non-empty string', 'send')
    if (entry.replyTo !== undefined && !(Number.isSafeInteger(entry.replyTo) && entry.replyTo >= 1)) throw new ImClientError('BAD_REQUEST', 'send: replyTo must be a seq >= 1', 'send')
    return await this.outbox.add(entry)
  }

  /**
   * This user is a member of channel `conv` from seq `lastSeq` on: the conversation starts there;
   * its topic is subscribed (the server subscribed this connection already; this covers a reconnect
   * in between) and then what was posted since is pulled, so that a post made before the
   * subscription took effect is not missed.
   */
  private async channelJoined (conv: string, lastSeq: number): Promise<void> {
    this.sync.joinedAt(conv, lastSeq)
    await this.conn.subscribeChannels([conv])
    const page = await this.call('history', { conv, after: lastSeq })
    this.sync.merge(conv, page.messages)
  }

  private async whenOnline (): Promise<void> {
    if (this.state === 'online') return
    if (this.state === 'closed') throw new ImClientError('CLOSED', 'the client is closed')
    await new Promise<void>((resolve, reject) => { this.onlineWaiters.push({ resolve, reject }) })
  }

  private setState (s: ConnectionState): void {
    if (this.state === s) return
    this.state = s
    this.events.emit('state', s)
    if (s === 'online') {
      const waiters = this.onlineWaiters
      this.onlineWaiters = []
      for (const w of waiters) w.resolve()
    }
  }

  /** Connected and subscribed: catch up with `list` + history, then go online. */
  private onUp (): void {
    if (this.state === 'closed') return
    this.setState('connecting')
    if (this.syncing !== null) {
      this.syncAgain = true
      return
    }
    this.syncing = this.syncLoop().finally(() => { this.syncing = null })
  }

  private async syncLoop (): Promise<void> {
    do {
      this.syncAgain = false
      try {
        await this.sync.catchUp(async () => await this.listAll())
        if (this.conn.connected && !this.syncAgain && this.state !== 'closed') {
          this.setState('online')
          this.outbox.resume()
        }
      } catch (err) {
        if (this.state === 'closed') return
        this.events.emit('error', err instanceof ImClientError ? err : new ImClientError('INTERNAL', String(err), 'list'))
        await new Promise(resolve => setTimeout(resolve, this.options.reconnectPeriodMs))
        if (this.conn.connected) this.syncAgain = true
      }
    } while (this.syncAgain && this.state !== 'closed')
  }

  private onFailure (err: ImClientError): void {
    if (this.state === 'closed') return
    this.events.emit('error', err)
    if (err.code === 'AUTH' || err.code === 'FORBIDDEN' || err.code === 'BAD_REQUEST') {
      // Retrying with the same credentials cannot succeed: stop, and fail whoever waits to be online.
      for (const w of this.onlineWaiters) w.reject(err)
      this.onlineWaiters = []
      void this.close()
    }
  }

  private onEvent (e: ImEvent): void {
    switch (e.type) {
      case 'member':
        if (e.users.includes(this.userId)) {
          if (e.action === 'added') this.sync.joined(e.conv)
          else if (e.action === 'removed' || e.action === 'left') this.sync.forget(e.conv)
          if (e.kind === 'channel') {
            if (e.action === 'added' && e.lastSeq !== undefined) {
              this.channelJoined(e.conv, e.lastSeq).catch((err: unknown) => {
                this.events.emit('error', err instanceof ImClientError ? err : new ImClientError('INTERNAL', String(err), 'history'))
              })
            } else if (e.action === 'removed' || e.action === 'left') {
              this.conn.unsubscribeChannel(e.conv)
            }
          }
        }
        this.events.emit('member', e)
        break
      case 'read':
        this.reads.known(e.conv, e.readSeq)
        this.events.emit('read', e)
        break
      case 'receipt':
        this.events.emit('receipt', e)
        break
      case 'presence':
        this.events.emit('presence', e)
        break
      case 'typing':
        this.events.emit('typing', e)
        break
      case 'mention':
        this.events.emit('mention', e)
        break
    }
  }
}

function mentions (opts: SendOptions): { mentions?: string[] } {
  return opts.mentions === undefined ? {} : { mentions: opts.mentions }
}

function replyTo (opts: SendOptions): { replyTo?: number } {
  return opts.replyTo === undefined ? {} : { replyTo: opts.replyTo }
}

function stripUndefined<T extends object> (o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T
}
