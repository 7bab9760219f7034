/**
 * Replies whose bulk is already serialized: a JSON array whose elements are JSON bytes made
 * elsewhere (message envelopes, see im/envelopes.ts), written into the reply without being parsed
 * or serialized again. A page of ~1 MiB is then one copy of its bytes instead of a JSON.stringify
 * of every message, a second of the whole page, and its UTF-8 encoding.
 */
import type { Reply } from './schemas.js'

/** A JSON array of already serialized values. `T` names what each element is, for readers of the types. */
export class RawJsonArray<T = unknown> {
  /** Bytes of the array as JSON: the elements, a comma between each two, and the brackets. */
  readonly byteLength: number

  constructor (readonly items: readonly Buffer[]) {
    this.byteLength = items.reduce((n, b) => n + b.length, 0) + Math.max(0, items.length - 1) + 2
  }

  /** For anything that serializes it with JSON.stringify (logs, tests): the parsed elements. */
  toJSON (): T[] {
    return this.items.map(b => JSON.parse(b.toString('utf8')) as T)
  }
}

const COMMA = Buffer.from(',')

/**
 * A reply as the bytes sent on the wire. Exactly what JSON.stringify(reply) gives, except that a
 * RawJsonArray at the top level of a result is copied in as it is.
 */
export function serializeReply (reply: Reply): Buffer {
  const result = reply.ok ? reply.result : undefined
  if (result === null || typeof result !== 'object' || !Object.values(result).some(v => v instanceof RawJsonArray)) {
    return Buffer.from(JSON.stringify(reply))
  }
  const pieces: Buffer[] = []
  let text = `{"id":${JSON.stringify(reply.id)},"op":${JSON.stringify(reply.op)},"ok":true,"result":{`
  let first = true
  for (const [key, value] of Object.entries(result)) {
    if (value === undefined || typeof value === 'function' || typeof value === 'symbol') continue
    text += `${first ? '' : ','}${JSON.stringify(key)}:`
    first = false
    if (value instanceof RawJsonArray) {
      pieces.push(Buffer.from(text + '['))
      value.items.forEach((item, i) => {
        if (i > 0) pieces.push(COMMA)
        pieces.push(item)
      })
      text = ']'
    } else {
      text += JSON.stringify(value)
    }
  }
  pieces.push(Buffer.from(text + '}}'))
  return Buffer.concat(pieces)
}
