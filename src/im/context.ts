/** What every operation handler gets: who is calling, and the services it may use. */
import type { Config } from '../config.js'
import type { Logger } from '../log.js'
import type { MessageStore, MetadataStore } from '../store/types.js'
import type { ConversationDirectory } from './directory.js'
import type { Publisher } from './publisher.js'
import type { Sequencer } from './sequencer.js'
import type { ReceiptAggregator } from './receipts.js'
import type { PresenceService } from './presence.js'
import type { ReadCursors } from './read-cursors.js'
import type { EnvelopeCache } from './envelopes.js'
import type { Metrics } from '../metrics.js'
import type { Webhooks } from './webhooks.js'
import type { BlockService } from './blocks.js'
import type { PushService } from './push.js'
import type { FileService } from '../files/service.js'
import type { ChannelSubscriptions } from '../gateway/channels.js'

export interface Caller {
  userId: string
  deviceId: string
}

export interface Services {
  config: Config
  logger: Logger
  meta: MetadataStore
  messages: MessageStore
  sequencer: Sequencer
  directory: ConversationDirectory
  publisher: Publisher
  receipts: ReceiptAggregator
  presence: PresenceService
  readCursors: ReadCursors
  /** Message envelopes serialized once (deliveries, history pages, list previews). */
  envelopes: EnvelopeCache
  /** Prometheus metrics (absent in unit tests that build Services by hand). */
  metrics?: Metrics
  /** Webhooks, and the before-send hook of `send` (absent when none is configured). */
  webhooks?: Webhooks
  /** Who blocks whom (cached for the send path). */
  blocks: BlockService
  /** Offline push (absent in unit tests that build Services by hand). */
  push?: PushService
  /** Attachments (absent in unit tests that build Services by hand: upload answers UNAVAILABLE). */
  files?: FileService
  /** Subscribes and unsubscribes channel members' connections (gateway/channels.ts). */
  channels: ChannelSubscriptions
  now: () => number
}

export type Handler<Req, Res> = (caller: Caller, request: Req, services: Services) => Promise<Res>
