/**
 * The tails `list` and push badges count with (src/im/unread.ts): head records are read only for
 * the conversations whose tail this node cannot give itself, and a tail taken that way stands even
 * if this node drops it before the page is built (a failed write drops a conversation's tail).
 */
import { headsNotKnown, tailNow } from '../../src/im/unread.js'
import type { Services } from '../../src/im/context.js'
import type { Tail } from '../../src/im/sequencer.js'
import type { ConversationHead, StoredMessage } from '../../src/store/types.js'

function entry (conversationId: string, seq: number): StoredMessage {
  return { conversationId, seq, senderId: 'u', clientMsgId: `m${seq}`, kind: 'text', body: 'x', ts: 1, replyTo: null, count: seq, lastReal: seq }
}

/** Services with a sequencer that knows `tails` and a store whose heads say `heads`; the head reads are logged. */
function services (tails: Map<string, Tail>, heads: Record<string, number>, reads: string[][]): Services {
  return {
    sequencer: {
      syncTail: (c: string) => tails.get(c),
      lowerTail: (c: string) => tails.get(c)
    },
    messages: {
      latestMany: async (ids: readonly string[]) => {
        reads.push([...ids])
        return new Map<string, ConversationHead>(ids.filter(c => heads[c] !== undefined).map(c => [c, { latest: entry(c, heads[c] as number), preview: entry(c, heads[c] as number) }]))
      }
    }
  } as unknown as Services
}

describe('unread: the tails of list and push badges', () => {
  test('head records are read for the conversations whose tail is not known only, in one call; none when all are known', async () => {
    const tails = new Map<string, Tail>([['a', { seq: 5, count: 5, lastReal: 5 }], ['c', { seq: 0, count: 0, lastReal: 0 }]])
    const reads: string[][] = []
    const s = services(tails, { b: 3, d: 9 }, reads)
    const { heads, known } = await headsNotKnown(s, ['a', 'b', 'c', 'd'])
    expect(reads).toEqual([['b', 'd']])
    expect([...heads.keys()].sort()).toEqual(['b', 'd'])
    expect([...known]).toEqual([['a', { seq: 5, count: 5, lastReal: 5 }], ['c', { seq: 0, count: 0, lastReal: 0 }]])
    expect(tailNow(s, 'b', heads.get('b')?.latest ?? null, known.get('b')).seq).toBe(3)
    reads.length = 0
    expect((await headsNotKnown(s, ['a', 'c'])).heads.size).toBe(0)
    expect(reads).toEqual([])
  })

  test('a tail taken without a head read stands if this node drops it meanwhile; the highest of head, known and taken wins', async () => {
    const tails = new Map<string, Tail>([['a', { seq: 5, count: 4, lastReal: 4 }]])
    const s = services(tails, {}, [])
    const { known } = await headsNotKnown(s, ['a'])
    tails.delete('a') // e.g. a write of `a` failed while the page's other calls ran
    expect(tailNow(s, 'a', null, known.get('a'))).toEqual({ seq: 5, count: 4, lastReal: 4 })
    expect(tailNow(s, 'a', null).seq).toBe(0) // (what the page said before: lastSeq 0, no preview)
    tails.set('a', { seq: 7, count: 6, lastReal: 6 }) // told of more since
    expect(tailNow(s, 'a', null, known.get('a')).seq).toBe(7)
    expect(tailNow(s, 'a', entry('a', 9), known.get('a')).seq).toBe(9) // a head record ahead of both
  })
})
