/**
 * mqim client SDK: works in Node (mqtt:// or ws://) and, bundled by esbuild, in the browser (ws://).
 * Node-only helpers (FileStorage) live in ./node.ts so the browser bundle never reaches node: modules.
 *
 *   const im = await ImClient.connect({ url: 'ws://localhost:8080/mqtt', userId: 'alice', password, deviceId: 'web' })
 *   im.on('message', m => render(m))
 *   const { conv } = await im.direct('bob')
 *   await im.send(conv, 'hi')
 *
 * Where `message` events start (see sync.ts): a device whose storage is empty starts every
 * conversation it finds in its first `list` at that conversation's lastSeq, so older messages are not
 * replayed as events (fetch them with `history()`). A conversation this device is added to later starts
 * right after the join (the first message that arrives live); a conversation it meets otherwise later
 * starts at most `maxBackfill` (default 100) messages back. From its start on, every message of a
 * conversation is emitted exactly once, in seq order, gaps filled from history first.
 */
export { ImClient } from './client.js'
export { ImClientError, type ImClientErrorCode } from './errors.js'
export { MemoryStorage, LocalStorageStorage } from './storage.js'
export { applyChange, isChange } from './changes.js'
export { xhrUploader, fetchUploader, type FileSource, type SendFileOptions, type Uploader, type UploadProgress } from './files.js'
export type { FileDescriptor, UploadGrant, DownloadGrant } from '../files/service.js'
export type {
  ClientStorage, ImClientOptions, IntervalTimer, ConnectionState, ImClientEvents,
  MemberEvent, ReadEvent, ReceiptEvent, PresenceEvent, TypingEvent, TypingResult, MentionEvent, BlockResult, BlocksResult, PushTargetInput, PushRegisterResult, PushUnregisterResult, PushTargetsResult, PresenceResult, Role, SendOptions, SendResult, HistoryQuery, HistoryResult,
  DirectResult, CreateGroupResult, AddMembersResult, RemoveMemberResult, LeaveResult, RenameResult,
  SetRoleResult, MembersResult, MuteResult, ReadResult, ReceiptsResult, CreateChannelResult, JoinResult, ChannelInfoResult, PostPolicy,
  CreateInviteResult, InvitesResult, InviteSummary, RevokeInviteResult,
  ConversationSummary, ImEvent, MessageEnvelope
} from './types.js'
