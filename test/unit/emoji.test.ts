/**
 * Reaction emojis: what the schema accepts, also once the emojis found good are remembered (a
 * remembered answer must never differ from checking again, and only good ones are remembered).
 */
import { Emoji, validEmoji } from '../../src/protocol/schemas.js'

const GOOD = ['👍', '❤️', '👩‍👩‍👧', '👍🏽', '🇫🇷', '🎉', '🏳️‍🌈']
const BAD = ['', 'abc', '👍🎉', '👍'.repeat(20), '🇫🇷🇩', '🇫', 'a👍', '❤️️', '\u200d', '👍 ']

describe('reaction emojis', () => {
  test.each(GOOD)('%s is one emoji, the first time and again', (e) => {
    expect(validEmoji(e)).toBe(true)
    expect(validEmoji(e)).toBe(true)
    expect(Emoji.safeParse(e).success).toBe(true)
  })

  test.each(BAD)('%j is refused, the first time and again, after good ones were remembered', (e) => {
    for (const g of GOOD) validEmoji(g)
    expect(validEmoji(e)).toBe(false)
    expect(validEmoji(e)).toBe(false)
    expect(Emoji.safeParse(e).success).toBe(false)
  })

  test('past the bound, good emojis are still accepted and bad ones refused', () => {
    // every emoji-presentation code point from U+1F300: far more than the bound
    let accepted = 0
    for (let cp = 0x1f300; cp < 0x1f300 + 5000; cp++) if (validEmoji(String.fromCodePoint(cp))) accepted++
    expect(accepted).toBeGreaterThan(1000)
    expect(validEmoji('👍')).toBe(true)
    expect(validEmoji('👍👍')).toBe(false)
  })
})
