/** Store wrappers for unit tests of caches in front of a store (the directory, block lists). */
import type { MetadataStore } from '../../src/store/types.js'

/**
 * The store with a count of calls per method, and a gate (`hold[held]`, null: open) that holds
 * the answer of one method after it was read, so a test can change the store meanwhile: what
 * comes back may be stale by the time it is used.
 */
export function counted<M extends string> (inner: MetadataStore, held: M): { store: MetadataStore, calls: Map<string, number>, hold: Record<M, Promise<void> | null> } {
  const calls = new Map<string, number>()
  const hold = { [held]: null } as Record<M, Promise<void> | null>
  const store = new Proxy(inner, {
    get (target, prop, receiver) {
      const value: unknown = Reflect.get(target, prop, receiver)
      if (typeof value !== 'function' || typeof prop !== 'string') return value
      return async (...args: unknown[]) => {
        calls.set(prop, (calls.get(prop) ?? 0) + 1)
        const result = await (value as (...a: unknown[]) => Promise<unknown>).apply(target, args)
        const gate = prop === held ? hold[held] : null
        if (gate !== null) await gate
        return result
      }
    }
  })
  return { store, calls, hold }
}
