import { readFile } from 'node:fs/promises'
import { pathToFileURL } from 'node:url'
import { createSessionRevocations } from './actors/session-revocations.js'
import { userKind } from './actors/user-actor.js'
import { orgKind } from './actors/org-actor.js'
import { createEventPublisher } from './actors/event-publisher.js'
import { startOutboxRelay } from './actors/outbox-relay.js'
import { withTimeout } from './core/timeout.js'
import { Kvm } from '@nats-io/kv'
import { jetstreamManager } from '@nats-io/jetstream'
import { ChannelHub, topicOf } from './transport/channel-hub.js'
import { createPresence } from './transport/presence.js'
import { encodeFrame } from './transport/ws-frames.js'
import { createWsMetrics } from './transport/ws-metrics.js'
import { createWsServer } from './transport/ws-server.js'
import { createEventHistory } from './storage/event-history.js'
import { channelSeq } from './storage/outbox.js'
import { createApiKeyOwners } from './storage/api-key-owners.js'
import { createOrgListCache } from './storage/org-cache.js'
import { orgRoutes } from './transport/org-routes.js'
import { projectRoutes } from './transport/project-routes.js'
import { createAccessTokens } from './core/access-tokens.js'
import { loadKeys } from './core/keys.js'
import { createPasswordHasher } from './core/passwords.js'
import { createDevTransport, createSmtpTransport } from './storage/mailer.js'
import { createJobQueue, type JobQueue } from './actors/job-queue.js'
import { createJobMetrics } from './actors/job-metrics.js'
import { startWorker } from './actors/job-worker.js'
import { startScheduler, type CronSchedule } from './actors/job-scheduler.js'
import { emailJob } from './actors/jobs/email.js'
import { exportJob } from './actors/jobs/export.js'
import { noopJob } from './actors/jobs/noop.js'
import { opsRoutes } from './transport/ops-routes.js'
import type { JobDefinition } from './actors/jobs/define.js'
import { jobRoutes } from './transport/job-routes.js'
import { system } from './core/principal.js'
import { createAuthenticator } from './transport/authenticate.js'
import { identityRoutes } from './transport/identity-routes.js'
import { createRateLimiter } from './storage/rate-limit.js'
import { ConfigError, loadConfig, type Config } from './core/config.js'
import { createLogger, type Logger } from './core/log.js'
import { createRegistry, type Registry } from './core/metrics.js'
import { namesFor, type Names } from './core/names.js'
import { migrate, migrationsDir } from './storage/migrate.js'
import { connectNats, ensureStreams, pingNats, type NatsConnection } from './storage/nats.js'
import { createDbMetrics, createSql, pingPostgres, type Sql } from './storage/postgres.js'
import { createRedis, pingRedis, type Redis } from './storage/redis.js'
import { docsRoutes } from './transport/docs-routes.js'
import { healthRoutes } from './transport/health-routes.js'
import { createHttpServer, type HttpServer } from './transport/http-server.js'
import { metricsRoute } from './transport/metrics-route.js'
import { buildOpenApi, openApiRoute } from './transport/openapi.js'
import type { Route } from './transport/route.js'
import type { ActorKind } from './actors/kind.js'
import { createActorSystem, type ActorSystem } from './actors/system.js'

export interface AppNode {
  config: Config
  names: Names
  log: Logger
  registry: Registry
  sql: Sql
  redis: Redis
  nc: NatsConnection
  server: HttpServer
  actors: ActorSystem
  /** Enqueue jobs from trusted code (tests, scripts). */
  jobs: JobQueue
  port: number
  /** Readiness 503, stop listening, finish in-flight requests, then close NATS, Redis and Postgres. */
  shutdown(): Promise<void>
}

export interface StartOptions {
  log?: Logger
  /** Extra routes mounted beside the built-in ones (tests use this to add probes). */
  routes?: (deps: NodeDeps) => Route[]
  /** Actor kinds hosted beside the built-in ones. */
  kinds?: (deps: Pick<NodeDeps, 'sql' | 'log'>) => ActorKind<unknown>[]
  /** Job types beside the built-in ones (every node must know every job it may enqueue or run). */
  jobs?: (deps: Pick<NodeDeps, 'sql' | 'log'>) => JobDefinition[]
  /** Cron schedules, run by the cluster's one scheduler. */
  schedules?: CronSchedule[]
}

/** What a route or actor kind may be built from. */
export interface NodeDeps {
  sql: Sql
  redis: Redis
  nc: NatsConnection
  actors: ActorSystem
  log: Logger
}

export class StartupError extends Error {
  override name = 'StartupError'
}

export async function startNode(config: Config, options: StartOptions = {}): Promise<AppNode> {
  const log = options.log ?? createLogger({ level: config.logLevel, pretty: config.logPretty, nodeId: config.nodeId })
  const names = namesFor(config.namespace)
  const registry = createRegistry({ node: config.nodeId })
  const deadline = Date.now() + config.startupTimeoutMs
  let state: 'joining' | 'ready' | 'draining' = 'joining'

  const sql = createSql(
    {
      url: config.databaseUrl,
      max: config.dbPoolMax,
      applicationName: `actorbase-${config.nodeId}`,
      silenceTimeoutMs: config.dbSilenceTimeoutMs,
      deadClientSeconds: config.dbDeadClientS,
    },
    registry,
  )
  const db = createDbMetrics(registry)
  const redis = createRedis({ url: config.redisUrl, keyPrefix: names.redisPrefix, connectTimeoutMs: 2_000 })
  let nc: NatsConnection | undefined
  try {
    await retryUntil(deadline, 'Postgres', redact(config.databaseUrl), () => pingPostgres(sql, 2_000))
    await retryUntil(deadline, 'Redis', redact(config.redisUrl), () => redis.connect())
    nc = await retryUntil(deadline, 'NATS', config.natsUrl, () =>
      connectNats({ url: config.natsUrl, name: `actorbase-${config.nodeId}`, connectTimeoutMs: 2_000 }, log),
    )
    if (config.migrateOnStart) {
      // A connection of its own with no silence limit: a migration's statement may run long without a word.
      const migrator = createSql({ url: config.databaseUrl, max: 1, applicationName: `actorbase-${config.nodeId}-migrate`, deadClientSeconds: config.dbDeadClientS })
      try {
        await db.timed('migrate', () => migrate(migrator, migrationsDir, log))
      } finally {
        await migrator.end({ timeout: 5 })
      }
    }
    await ensureStreams(nc, names, { eventsMaxAgeHours: config.eventsMaxAgeHours, eventsMaxPerChannel: config.eventsMaxPerChannel, leaseTtlMs: config.leaseTtlMs, presenceTtlMs: config.presenceTtlMs })
  } catch (err) {
    await Promise.allSettled([sql.end({ timeout: 1 }), redis.quit(), nc?.close()])
    throw err
  }
  const natsConn = nc
  const keys = await loadKeys(
    {
      ...(config.jwtPrivateKey ? { privateKey: config.jwtPrivateKey } : config.jwtPrivateKeyFile ? { privateKey: await readFile(config.jwtPrivateKeyFile, 'utf8') } : {}),
      ...(config.jwtPreviousPublicKeys ? { previousPublicKeys: config.jwtPreviousPublicKeys } : {}),
      devKeysDir: config.devKeysDir,
    },
    log,
  )
  const tokens = createAccessTokens({ keys, issuer: config.jwtIssuer, audience: config.jwtAudience, ttlSeconds: config.accessTokenTtlS })
  const hasher = await createPasswordHasher({ concurrency: config.passwordHashConcurrency, maxWaiting: config.passwordHashQueue })
  const revocations = createSessionRevocations({ nc: natsConn, redis, names, ttlSeconds: config.accessTokenTtlS, log })
  await revocations.start()
  if (config.mail.transport === 'smtp' && !config.mail.smtpUrl) throw new StartupError('MAIL_TRANSPORT=smtp needs SMTP_URL')
  const transport = config.mail.transport === 'smtp' ? createSmtpTransport(config.mail.smtpUrl!, config.mail.from) : createDevTransport(sql, log)
  const jobs = createJobQueue({
    nc: natsConn,
    names,
    sql,
    definitions: [emailJob(transport), exportJob(sql), noopJob, ...(options.jobs?.({ sql, log }) ?? [])],
    log,
    insertTimeoutMs: config.askTimeoutMs,
  })
  const orgCache = createOrgListCache(redis, log)
  const events = createEventPublisher({ nc: natsConn, names, sql, log })
  const builtInKinds = [
    orgKind({ sql, jobs, cache: orgCache, publicUrl: config.publicUrl, invitationTtlHours: config.invitationTtlHours, events }),
    userKind({
      sql,
      jobs,
      revocations,
      refreshTtlDays: config.refreshTokenTtlDays,
      refreshGraceMs: config.refreshReuseGraceMs,
      publicUrl: config.publicUrl,
      events,
    }),
  ]
  const actors = createActorSystem({
    nc: natsConn,
    names,
    nodeId: config.nodeId,
    hosting: config.roles.has('actors'),
    kinds: [...builtInKinds, ...(options.kinds?.({ sql, log }) ?? [])],
    partitions: config.actorPartitions,
    leaseTtlMs: config.leaseTtlMs,
    askTimeoutMs: config.askTimeoutMs,
    idleMs: config.actorIdleMs,
    mailboxCapacity: config.actorMailboxCapacity,
    log,
    registry,
  })
  await actors.start()
  const relay = config.roles.has('actors') ? startOutboxRelay({ sql, actors, log, registry, intervalMs: config.outboxRelayIntervalMs }) : undefined
  const jobMetrics = createJobMetrics(registry, natsConn, names)
  const worker = config.roles.has('workers')
    ? await startWorker({
        nc: natsConn,
        names,
        sql,
        queue: jobs,
        log,
        metrics: jobMetrics,
        concurrency: config.jobConcurrency,
        ackWaitMs: config.jobAckWaitMs,
        // Progress of an organization's job is an event on its channel, written by the org actor.
        onChange: (c) =>
          actors
            .ask('org', c.orgId, { type: 'job.changed', jobId: c.id, name: c.name, status: c.status, attempts: c.attempts, ...(c.error ? { error: c.error } : {}) }, { principal: system('jobs') })
            .catch((err: unknown) => log.warn({ err, jobId: c.id }, 'job event not written')),
      })
    : undefined
  const scheduler = config.roles.has('workers')
    ? startScheduler({
        sql,
        // The lease's own connection, beside the pool: kept open for good, since the lock lives in its session.
        leaseSql: createSql({
          url: config.databaseUrl,
          max: 1,
          // This node's alone (the scheduler finds its own earlier lease sessions by it); Postgres keeps 63 bytes.
          applicationName: `actorbase-${config.nodeId}-lease`.slice(0, 63),
          silenceTimeoutMs: config.dbSilenceTimeoutMs,
          // Also what frees the lease of a node that vanished: Postgres ends its session, and so the lock.
          deadClientSeconds: config.dbDeadClientS,
          idleTimeoutSeconds: 0,
          maxLifetimeSeconds: 0,
        }),
        nc: natsConn,
        names,
        queue: jobs,
        schedules: options.schedules ?? [],
        log,
        intervalMs: config.schedulerIntervalMs,
        timeoutMs: config.askTimeoutMs,
      })
    : undefined

  const timeout = config.healthTimeoutMs
  const routes: Route[] = [
    ...healthRoutes({
      postgres: () => db.timed('health', () => pingPostgres(sql, timeout)),
      nats: () => pingNats(natsConn, timeout),
      redis: () => pingRedis(redis, timeout),
      nodeState: () => (state === 'ready' && !actors.joined ? 'joining' : state),
    }),
    metricsRoute(registry),
    ...docsRoutes(),
    ...(config.roles.has('gateway')
      ? identityRoutes({
          actors,
          sql,
          hasher,
          tokens,
          limiter: createRateLimiter(redis),
          limits: { loginFailuresPerAccount: config.loginMaxFailures, loginAttemptsPerIp: config.loginMaxAttemptsPerIp, windowSeconds: config.loginFailureWindowS },
        })
      : []),
    ...(config.roles.has('gateway') ? [...orgRoutes({ actors, sql, cache: orgCache }), ...projectRoutes({ actors, sql }), ...jobRoutes({ actors, sql })] : []),
    ...(config.roles.has('gateway') ? opsRoutes({ sql, jobs, opsToken: config.opsToken, log }) : []),
    ...(options.routes?.({ sql, redis, nc: natsConn, actors, log }) ?? []),
  ]
  routes.push(openApiRoute(() => buildOpenApi(routes, { title: 'actorbase API', version: '1', description: 'Public HTTP contract; see API.md' })))
  const server = createHttpServer({
    host: config.host,
    port: config.port,
    bodyLimitBytes: config.bodyLimitBytes,
    corsOrigins: config.corsOrigins,
    log,
    registry,
    routes,
    authenticate: createAuthenticator(tokens, revocations, createApiKeyOwners(sql)),
  })
  const ws = config.roles.has('gateway') ? await startWebSockets() : undefined
  const port = await server.listen()
  state = 'ready'
  log.info({ port, roles: [...config.roles], namespace: config.namespace }, 'node started')

  async function startWebSockets() {
    const wsMetrics = createWsMetrics(registry)
    const history = createEventHistory(natsConn, names.eventsStream, (channel) => channelSeq(sql, channel))
    const hub = new ChannelHub({ app: server.app, nc: natsConn, names, history, log, metrics: wsMetrics })
    const presence = createPresence({
      kv: await new Kvm(natsConn).open(names.presenceBucket),
      nc: natsConn,
      jsm: await jetstreamManager(natsConn),
      bucket: names.presenceBucket,
      nodeId: config.nodeId,
      ttlMs: config.presenceTtlMs,
      log,
      onDiff: (channel, joins, leaves) => {
        for (const protocol of ['json', 'msgpack'] as const) {
          const frame = encodeFrame({ type: 'presence.diff', channel, joins, leaves }, protocol)
          server.app.publish(topicOf(channel, protocol), frame, protocol === 'msgpack')
        }
      },
    })
    const wsServer = createWsServer({ app: server.app, path: '/v1/ws', corsOrigins: config.corsOrigins, actors, tokens, revocations, hub, presence, metrics: wsMetrics, log, ...config.ws })
    return { wsServer, hub, presence }
  }

  let stopping: Promise<void> | undefined
  const shutdown = () =>
    (stopping ??= (async () => {
      state = 'draining'
      // Sockets go first: their clients reconnect to another node and resume from there.
      ws?.wsServer.closeAll()
      const { unfinished } = await server.drain(config.shutdownTimeoutMs)
      if (unfinished > 0) log.warn({ unfinished }, 'shutdown deadline passed with requests still running')
      await relay?.stop()
      await scheduler?.stop()
      // Jobs still running past the deadline are delivered again to another worker after the ack wait.
      await worker?.stop(config.shutdownTimeoutMs)
      await actors.stop().catch((err: unknown) => log.error({ err }, 'actor hand-over failed'))
      // Events committed by the last messages go out before the connection closes (the relay would catch
      // them later anyway).
      await withTimeout(events.settled(), 5_000, 'event publishing').catch((err: unknown) => log.warn({ err }, 'events left to the relay'))
      revocations.stop()
      ws?.hub.closeAll()
      await ws?.presence.stop()
      await Promise.allSettled([natsConn.drain(), redis.quit(), sql.end({ timeout: 5 })])
      log.info('node stopped')
    })())

  return { config, names, log, registry, sql, redis, nc: natsConn, server, actors, jobs, port, shutdown }
}

/** Retries a connection until the start-up deadline, then fails with one line naming the dependency. */
async function retryUntil<T>(deadline: number, what: string, where: string, attempt: () => Promise<T>): Promise<T> {
  let last: unknown
  do {
    try {
      return await attempt()
    } catch (err) {
      last = err
      await new Promise((r) => setTimeout(r, 250))
    }
  } while (Date.now() < deadline)
  const reason = last instanceof Error ? last.message : String(last)
  throw new StartupError(`cannot reach ${what} at ${where}: ${reason}`, { cause: last })
}

/** Connection strings may carry passwords; errors and logs show them without. */
function redact(url: string): string {
  const parsed = new URL(url)
  if (parsed.password) parsed.password = '***'
  return parsed.toString()
}

async function main(): Promise<void> {
  let config: Config
  try {
    config = loadConfig(process.env)
  } catch (err) {
    process.stderr.write(`${err instanceof ConfigError ? err.message : String(err)}\n`)
    process.exit(1)
  }
  let node: AppNode
  try {
    node = await startNode(config)
  } catch (err) {
    process.stderr.write(`start-up failed: ${err instanceof Error ? err.message : String(err)}\n`)
    process.exit(1)
  }
  const stop = (signal: string) => {
    node.log.info({ signal }, 'shutting down')
    node.shutdown().then(
      () => process.exit(0),
      (err: unknown) => {
        node.log.error({ err }, 'shutdown failed')
        process.exit(1)
      },
    )
  }
  process.once('SIGTERM', () => stop('SIGTERM'))
  process.once('SIGINT', () => stop('SIGINT'))
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) await main()
