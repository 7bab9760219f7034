/**
 * The dispatcher: one entry point for every request. It knows who the caller is, and runs
 * size check -> JSON parse -> schema validation -> the operation's handler, mapping every
 * failure to a {code, message} reply (src/errors.ts). It never throws.
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
  presence
}

/** Decoding is stateless with stream: false, so one decoder serves every request. */
const UTF8 = new TextDecoder('utf-8', { fatal: true })

function describeIssues (error: z.ZodError): string {
  return error.issues.slice(0, 5).map(i => {
    const field = i.path.length > 0 ? i.path.join('.') : 'payload'
    if (i.code === 'unrecognized_keys') return `unknown field(s): ${i.keys.join(', ')}`
    return `${field}: ${i.message}`
  }).join('; ')
}

export class Dispatcher {
  constructor (private readonly services: Services) {}

  async handle (caller: Caller, op: string, payload: Buffer): Promise<Reply> {
    let id: string | null = null
    try {
      if (payload.length > this.services.config.limits.maxPayloadBytes) {
        throw new ImError('TOO_LARGE', `payload is ${payload.length} bytes; the limit is ${this.services.config.limits.maxPayloadBytes}`)
      }
      let json: unknown
      try {
        json = JSON.parse(UTF8.decode(payload))
      } catch {
        throw new ImError('BAD_JSON')
      }
      if (typeof json === 'object' && json !== null && !Array.isArray(json)) {
        const maybeId = (json as Record<string, unknown>).id
        if (typeof maybeId === 'string' && maybeId.length > 0 && maybeId.length <= 64) id = maybeId
      }
      if (!isOpName(op)) throw new ImError('UNKNOWN_OP', `unknown operation "${op}"; see topics.md for the list`)
      const parsed = REQUESTS[op].safeParse(json)
      if (!parsed.success) throw new ImError('BAD_REQUEST', describeIssues(parsed.error))
      const handler = HANDLERS[op] as Handler<unknown, unknown>
      const result = await handler(caller, parsed.data, this.services)
      return { id, op, ok: true, result }
    } catch (caught) {
      const err = !(caught instanceof ImError) && isStoreUnavailable(caught)
        ? new ImError('UNAVAILABLE', 'a storage backend is unavailable; retry later', { cause: caught })
        : caught
      if (!(err instanceof ImError)) {
        this.services.logger.error('request failed', { op, user: caller.userId, err: err instanceof Error ? err.stack : String(err) })
      } else if (err.code === 'UNAVAILABLE' || err.code === 'INTERNAL') {
        this.services.logger.warn('request failed', { op, user: caller.userId, code: err.code, cause: String(err.cause ?? '') })
      }
      return { id, op, ok: false, error: toWireError(err) }
    }
  }
}
