import { availableParallelism, hostname } from 'node:os'
import { randomBytes } from 'node:crypto'
import { z } from 'zod'

const roleNames = ['gateway', 'actors', 'workers'] as const
export type Role = (typeof roleNames)[number]

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes')

const url = (protocols: RegExp) =>
  z.string().refine((v) => {
    try {
      return protocols.test(new URL(v).protocol)
    } catch {
      return false
    }
  }, `must be a URL with protocol ${protocols.source}`)

const csv = z.string().transform((v) =>
  v
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s.length > 0),
)

const origin = z.string().refine((v) => {
  try {
    return new URL(v).origin === v
  } catch {
    return false
  }
}, 'must be an origin like https://app.example.com (scheme, host, optional port; no path)')

// The only reader of process.env: every variable the program understands is here, with its default.
export const EnvSchema = z.object({
  PORT: z.coerce.number().int().min(0).max(65535).default(8080),
  HOST: z.string().min(1).default('0.0.0.0'),
  DATABASE_URL: url(/^postgres(ql)?:$/).default('postgres://postgres@127.0.0.1:5432/app'),
  NATS_URL: url(/^(nats|tls|ws|wss):$/).default('nats://127.0.0.1:4222'),
  REDIS_URL: url(/^rediss?:$/).default('redis://127.0.0.1:6379'),
  NAMESPACE: z
    .string()
    .regex(/^[a-z][a-z0-9_-]{0,39}$/, 'must be 1-40 characters of a-z, 0-9, _ or -, starting with a letter')
    .default('app'),
  ROLES: csv
    .pipe(z.array(z.enum(roleNames)).min(1, 'must name at least one of gateway, actors, workers'))
    .default([...roleNames]),
  NODE_ID: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,64}$/, 'must be 1-64 characters of A-Z, a-z, 0-9, _ or -')
    .optional(),
  CORS_ORIGINS: csv.pipe(z.array(origin)).default([]),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  LOG_PRETTY: bool.default(false),
  MIGRATE_ON_START: bool.default(true),
  BODY_LIMIT_BYTES: z.coerce.number().int().min(1024).max(64 * 1024 * 1024).default(1024 * 1024),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(0).max(300_000).default(10_000),
  STARTUP_TIMEOUT_MS: z.coerce.number().int().min(100).max(600_000).default(15_000),
  DB_POOL_MAX: z.coerce.number().int().min(1).max(1000).default(10),
  // No "never": the job worker and scheduler rely on it to end a statement whose answer was lost.
  DB_SILENCE_TIMEOUT_MS: z.coerce.number().int().min(500).max(3_600_000).default(30_000),
  DB_DEAD_CLIENT_S: z.coerce.number().int().min(5).max(7_200).default(30),
  HEALTH_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(1_000),
  EVENTS_MAX_AGE_HOURS: z.coerce.number().positive().max(24 * 365).default(24),
  EVENTS_MAX_PER_CHANNEL: z.coerce.number().int().min(10).max(10_000_000).default(10_000),
  OUTBOX_RELAY_INTERVAL_MS: z.coerce.number().int().min(50).max(60_000).default(1_000),
  WS_MAX_FRAME_BYTES: z.coerce.number().int().min(1_024).max(16 * 1024 * 1024).default(64 * 1024),
  WS_IDLE_TIMEOUT_S: z.coerce.number().int().min(8).max(960).default(60),
  WS_AUTH_TIMEOUT_MS: z.coerce.number().int().min(100).max(60_000).default(5_000),
  WS_RATE_PER_SECOND: z.coerce.number().int().min(1).max(100_000).default(50),
  WS_RATE_BURST: z.coerce.number().int().min(1).max(100_000).default(100),
  WS_MAX_BUFFERED_BYTES: z.coerce.number().int().min(1_024).max(256 * 1024 * 1024).default(1024 * 1024),
  WS_MAX_BAD_FRAMES: z.coerce.number().int().min(1).max(1_000).default(5),
  PRESENCE_TTL_MS: z.coerce.number().int().min(300).max(600_000).default(15_000),
  JOB_CONCURRENCY: z.coerce.number().int().min(1).max(10_000).default(100),
  JOB_ACK_WAIT_MS: z.coerce.number().int().min(1_000).max(3_600_000).default(30_000),
  SCHEDULER_INTERVAL_MS: z.coerce.number().int().min(50).max(60_000).default(250),
  MAIL_TRANSPORT: z.enum(['dev', 'smtp']).default('dev'),
  SMTP_URL: z.string().regex(/^smtps?:\/\//, 'must be smtp:// or smtps://').optional(),
  MAIL_FROM: z.string().min(3).default('actorbase <no-reply@localhost>'),
  OPS_TOKEN: z.string().min(16, 'must be at least 16 characters').optional(),
  ACTOR_PARTITIONS: z.coerce.number().int().min(1).max(4096).default(64),
  LEASE_TTL_MS: z.coerce.number().int().min(1_000).max(300_000).default(10_000),
  ACTOR_IDLE_MS: z.coerce.number().int().min(100).max(86_400_000).default(300_000),
  ACTOR_MAILBOX_CAPACITY: z.coerce.number().int().min(1).max(1_000_000).default(1_000),
  ASK_TIMEOUT_MS: z.coerce.number().int().min(10).max(300_000).default(5_000),
  PUBLIC_URL: url(/^https?:$/).default('http://localhost:8080'),
  JWT_ISSUER: z.string().min(1).default('actorbase'),
  JWT_AUDIENCE: z.string().min(1).default('actorbase'),
  JWT_PRIVATE_KEY: z.string().min(1).optional(),
  JWT_PRIVATE_KEY_FILE: z.string().min(1).optional(),
  JWT_PREVIOUS_PUBLIC_KEYS: z
    .string()
    .refine((v) => {
      try {
        return Array.isArray(JSON.parse(v))
      } catch {
        return false
      }
    }, 'must be a JSON array of PEM strings or JWK objects')
    .optional(),
  DEV_KEYS_DIR: z.string().min(1).default('.dev-keys'),
  ACCESS_TOKEN_TTL_S: z.coerce.number().int().min(10).max(86_400).default(900),
  REFRESH_TOKEN_TTL_DAYS: z.coerce.number().int().min(1).max(365).default(30),
  REFRESH_REUSE_GRACE_MS: z.coerce.number().int().min(0).max(300_000).default(10_000),
  INVITATION_TTL_HOURS: z.coerce.number().int().min(1).max(24 * 90).default(168),
  // One core is left to the event loop, so a login storm cannot stall every other request.
  PASSWORD_HASH_CONCURRENCY: z.coerce.number().int().min(1).max(64).default(Math.max(1, availableParallelism() - 1)),
  PASSWORD_HASH_QUEUE: z.coerce.number().int().min(0).max(100_000).default(200),
  LOGIN_MAX_FAILURES: z.coerce.number().int().min(1).max(10_000).default(10),
  LOGIN_FAILURE_WINDOW_S: z.coerce.number().int().min(1).max(86_400).default(900),
  LOGIN_MAX_ATTEMPTS_PER_IP: z.coerce.number().int().min(1).max(1_000_000).default(60),
})

export interface Config {
  port: number
  host: string
  databaseUrl: string
  natsUrl: string
  redisUrl: string
  namespace: string
  roles: ReadonlySet<Role>
  nodeId: string
  corsOrigins: readonly string[]
  logLevel: string
  logPretty: boolean
  migrateOnStart: boolean
  bodyLimitBytes: number
  shutdownTimeoutMs: number
  startupTimeoutMs: number
  dbPoolMax: number
  /** A pooled Postgres connection silent this long while a query waits is destroyed. */
  dbSilenceTimeoutMs: number
  /** Seconds after which Postgres ends a session whose node stopped answering (see createSql). */
  dbDeadClientS: number
  healthTimeoutMs: number
  eventsMaxAgeHours: number
  eventsMaxPerChannel: number
  outboxRelayIntervalMs: number
  ws: {
    maxFrameBytes: number
    idleTimeoutS: number
    authTimeoutMs: number
    ratePerSecond: number
    rateBurst: number
    maxBufferedBytes: number
    maxBadFrames: number
  }
  presenceTtlMs: number
  jobConcurrency: number
  jobAckWaitMs: number
  schedulerIntervalMs: number
  mail: { transport: 'dev' | 'smtp'; smtpUrl: string | undefined; from: string }
  opsToken: string | undefined
  actorPartitions: number
  leaseTtlMs: number
  actorIdleMs: number
  actorMailboxCapacity: number
  askTimeoutMs: number
  publicUrl: string
  jwtIssuer: string
  jwtAudience: string
  jwtPrivateKey: string | undefined
  jwtPrivateKeyFile: string | undefined
  jwtPreviousPublicKeys: string | undefined
  devKeysDir: string
  accessTokenTtlS: number
  refreshTokenTtlDays: number
  refreshReuseGraceMs: number
  invitationTtlHours: number
  passwordHashConcurrency: number
  passwordHashQueue: number
  loginMaxFailures: number
  loginFailureWindowS: number
  loginMaxAttemptsPerIp: number
}

export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Reads the configuration from an environment map; throws ConfigError naming every bad variable. */
export function loadConfig(env: Record<string, string | undefined>): Config {
  // An empty variable means "not set", as in most deployment tools.
  const present = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ''))
  const parsed = EnvSchema.safeParse(present)
  if (!parsed.success) {
    const problems = parsed.error.issues.map((i) => {
      const [variable, ...rest] = i.path
      const item = typeof rest[0] === 'number' ? ` (entry ${rest[0] + 1})` : ''
      return `${String(variable ?? '(environment)')}: ${i.message}${item}`
    })
    throw new ConfigError(`invalid configuration: ${problems.join('; ')}`)
  }
  const e = parsed.data
  return {
    port: e.PORT,
    host: e.HOST,
    databaseUrl: e.DATABASE_URL,
    natsUrl: e.NATS_URL,
    redisUrl: e.REDIS_URL,
    namespace: e.NAMESPACE,
    roles: new Set(e.ROLES),
    nodeId: e.NODE_ID ?? `${hostname().replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40)}-${randomBytes(4).toString('hex')}`,
    corsOrigins: e.CORS_ORIGINS,
    logLevel: e.LOG_LEVEL,
    logPretty: e.LOG_PRETTY,
    migrateOnStart: e.MIGRATE_ON_START,
    bodyLimitBytes: e.BODY_LIMIT_BYTES,
    shutdownTimeoutMs: e.SHUTDOWN_TIMEOUT_MS,
    startupTimeoutMs: e.STARTUP_TIMEOUT_MS,
    dbPoolMax: e.DB_POOL_MAX,
    dbSilenceTimeoutMs: e.DB_SILENCE_TIMEOUT_MS,
    dbDeadClientS: e.DB_DEAD_CLIENT_S,
    healthTimeoutMs: e.HEALTH_TIMEOUT_MS,
    eventsMaxAgeHours: e.EVENTS_MAX_AGE_HOURS,
    eventsMaxPerChannel: e.EVENTS_MAX_PER_CHANNEL,
    outboxRelayIntervalMs: e.OUTBOX_RELAY_INTERVAL_MS,
    ws: {
      maxFrameBytes: e.WS_MAX_FRAME_BYTES,
      idleTimeoutS: e.WS_IDLE_TIMEOUT_S,
      authTimeoutMs: e.WS_AUTH_TIMEOUT_MS,
      ratePerSecond: e.WS_RATE_PER_SECOND,
      rateBurst: e.WS_RATE_BURST,
      maxBufferedBytes: e.WS_MAX_BUFFERED_BYTES,
      maxBadFrames: e.WS_MAX_BAD_FRAMES,
    },
    presenceTtlMs: e.PRESENCE_TTL_MS,
    jobConcurrency: e.JOB_CONCURRENCY,
    jobAckWaitMs: e.JOB_ACK_WAIT_MS,
    schedulerIntervalMs: e.SCHEDULER_INTERVAL_MS,
    mail: { transport: e.MAIL_TRANSPORT, smtpUrl: e.SMTP_URL, from: e.MAIL_FROM },
    opsToken: e.OPS_TOKEN,
    actorPartitions: e.ACTOR_PARTITIONS,
    leaseTtlMs: e.LEASE_TTL_MS,
    actorIdleMs: e.ACTOR_IDLE_MS,
    actorMailboxCapacity: e.ACTOR_MAILBOX_CAPACITY,
    askTimeoutMs: e.ASK_TIMEOUT_MS,
    publicUrl: e.PUBLIC_URL.replace(/\/$/, ''),
    jwtIssuer: e.JWT_ISSUER,
    jwtAudience: e.JWT_AUDIENCE,
    jwtPrivateKey: e.JWT_PRIVATE_KEY,
    jwtPrivateKeyFile: e.JWT_PRIVATE_KEY_FILE,
    jwtPreviousPublicKeys: e.JWT_PREVIOUS_PUBLIC_KEYS,
    devKeysDir: e.DEV_KEYS_DIR,
    accessTokenTtlS: e.ACCESS_TOKEN_TTL_S,
    refreshTokenTtlDays: e.REFRESH_TOKEN_TTL_DAYS,
    refreshReuseGraceMs: e.REFRESH_REUSE_GRACE_MS,
    invitationTtlHours: e.INVITATION_TTL_HOURS,
    passwordHashConcurrency: e.PASSWORD_HASH_CONCURRENCY,
    passwordHashQueue: e.PASSWORD_HASH_QUEUE,
    loginMaxFailures: e.LOGIN_MAX_FAILURES,
    loginFailureWindowS: e.LOGIN_FAILURE_WINDOW_S,
    loginMaxAttemptsPerIp: e.LOGIN_MAX_ATTEMPTS_PER_IP,
  }
}
