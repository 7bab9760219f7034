/**
 * The dispatcher: one entry point for every request. It knows who the caller is, and runs
 * UTF-8 decoding -> nesting depth -> JSON parse (for the request id) -> size limit -> operation
 * name -> schema validation -> the operation's handler, mapping every failure to a
 * {code, message} reply (src/errors.ts). It never throws.
 */
import type { z } from 'zod'
import { ImError, toWireError } from '../errors.js'
import { isStoreUnavailable } from '../store/errors.js'
import { REQUESTS, isOpName, type OpName, type RequestOf, type Reply } from '../protocol/schemas.js'
import type { Caller, Handler, Services } from './context.js'
import { send } from './ops/send.js'
import { history } from './ops/history.js'
import { read, mute, receipts } from './ops/read.js'
import { list } from './ops/list.js'
import { presence } from './ops/presence.js'
import { settings } from './ops/settings.js'
import { block, unblock, blocks } from './ops/blocks.js'
import { edit, remove, react, typing } from './ops/changes.js'
import { pushRegister, pushUnregister, pushTargets } from './ops/push.js'
import { upload, fileUrl } from './ops/files.js'
import { createChannel, join, channelInfo } from './ops/channels.js'
import { createInvite, invites, revokeInvite } from './ops/invites.js'
import { direct, createGroup, addMembers, removeMember, leave, rename, setRole, members } from './ops/conversations.js'

type HandlerTable = { [K in OpName]: Handler<RequestOf<K>, unknown> }

const HANDLERS: HandlerTable = {
  send,
  history,
  read,
  mute,
  list,
  direct,
  'create-group': createGroup,
  'add-members': addMembers,
  'remove-member': removeMember,
  leave,
  rename,
  'set-role': setRole,
  receipts,
  members,
  presence,
  settings,
  edit,
  delete: remove,
  react,
  typing,
  block,
  unblock,
  blocks,
  'push-register': pushRegister,
  'push-unregister': pushUnregister,
  'push-targets': pushTargets,
  upload,
  'file-url': fileUrl,
  'create-channel': createChannel,
  join,
  'channel-info': channelInfo,
  'create-invite': createInvite,
  invites,
  'revoke-invite': revokeInvite
}

/** Decoding is stateless with stream: false, so one decoder serves every request. */
const UTF8 = new TextDecoder('utf-8', { fatal: true })

const QUOTE = 34
const BACKSLASH = 92
const OPEN_BRACE = 123
const OPEN_BRACKET = 91
const CLOSE_BRACE = 125
const CLOSE_BRACKET = 93

/**
 * True if arrays and objects in the JSON text nest deeper than `max`, counted on the text before
 * it is parsed: deep values would cost recursion later (schema checks, serialization).
 */
export function nestsDeeperThan (text: string, max: number): boolean {
  let depth = 0
  let inString = false
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (inString) {
      if (c === BACKSLASH) i++
      else if (c === QUOTE) inString = false
    } else if (c === QUOTE) {
      inString = true
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--
    }
  }
  return false
}

/** What `input` holds at `path`: `absent` when the last step is a field its object does not have. */
function valueAt (input: unknown, path: readonly PropertyKey[]): { absent: boolean, value: unknown } {
  let value = input
  for (const [n, key] of path.entries()) {
    if (typeof value !== 'object' || value === null) return { absent: false, value: undefined }
    if (n === path.length - 1 && !Array.isArray(value) && !Object.hasOwn(value, key)) return { absent: true, value: undefined }
    value = (value as Record<PropertyKey, unknown>)[key]
  }
  return { absent: false, value }
}

/**
 * The issues as `field: problem`, at most five: a field left out is `required` (zod says what type
 * it expected, or only "Invalid input" for a field of several forms), and an empty string where one
 * is needed says so (a name of spaces only, which is trimmed, too).
 */
function describeIssues (error: z.ZodError, input: unknown): string {
  return error.issues.slice(0, 5).map(i => {
    const field = i.path.length > 0 ? i.path.join('.') : 'payload'
    if (i.code === 'unrecognized_keys') return `unknown field(s): ${i.keys.join(', ')}`
    const at = i.path.length > 0 ? valueAt(input, i.path) : { absent: false, value: input }
    if (at.absent) return `${field}: required`
    if (i.code === 'too_small' && i.origin === 'string' && Number(i.minimum) === 1) {
      return typeof at.value === 'string' && at.value.length > 0 ? `${field}: empty (white space only)` : `${field}: empty`
    }
    return `${field}: ${i.message}`
  }).join('; ')
}

/** The parsed value, or undefined if the text is not JSON. */
function parseJson (text: string): unknown {
  try {
    return JSON.parse(text)
  } catch {
    return undefined
  }
}

/** The request id, when the payload is an object with a usable one (replies carry it back). */
function idOf (json: unknown): string | null {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) return null
  const id = (json as Record<string, unknown>).id
  return typeof id === 'string' && id.length > 0 && id.length <= 64 ? id : null
}

export class Dispatcher {
  constructor (private readonly services: Services) {}

  async handle (caller: Caller, op: string, payload: Buffer): Promise<Reply> {
    let id: string | null = null
    try {
      const { maxPayloadBytes, maxJsonDepth } = this.services.config.limits
      let text: string
      try {
        text = UTF8.decode(payload)
      } catch {
        throw new ImError('BAD_JSON')
      }
      const tooDeep = nestsDeeperThan(text, maxJsonDepth)
      // deep values are not parsed at all (not even for the id): that would cost recursion later
      const json = tooDeep ? undefined : parseJson(text)
      id = idOf(json)
      if (payload.length > maxPayloadBytes) throw new ImError('TOO_LARGE', `payload is ${payload.length} bytes; the limit is ${maxPayloadBytes}`)
      if (tooDeep) throw new ImError('BAD_REQUEST', `arrays and objects nest deeper than ${maxJsonDepth} levels`)
      if (json === undefined) throw new ImError('BAD_JSON')
      if (!isOpName(op)) throw new ImError('UNKNOWN_OP', `unknown operation "${op}"; see topics.md for the list`)
      const parsed = REQUESTS[op].safeParse(json)
      if (!parsed.success) throw new ImError('BAD_REQUEST', describeIssues(parsed.error, json))
      const handler = HANDLERS[op] as Handler<unknown, unknown>
      const result = await handler(caller, parsed.data, this.services)
      this.services.metrics?.request(op, 'ok')
      return { id, op, ok: true, result }
    } catch (caught) {
      const err = !(caught instanceof ImError) && isStoreUnavailable(caught)
        ? new ImError('UNAVAILABLE', 'a storage backend is unavailable; retry later', { cause: caught })
        : caught
      if (!(err instanceof ImError)) {
        this.services.logger.error({ op, user: caller.userId, err }, 'request failed')
      } else if (err.code === 'UNAVAILABLE' || err.code === 'INTERNAL') {
        this.services.logger.warn({ op, user: caller.userId, code: err.code, err: err.cause }, 'request failed')
      }
      const wire = toWireError(err)
      this.services.metrics?.request(op, wire.code)
      return { id, op, ok: false, error: wire }
    }
  }
}
