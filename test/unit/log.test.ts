/**
 * warnEveryMinute (src/log.ts): what a failing dependency or a foreign peer can cause many times a
 * second is warned at most once a minute per kind, with how often it came up since the last.
 */
import { jest } from '@jest/globals'
import { warnEveryMinute, type Logger } from '../../src/log.js'

test('one warning a minute per kind, with the count since the last; kinds apart', () => {
  jest.useFakeTimers()
  try {
    const lines: Array<[Record<string, unknown>, string]> = []
    const warn = warnEveryMinute({ warn: (fields: Record<string, unknown>, msg: string) => { lines.push([fields, msg]) } } as unknown as Logger)
    warn('a', { x: 1 }, 'A')
    for (let i = 0; i < 1000; i++) warn('a', { x: 2 }, 'A')
    warn('b', {}, 'B')
    expect(lines).toStrictEqual([[{ x: 1, times: 1 }, 'A'], [{ times: 1 }, 'B']])
    jest.advanceTimersByTime(59_000)
    warn('a', { x: 3 }, 'A')
    expect(lines).toHaveLength(2)
    jest.advanceTimersByTime(1_000)
    warn('a', { x: 4 }, 'A')
    expect(lines[2]).toStrictEqual([{ x: 4, times: 1002 }, 'A'])
  } finally {
    jest.useRealTimers()
  }
})
