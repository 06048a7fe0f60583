import { z } from 'zod'
import { defineJob, PermanentJobError, type JobDefinition } from '../../actors/jobs/define.js'
import type { Sql } from '../../storage/postgres.js'

/** Tables the test jobs write to, in the test's own database. */
export async function createTestJobTables(sql: Sql): Promise<void> {
  await sql`create table if not exists test_job_runs (id bigserial primary key, job_id uuid not null, label text not null, started_at timestamptz not null default clock_timestamp())`
  await sql`create table if not exists test_job_effects (key text primary key, job_id uuid not null)`
  await sql`create table if not exists test_switches (key text primary key, fail boolean not null)`
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    const timer = setTimeout(resolve, ms)
    signal.addEventListener('abort', () => {
      clearTimeout(timer)
      reject(signal.reason as Error)
    })
  })

/** Job types the jobs suite runs, in-process and in worker child processes alike. */
export function testJobs(sql: Sql): JobDefinition[] {
  return [
    // Idempotent by key: however often it runs, its effect happens once.
    defineJob({
      name: 'test.effect',
      queue: 'test',
      schema: z.object({ key: z.string(), sleepMs: z.number().int().min(0).default(0) }),
      run: async ({ key, sleepMs }, ctx) => {
        await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${key})`
        if (sleepMs) await sleep(sleepMs, ctx.signal)
        await sql`insert into test_job_effects (key, job_id) values (${key}, ${ctx.id}) on conflict (key) do nothing`
        return { key }
      },
    }),
    // Records when it started; `label` says which test and what.
    defineJob({
      name: 'test.record',
      queue: 'test',
      schema: z.object({ label: z.string(), sleepMs: z.number().int().min(0).default(0) }),
      run: async ({ label, sleepMs }, ctx) => {
        await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${label})`
        if (sleepMs) await sleep(sleepMs, ctx.signal)
        return null
      },
    }),
    // Fails while its switch says so.
    defineJob({
      name: 'test.switch',
      queue: 'test',
      schema: z.object({ key: z.string() }),
      maxAttempts: 3,
      backoffMs: 200,
      run: async ({ key }, ctx) => {
        await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${key})`
        const [row] = await sql<{ fail: boolean }[]>`select fail from test_switches where key = ${key}`
        if (row?.fail) throw new Error(`switch ${key} says fail`)
        return { key }
      },
    }),
    // Outlives its time limit unless told otherwise; it notes whether its abort signal fired.
    defineJob({
      name: 'test.slow',
      queue: 'test',
      schema: z.object({ key: z.string() }),
      maxAttempts: 2,
      backoffMs: 50,
      timeoutMs: 200,
      run: async ({ key }, ctx) => {
        await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${key})`
        try {
          await sleep(5_000, ctx.signal)
        } catch (err) {
          await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${`${key}:aborted`})`
          throw err
        }
        return null
      },
    }),
    defineJob({
      name: 'test.permanent',
      queue: 'test',
      schema: z.object({ key: z.string() }),
      maxAttempts: 5,
      run: async ({ key }, ctx) => {
        await sql`insert into test_job_runs (job_id, label) values (${ctx.id}, ${key})`
        throw new PermanentJobError('this input can never work')
      },
    }),
  ]
}
