import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { AppError, notFound, unavailable } from '../core/errors.js'
import { withTimeout } from '../core/timeout.js'
import { newId } from '../core/ids.js'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { findJobRecord, insertJob, insertJobs, markJobsPublished, requeueDeadJob, type JobPriority, type JobRecord, type NewJob } from '../storage/job-records.js'
import type { Queryable, Sql } from '../storage/postgres.js'
import { fieldErrors } from '../core/validation.js'
import type { JobDefinition } from './jobs/define.js'

export interface JobRequest {
  name: string
  payload: unknown
  priority?: JobPriority
  /** Not before this time (a delayed job). */
  runAt?: Date
  /** A second enqueue with the same key is the same job. */
  idempotencyKey?: string
  orgId?: string | null
  requestId?: string | null
}

/** What goes on the queue: enough for a worker to run the job without reading its record first. */
export interface JobMessage {
  id: string
  name: string
  queue: string
  priority: JobPriority
  payload: unknown
  orgId: string | null
  requestId: string | null
  maxAttempts: number
  generation: number
  enqueuedAt: number
}

export const priorities: readonly JobPriority[] = ['high', 'default', 'low']

/** Single enqueues' insert statements in flight at once; more wait and go together. */
const MAX_INSERTS = 1

export interface JobQueue {
  /** Validates a request into a job record, or throws `validation.failed` (nothing is written). */
  prepare(request: JobRequest): NewJob
  /** Writes the record inside the caller's transaction: the job exists exactly if that transaction commits. */
  insert(tx: Queryable, job: NewJob): Promise<{ id: string; duplicate: boolean }>
  /** After the commit: puts jobs that are due on the queue (the dispatcher catches any this misses). */
  publish(jobs: readonly (NewJob & { generation?: number })[]): void
  /** For trusted code outside actors: records and queues one job. */
  enqueue(request: JobRequest): Promise<{ id: string; duplicate: boolean }>
  /** Many at once: one transaction, one multi-row insert, publishes pipelined. */
  enqueueMany(requests: readonly JobRequest[]): Promise<{ id: string; duplicate: boolean }[]>
  /** Makes a dead job queued again (a new generation) inside the caller's transaction; publish it after the commit. */
  requeueDead(tx: Queryable, id: string): Promise<JobRecord>
  /** For trusted code (operators): queues a dead job again and publishes it. */
  retryDead(id: string): Promise<JobRecord>
  definition(name: string): JobDefinition | undefined
  readonly definitions: readonly JobDefinition[]
}

export function createJobQueue(o: {
  nc: NatsConnection
  names: Names
  sql: Sql
  definitions: readonly JobDefinition[]
  log: Logger
  /** A single enqueue whose insert takes longer fails with `unavailable`, and the next inserts go ahead. */
  insertTimeoutMs?: number
}): JobQueue {
  const defs = new Map(o.definitions.map((d) => [d.name, d]))
  const js: JetStreamClient = jetstream(o.nc, { timeout: 5_000 })

  // Marks go to Postgres half a second later in one statement, and only for jobs still waiting by then: a
  // mark only tells the dispatcher (which looks at jobs older than a second) what it need not publish, and
  // most jobs have started, which says as much, before their mark is due. A job published but not marked is
  // at worst published again: a duplicate the stream drops, or a delivery the worker finds already done.
  let marks: string[] = []
  let marking: NodeJS.Timeout | undefined
  const mark = (ids: readonly string[]) => {
    marks.push(...ids)
    marking ??= setTimeout(() => {
      marking = undefined
      const batch = marks
      marks = []
      markJobsPublished(o.sql, batch).catch((err: unknown) => o.log.warn({ err, jobs: batch.length }, 'published jobs not marked; the dispatcher may publish them again'))
    }, 500)
  }
  const send = async (jobs: readonly (NewJob & { generation?: number })[]) => {
    const due = jobs.filter((j) => !j.delayed)
    if (due.length === 0) return
    await Promise.all(due.map((j) => publishJob(js, o.names, j)))
    mark(due.map((j) => j.id))
  }

  // Single enqueues share insert statements (group commit): the first waits for nothing, and while
  // MAX_INSERTS are in flight the next ones gather and go together when one finishes. An idle queue answers
  // at once; a busy one makes bigger statements rather than more of them.
  let waiting: { job: NewJob; resolve: (r: { id: string; duplicate: boolean }) => void; reject: (e: unknown) => void }[] = []
  let inserts = 0
  let scheduled = false
  const insertWaiting = () => {
    scheduled = false
    if (waiting.length === 0 || inserts >= MAX_INSERTS) return
    const batch = waiting
    waiting = []
    inserts++
    // A record that lands after its caller was told `unavailable` is still a job: the dispatcher publishes it.
    withTimeout(insertJobs(o.sql, batch.map((w) => w.job)), o.insertTimeoutMs ?? 5_000, 'job insert', () => unavailable('the job store'))
      .then(
        (results) => batch.forEach((w, i) => w.resolve(results[i]!)),
        (err: unknown) => batch.forEach((w) => w.reject(err)),
      )
      .finally(() => {
        inserts--
        insertWaiting()
      })
  }
  const insertSoon = (job: NewJob) =>
    new Promise<{ id: string; duplicate: boolean }>((resolve, reject) => {
      waiting.push({ job, resolve, reject })
      // Enqueues made in the same turn of the event loop still go together.
      if (!scheduled && inserts < MAX_INSERTS) {
        scheduled = true
        setImmediate(insertWaiting)
      }
    })

  const queue: JobQueue = {
    definitions: o.definitions,
    definition: (name) => defs.get(name),
    prepare(r) {
      const def = defs.get(r.name)
      if (!def) throw new AppError('validation.failed', `no job named ${r.name}`, { errors: [{ path: 'name', message: 'unknown job' }] })
      const parsed = def.schema.safeParse(r.payload)
      if (!parsed.success) throw new AppError('validation.failed', `the payload of ${r.name} is invalid`, { errors: fieldErrors(parsed.error, 'payload') })
      return {
        id: newId(),
        orgId: r.orgId ?? null,
        name: def.name,
        queue: def.queue,
        priority: r.priority ?? def.priority ?? 'default',
        payload: parsed.data as Record<string, unknown>,
        maxAttempts: def.maxAttempts ?? 5,
        idempotencyKey: r.idempotencyKey ?? null,
        requestId: r.requestId ?? null,
        runAt: r.runAt ?? new Date(),
        // Decided once: a job to run later waits in Postgres for the dispatcher, never on the queue.
        delayed: r.runAt !== undefined && r.runAt.getTime() > Date.now(),
      }
    },
    insert: (tx, job) => insertJob(tx, job),
    publish(jobs) {
      send(jobs).catch((err: unknown) => o.log.warn({ err, jobs: jobs.length }, 'jobs not queued yet; the dispatcher will'))
    },
    async enqueue(r) {
      const job = queue.prepare(r)
      const inserted = await insertSoon(job)
      if (!inserted.duplicate) queue.publish([job])
      return inserted
    },
    async requeueDead(tx, id) {
      const requeued = await requeueDeadJob(tx, id)
      if (requeued) return requeued
      const found = await findJobRecord(tx, id)
      if (!found) throw notFound('job')
      throw new AppError('conflict', `job ${id} is ${found.status}; only dead jobs can be retried`)
    },
    async retryDead(id) {
      const job = await queue.requeueDead(o.sql, id)
      queue.publish([job])
      return job
    },
    async enqueueMany(requests) {
      const prepared = requests.map((r) => queue.prepare(r))
      const results = await o.sql.begin((tx) => insertJobs(tx, prepared))
      const fresh = prepared.filter((_, i) => !results[i]!.duplicate)
      await send(fresh)
      return results
    },
  }
  return queue
}

/** The message id keeps a re-publish of the same generation from being a second message. */
export async function publishJob(js: JetStreamClient, names: Names, j: NewJob & { generation?: number }): Promise<void> {
  const message: JobMessage = {
    id: j.id,
    name: j.name,
    queue: j.queue,
    priority: j.priority,
    payload: j.payload,
    orgId: j.orgId,
    requestId: j.requestId,
    maxAttempts: j.maxAttempts,
    generation: j.generation ?? 0,
    enqueuedAt: Date.now(),
  }
  await js.publish(`${names.jobSubject(j.queue)}.${j.priority}`, JSON.stringify(message), { msgID: `${j.id}:${message.generation}` })
}
