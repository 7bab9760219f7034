/**
 * Command lines of the scripts: every script parses its argv with `parseArgs` from node:util
 * (strict: an unknown option is an error); these helpers turn the string values into checked
 * numbers and lists and print the usage.
 */
import { readFileSync } from 'node:fs'

/** Runs `parse` (a parseArgs call); on a bad command line prints the error and the usage, exits 2. */
export function parseCommandLine<T> (usage: string, parse: () => T): T {
  try {
    return parse()
  } catch (err) {
    process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n\n${usage.trimEnd()}\n`)
    process.exit(2)
  }
}

/** Prints the usage and exits 0 (for --help). */
export function printUsage (usage: string): never {
  process.stdout.write(usage.trimEnd() + '\n')
  process.exit(0)
}

/** The first block comment of a script (its usage text), without the comment markers. */
export function headerComment (scriptUrl: string | URL): string {
  const text = readFileSync(scriptUrl, 'utf8')
  return text.slice(text.indexOf('/**') + 4, text.indexOf('*/')).split('\n').map(l => l.replace(/^ \* ?/, '')).join('\n')
}

/** An integer option >= `min` (default 1); `dflt` when absent. */
export function intOption (name: string, raw: string | undefined, dflt: number, min = 1): number {
  if (raw === undefined) return dflt
  const n = Number(raw)
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name}: expected an integer >= ${min}, got "${raw}"`)
  return n
}

/** A number option > 0; `dflt` when absent. */
export function positiveNumber (name: string, raw: string | undefined, dflt: number): number {
  if (raw === undefined) return dflt
  const n = Number(raw)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`--${name}: expected a positive number, got "${raw}"`)
  return n
}

/** A comma-separated list of names out of `allowed`; `dflt` when absent. */
export function listOption<T extends string> (name: string, raw: string | undefined, allowed: readonly T[], dflt: readonly T[]): T[] {
  if (raw === undefined) return [...dflt]
  const names = raw.split(',').map(s => s.trim()).filter(s => s !== '')
  for (const n of names) if (!(allowed as readonly string[]).includes(n)) throw new Error(`--${name}: unknown "${n}" (${allowed.join(', ')})`)
  return names as T[]
}

/** A value out of `allowed`; `dflt` when absent. */
export function oneOf<T extends string> (name: string, raw: string | undefined, allowed: readonly T[], dflt: T): T {
  if (raw === undefined) return dflt
  if (!(allowed as readonly string[]).includes(raw)) throw new Error(`--${name}: expected one of ${allowed.join(', ')}, got "${raw}"`)
  return raw as T
}
