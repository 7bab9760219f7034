/**
 * Logging: pino, injected (never global). JSON lines on stderr, or pretty lines when stderr is a
 * terminal. Modules take a child logger with their bindings (node id, client id, connection id),
 * errors go in the `err` field (pino's standard serializer keeps stack and cause), and credentials
 * inside URLs (mysql://user:password@host) are masked wherever they appear in a line.
 */
import { pino, stdSerializers, type DestinationStream, type Logger as PinoLogger } from 'pino'

export type Logger = PinoLogger
export type LogLevel = 'debug' | 'info' | 'warn' | 'error' | 'silent'

/** `scheme://user:password@` -> `scheme://user:***@` */
const URL_CREDENTIALS = /([a-z][a-z0-9+.-]*:\/\/[^\s:/@]*):[^\s/@]*@/gi

export function maskCredentials (text: string): string {
  return text.replace(URL_CREDENTIALS, '$1:***@')
}

function maskDeep (value: unknown, depth: number): unknown {
  if (typeof value === 'string') return maskCredentials(value)
  // errors are left whole for the err serializer (which masks what it returns)
  if (depth > 4 || typeof value !== 'object' || value === null || value instanceof Error) return value
  if (Array.isArray(value)) return value.map(v => maskDeep(v, depth + 1))
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(value)) out[k] = maskDeep(v, depth + 1)
  return out
}

export interface LoggerOptions {
  /** Where lines go (tests capture them); default stderr. */
  destination?: DestinationStream
  /** Pretty, human-readable lines (pino-pretty); default: when stderr is a terminal. */
  pretty?: boolean
}

export function createLogger (level: LogLevel, options: LoggerOptions = {}): Logger {
  const pretty = options.destination === undefined && (options.pretty ?? process.stderr.isTTY === true)
  const settings = {
    level,
    base: undefined,
    serializers: { err: (err: Error) => maskDeep(stdSerializers.err(err), 0) },
    formatters: { log: (object: Record<string, unknown>) => maskDeep(object, 0) as Record<string, unknown> },
    hooks: {
      // the message text itself (the `msg` field is not seen by formatters.log)
      logMethod (this: PinoLogger, args: unknown[], method: (...a: unknown[]) => void) {
        method.apply(this, args.map(a => typeof a === 'string' ? maskCredentials(a) : a))
      }
    }
  }
  if (pretty) return pino({ ...settings, transport: { target: 'pino-pretty', options: { destination: 2, translateTime: 'SYS:HH:MM:ss.l' } } })
  return pino(settings, options.destination ?? pino.destination({ fd: 2, sync: true }))
}

/** Warns (`kind`, `fields`, `msg`) at most once a minute per kind. */
export type MinuteWarner = (kind: string, fields: Record<string, unknown>, msg: string) => void

/**
 * For what a failing dependency or a foreign peer can cause many times a second: a warning at
 * most once a minute per kind (a fixed name from the code), with `times`, how often it came up
 * since the last one.
 */
export function warnEveryMinute (logger: Logger): MinuteWarner {
  const warned = new Map<string, { at: number, count: number }>()
  return (kind, fields, msg) => {
    const w = warned.get(kind) ?? { at: Number.NEGATIVE_INFINITY, count: 0 }
    w.count++
    warned.set(kind, w)
    if (performance.now() - w.at < 60_000) return
    logger.warn({ ...fields, times: w.count }, msg)
    w.at = performance.now()
    w.count = 0
  }
}
