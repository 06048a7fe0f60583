import postgres from 'postgres'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { withTimeout } from '../core/timeout.js'

export type Sql = postgres.Sql
export type TransactionSql = postgres.TransactionSql
/** What query functions take: the pool or a transaction, so they work inside or outside one. */
export type Queryable = postgres.ISql

export interface DbMetrics {
  /** Times one named query or transaction; every repository function goes through it. */
  timed<T>(name: string, run: () => Promise<T>): Promise<T>
}

export interface PostgresOptions {
  url: string
  max: number
  applicationName: string
  /** Seconds to wait for a TCP connection before a query fails, so a dead server is a fast error. */
  connectTimeoutSeconds?: number
  /**
   * Milliseconds a connection may stay silent while a query waits for its answer before it is destroyed
   * (its queries fail with CONNECTION_SILENT, a 503, and the pool opens a new one). Without it a lost
   * answer holds that query, and every query postgres.js pipelines behind it on the same connection, until
   * TCP gives up after many minutes. 0: never (migrations, whose statements may be long and quiet).
   */
  silenceTimeoutMs?: number
  /** Seconds an idle connection stays open (default 60; 0: for ever). */
  idleTimeoutSeconds?: number
  /** Seconds before a connection is replaced (default 30 min; 0: never). */
  maxLifetimeSeconds?: number
  /**
   * Seconds after which Postgres ends a session whose client stopped answering (a host that died without
   * closing its sockets, a partition), releasing its locks and transactions; without it the server waits
   * for the operating system's TCP keepalive, two hours by default. Default 30. It also ends the session of
   * a client that stops reading (a full receive window) for that long.
   */
  deadClientSeconds?: number
}

/**
 * Startup settings that make the server probe an idle session's client (keepalives from half the time on)
 * and give up once what it sent, a probe included, has gone unacknowledged for the whole time
 * (tcp_user_timeout; on Linux that, not the probe count, decides), so both a quiet and a busy session of a
 * vanished client end within about that time. Startup parameters: a pooler in front of Postgres must be told
 * to ignore them (PgBouncer: `ignore_startup_parameters`), and then the pooler's own keepalives are what count.
 */
function deadClientSettings(seconds: number): Record<string, string> {
  const idle = Math.max(1, Math.floor(seconds / 2))
  const interval = Math.max(1, Math.floor((seconds - idle) / 3))
  return {
    tcp_keepalives_idle: String(idle),
    tcp_keepalives_interval: String(interval),
    tcp_keepalives_count: '3',
    tcp_user_timeout: String(seconds * 1000),
  }
}

export function createSql(options: PostgresOptions, registry?: Registry): Sql {
  const closed = registry
    ? new Counter({ name: 'db_connections_closed_total', help: 'Postgres connections closed (idle, lifetime or broken)', registers: [registry] })
    : undefined
  if (registry) {
    new Gauge({ name: 'db_pool_max', help: 'Maximum Postgres connections in the pool', registers: [registry] }).set(options.max)
  }
  return postgres(options.url, {
    max: options.max,
    connect_timeout: options.connectTimeoutSeconds ?? 5,
    silence_timeout: options.silenceTimeoutMs ? options.silenceTimeoutMs / 1000 : null,
    idle_timeout: (options.idleTimeoutSeconds ?? 60) || undefined,
    max_lifetime: (options.maxLifetimeSeconds ?? 30 * 60) || null,
    connection: { application_name: options.applicationName, ...deadClientSettings(options.deadClientSeconds ?? 30) },
    onnotice: () => {},
    onclose: () => closed?.inc(),
  })
}

export function createDbMetrics(registry: Registry): DbMetrics {
  const duration = new Histogram({
    name: 'db_query_duration_seconds',
    help: 'Postgres query and transaction time by name and outcome',
    labelNames: ['query', 'outcome'],
    buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [registry],
  })
  const inFlight = new Gauge({ name: 'db_queries_in_flight', help: 'Postgres queries waiting for an answer', registers: [registry] })
  return {
    async timed(name, run) {
      const end = duration.startTimer({ query: name })
      inFlight.inc()
      try {
        const result = await run()
        end({ outcome: 'ok' })
        return result
      } catch (err) {
        end({ outcome: 'error' })
        throw err
      } finally {
        inFlight.dec()
      }
    },
  }
}

/** Resolves with the round-trip time, or rejects after `timeoutMs` so a health check never hangs on a dead server. */
export async function pingPostgres(sql: Sql, timeoutMs: number): Promise<number> {
  const started = performance.now()
  await withTimeout(sql`select 1`.execute(), timeoutMs, 'postgres ping')
  return performance.now() - started
}

/** An error Postgres itself answered (a constraint, a serialization failure), as opposed to a lost connection. */
export function isPostgresError(err: unknown): boolean {
  return err instanceof postgres.PostgresError
}

/** Postgres aborted this statement to break a deadlock; the others involved went on. */
export function isDeadlock(err: unknown): boolean {
  return err instanceof postgres.PostgresError && err.code === '40P01'
}

/**
 * Runs `run` again, up to `attempts` runs in all, while Postgres aborts it to break a deadlock: the aborted
 * transaction changed nothing, and the other side has since gone on. For statements that lock many rows in
 * an order they cannot choose (a cascade, a plan's own).
 */
export async function retryOnDeadlock<T>(run: () => Promise<T>, onRetry: (err: unknown) => void, attempts = 3): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await run()
    } catch (err) {
      if (!isDeadlock(err) || attempt >= attempts) throw err
      onRetry(err)
    }
  }
}

/** A unique constraint refused the write. */
export function isUniqueViolation(err: unknown): boolean {
  return err instanceof postgres.PostgresError && err.code === '23505'
}

/** Another activation already wrote this event number on the channel: this one is stale. */
export function isSeqConflict(err: unknown): boolean {
  return err instanceof postgres.PostgresError && err.code === '23505' && err.constraint_name === 'outbox_channel_seq_key'
}
