import { createHash } from 'node:crypto'
import { jetstream } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { CronExpressionParser } from 'cron-parser'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { isConnectionError } from '../core/errors.js'
import { withTimeout } from '../core/timeout.js'
import { dueDelayedJobs, leftoverJobs, markJobsPublished } from '../storage/job-records.js'
import type { Sql } from '../storage/postgres.js'
import { publishJob, type JobQueue, type JobRequest } from './job-queue.js'

class Unanswered extends Error {}

type Reserved = Awaited<ReturnType<Sql['reserve']>>

/** A schedule declared in code: standard five-field cron, in a time zone. */
export interface CronSchedule {
  name: string
  cron: string
  timezone?: string
  job: Omit<JobRequest, 'idempotencyKey' | 'runAt'>
  /** After downtime, fire the most recent missed tick once (default true); later ones are skipped. */
  catchUp?: boolean
}

export interface SchedulerOptions {
  sql: Sql
  nc: NatsConnection
  names: Names
  queue: JobQueue
  schedules: readonly CronSchedule[]
  log: Logger
  /** How often the leader publishes due jobs and checks schedules. */
  intervalMs: number
  /**
   * A pass (or the lease check) with no answer by then is given up, so one statement Postgres never answers
   * cannot hold up every later pass or the node's shutdown.
   */
  timeoutMs?: number
}

/**
 * The one scheduler of a cluster: whoever holds the Postgres advisory lock of the namespace (a lease that
 * ends with the holder's connection, so a dead node's lease frees itself) publishes delayed jobs when due,
 * queues jobs a crash left unpublished, and fires cron ticks. Each tick's job carries the idempotency key
 * `cron:<name>:<tick>`, so even two leaders at once (a partition) could not fire a tick twice.
 */
export function startScheduler(o: SchedulerOptions): { stop(): Promise<void>; readonly leader: boolean } {
  for (const s of o.schedules) CronExpressionParser.parse(s.cron, { tz: s.timezone ?? 'UTC' })
  const lockKey = BigInt.asIntN(64, BigInt(`0x${createHash('sha256').update(`actorbase:scheduler:${o.names.namespace}`).digest('hex').slice(0, 16)}`))
  const js = jetstream(o.nc, { timeout: 5_000 })
  const known = o.queue.definitions.map((d) => d.name)
  let held: { conn: Reserved; pid: number } | undefined
  let leader = false
  let stopped = false
  /** The pass in flight: a tick that comes while one runs is skipped, so passes never overlap. */
  let pass: Promise<void> | undefined
  const timeoutMs = o.timeoutMs ?? 5_000
  const lockId = lockKey.toString()

  /**
   * What to do with a lock connection once its statement settles: a late answer (after we gave up on it)
   * gives the lock back and the connection to the pool; a connection Postgres closed is already back in the
   * pool (releasing it again would put a dead one there). One that never answers is closed by the pool's
   * silence limit, and the lock ends with its session.
   */
  const settleLater = (conn: Reserved, statement: Promise<unknown>) =>
    statement.then(
      () =>
        conn`select pg_advisory_unlock(${lockId}::bigint)`.then(
          () => conn.release(),
          () => undefined,
        ),
      (err: unknown) => (isConnectionError(err) ? undefined : conn.release()),
    )

  const lead = async (): Promise<boolean> => {
    if (!held) {
      const conn = await o.sql.reserve()
      const attempt = conn<{ ok: boolean; pid: number }[]>`select pg_try_advisory_lock(${lockId}::bigint) as ok, pg_backend_pid() as pid`.execute()
      let row: { ok: boolean; pid: number } | undefined
      try {
        ;[row] = await withTimeout(attempt, timeoutMs, 'scheduler lock', () => new Unanswered('the scheduler lock got no answer'))
      } catch (err) {
        if (err instanceof Unanswered) void settleLater(conn, attempt)
        else if (!isConnectionError(err)) conn.release()
        throw err
      }
      if (!row?.ok) {
        conn.release()
        return false
      }
      held = { conn, pid: row.pid }
      o.log.info({ namespace: o.names.namespace }, 'job scheduler: this node leads')
      return true
    }
    // Still the same session means still holding the lock: a connection the pool replaced lost it.
    const h = held
    const check = h.conn<{ pid: number }[]>`select pg_backend_pid() as pid`.execute()
    try {
      const [row] = await withTimeout(check, timeoutMs, 'scheduler lease check', () => new Unanswered('the scheduler lease check got no answer'))
      if (row?.pid === h.pid) return true
      held = undefined
      h.conn.release()
      o.log.warn({ namespace: o.names.namespace }, 'job scheduler: lost the lease (new Postgres session)')
      return false
    } catch (err) {
      held = undefined
      o.log.warn({ err }, 'job scheduler: lost the lease')
      if (err instanceof Unanswered) void settleLater(h.conn, check)
      else if (!isConnectionError(err)) h.conn.release()
      return false
    }
  }

  let leftoversAt = 0
  const dispatch = async () => {
    // Jobs a crash left unpublished are rare: looked for every couple of seconds; delayed jobs every pass.
    const sweep = Date.now() - leftoversAt > 2_000
    if (sweep) leftoversAt = Date.now()
    for (;;) {
      const due = [...(await dueDelayedJobs(o.sql, known, 500)), ...(sweep ? await leftoverJobs(o.sql, known, 1_000, 500) : [])]
      if (due.length === 0) return
      await Promise.all(due.map((j) => publishJob(js, o.names, j)))
      await markJobsPublished(o.sql, due.map((j) => j.id))
      if (due.length < 500) return
    }
  }

  const fire = async (s: CronSchedule) => {
    const now = new Date()
    const latest = CronExpressionParser.parse(s.cron, { tz: s.timezone ?? 'UTC', currentDate: now }).prev().toDate()
    const [state] = await o.sql<{ lastTick: Date }[]>`select last_tick as "lastTick" from cron_state where namespace = ${o.names.namespace} and name = ${s.name}`
    if (state && state.lastTick.getTime() >= latest.getTime()) return
    // A tick is due if it is the one right after the last fired; older missed ones collapse into one catch-up.
    const expected = state ? CronExpressionParser.parse(s.cron, { tz: s.timezone ?? 'UTC', currentDate: state.lastTick }).next().toDate() : latest
    const missedSeveral = expected.getTime() < latest.getTime()
    const fireNow = !state || !missedSeveral || (s.catchUp ?? true)
    const fired = await o.sql.begin(async (tx) => {
      await tx`insert into cron_state (namespace, name, last_tick) values (${o.names.namespace}, ${s.name}, ${latest})
               on conflict (namespace, name) do update set last_tick = excluded.last_tick`
      if (!fireNow || !state) return undefined
      const job = o.queue.prepare({ ...s.job, idempotencyKey: `cron:${o.names.namespace}:${s.name}:${latest.toISOString()}` })
      const inserted = await o.queue.insert(tx, job)
      return inserted.duplicate ? undefined : job
    })
    // Queued only once the tick and its job committed together.
    if (!fired) return
    o.queue.publish([fired])
    o.log.info({ schedule: s.name, tick: latest.toISOString(), catchUp: missedSeveral }, 'cron tick fired')
  }

  const tick = async () => {
    leader = await lead().catch((err: unknown) => {
      o.log.warn({ err }, 'job scheduler: lease not taken')
      return false
    })
    if (!leader) return
    await dispatch().catch((err: unknown) => o.log.warn({ err }, 'due jobs not dispatched'))
    for (const s of o.schedules) await fire(s).catch((err: unknown) => o.log.warn({ err, schedule: s.name }, 'cron tick not fired'))
  }

  // A pass whose statements get no answer lasts until the pool's silence limit closes their connection.
  const timer = setInterval(() => {
    if (stopped || pass) return
    pass = tick().finally(() => {
      pass = undefined
    })
  }, o.intervalMs)
  timer.unref()

  return {
    get leader() {
      return leader
    },
    async stop() {
      stopped = true
      clearInterval(timer)
      // Shutdown does not wait longer than this for a pass stuck on a silent Postgres.
      if (pass) await withTimeout(pass, timeoutMs, 'scheduler pass').catch(() => undefined)
      const h = held
      held = undefined
      if (h) {
        const unlock = h.conn`select pg_advisory_unlock(${lockId}::bigint)`.execute()
        await withTimeout(unlock, timeoutMs, 'scheduler unlock', () => new Unanswered('the scheduler unlock got no answer')).then(
          () => h.conn.release(),
          (err: unknown) => {
            // Unanswered: left to the silence limit, and the lock ends with the session.
            if (!(err instanceof Unanswered) && !isConnectionError(err)) h.conn.release()
          },
        )
      }
    },
  }
}
