/** A logger whose lines are kept, parsed (JSON objects), for tests that look at what was logged. */
import { Writable } from 'node:stream'
import { createLogger, type Logger, type LogLevel } from '../../src/log.js'

export function recordingLogger (level: LogLevel = 'debug'): { logger: Logger, lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = []
  const sink = new Writable({
    write (chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString().split('\n')) if (line !== '') lines.push(JSON.parse(line) as Record<string, unknown>)
      cb()
    }
  })
  return { logger: createLogger(level, { destination: sink }), lines }
}
