/**
 * Modules loaded only when the config names them (a store adapter and its driver): a module that
 * cannot be loaded (a package missing from node_modules, a broken build) stops the start naming
 * the config field that asked for it, and main prints the cause's stack (its file and line).
 */
export class ModuleLoadError extends Error {
  constructor (field: string, adapter: string, cause: unknown) {
    super(`${field} (${adapter}): its module could not be loaded: ${cause instanceof Error ? cause.message : String(cause)}`, { cause })
    this.name = 'ModuleLoadError'
  }
}

export async function loadModule<T> (field: string, adapter: string, load: () => Promise<T>): Promise<T> {
  try {
    return await load()
  } catch (err) {
    throw new ModuleLoadError(field, adapter, err)
  }
}
