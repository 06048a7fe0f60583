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

class Unanswered extends Error {}

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
  let reserved: Awaited<ReturnType<Sql['reserve']>> | undefined
  let leader = false
  let stopped = false
  let running: Promise<void> = Promise.resolve()
  const timeoutMs = o.timeoutMs ?? 5_000

  const lead = async (): Promise<boolean> => {
    try {
      if (!reserved) {
        reserved = await o.sql.reserve()
        const [row] = await reserved<{ ok: boolean }[]>`select pg_try_advisory_lock(${lockKey.toString()}::bigint) as ok`
        if (!row?.ok) {
          reserved.release()
          reserved = undefined
          return false
        }
        o.log.info({ namespace: o.names.namespace }, 'job scheduler: this node leads')
      } else {
        // Still connected means still holding the lock.
        await withTimeout(reserved`select 1`.execute(), timeoutMs, 'scheduler lease check', () => new Unanswered('the scheduler lease check got no answer'))
      }
      return true
    } catch (err) {
      if (leader) o.log.warn({ err }, 'job scheduler: lost the lease')
      // A connection that stopped answering is left to fail on its own (put back in the pool, its next user
      // would wait behind the lost statement); while its backend lives, no other node gets the lock either.
      if (reserved && !(err instanceof Unanswered)) reserved.release()
      reserved = undefined
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
    leader = await lead()
    if (!leader) return
    await dispatch().catch((err: unknown) => o.log.warn({ err }, 'due jobs not dispatched'))
    for (const s of o.schedules) await fire(s).catch((err: unknown) => o.log.warn({ err, schedule: s.name }, 'cron tick not fired'))
  }

  const timer = setInterval(() => {
    running = running.then(() =>
      stopped ? undefined : withTimeout(tick(), timeoutMs * 2, 'scheduler pass').catch((err: unknown) => o.log.warn({ err }, 'scheduler pass given up')),
    )
  }, o.intervalMs)
  timer.unref()

  return {
    get leader() {
      return leader
    },
    async stop() {
      stopped = true
      clearInterval(timer)
      await withTimeout(running, timeoutMs * 2, 'scheduler pass').catch(() => undefined)
      if (reserved) {
        const unlocked = await withTimeout(reserved`select pg_advisory_unlock(${lockKey.toString()}::bigint)`.execute(), timeoutMs, 'scheduler unlock').then(
          () => true,
          () => false,
        )
        // A connection that did not answer stays out of the pool; the lock ends with it.
        if (unlocked) reserved.release()
      }
    },
  }
}
