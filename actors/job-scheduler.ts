import { createHash } from 'node:crypto'
import { jetstream } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { CronExpressionParser } from 'cron-parser'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { withTimeout } from '../core/timeout.js'
import { dueDelayedJobs, leftoverJobs, markJobsPublished } from '../storage/job-records.js'
import type { Sql } from '../storage/postgres.js'
import { publishJob, type JobQueue, type JobRequest } from './job-queue.js'

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
  /**
   * A client of one connection for the lease alone (never shared, never idle-closed): the advisory lock
   * belongs to its session, so no late answer or replaced connection can leak the lock into another user's
   * session, and closing this client at stop gives the lock back. Its application name must be this node's
   * alone: after a lease check failed while leading, the node ends its own earlier lease sessions (found by
   * that name) that Postgres still keeps, and with them the lock, rather than leaving the cluster without a
   * leader until Postgres notices they are gone.
   */
  leaseSql: Sql
  nc: NatsConnection
  names: Names
  queue: JobQueue
  schedules: readonly CronSchedule[]
  log: Logger
  /** How often the leader publishes due jobs and checks schedules. */
  intervalMs: number
  /** A lease check with no answer by then ends this node's lead for the pass; shutdown waits no longer for a pass. */
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
  let leader = false
  let stopped = false
  /** The pass in flight: a tick that comes while one runs is skipped, so passes never overlap. */
  let pass: Promise<void> | undefined
  const timeoutMs = o.timeoutMs ?? 5_000
  // pg_locks shows a bigint advisory key as its high and low 32 bits (classid, objid) with objsubid 1.
  const unsigned = BigInt.asUintN(64, lockKey)
  const [hi, lo] = [(unsigned >> 32n).toString(), (unsigned & 0xffffffffn).toString()]

  /**
   * Asks whether the lease session holds the lock, and takes it if free. Asking the same question every pass
   * makes a late answer harmless, and it tells the truth after the lease client reconnected (a new session
   * holds nothing until it takes the lock again).
   */
  const lead = async (): Promise<boolean> => {
    const [row] = await withTimeout(
      o.leaseSql<{ ok: boolean }[]>`
        select case when exists (select 1 from pg_locks where locktype = 'advisory' and granted and pid = pg_backend_pid()
                                   and classid = ${hi}::oid and objid = ${lo}::oid and objsubid = 1)
                    then true else pg_try_advisory_lock(${lockKey.toString()}::bigint) end as ok`.execute(),
      timeoutMs,
      'scheduler lease check',
    )
    return row?.ok === true
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

  // Set when a lease check fails while leading: the session that held the lock may live on in Postgres.
  let stale = false
  const endStaleSessions = async (): Promise<number> => {
    const [row] = await withTimeout(
      o.leaseSql<{ ended: number }[]>`
        select count(*) filter (where pg_terminate_backend(pid))::int as ended from pg_stat_activity
        where application_name = current_setting('application_name') and pid <> pg_backend_pid() and datname = current_database()`.execute(),
      timeoutMs,
      'ending stale lease sessions',
    )
    return row?.ended ?? 0
  }

  const tick = async () => {
    const was = leader
    leader = await lead().catch((err: unknown) => {
      o.log.warn({ err }, 'job scheduler: lease not confirmed')
      if (was) stale = true
      return false
    })
    if (!leader && stale && !stopped) {
      const ended = await endStaleSessions().catch((err: unknown) => {
        o.log.warn({ err }, 'job scheduler: earlier lease sessions not ended')
        return -1
      })
      if (ended >= 0) stale = false
      if (ended > 0) {
        o.log.warn({ ended }, 'job scheduler: ended an earlier lease session of this node that Postgres still kept')
        leader = await lead().catch(() => false)
      }
    }
    if (leader !== was) o.log.info({ namespace: o.names.namespace }, leader ? 'job scheduler: this node leads' : 'job scheduler: this node no longer leads')
    if (!leader || stopped) return
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
      leader = false
      // The lock ends with the lease session.
      await o.leaseSql.end({ timeout: 1 })
    },
  }
}
