import type { Queryable, Sql } from './postgres.js'

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'dead'
export type JobPriority = 'high' | 'default' | 'low'

export interface JobRecord {
  id: string
  orgId: string | null
  name: string
  queue: string
  priority: JobPriority
  status: JobStatus
  payload: Record<string, unknown>
  attempts: number
  maxAttempts: number
  idempotencyKey: string | null
  requestId: string | null
  result: unknown
  error: string | null
  generation: number
  runAt: Date
  /** Enqueued to run later: it waits in Postgres until due (the dispatcher publishes it). */
  delayed: boolean
  createdAt: Date
  updatedAt: Date
  startedAt: Date | null
  finishedAt: Date | null
  nextAttemptAt: Date | null
}

export type NewJob = Pick<JobRecord, 'id' | 'orgId' | 'name' | 'queue' | 'priority' | 'payload' | 'maxAttempts' | 'idempotencyKey' | 'requestId' | 'runAt' | 'delayed'>

const columns = (sql: Queryable) => sql`
  id, org_id as "orgId", name, queue, priority, status, payload, attempts, max_attempts as "maxAttempts",
  idempotency_key as "idempotencyKey", request_id as "requestId", result, error, generation, run_at as "runAt", delayed,
  created_at as "createdAt", updated_at as "updatedAt", started_at as "startedAt", finished_at as "finishedAt",
  next_attempt_at as "nextAttemptAt"`

/**
 * Records a job; with an idempotency key that is already taken, nothing is written and the existing job's id
 * comes back with `duplicate`.
 */
export async function insertJob(sql: Queryable, j: NewJob): Promise<{ id: string; duplicate: boolean }> {
  const [row] = await sql<{ id: string }[]>`
    insert into jobs (id, org_id, name, queue, priority, payload, max_attempts, idempotency_key, request_id, run_at, delayed)
    values (${j.id}, ${j.orgId}, ${j.name}, ${j.queue}, ${j.priority}, ${sql.json(j.payload as Parameters<typeof sql.json>[0])},
            ${j.maxAttempts}, ${j.idempotencyKey}, ${j.requestId}, ${j.runAt}, ${j.delayed})
    on conflict (idempotency_key) where idempotency_key is not null do nothing
    returning id`
  if (row) return { id: row.id, duplicate: false }
  const [existing] = await sql<{ id: string }[]>`select id from jobs where idempotency_key = ${j.idempotencyKey}`
  return { id: existing!.id, duplicate: true }
}

/**
 * Many jobs in one statement; jobs whose idempotency key is taken come back as duplicates of the existing one.
 * The rows go as one array per column (`unnest`), so every batch size is the same prepared statement: a
 * multi-row VALUES list would be a new statement, parsed and described again, for each size a busy queue makes.
 * Every array goes as text and is cast in SQL, so postgres.js sends the strings as they are (given `jsonb[]`
 * it would encode each JSON text again, as a JSON string).
 */
export async function insertJobs(sql: Queryable, given: readonly NewJob[]): Promise<{ id: string; duplicate: boolean }[]> {
  if (given.length === 0) return []
  // In idempotency-key order, so two batches that share keys take them in the same order instead of deadlocking.
  const jobs = [...given].sort((a, b) => compare(a.idempotencyKey ?? '', b.idempotencyKey ?? ''))
  const inserted = new Set(
    (
      await sql<{ id: string }[]>`
        insert into jobs (id, org_id, name, queue, priority, payload, max_attempts, idempotency_key, request_id, run_at, delayed)
        select * from unnest(
          ${jobs.map((j) => j.id)}::uuid[], ${jobs.map((j) => j.orgId)}::uuid[], ${jobs.map((j) => j.name)}::text[],
          ${jobs.map((j) => j.queue)}::text[], ${jobs.map((j) => j.priority)}::text[], ${jobs.map((j) => JSON.stringify(j.payload))}::text[]::jsonb[],
          ${jobs.map((j) => String(j.maxAttempts))}::text[]::int[], ${jobs.map((j) => j.idempotencyKey)}::text[], ${jobs.map((j) => j.requestId)}::text[],
          ${jobs.map((j) => j.runAt.toISOString())}::text[]::timestamptz[], ${jobs.map((j) => String(j.delayed))}::text[]::bool[])
        on conflict (idempotency_key) where idempotency_key is not null do nothing returning id`
    ).map((r) => r.id),
  )
  const results: { id: string; duplicate: boolean }[] = []
  for (const j of given) {
    if (inserted.has(j.id)) results.push({ id: j.id, duplicate: false })
    else {
      const [existing] = await sql<{ id: string }[]>`select id from jobs where idempotency_key = ${j.idempotencyKey}`
      results.push({ id: existing!.id, duplicate: true })
    }
  }
  return results
}

/** Plain code-unit order, the same whatever the locale: for taking locks in one order everywhere. */
const compare = (x: string, y: string) => (x < y ? -1 : x > y ? 1 : 0)

export async function findJobRecord(sql: Queryable, id: string): Promise<JobRecord | undefined> {
  const [row] = await sql<JobRecord[]>`select ${columns(sql)} from jobs where id = ${id}`
  return row
}

// Only jobs still waiting need the mark: one that started is no longer the dispatcher's business, and a row
// locked by someone else is a worker recording that start, so the mark skips it rather than waiting. A mark
// that never waits on a row lock can never be one side of a deadlock with the workers' state writes, whatever
// order their plans update rows in. (A start whose statement then fails leaves its job queued and unmarked:
// at worst the dispatcher publishes it again, a duplicate the stream drops.)
export async function markJobsPublished(sql: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length === 0) return
  await sql`
    with locked as (
      select id from jobs where id = any(${ids as string[]}::uuid[]) and published_at is null and status = 'queued' for update skip locked)
    update jobs set published_at = now() where id in (select id from locked)`
}

/** Delayed jobs whose time came. */
export async function dueDelayedJobs(sql: Queryable, names: readonly string[], limit: number): Promise<JobRecord[]> {
  return sql<JobRecord[]>`
    select ${columns(sql)} from jobs
    where delayed and published_at is null and status = 'queued' and run_at <= now() and name = any(${names as string[]})
    order by run_at limit ${limit}`
}

/** Jobs committed at least `graceMs` ago and never published: their enqueuer died before it could. */
export async function leftoverJobs(sql: Queryable, names: readonly string[], graceMs: number, limit: number): Promise<JobRecord[]> {
  return sql<JobRecord[]>`
    select ${columns(sql)} from jobs
    where not delayed and published_at is null and status = 'queued' and name = any(${names as string[]})
      and created_at < now() - make_interval(secs => ${graceMs / 1000})
    order by created_at limit ${limit}`
}

/** Which of these jobs may still run: waiting, failed, or running on a worker that died (not succeeded or dead). */
export async function runnableJobs(sql: Sql, ids: readonly string[]): Promise<Set<string>> {
  const rows = await sql<{ id: string }[]>`
    select id from jobs where id = any(${ids as string[]}::uuid[]) and status in ('queued', 'failed', 'running')`
  return new Set(rows.map((r) => r.id))
}

export interface JobStateChange {
  id: string
  /** `running` when an attempt starts; the outcome when it ends. */
  status: 'running' | 'succeeded' | 'failed' | 'dead'
  /** JetStream's delivery count of the job's current generation (attempts themselves are counted in Postgres). */
  attempt: number
  /** The attempt started in this same batch: its start time is recorded too. */
  started: boolean
  result?: unknown
  error?: string
  nextAttemptAt?: Date
  /** How long the attempt ran (for metrics; not stored). */
  seconds?: number
}

/**
 * Records attempts starting and ending, many jobs in one statement, and answers where each job now stands.
 * Attempts are counted here, once per start, so redeliveries after an outage do not use them up; a failure
 * that used the last attempt becomes `dead`. A job already succeeded or dead is left alone (a stale duplicate
 * cannot undo it) and is missing from the answer.
 */
export async function recordJobStates(sql: Sql, changes: readonly JobStateChange[]): Promise<Map<string, { status: JobStatus; attempts: number }>> {
  if (changes.length === 0) return new Map()
  // No locking pass of its own first (it cost about 40% more Postgres time per job). The published marks skip
  // rows locked here instead of waiting, so they never deadlock with it. What still can: two state writes of
  // the same jobs (a redelivery racing its first run, on two workers) whose plans take different orders (a
  // nested loop goes in input order, a hash join on a small table in table order), and an organization's
  // deletion, whose cascade takes its job rows in an order of its own. Postgres then aborts one side, and
  // both the worker and the deletion run again (retryOnDeadlock). Sorted by id, so the usual plan, a nested
  // loop over the input as given, takes the locks in the same order in every batch.
  const sorted = [...changes].sort((a, b) => compare(a.id, b.id))
  const rows = await sql<{ id: string; status: JobStatus; attempts: number }[]>`
    update jobs j set
      attempts = case when v.started::boolean then j.attempts + 1 else j.attempts end,
      status = case when v.status = 'failed' and (case when v.started::boolean then j.attempts + 1 else j.attempts end) >= j.max_attempts
                    then 'dead' else v.status end,
      result = v.result::jsonb, error = v.error, next_attempt_at = v.next::timestamptz,
      started_at = case when v.started::boolean then now() else j.started_at end,
      finished_at = case when v.status in ('succeeded', 'dead')
                           or (v.status = 'failed' and (case when v.started::boolean then j.attempts + 1 else j.attempts end) >= j.max_attempts)
                         then now() else j.finished_at end,
      updated_at = now()
    from unnest(${sorted.map((c) => c.id)}::uuid[], ${sorted.map((c) => c.status)}::text[],
                ${sorted.map((c) => (c.result === undefined ? null : JSON.stringify(c.result)))}::text[],
                ${sorted.map((c) => c.error ?? null)}::text[], ${sorted.map((c) => c.nextAttemptAt?.toISOString() ?? null)}::text[],
                ${sorted.map((c) => (c.started ? 'true' : 'false'))}::text[])
      as v(id, status, result, error, next, started)
    where j.id = v.id and j.status in ('queued', 'failed', 'running')
    returning j.id, j.status, j.attempts`
  return new Map(rows.map((r) => [r.id, { status: r.status, attempts: r.attempts }]))
}

/** Queues a dead job again as a new generation; false when it is not dead. */
export async function requeueDeadJob(sql: Queryable, id: string): Promise<JobRecord | undefined> {
  const [row] = await sql<JobRecord[]>`
    update jobs set status = 'queued', generation = generation + 1, attempts = 0, published_at = null, run_at = now(), delayed = false, error = null,
      next_attempt_at = null, finished_at = null, updated_at = now()
    where id = ${id} and status = 'dead'
    returning ${columns(sql)}`
  return row
}

export interface QueueCounts {
  queue: string
  queued: number
  running: number
  succeeded: number
  failed: number
  dead: number
}

export async function jobCounts(sql: Queryable): Promise<QueueCounts[]> {
  const rows = await sql<{ queue: string; status: JobStatus; n: number }[]>`select queue, status, count(*)::int as n from jobs group by queue, status`
  const byQueue = new Map<string, QueueCounts>()
  for (const r of rows) {
    const q = byQueue.get(r.queue) ?? { queue: r.queue, queued: 0, running: 0, succeeded: 0, failed: 0, dead: 0 }
    q[r.status] = r.n
    byQueue.set(r.queue, q)
  }
  return [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue))
}

export async function recentJobs(sql: Queryable, limit: number, status?: JobStatus): Promise<JobRecord[]> {
  return sql<JobRecord[]>`
    select ${columns(sql)} from jobs ${status ? sql`where status = ${status}` : sql``} order by id desc limit ${limit}`
}
