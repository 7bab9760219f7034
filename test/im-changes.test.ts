/**
 * Edit, delete, react and typing over real sockets, on the embedded stores and on MongoDB + MySQL:
 * every change is an entry of the conversation with the next seq, delivered to every device of
 * every member once and in seq order, idempotent by msgId; history and list show messages as
 * they are now; unread and previews count real messages only; refusals carry documented codes;
 * typing is never stored or queued.
 */
import { BACKENDS } from './helpers/backends.js'
import { startServer, addUser, connect, type ImClient } from './helpers/im.js'
import type { MqimServer } from '../src/server.js'
import { Emoji, type ConversationSummary, type MessageEnvelope } from '../src/protocol/schemas.js'

const EDIT_WINDOW_MS = 3000

interface Page { messages: MessageEnvelope[], lastSeq: number }

function seqsOf (c: ImClient, conv: string): number[] {
  return c.messages.filter(m => m.conv === conv).map(m => m.seq)
}

/** Polls `read` until it gives `want` (5 s at most), then checks it. */
async function waitForValue (read: () => Promise<number>, want: number): Promise<void> {
  let got = await read()
  for (const deadline = Date.now() + 5000; got !== want && Date.now() < deadline;) {
    await new Promise(resolve => setTimeout(resolve, 50))
    got = await read()
  }
  expect(got).toBe(want)
}

async function errorCode (c: ImClient, op: string, body: Record<string, unknown>): Promise<string> {
  const r = await c.requestRaw(op, body)
  return r.ok ? 'ok' : r.error.code
}

describe.each(BACKENDS)('message changes on $name stores', (backend) => {
  let server: MqimServer
  const clients: ImClient[] = []
  const track = (c: ImClient): ImClient => { clients.push(c); return c }
  beforeAll(async () => {
    server = await startServer({ limits: { editWindowMs: EDIT_WINDOW_MS, reactionsPerMessage: 3, typingMembersMax: 3 } }, await backend.make())
    for (const u of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) await addUser(server, u)
  })
  afterAll(async () => {
    await Promise.allSettled(clients.map(async c => await c.end()))
    await server.stop()
  })

  test('edit, react and delete: each reaches every device once in seq order; resends change nothing; history shows the current state', async () => {
    const alice = track(await connect(server, 'alice', 'phone'))
    const aliceWeb = track(await connect(server, 'alice', 'web', { transport: 'ws' }))
    const bob = track(await connect(server, 'bob', 'phone'))
    const carol = track(await connect(server, 'carol', 'phone', { transport: 'ws' }))
    const devices = [alice, aliceWeb, bob, carol]
    const { conv } = await alice.request('create-group', { name: 'changes', members: ['bob', 'carol'] }) as { conv: string }
    const m1 = await alice.request('send', { conv, msgId: 'm1', kind: 'text', body: 'helo' })
    const m2 = await bob.request('send', { conv, msgId: 'm2', kind: 'text', body: 'hi alice' })

    const edit = await alice.request('edit', { conv, msgId: 'e1', target: m1.seq, body: 'hello' })
    expect(edit).toMatchObject({ conv, seq: 3, msgId: 'e1', duplicate: false })
    const r1 = await bob.request('react', { conv, msgId: 'r1', target: m1.seq, emoji: '👍' })
    const r2 = await carol.request('react', { conv, msgId: 'r2', target: m1.seq, emoji: '👍' })
    const r3 = await bob.request('react', { conv, msgId: 'r3', target: m1.seq, emoji: '👍', remove: true })
    const r4 = await carol.request('react', { conv, msgId: 'r4', target: m1.seq, emoji: '❤️' })
    expect([r1.seq, r2.seq, r3.seq, r4.seq]).toEqual([4, 5, 6, 7])
    // resends: same seq, duplicate, nothing delivered again, nothing applied twice
    expect(await alice.request('edit', { conv, msgId: 'e1', target: m1.seq, body: 'hello' })).toMatchObject({ seq: 3, duplicate: true })
    expect(await bob.request('react', { conv, msgId: 'r1', target: m1.seq, emoji: '👍' })).toMatchObject({ seq: 4, duplicate: true })
    const del = await bob.request('delete', { conv, msgId: 'd1', target: m2.seq })
    expect(del.seq).toBe(8)
    expect(await bob.request('delete', { conv, msgId: 'd1', target: m2.seq })).toMatchObject({ seq: 8, duplicate: true })

    for (const d of devices) await d.waitFor(() => seqsOf(d, conv).includes(8), 20000, `${d.userId}:${d.deviceId} gets seq 8`)
    for (const d of devices) {
      expect(seqsOf(d, conv)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
      const byseq = new Map(d.messages.filter(m => m.conv === conv).map(m => [m.seq, m]))
      expect(byseq.get(3)).toMatchObject({ kind: 'edit', target: 1, body: 'hello', from: 'alice', msgId: 'e1' })
      expect(byseq.get(4)).toMatchObject({ kind: 'react', target: 1, body: { emoji: '👍', remove: false }, from: 'bob' })
      expect(byseq.get(6)).toMatchObject({ kind: 'react', target: 1, body: { emoji: '👍', remove: true }, from: 'bob' })
      expect(byseq.get(8)).toMatchObject({ kind: 'delete', target: 2, body: null, from: 'bob' })
    }

    // paging back shows the current state; syncing forward sees every change
    const page = await carol.request('history', { conv, after: 0 }) as Page
    expect(page.lastSeq).toBe(8)
    expect(page.messages.map(m => m.seq)).toEqual([1, 2, 3, 4, 5, 6, 7, 8])
    const [first, second] = page.messages
    expect(first).toMatchObject({ seq: 1, kind: 'text', body: 'hello', edited: { seq: 3, ts: edit.ts }, reactions: { '👍': ['carol'], '❤️': ['carol'] } })
    expect(second).toStrictEqual({ conv, seq: 2, msgId: 'm2', from: 'bob', ts: m2.ts, kind: 'text', body: null, deleted: { seq: 8, ts: del.ts, by: 'bob' } })
    // a device that was offline the whole time gets the same from history
    const bobTablet = track(await connect(server, 'bob', 'tablet'))
    expect(await bobTablet.request('history', { conv, after: 0 })).toStrictEqual(page)
  })

  test('refusals: others\' messages, after the window, deleted messages, changes, missing seqs, bad emojis and bodies', async () => {
    const alice = track(await connect(server, 'alice', 'refusals'))
    const bob = track(await connect(server, 'bob', 'refusals'))
    const erin = track(await connect(server, 'erin', 'refusals'))
    const { conv } = await alice.request('create-group', { name: 'rules', members: ['bob'] }) as { conv: string }
    const text = await alice.request('send', { conv, msgId: 't1', kind: 'text', body: 'text' })
    const custom = await bob.request('send', { conv, msgId: 'c1', kind: 'custom', body: { card: 1 } })
    // edits: only the sender; a text stays a non-empty string; a custom body any JSON
    expect(await errorCode(bob, 'edit', { conv, msgId: 'x1', target: text.seq, body: 'mine now' })).toBe('FORBIDDEN')
    expect(await errorCode(alice, 'edit', { conv, msgId: 'x2', target: text.seq, body: '' })).toBe('BAD_REQUEST')
    expect(await errorCode(alice, 'edit', { conv, msgId: 'x3', target: text.seq, body: { not: 'text' } })).toBe('BAD_REQUEST')
    expect(await errorCode(bob, 'edit', { conv, msgId: 'x4', target: custom.seq, body: [1, { two: 2 }] })).toBe('ok')
    // members delete only their own messages in groups; admins members' messages, the owner anyone's
    expect(await errorCode(bob, 'delete', { conv, msgId: 'x5', target: text.seq })).toBe('FORBIDDEN')
    await alice.request('add-members', { conv, members: ['carol'] })
    await alice.request('set-role', { conv, user: 'bob', role: 'admin' })
    const carol = track(await connect(server, 'carol', 'refusals'))
    const byCarol = await carol.request('send', { conv, msgId: 'cm', kind: 'text', body: 'from a member' })
    expect(await errorCode(bob, 'delete', { conv, msgId: 'x5b', target: text.seq })).toBe('FORBIDDEN') // the owner's
    expect(await errorCode(bob, 'delete', { conv, msgId: 'x5c', target: byCarol.seq })).toBe('ok')
    // not a member: as for any conversation
    expect(await errorCode(erin, 'react', { conv, msgId: 'x6', target: text.seq, emoji: '👍' })).toBe('NOT_MEMBER')
    expect(await errorCode(erin, 'edit', { conv, msgId: 'x7', target: text.seq, body: 'x' })).toBe('NOT_MEMBER')
    // a change is not a message; a seq past the last has none
    const lastSeq = (await alice.request('history', { conv }) as Page).lastSeq
    expect(await errorCode(alice, 'react', { conv, msgId: 'x8', target: lastSeq, emoji: '👍' })).toBe('NOT_EDITABLE')
    expect(await errorCode(alice, 'react', { conv, msgId: 'x9', target: lastSeq + 1, emoji: '👍' })).toBe('NOT_FOUND')
    expect(await errorCode(alice, 'react', { conv, msgId: 'x10', target: 9_007_199_254_740_991, emoji: '👍' })).toBe('NOT_FOUND')
    // schema: target >= 1, one emoji, no unknown fields, msgId pattern
    for (const bad of [
      { conv, msgId: 'b1', target: 0, emoji: '👍' },
      { conv, msgId: 'b2', target: 1.5, emoji: '👍' },
      { conv, msgId: 'b3', target: text.seq, emoji: 'abc' },
      { conv, msgId: 'b4', target: text.seq, emoji: '' },
      { conv, msgId: 'b5', target: text.seq, emoji: '👍'.repeat(20) },
      { conv, msgId: 'b5a', target: text.seq, emoji: '👍🎉' },
      { conv, msgId: 'b5b', target: text.seq, emoji: '🇫' + '🇷🇩' },
      { conv, msgId: 'b5c', target: text.seq, emoji: '👍\u0000' },
      { conv, msgId: 'b5d', target: text.seq, emoji: '🇫' },
      { conv, msgId: 'b5e', target: text.seq, emoji: '👍' + '\ufe0f'.repeat(18) },
      { conv, msgId: 'b6', target: text.seq, emoji: '$.👍' },
      { conv, msgId: 'b7', target: text.seq, emoji: '\u200d' },
      { conv, msgId: 'b8', target: text.seq, emoji: '👍', extra: 1 },
      { conv, msgId: 'bad id!', target: text.seq, emoji: '👍' },
      { conv, msgId: 'b9', target: text.seq, emoji: '👍', remove: 'yes' }
    ]) expect([bad, await errorCode(alice, 'react', bad)]).toEqual([bad, 'BAD_REQUEST'])
    expect(await errorCode(alice, 'delete', { conv, msgId: 'b10', target: text.seq, body: 'x' })).toBe('BAD_REQUEST')
    // the owner deletes bob's message; nothing more can change it
    expect(await errorCode(alice, 'delete', { conv, msgId: 'd1', target: custom.seq })).toBe('ok')
    expect(await errorCode(bob, 'edit', { conv, msgId: 'x11', target: custom.seq, body: 1 })).toBe('NOT_EDITABLE')
    expect(await errorCode(alice, 'react', { conv, msgId: 'x12', target: custom.seq, emoji: '👍' })).toBe('NOT_EDITABLE')
    expect(await errorCode(bob, 'delete', { conv, msgId: 'x13', target: custom.seq })).toBe('NOT_EDITABLE')
    // reactions: at most 3 different emojis here; one already there is still fine
    for (const [i, e] of ['👍', '🎉', '😀'].entries()) expect(await errorCode(bob, 'react', { conv, msgId: `rr${i}`, target: text.seq, emoji: e })).toBe('ok')
    expect(await errorCode(alice, 'react', { conv, msgId: 'rr3', target: text.seq, emoji: '🚀' })).toBe('LIMIT_REACHED')
    expect(await errorCode(alice, 'react', { conv, msgId: 'rr4', target: text.seq, emoji: '🎉' })).toBe('ok')
    // a msgId is one entry's: a change may not reuse a send's, nor a send a change's, nor one kind
    // of change another's (the embedded store answers resends from the store, MongoDB from memory)
    expect(await errorCode(alice, 'edit', { conv, msgId: 't1', target: text.seq, body: 'reusing my send id' })).toBe('CONFLICT')
    expect(await errorCode(bob, 'send', { conv, msgId: 'x4', kind: 'text', body: 'reusing my edit id' })).toBe('CONFLICT')
    expect(await errorCode(bob, 'react', { conv, msgId: 'x4', target: text.seq, emoji: '👍' })).toBe('CONFLICT')
    // the edit window
    await new Promise(resolve => setTimeout(resolve, EDIT_WINDOW_MS + 200))
    expect(await errorCode(alice, 'edit', { conv, msgId: 'late', target: text.seq, body: 'too late' })).toBe('NOT_EDITABLE')
    // deleting has no window
    expect(await errorCode(alice, 'delete', { conv, msgId: 'd2', target: text.seq })).toBe('ok')
  })

  test('hostile: a resend with another body changes nothing; a burst of emojis stops at the bound; taken-back pairs are bounded; a user named "constructor" reacts like anyone', async () => {
    await addUser(server, 'constructor')
    const alice = track(await connect(server, 'alice', 'hostile'))
    const ctor = track(await connect(server, 'constructor', 'hostile'))
    const { conv } = await alice.request('create-group', { name: 'hostile', members: ['constructor', 'bob'] })
    const m = await alice.request('send', { conv, msgId: 'h1', kind: 'text', body: 'original' })
    const first = await alice.request('edit', { conv, msgId: 'he', target: m.seq, body: 'AAA first edit' })
    // the same msgId with another body: a resend, answered with the first seq; the stored edit stays
    expect(await alice.request('edit', { conv, msgId: 'he', target: m.seq, body: 'ZZZ stealth edit' })).toMatchObject({ seq: first.seq, duplicate: true })
    const r1 = await ctor.request('react', { conv, msgId: 'hr', target: m.seq, emoji: '👍' })
    expect(await ctor.request('react', { conv, msgId: 'hr', target: m.seq, emoji: '🔥' })).toMatchObject({ seq: r1.seq, duplicate: true })
    const page = async (): Promise<MessageEnvelope | undefined> => (await alice.request('history', { conv, after: m.seq - 1, limit: 1 }) as Page).messages[0]
    expect(await page()).toMatchObject({ body: 'AAA first edit', reactions: { '👍': ['constructor'] } })
    // 30 different emojis at once: at most reactionsPerMessage (3) end up on the message
    const emojis = Array.from({ length: 30 }, (_, i) => String.fromCodePoint(0x1F600 + i))
    const replies = await Promise.all(emojis.map(async (emoji, i) => await alice.requestRaw('react', { conv, msgId: `burst${i}`, target: m.seq, emoji })))
    expect(replies.every(r => r.ok || r.error.code === 'LIMIT_REACHED')).toBe(true)
    expect(Object.keys((await page())?.reactions ?? {}).length).toBeLessThanOrEqual(3)
    // taking back reactions one never gave still keeps a (user, emoji) pair: bounded (100 per allowed emoji = 300)
    const m2 = await alice.request('send', { conv, msgId: 'h2', kind: 'text', body: 'second' })
    let refused = 0
    const many = Array.from({ length: 600 }, (_, i) => String.fromCodePoint(0x1F300 + i)).filter(e => Emoji.safeParse(e).success)
    expect(many.length).toBeGreaterThan(320)
    for (let i = 0; i < 320 && refused === 0; i++) {
      const r = await alice.requestRaw('react', { conv, msgId: `gone${i}`, target: m2.seq, emoji: many[i], remove: true })
      if (!r.ok) {
        expect(r.error.code).toBe('LIMIT_REACHED')
        refused = i
      }
    }
    expect(refused).toBe(300)
    // the emoji bound still leaves room: the pairs bound is about pairs kept, a pair already kept is fine
    expect((await alice.requestRaw('react', { conv, msgId: 'again', target: m2.seq, emoji: many[0] })).ok).toBe(true)
  }, 60_000)

  test('unread and previews count real messages only; deleting the last message updates the preview', async () => {
    const alice = track(await connect(server, 'alice', 'unread'))
    const dave = track(await connect(server, 'dave', 'unread'))
    const { conv } = await alice.request('direct', { user: 'dave' }) as { conv: string }
    const summary = async (c: ImClient): Promise<ConversationSummary> => {
      const page = await c.request('list', {}) as { conversations: ConversationSummary[] }
      const found = page.conversations.find(s => s.conv === conv)
      if (found === undefined) throw new Error('conversation not listed')
      return found
    }
    const a1 = await alice.request('send', { conv, msgId: 'a1', kind: 'text', body: 'one' })
    const a2 = await alice.request('send', { conv, msgId: 'a2', kind: 'text', body: 'two' })
    expect(await summary(dave)).toMatchObject({ lastSeq: 2, unread: 2, last: { seq: 2, body: 'two' } })
    await dave.request('react', { conv, msgId: 'd1', target: a1.seq, emoji: '👍' })
    await alice.request('edit', { conv, msgId: 'e1', target: a2.seq, body: 'two, edited' })
    // two changes: lastSeq moves, unread does not; the preview shows the edit
    expect(await summary(dave)).toMatchObject({ lastSeq: 4, unread: 2, last: { seq: 2, body: 'two, edited', edited: { seq: 4 } } })
    // reading up to a change: what was before it is read
    expect(await dave.request('read', { conv, seq: 3 })).toMatchObject({ readSeq: 3, unread: 0 })
    expect(await summary(dave)).toMatchObject({ readSeq: 3, unread: 0 })
    // deleting the last message: the preview shows it deleted, and reading stays at 0
    await alice.request('delete', { conv, msgId: 'x1', target: a2.seq })
    const afterDelete = await summary(dave)
    expect(afterDelete).toMatchObject({ lastSeq: 5, unread: 0, last: { seq: 2, body: null, deleted: { seq: 5, by: 'alice' } } })
    expect(afterDelete.last).not.toHaveProperty('edited')
    const a3 = await alice.request('send', { conv, msgId: 'a3', kind: 'text', body: 'three' })
    await alice.request('react', { conv, msgId: 'r3', target: a3.seq, emoji: '🎉' })
    expect(await summary(dave)).toMatchObject({ lastSeq: 7, readSeq: 3, unread: 1, last: { seq: 6, body: 'three', reactions: { '🎉': ['alice'] } } })
    expect(await dave.request('read', { conv, seq: 6 })).toMatchObject({ readSeq: 6, unread: 0 })
    // alice never read: her own three messages count, the four changes do not
    expect(await summary(alice)).toMatchObject({ lastSeq: 7, readSeq: 0, unread: 3 })
  })

  test('mentions: members only, @all for admins and the owner; a mention event (also when muted) and unread mention counts in list', async () => {
    const alice = track(await connect(server, 'alice', 'mentions'))
    const bob = track(await connect(server, 'bob', 'mentions'))
    const carol = track(await connect(server, 'carol', 'mentions'))
    const { conv } = await alice.request('create-group', { name: 'mentions', members: ['bob', 'carol'] })
    const mentionsOf = async (c: ImClient): Promise<number> => {
      const page = await c.request('list', {}) as { conversations: ConversationSummary[] }
      return page.conversations.find(s => s.conv === conv)?.mentions ?? -1
    }
    await carol.request('mute', { conv, muted: true })
    const m1 = await alice.request('send', { conv, msgId: 'n1', kind: 'text', body: '@bob @carol look', mentions: ['bob', 'carol'] })
    for (const c of [bob, carol]) {
      await c.waitFor(() => c.events.some(e => e.type === 'mention' && e.seq === m1.seq), 5000, `${c.userId} gets the mention (carol has muted it)`)
      expect(c.events.filter(e => e.type === 'mention')).toStrictEqual([{ type: 'mention', conv, seq: m1.seq, from: 'alice', all: false }])
      expect(c.messages.find(m => m.seq === m1.seq)?.mentions).toStrictEqual(['bob', 'carol'])
    }
    expect(alice.events.some(e => e.type === 'mention')).toBe(false)
    // the counts are written just after the message: wait for them
    await waitForValue(async () => await mentionsOf(bob), 1)
    expect(await mentionsOf(carol)).toBe(1)
    expect(await mentionsOf(alice)).toBe(0)
    // @all: refused for members, allowed for the owner; everybody but the sender
    expect(await errorCode(bob, 'send', { conv, msgId: 'n2', kind: 'text', body: 'all!', mentions: ['@all'] })).toBe('FORBIDDEN')
    const all = await alice.request('send', { conv, msgId: 'n3', kind: 'text', body: 'hear ye', mentions: ['@all'] })
    await bob.waitFor(() => bob.events.some(e => e.type === 'mention' && e.seq === all.seq && e.all === true), 5000, 'bob gets @all')
    await waitForValue(async () => await mentionsOf(bob), 2)
    expect(await mentionsOf(carol)).toBe(2)
    expect(await mentionsOf(alice)).toBe(0)
    // reading clears them
    await bob.request('read', { conv, seq: all.seq })
    expect(await mentionsOf(bob)).toBe(0)
    expect(await mentionsOf(carol)).toBe(2)
    // bad mentions
    const { conv: direct } = await alice.request('direct', { user: 'bob' })
    for (const [mentions, code] of [
      [['dave'], 'BAD_REQUEST'], // not a member
      [['bob', 'bob'], 'BAD_REQUEST'],
      [[], 'BAD_REQUEST'],
      [['Bob!'], 'BAD_REQUEST'],
      [Array.from({ length: 51 }, (_, i) => `u${i}`), 'BAD_REQUEST'],
      ['bob', 'BAD_REQUEST']
    ] as Array<[unknown, string]>) expect([mentions, await errorCode(alice, 'send', { conv, msgId: 'bad', kind: 'text', body: 'x', mentions })]).toEqual([mentions, code])
    expect(await errorCode(alice, 'send', { conv: direct, msgId: 'bad2', kind: 'text', body: 'x', mentions: ['@all'] })).toBe('BAD_REQUEST')
    expect(await errorCode(alice, 'send', { conv: direct, msgId: 'ok2', kind: 'text', body: 'hi @bob', mentions: ['bob'] })).toBe('ok')
    // a deleted message shows no mentions
    await alice.request('delete', { conv, msgId: 'n1-del', target: m1.seq })
    const page = await alice.request('history', { conv, after: m1.seq - 1, limit: 1 }) as Page
    expect(page.messages[0]).not.toHaveProperty('mentions')
  })

  test('typing: a QoS 0 event to the other members online, once a second, never stored or queued; not sent in big conversations', async () => {
    const alice = track(await connect(server, 'alice', 'typing'))
    const bob = track(await connect(server, 'bob', 'typing'))
    // frank: a persistent session that is offline while alice types
    const frankAway = await connect(server, 'frank', 'away', { clean: false })
    const { conv } = await alice.request('create-group', { name: 'typing', members: ['bob', 'frank'] }) as { conv: string }
    await frankAway.end()
    const before = (await alice.request('history', { conv }) as Page).lastSeq
    expect(await alice.request('typing', { conv })).toStrictEqual({ conv, sent: true })
    expect(await alice.request('typing', { conv })).toStrictEqual({ conv, sent: false })
    await bob.waitFor(() => bob.events.some(e => e.type === 'typing' && e.conv === conv), 5000, 'bob sees alice typing')
    expect(bob.events.filter(e => e.type === 'typing' && e.conv === conv)).toStrictEqual([{ type: 'typing', conv, user: 'alice', typing: true, ttlMs: 5000 }])
    expect(await alice.request('typing', { conv, typing: false })).toStrictEqual({ conv, sent: true })
    await bob.waitFor(() => bob.events.some(e => e.type === 'typing' && e.typing === false), 5000, 'bob sees alice stop')
    expect(alice.events.some(e => e.type === 'typing')).toBe(false)
    // nothing stored
    expect((await alice.request('history', { conv }) as Page).lastSeq).toBe(before)
    // nothing queued: frank comes back and gets the message sent after, but no typing event
    const marker = await alice.request('send', { conv, msgId: 'after-typing', kind: 'text', body: 'hi' })
    const frank = track(await connect(server, 'frank', 'away', { clean: false, subscribe: false }))
    await frank.waitFor(() => frank.messages.some(m => m.conv === conv && m.seq === marker.seq), 10000, 'frank gets the queued message')
    expect(frank.events.filter(e => e.type === 'typing')).toStrictEqual([])
    // bad input
    expect(await errorCode(alice, 'typing', { conv, typing: 'yes' })).toBe('BAD_REQUEST')
    expect(await errorCode(alice, 'typing', { conv: 'c-nope' })).toBe('NOT_MEMBER')
    // a conversation above typingMembersMax (3): answered, not sent
    const big = await alice.request('create-group', { name: 'big', members: ['bob', 'carol', 'dave'] }) as { conv: string }
    expect(await alice.request('typing', { conv: big.conv })).toStrictEqual({ conv: big.conv, sent: false })
  })
})
