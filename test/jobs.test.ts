import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { jetstreamManager } from '@nats-io/jetstream'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { AppError } from '../core/errors.js'
import { createLogger, type Logger } from '../core/log.js'
import { logLine, spawnChild } from './support/child.js'
import { eventually } from './support/eventually.js'
import { bearer, problem, register } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { call, createOrg, expectJson } from './support/orgs.js'
import { scratchDatabase } from './support/services.js'
import { dropBetween } from './support/packet-drop.js'
import { proxyFor } from './support/tcp-proxy.js'
import { createTestJobTables, testJobs } from './support/test-jobs.js'
import { markJobsPublished } from '../storage/job-records.js'

// The jobs suite has a database of its own: every scheduler scans its database for due jobs.
const namespace = `${inject('namespace')}_jobs`
let db: Awaited<ReturnType<typeof scratchDatabase>>
let node: TestNode
const children: ChildProcess[] = []

const env = (extra: Record<string, string> = {}) => ({
  DATABASE_URL: db.url,
  NAMESPACE: namespace,
  HOST: '127.0.0.1',
  PORT: '0',
  LOG_LEVEL: 'info',
  ...extra,
})

beforeAll(async () => {
  db = await scratchDatabase(inject('databaseUrl'))
  node = await startTestNode(
    { DATABASE_URL: db.url, NAMESPACE: namespace, JOB_CONCURRENCY: '20', JOB_ACK_WAIT_MS: '2000', SCHEDULER_INTERVAL_MS: '100' },
    { jobs: ({ sql }) => testJobs(sql) },
  )
  await createTestJobTables(node.sql)
})
afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  await node.shutdown()
  await db.drop()
})

async function startWorkerProcess(extra: Record<string, string> = {}): Promise<ChildProcess> {
  const child = spawnChild('test/support/worker-node.ts', env({ ROLES: 'workers', NODE_ID: `w-${randomUUID().slice(0, 6)}`, ...extra }))
  children.push(child)
  await logLine(child, 'worker node ready')
  return child
}

const statusOf = async (id: string) => (await node.sql<{ status: string; attempts: number }[]>`select status, attempts from jobs where id = ${id}`)[0]
const runsOf = async (label: string) => node.sql<{ startedAt: Date }[]>`select started_at as "startedAt" from test_job_runs where label = ${label} order by id`
const until = (id: string, status: string, timeoutMs = 10_000) => eventually(() => statusOf(id), (s) => s?.status === status, timeoutMs, `job ${id} to be ${status}`)

/** Until another session of this database waits for a lock in a statement matching `pattern` (ilike). */
const waitingOnLock = (pattern: string, what: string) =>
  eventually(
    () => node.sql<{ n: number }[]>`
      select count(*)::int as n from pg_stat_activity
      where datname = current_database() and pid <> pg_backend_pid() and wait_event_type = 'Lock' and query ilike ${pattern}`,
    (rows) => rows[0]!.n > 0,
    5_000,
    what,
  )

/** Which sessions hold an advisory lock (the scheduler's lease) in the database `sql` is connected to. */
const leaseHolders = async (sql: postgres.Sql) =>
  (
    await sql<{ pid: number }[]>`
      select l.pid from pg_locks l join pg_database d on d.oid = l.database
      where l.locktype = 'advisory' and l.granted and d.datname = current_database()`
  ).map((r) => r.pid)

/**
 * A node reaching Postgres through a proxy the test can silence, with a database and namespace of its own (so
 * only it runs what it enqueues), and a direct connection to that database for the test's own reads.
 */
async function nodeBehindProxy(suffix: string, extra: Record<string, string>, options: { log?: Logger } = {}) {
  const own = await scratchDatabase(inject('databaseUrl'))
  const { proxy, url } = await proxyFor(own.url, 5432)
  const n = await startTestNode(
    { DATABASE_URL: url, NAMESPACE: `${namespace}_${suffix}`, SCHEDULER_INTERVAL_MS: '100', SHUTDOWN_TIMEOUT_MS: '2000', ...extra },
    { jobs: ({ sql }) => testJobs(sql), ...options },
  )
  const direct = postgres(own.url, { max: 1, onnotice: () => {} })
  await createTestJobTables(direct)
  return {
    node: n,
    proxy,
    direct,
    succeeded: (id: string, what: string) =>
      eventually(() => direct<{ status: string }[]>`select status from jobs where id = ${id}`, (rows) => rows[0]?.status === 'succeeded', 10_000, what),
    async close() {
      await proxy.close()
      await n.shutdown().catch(() => undefined)
      await direct.end({ timeout: 1 })
      await own.drop()
    },
  }
}

describe('enqueueing', () => {
  test('a payload that fails its schema is refused at enqueue and nothing is written', async () => {
    const before = (await node.sql<{ n: number }[]>`select count(*)::int as n from jobs`)[0]!.n
    const err = await node.jobs.enqueue({ name: 'test.effect', payload: { key: 42 } }).catch((e: unknown) => e)
    expect(err).toBeInstanceOf(AppError)
    expect(err).toMatchObject({ code: 'validation.failed', errors: [expect.objectContaining({ path: 'payload.key' })] })
    await expect(node.jobs.enqueue({ name: 'no.such.job', payload: {} })).rejects.toMatchObject({ code: 'validation.failed' })
    expect((await node.sql<{ n: number }[]>`select count(*)::int as n from jobs`)[0]!.n).toBe(before)
  })

  test('the same idempotency key enqueued twice is one job, run once', async () => {
    const key = `idem-${randomUUID()}`
    const first = await node.jobs.enqueue({ name: 'test.effect', payload: { key }, idempotencyKey: key })
    const second = await node.jobs.enqueue({ name: 'test.effect', payload: { key }, idempotencyKey: key })
    expect(second).toEqual({ id: first.id, duplicate: true })
    await until(first.id, 'succeeded')
    expect(await runsOf(key)).toHaveLength(1)
  })

  test('a job record keeps what was enqueued, one at a time or many at once, whatever the payload holds', async () => {
    const label = `record-${randomUUID()}`
    const tricky = `${label} "quoted" back\\slash, {braces} NULL null\n\ttab é \u2028`
    const later = new Date(Date.now() + 60 * 60_000)
    const requests = [
      { name: 'test.record', payload: { label: tricky }, priority: 'high' as const, requestId: 'req,"1"' },
      { name: 'test.record', payload: { label: `${label}-later`, sleepMs: 0 }, runAt: later, idempotencyKey: `${label} "key"` },
      { name: 'test.effect', payload: { key: 'NULL' }, requestId: 'NULL' },
      // The same key twice in one batch is one job.
      { name: 'test.record', payload: { label: `${label}-again` }, idempotencyKey: `${label} "key"` },
    ]
    const many = await node.jobs.enqueueMany(requests)
    expect(many[3]).toEqual({ id: many[1]!.id, duplicate: true })
    const one = await node.jobs.enqueue({ ...requests[0]!, payload: { label: `${tricky} single` } })
    const oneLater = await node.jobs.enqueue({ name: 'test.record', payload: { label: `${label}-single-later` }, runAt: later })
    const rows = await node.sql<{ id: string; name: string; queue: string; payload: unknown; priority: string; requestId: string | null; idempotencyKey: string | null; delayed: boolean; runAt: Date; maxAttempts: number }[]>`
      select id, name, queue, payload, priority, request_id as "requestId", idempotency_key as "idempotencyKey", delayed, run_at as "runAt", max_attempts as "maxAttempts"
      from jobs where id = any(${[...many.map((m) => m.id), one.id, oneLater.id]}::uuid[])`
    expect(rows).toHaveLength(5)
    const byId = new Map(rows.map((r) => [r.id, r]))
    expect(byId.get(many[0]!.id)).toMatchObject({ name: 'test.record', queue: 'test', payload: { label: tricky, sleepMs: 0 }, priority: 'high', requestId: 'req,"1"', idempotencyKey: null, delayed: false, maxAttempts: 5 })
    expect(byId.get(many[1]!.id)).toMatchObject({ payload: { label: `${label}-later`, sleepMs: 0 }, priority: 'default', idempotencyKey: `${label} "key"`, delayed: true, runAt: later })
    expect(byId.get(many[2]!.id)).toMatchObject({ name: 'test.effect', queue: 'test', payload: { key: 'NULL', sleepMs: 0 }, requestId: 'NULL', delayed: false })
    expect(byId.get(one.id)).toMatchObject({ payload: { label: `${tricky} single`, sleepMs: 0 }, priority: 'high' })
    expect(byId.get(oneLater.id)).toMatchObject({ delayed: true, runAt: later })
    // The jobs due now ran with the payload as given.
    await until(many[0]!.id, 'succeeded')
    await until(one.id, 'succeeded')
    expect(await runsOf(tricky)).toHaveLength(1)
  })

  test('a published mark skips a job whose row a worker is writing, rather than waiting for it', async () => {
    const [busy, idle] = [0, 1].map(() => node.jobs.prepare({ name: 'test.record', payload: { label: `mark-${randomUUID()}` }, runAt: new Date(Date.now() + 60 * 60_000) }))
    await node.sql.begin((tx) => Promise.all([node.jobs.insert(tx, busy!), node.jobs.insert(tx, idle!)]))
    const published = async (id: string) => (await node.sql<{ at: Date | null }[]>`select published_at as at from jobs where id = ${id}`)[0]!.at
    let release!: () => void
    const held = new Promise<void>((resolve) => (release = resolve))
    let locked!: () => void
    const isLocked = new Promise<void>((resolve) => (locked = resolve))
    // Another session holds the row, as a worker's state write would.
    const holder = node.sql.begin(async (tx) => {
      await tx`select id from jobs where id = ${busy!.id} for update`
      locked()
      await held
    })
    let timer: NodeJS.Timeout | undefined
    try {
      await Promise.race([isLocked, holder])
      // Were it to wait for the lock, this would not answer before the holder lets go.
      const answer = await Promise.race([markJobsPublished(node.sql, [busy!.id, idle!.id]).then(() => 'marked'), new Promise((r) => (timer = setTimeout(() => r('waited'), 3_000)))])
      expect(answer).toBe('marked')
      expect(await published(idle!.id)).toBeInstanceOf(Date)
      expect(await published(busy!.id)).toBeNull()
    } finally {
      clearTimeout(timer)
      release()
      await holder
    }
  })

  test('a batch whose idempotency keys another enqueue is writing waits for it instead of deadlocking', async () => {
    const prefix = `keys-${randomUUID()}`
    const [first, second] = [`${prefix}-a`, `${prefix}-b`]
    const later = new Date(Date.now() + 3_600_000)
    const job = (key: string) => node.jobs.prepare({ name: 'test.record', payload: { label: key }, idempotencyKey: key, runAt: later })
    let proceed!: () => void
    const go = new Promise<void>((resolve) => (proceed = resolve))
    let holding!: () => void
    const holds = new Promise<void>((resolve) => (holding = resolve))
    const [a, b] = [job(first), job(second)]
    // Another enqueue's transaction: writes the first key, then (once the batch is waiting) the second.
    const other = node.sql.begin(async (tx) => {
      await node.jobs.insert(tx, a)
      holding()
      await go
      await node.jobs.insert(tx, b)
    })
    try {
      await Promise.race([holds, other])
      // Given in the other order: taken in key order, the batch waits for the first key holding nothing.
      const batch = node.jobs.enqueueMany([second, first].map((key) => ({ name: 'test.record', payload: { label: key }, idempotencyKey: key, runAt: later })))
      await waitingOnLock('%insert into jobs%', 'the batch to wait for the other enqueue')
      proceed()
      await other
      expect(await batch).toEqual([
        { id: b.id, duplicate: true },
        { id: a.id, duplicate: true },
      ])
    } finally {
      proceed()
      await other.catch(() => undefined)
    }
  })

  test('an organization deletion that deadlocks with a worker writing its jobs goes again and succeeds', async () => {
    const owner = await register(node.url)
    const org = await createOrg(node.url, owner)
    // Three of its jobs, waiting an hour so none runs.
    const jobs: string[] = []
    for (let i = 0; i < 3; i++) jobs.push((await node.jobs.enqueue({ name: 'test.record', payload: { label: `cascade-${i}` }, orgId: org.id, runAt: new Date(Date.now() + 3_600_000) })).id)
    let proceed!: () => void
    const go = new Promise<void>((resolve) => (proceed = resolve))
    let locked!: () => void
    const isLocked = new Promise<void>((resolve) => (locked = resolve))
    // Another session, as a worker's state write would: holds one job, then wants the others, then (so that it
    // waits for the deletion whatever order the cascade took the jobs in) the organization's row. It checks for
    // deadlocks only after 10 s, so the deletion, which checks after Postgres's default 1 s, is the side aborted.
    const holder = node.sql.begin(async (tx) => {
      await tx`set local deadlock_timeout = '10s'`
      await tx`select id from jobs where id = ${jobs[1]!} for update`
      locked()
      await go
      await tx`select id from jobs where id = any(${[jobs[0]!, jobs[2]!]}::uuid[]) for update`
      // Answered only once the deletion let go of the row: the deletion was aborted, and the row is still there.
      return tx<{ id: string }[]>`select id from organizations where id = ${org.id} for key share`
    })
    let deleting: Promise<Response> | undefined
    try {
      await Promise.race([isLocked, holder])
      deleting = call(node.url, bearer(owner.accessToken), { method: 'DELETE', path: `/v1/orgs/${org.id}` })
      await waitingOnLock('delete from organizations%', 'the deletion to wait for the held job')
      proceed()
      expect(await holder).toHaveLength(1)
      expect((await deleting).status).toBe(204)
    } finally {
      proceed()
      await Promise.allSettled([holder, deleting])
    }
    expect(await node.sql`select id from jobs where id = any(${jobs}::uuid[])`).toHaveLength(0)
    expect(await node.sql`select id from organizations where id = ${org.id}`).toHaveLength(0)
  })

  test('a job enqueued in a transaction that rolls back never exists and never runs', async () => {
    const key = `rollback-${randomUUID()}`
    const job = node.jobs.prepare({ name: 'test.effect', payload: { key } })
    await expect(
      node.sql.begin(async (tx) => {
        await node.jobs.insert(tx, job)
        throw new Error('the change failed')
      }),
    ).rejects.toThrow('the change failed')
    expect(await statusOf(job.id)).toBeUndefined()
    // A job that does exist, enqueued after it, has run; the rolled-back one still has not.
    const later = await node.jobs.enqueue({ name: 'test.record', payload: { label: `${key}-later` } })
    await until(later.id, 'succeeded')
    expect(await runsOf(key)).toHaveLength(0)
  })

  test('a job committed but never published (its node died in between) is published by the scheduler and runs once', async () => {
    const key = `orphan-${randomUUID()}`
    const job = node.jobs.prepare({ name: 'test.effect', payload: { key } })
    // The record commits; the publish that would follow the commit never happens.
    await node.sql.begin((tx) => node.jobs.insert(tx, job))
    // The scheduler's sweep finds it once it is older than a live enqueue's publish could take.
    await until(job.id, 'succeeded', 15_000)
    expect(await runsOf(key)).toHaveLength(1)
  }, 20_000)

  test('a delayed job does not run before its time', async () => {
    const label = `delayed-${randomUUID()}`
    const runAt = new Date(Date.now() + 1_500)
    const job = await node.jobs.enqueue({ name: 'test.record', payload: { label }, runAt })
    await until(job.id, 'succeeded', 5_000)
    const [run] = await runsOf(label)
    expect(run!.startedAt.getTime()).toBeGreaterThanOrEqual(runAt.getTime())
    expect(run!.startedAt.getTime() - runAt.getTime()).toBeLessThan(1_000)
  })
})

describe('Postgres outage', () => {
  test('an enqueue while Postgres does not answer fails with unavailable within the ask timeout, writes nothing, and does not hold up the next', async () => {
    const { proxy, url } = await proxyFor(db.url, 5432)
    // A gateway: it enqueues; the suite's node runs the jobs.
    const gateway = await startTestNode({ DATABASE_URL: url, NAMESPACE: namespace, ROLES: 'gateway', ASK_TIMEOUT_MS: '1000' }, { jobs: ({ sql }) => testJobs(sql) })
    try {
      const before = await gateway.jobs.enqueue({ name: 'test.record', payload: { label: `before-${randomUUID()}` } })
      await until(before.id, 'succeeded')
      // Connections stay open but nothing comes back: the insert would wait for ever.
      proxy.blackhole()
      const label = `during-${randomUUID()}`
      for (let i = 0; i < 2; i++) {
        const started = performance.now()
        await expect(gateway.jobs.enqueue({ name: 'test.record', payload: { label } })).rejects.toMatchObject({ code: 'unavailable' })
        expect(performance.now() - started).toBeLessThan(2_500)
      }
      expect(await node.sql`select id from jobs where payload->>'label' = ${label}`).toEqual([])
    } finally {
      await proxy.close()
      await gateway.shutdown().catch(() => undefined)
    }
  }, 20_000)
  test('a worker whose Postgres answers are lost mid-job is not wedged: the silent connections are closed, and the job ends succeeded once Postgres answers', async () => {
    const { node: worker, proxy, direct, succeeded, close } = await nodeBehindProxy('silent', {
      ASK_TIMEOUT_MS: '1000',
      JOB_ACK_WAIT_MS: '2000',
      DB_SILENCE_TIMEOUT_MS: '1000',
    })
    try {
      // Every pooled connection is open first: a statement lost on an open connection waits for ever (one on a
      // connection still being opened would fail by the connect timeout instead). Opened before the job, so that
      // however long opening them takes, the job is still running when Postgres goes silent.
      await Promise.all(Array.from({ length: 10 }, () => worker.sql`select pg_sleep(0.05)`))
      const label = `silent-${randomUUID()}`
      const job = await worker.jobs.enqueue({ name: 'test.record', payload: { label, sleepMs: 500 } })
      await eventually(() => direct`select 1 from test_job_runs where label = ${label}`, (rows) => rows.length === 1, 5_000, 'the job to start')
      // Its end is never answered: the statement's bytes are dropped, on a connection that stays open.
      proxy.blackhole()
      const jsm = await jetstreamManager(worker.nc)
      const consumer = () => jsm.consumers.info(worker.names.jobsStream, 'w_test_default')
      await eventually(consumer, (c) => c.num_redelivered > 0, 10_000, 'the job to be delivered again')
      await proxy.restore()
      // Without the silence limit the worker's writes would queue for ever behind the lost one.
      await succeeded(job.id, 'the job to be recorded succeeded')
      expect((await direct`select 1 from test_job_runs where label = ${label}`).length).toBeLessThanOrEqual(2)
    } finally {
      await close()
    }
  }, 30_000)
})

describe('failures', () => {
  test('a failing job retries with growing delays, ends dead in the dead-letter stream, and runs again after a retry', async () => {
    const owner = await register(node.url)
    const org = await createOrg(node.url, owner)
    const key = `switch-${randomUUID()}`
    await node.sql`insert into test_switches (key, fail) values (${key}, true)`
    const job = await node.jobs.enqueue({ name: 'test.switch', payload: { key }, orgId: org.id })
    expect(await until(job.id, 'dead')).toMatchObject({ attempts: 3 })
    const starts = (await runsOf(key)).map((r) => r.startedAt.getTime())
    expect(starts).toHaveLength(3)
    // Backoff 200 ms doubling with jitter in [half, full]: at least 100 ms, then at least 200 ms.
    expect(starts[1]! - starts[0]!).toBeGreaterThanOrEqual(100)
    expect(starts[2]! - starts[1]!).toBeGreaterThanOrEqual(200)
    const jsm = await jetstreamManager(node.nc)
    const dead = await jsm.streams.getMessage(node.names.deadJobsStream, { last_by_subj: node.names.deadJobSubject('test') })
    expect(dead?.json<{ job: { id: string }; error: string }>()).toMatchObject({ job: { id: job.id }, error: `switch ${key} says fail` })

    const auth = bearer(owner.accessToken)
    expect(await expectJson(await call(node.url, auth, { method: 'GET', path: `/v1/jobs/${job.id}` }), 200)).toMatchObject({ status: 'dead', attempts: 3, error: `switch ${key} says fail` })
    await node.sql`update test_switches set fail = false where key = ${key}`
    const retried = await expectJson(await call(node.url, auth, { method: 'POST', path: `/v1/orgs/${org.id}/jobs/${job.id}/retry` }), 200)
    expect(retried).toMatchObject({ id: job.id, status: 'queued', attempts: 0 })
    await until(job.id, 'succeeded')
    await problem(await call(node.url, auth, { method: 'POST', path: `/v1/orgs/${org.id}/jobs/${job.id}/retry` }), 409, 'conflict')
    const audit = await expectJson<{ items: { action: string }[] }>(await call(node.url, auth, { method: 'GET', path: `/v1/orgs/${org.id}/audit-log` }), 200)
    expect(audit.items[0]).toMatchObject({ action: 'job.retried' })
  }, 20_000)

  test('a job that declares its error permanent is dead after one attempt', async () => {
    const key = `permanent-${randomUUID()}`
    const job = await node.jobs.enqueue({ name: 'test.permanent', payload: { key } })
    expect(await until(job.id, 'dead')).toMatchObject({ attempts: 1 })
    expect(await runsOf(key)).toHaveLength(1)
  })

  test('a job that outlives its time limit fails, its handler sees the abort, and it is dead after its attempts', async () => {
    const key = `slow-${randomUUID()}`
    const job = await node.jobs.enqueue({ name: 'test.slow', payload: { key } })
    expect(await until(job.id, 'dead')).toMatchObject({ attempts: 2 })
    expect(await node.sql`select error from jobs where id = ${job.id}`).toEqual([{ error: 'timed out after 200 ms' }])
    expect(await runsOf(key)).toHaveLength(2)
    // The abort note is written after the signal fires, so it may land just after the job is recorded dead.
    await eventually(() => runsOf(`${key}:aborted`), (runs) => runs.length === 2, 5_000, 'both attempts to see their abort signal')
  })

  test('a long job keeps its lease with heartbeats and is not given to another worker', async () => {
    const key = `long-${randomUUID()}`
    // Ack wait is 2 s here; the job runs for 5.
    const job = await node.jobs.enqueue({ name: 'test.effect', payload: { key, sleepMs: 5_000 } })
    await until(job.id, 'succeeded', 10_000)
    expect(await runsOf(key)).toHaveLength(1)
  }, 15_000)
})

describe('workers', () => {
  test('org job progress reaches the org channel as events', async () => {
    const owner = await register(node.url)
    const org = await createOrg(node.url, owner)
    const job = await node.jobs.enqueue({ name: 'test.record', payload: { label: `evt-${randomUUID()}` }, orgId: org.id })
    await until(job.id, 'succeeded')
    const events = await eventually(
      () => node.sql<{ type: string; data: { id: string; status: string } }[]>`select type, data from outbox where channel = ${`org:${org.id}`} order by seq`,
      (rows) => rows.filter((r) => r.type === 'job.updated').length >= 2,
      5_000,
      'job events',
    )
    expect(events.filter((e) => e.type === 'job.updated').map((e) => e.data.status)).toEqual(['running', 'succeeded'])
  })

  test('2,000 jobs over two worker processes, one killed mid-run and restarted: all complete, effects once', async () => {
    const first = await startWorkerProcess({ JOB_CONCURRENCY: '25', JOB_ACK_WAIT_MS: '2000' })
    await startWorkerProcess({ JOB_CONCURRENCY: '25', JOB_ACK_WAIT_MS: '2000' })
    const batch = randomUUID().slice(0, 8)
    const keys = Array.from({ length: 2_000 }, (_, i) => `alo-${batch}-${i}`)
    const jobs = await node.jobs.enqueueMany(keys.map((key) => ({ name: 'test.effect', payload: { key, sleepMs: 10 } })))
    const ids = jobs.map((j) => j.id)
    const done = () => node.sql<{ n: number }[]>`select count(*)::int as n from jobs where id = any(${ids}) and status = 'succeeded'`.then((r) => r[0]!.n)
    await eventually(done, (n) => n >= 300, 30_000, 'a part of the jobs to finish')
    first.kill('SIGKILL')
    await startWorkerProcess({ JOB_CONCURRENCY: '25', JOB_ACK_WAIT_MS: '2000' })
    await eventually(done, (n) => n === 2_000, 90_000, 'every job to finish')
    const effects = await node.sql<{ n: number; distinct: number }[]>`
      select count(*)::int as n, count(distinct key)::int as distinct from test_job_effects where key like ${`alo-${batch}-%`}`
    expect(effects[0]).toEqual({ n: 2_000, distinct: 2_000 })
    const runs = (await node.sql<{ n: number }[]>`select count(*)::int as n from test_job_runs where label like ${`alo-${batch}-%`}`)[0]!.n
    expect(runs).toBeGreaterThanOrEqual(2_000)
  }, 120_000)
})

describe('priorities', () => {
  test('high-priority jobs are not held up by a backlog of low ones', async () => {
    const prio = await startTestNode(
      { DATABASE_URL: db.url, NAMESPACE: `${namespace}p`, JOB_CONCURRENCY: '2' },
      { jobs: ({ sql }) => testJobs(sql) },
    )
    try {
      const tag = randomUUID().slice(0, 8)
      await prio.jobs.enqueueMany(Array.from({ length: 150 }, (_, i) => ({ name: 'test.record', payload: { label: `low-${tag}-${i}`, sleepMs: 20 }, priority: 'low' as const })))
      await eventually(() => runsOf(`low-${tag}-5`), (r) => r.length === 1, 5_000, 'the low backlog to be running')
      const high = await prio.jobs.enqueueMany(Array.from({ length: 5 }, (_, i) => ({ name: 'test.record', payload: { label: `high-${tag}-${i}` }, priority: 'high' as const })))
      await Promise.all(high.map((h) => until(h.id, 'succeeded', 5_000)))
      const lowDone = (await node.sql<{ n: number }[]>`select count(*)::int as n from test_job_runs where label like ${`low-${tag}-%`}`)[0]!.n
      // Two slots, 20 ms per low job: had the high ones queued behind the backlog, all 150 would have run first.
      expect(lowDone).toBeLessThan(60)
    } finally {
      await prio.shutdown()
    }
  }, 20_000)
})

describe('cron', () => {
  test('a scheduler whose lease session is killed takes the lease again, and delayed jobs still go out', async () => {
    const holder = () => leaseHolders(node.sql)
    const [before] = await eventually(holder, (pids) => pids.length === 1, 5_000, 'a scheduler to hold the lease')
    await node.sql`select pg_terminate_backend(${before!})`
    const [after] = await eventually(holder, (pids) => pids.length === 1 && pids[0] !== before, 5_000, 'the lease to be taken again')
    expect(after).not.toBe(before)
    // The lease lives on a connection of its own: the pool's queries and transactions carry on untouched.
    const label = `after-lease-${randomUUID()}`
    const job = await node.jobs.enqueue({ name: 'test.record', payload: { label }, runAt: new Date(Date.now() + 300) })
    await until(job.id, 'succeeded', 5_000)
    expect(await runsOf(label)).toHaveLength(1)
  })

  test('a node whose lease went silent ends its own earlier lease session once Postgres answers, and leads again', async () => {
    const lines: string[] = []
    const log = createLogger({ level: 'info', pretty: false, nodeId: 'lease-test' }, { write: (line: string) => void lines.push(line) })
    const said = (text: string) => eventually(async () => lines.some((l) => l.includes(text)), Boolean, 10_000, `the log to say "${text}"`)
    const { node: leader, proxy, direct, succeeded, close } = await nodeBehindProxy('lease', { ASK_TIMEOUT_MS: '1000', DB_SILENCE_TIMEOUT_MS: '1000' }, { log })
    const holder = () => leaseHolders(direct)
    try {
      const [first] = await eventually(holder, (pids) => pids.length === 1, 5_000, 'the node to lead')
      proxy.blackhole()
      await said('lease not confirmed')
      await proxy.restore()
      // Postgres still keeps the silent session, and its lock: only this node knows that session is its own.
      const [next] = await eventually(holder, (pids) => pids.length === 1 && pids[0] !== first, 10_000, 'the node to lead on a new session')
      expect(next).not.toBe(first)
      // The node ended it (its log says so, unless that statement's answer came after the check's time limit
      // on a loaded machine: then the next pass simply finds the lock free).
      expect((await direct<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where pid = ${first!}`)[0]!.n).toBe(0)
      const label = `lease-back-${randomUUID()}`
      const job = await leader.jobs.enqueue({ name: 'test.record', payload: { label }, runAt: new Date(Date.now() + 300) })
      await succeeded(job.id, 'the delayed job to run')
    } finally {
      await close()
    }
  }, 40_000)

  test('the lease of a node that vanished (partitioned, then gone) is freed by Postgres within DB_DEAD_CLIENT_S, and another node leads', async () => {
    const own = await scratchDatabase(inject('databaseUrl'))
    const direct = postgres(own.url, { max: 1, onnotice: () => {} })
    const settings = {
      DATABASE_URL: own.url,
      NAMESPACE: `${namespace}_gone`,
      SCHEDULER_INTERVAL_MS: '100',
      SHUTDOWN_TIMEOUT_MS: '1000',
      ASK_TIMEOUT_MS: '500',
      DB_DEAD_CLIENT_S: '5',
    }
    const options = { jobs: ({ sql }: { sql: typeof node.sql }) => testJobs(sql) }
    let undo: (() => Promise<void>) | undefined
    let next: TestNode | undefined
    try {
      await createTestJobTables(direct)
      const gone = await startTestNode({ ...settings, NODE_ID: `gone-${randomUUID().slice(0, 6)}` }, options)
      const [first] = await eventually(() => leaseHolders(direct), (pids) => pids.length === 1, 5_000, 'the first node to lead')
      const [session] = await direct<{ port: number; server: number; address: string }[]>`
        select client_port as port, inet_server_port() as server, host(client_addr) as address from pg_stat_activity where pid = ${first!}`
      // The packets are dropped on loopback only.
      expect(session!.address).toBe('127.0.0.1')
      // The lease session's packets vanish both ways, and then so does the node (its goodbye is lost too).
      undo = await dropBetween(session!.server, session!.port, `${namespace}_gone`)
      await gone.shutdown().catch(() => undefined)
      const cut = performance.now()
      next = await startTestNode({ ...settings, NODE_ID: `next-${randomUUID().slice(0, 6)}` }, options)
      // Only Postgres can end that session: no node is left to know it. Without the keepalive settings it would
      // wait for the operating system's two hours, and no node would lead meanwhile.
      const [taken] = await eventually(() => leaseHolders(direct), (pids) => pids.length === 1 && pids[0] !== first, 15_000, 'another node to lead')
      expect(taken).not.toBe(first)
      // DB_DEAD_CLIENT_S plus a probe interval and the next node's start and first passes.
      expect(performance.now() - cut).toBeLessThan(12_000)
      const label = `gone-${randomUUID()}`
      const job = await next.jobs.enqueue({ name: 'test.record', payload: { label }, runAt: new Date(Date.now() + 300) })
      await eventually(() => direct<{ status: string }[]>`select status from jobs where id = ${job.id}`, (rows) => rows[0]?.status === 'succeeded', 10_000, 'the delayed job to run')
    } finally {
      // The run's teardown removes what an undo here could not.
      await undo?.().catch(() => undefined)
      await next?.shutdown().catch(() => undefined)
      await direct.end({ timeout: 1 })
      await own.drop()
    }
  }, 40_000)

  test('with two scheduler nodes each tick fires once, and a missed stretch catches up once', async () => {
    const name = `every-second-${randomUUID().slice(0, 6)}`
    const label = `cron-${name}`
    const schedules = [{ name, cron: '* * * * * *', job: { name: 'test.record', payload: { label } } }]
    const options = { jobs: ({ sql }: { sql: typeof node.sql }) => testJobs(sql), schedules }
    const cronNs = `${namespace}c`
    const one = await startTestNode({ DATABASE_URL: db.url, NAMESPACE: cronNs, SCHEDULER_INTERVAL_MS: '100' }, options)
    const two = await startTestNode({ DATABASE_URL: db.url, NAMESPACE: cronNs, SCHEDULER_INTERVAL_MS: '100' }, options)
    try {
      await eventually(() => runsOf(label), (r) => r.length >= 4, 10_000, 'four ticks')
      const keys = await node.sql<{ key: string; n: number }[]>`
        select idempotency_key as key, count(*)::int as n from jobs where name = 'test.record' and payload->>'label' = ${label} group by 1`
      expect(keys.every((k) => k.n === 1)).toBe(true)
      const ticks = keys.map((k) => k.key.slice(k.key.indexOf(`:${name}:`) + name.length + 2)).sort()
      expect(new Set(ticks).size).toBe(ticks.length)
      // Every tick between the first and the last fired (no tick lost while both nodes ran).
      const times = ticks.map((t) => Date.parse(t))
      expect(times.at(-1)! - times[0]!).toBe((times.length - 1) * 1_000)
    } finally {
      await Promise.all([one.shutdown(), two.shutdown()])
    }
    // Down for a while: the schedule's last tick is pushed back ten seconds; on restart one catch-up fires.
    await node.sql`update cron_state set last_tick = last_tick - interval '10 seconds' where namespace = ${cronNs} and name = ${name}`
    const before = (await runsOf(label)).length
    const again = await startTestNode({ DATABASE_URL: db.url, NAMESPACE: cronNs, SCHEDULER_INTERVAL_MS: '100' }, options)
    try {
      const catchUp = await eventually(
        () => node.sql<{ n: number }[]>`select count(*)::int as n from jobs where payload->>'label' = ${label} and created_at > now() - interval '2 seconds'`,
        (r) => r[0]!.n >= 1,
        5_000,
        'the catch-up tick',
      )
      expect(catchUp[0]!.n).toBeLessThanOrEqual(2)
      await eventually(() => runsOf(label), (r) => r.length > before, 5_000, 'the catch-up tick to run')
    } finally {
      await again.shutdown()
    }
  }, 30_000)
})

test('job metrics are on /metrics: depth per queue and priority, running, finished by status, duration, pickup', async () => {
  const job = await node.jobs.enqueue({ name: 'test.record', payload: { label: `metrics-${randomUUID()}` } })
  const dead = await node.jobs.enqueue({ name: 'test.permanent', payload: { key: `metrics-${randomUUID()}` } })
  await until(job.id, 'succeeded')
  await until(dead.id, 'dead')
  const text = await (await fetch(`${node.url}/metrics`)).text()
  expect(text).toMatch(/^jobs_queue_depth\{[^}]*queue="test",priority="default"[^}]*\} \d+/m)
  expect(text).toMatch(/^jobs_finished_total\{(?=[^}]*queue="test")(?=[^}]*status="succeeded")[^}]*\} [1-9]/m)
  expect(text).toMatch(/^jobs_finished_total\{(?=[^}]*queue="test")(?=[^}]*status="dead")[^}]*\} [1-9]/m)
  expect(text).toMatch(/^jobs_running\{[^}]*queue="test"[^}]*\} 0/m)
  expect(text).toMatch(/^job_duration_seconds_count\{(?=[^}]*name="test.record")(?=[^}]*status="succeeded")[^}]*\} [1-9]/m)
  expect(text).toMatch(/^job_pickup_latency_seconds_count\{[^}]*\} [1-9]/m)
})
