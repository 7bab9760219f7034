/**
 * Building blocks of the hot path: WriteCoalescer (one socket write per connection per commit)
 * and filterMatches (finding local reply watchers).
 */
import { Writable } from 'node:stream'
import { WriteCoalescer } from '../../src/broker/coalesce.js'
import { filterMatches } from '../../src/protocol/topics.js'

/** A writable that records each _writev/_write call (one call = one syscall on a socket). */
function recorder (): { stream: Writable, calls: string[][] } {
  const calls: string[][] = []
  const stream = new Writable({
    write (chunk: Buffer, _enc, cb) { calls.push([chunk.toString()]); cb() },
    writev (chunks, cb) { calls.push(chunks.map(c => (c.chunk as Buffer).toString())); cb() }
  })
  return { stream, calls }
}

const turn = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

describe('WriteCoalescer', () => {
  test('writes made while a connection is held leave in one call, after the deliveries queued by then', async () => {
    const { stream, calls } = recorder()
    const coalescer = new WriteCoalescer()
    coalescer.hold(stream)
    coalescer.hold(stream) // held once per turn
    stream.write('puback')
    // like an Aedes delivery: queued from a microtask, written in a setImmediate
    await Promise.resolve()
    setImmediate(() => stream.write('copy'))
    stream.write('reply')
    expect(calls).toEqual([])
    await turn()
    await turn()
    expect(calls).toEqual([['puback', 'reply', 'copy']])
    stream.write('later')
    expect(calls).toEqual([['puback', 'reply', 'copy'], ['later']])
  })

  test('each held connection is released; a destroyed one is skipped', async () => {
    const a = recorder()
    const b = recorder()
    const coalescer = new WriteCoalescer()
    coalescer.hold(a.stream)
    coalescer.hold(b.stream)
    a.stream.write('1')
    a.stream.write('2')
    b.stream.write('x')
    b.stream.destroy()
    await turn()
    await turn()
    expect(a.calls).toEqual([['1', '2']])
    expect(a.stream.writableCorked).toBe(0)
    // held again in a later turn
    coalescer.hold(a.stream)
    a.stream.write('3')
    a.stream.write('4')
    coalescer.release()
    expect(a.calls).toEqual([['1', '2'], ['3', '4']])
  })
})

describe('filterMatches', () => {
  test.each([
    ['im/u/alice/#', 'im/u/alice/r/cli', true],
    ['im/u/alice/r/+', 'im/u/alice/r/cli', true],
    ['im/u/alice/+/#', 'im/u/alice/r/cli', true],
    ['im/u/alice/+/+', 'im/u/alice/r/cli', true],
    ['im/u/alice/r/cli', 'im/u/alice/r/cli', true],
    ['im/u/alice/r/#', 'im/u/alice/r', true],
    ['im/u/alice/r/other', 'im/u/alice/r/cli', false],
    ['im/u/alice/m', 'im/u/alice/r/cli', false],
    ['im/u/alice/+', 'im/u/alice/r/cli', false],
    ['im/u/alice/r/cli/x', 'im/u/alice/r/cli', false]
  ])('%s ~ %s: %s', (filter, topic, expected) => {
    expect(filterMatches(filter, topic)).toBe(expected)
  })
})
