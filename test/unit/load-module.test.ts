/** loadModule: a module that cannot be loaded stops the start naming the config field that asked for it. */
import { loadModule, ModuleLoadError } from '../../src/load-module.js'

describe('loadModule', () => {
  test('a module that loads is returned as it is', async () => {
    const mod = await loadModule('files.store', 's3', async () => await import('../../src/load-module.js'))
    expect(mod.ModuleLoadError).toBe(ModuleLoadError)
  })

  test('one that does not: an error naming the field and the adapter, with the cause kept', async () => {
    const missing = new URL('../../src/no-such-module.js', import.meta.url).href
    const err = await loadModule('messageStore', 'mongodb', async () => await import(missing)).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(ModuleLoadError)
    expect((err as Error).message).toMatch(/^messageStore \(mongodb\): its module could not be loaded: /)
    expect((err as Error).message).toContain('no-such-module')
    // the import's own error (of another realm under jest's VM modules: not instanceof this Error)
    expect(String((err as { cause?: { message?: unknown } }).cause?.message)).toContain('no-such-module')
  })
})
