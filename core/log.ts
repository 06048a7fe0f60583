import { pino, type Logger } from 'pino'

export type { Logger }

// Secrets never reach the logs, wherever they sit in a logged object.
const redactPaths = [
  'authorization',
  'cookie',
  'password',
  'token',
  'accessToken',
  'refreshToken',
  '*.authorization',
  '*.cookie',
  '*.password',
  '*.token',
  '*.accessToken',
  '*.refreshToken',
  'headers.authorization',
  'headers.cookie',
  'req.headers.authorization',
  'req.headers.cookie',
  '*.headers.authorization',
  '*.headers.cookie',
]

export interface LogOptions {
  level: string
  pretty: boolean
  nodeId: string
}

export function createLogger(options: LogOptions, destination?: pino.DestinationStream): Logger {
  const base = {
    level: options.level,
    base: { node: options.nodeId },
    redact: { paths: redactPaths, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
  }
  if (destination) return pino(base, destination)
  if (options.pretty) return pino({ ...base, transport: { target: 'pino-pretty', options: { colorize: true } } })
  return pino(base)
}
