/**
 * PageGate: page requests run at most `max` at once on the node and `maxPerUser` per user; the
 * rest wait in arrival order, a user's waiting requests do not hold up another user's, and the
 * line itself is bounded.
 */
import { PageGate, PageGateFullError } from '../../src/gateway/page-gate.js'

const turn = async (): Promise<void> => await new Promise(resolve => setImmediate(resolve))

describe('PageGate', () => {
  test('at most max at once, at most maxPerUser per user; another user goes past a blocked one', async () => {
    const gate = new PageGate(3, 2)
    const order: string[] = []
    const enter = (user: string, tag: string): Promise<() => void> => gate.enter(user).then(leave => { order.push(tag); return leave })
    const a1 = await enter('a', 'a1')
    const a2 = await enter('a', 'a2')
    const a3 = enter('a', 'a3') // a has 2 running: waits
    const b1 = await enter('b', 'b1') // b goes past a's waiting request
    const b2 = enter('b', 'b2') // the node has 3 running: waits
    await turn()
    expect(gate.load()).toEqual({ running: 3, waiting: 2 })
    expect(order).toEqual(['a1', 'a2', 'b1'])
    a1() // a's slot frees: a3 (first in line, and a is below its share again) runs
    await turn()
    expect(order).toEqual(['a1', 'a2', 'b1', 'a3'])
    a2()
    await turn()
    expect(order).toEqual(['a1', 'a2', 'b1', 'a3', 'b2'])
    ;(await a3)()
    ;(await b2)()
    b1()
    b1() // leaving twice counts once
    expect(gate.load()).toEqual({ running: 0, waiting: 0 })
  })

  test('the line is bounded: beyond maxWaiting a request is refused at once', async () => {
    const gate = new PageGate(1, 1, 2)
    const leave = await gate.enter('a')
    const waiting = [gate.enter('a'), gate.enter('b')]
    await expect(gate.enter('c')).rejects.toBeInstanceOf(PageGateFullError)
    leave()
    for (const w of waiting) (await w)()
    expect(gate.load()).toEqual({ running: 0, waiting: 0 })
  })
})
