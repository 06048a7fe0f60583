import { z } from 'zod'
import type { JobQueue } from '../actors/job-queue.js'
import { AppError, notFound } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { jobCounts, recentJobs, type JobRecord } from '../storage/job-records.js'
import type { Sql } from '../storage/postgres.js'
import { createOpsAuth, opsSessionSeconds, sessionCookie } from './ops-auth.js'
import { jobsPage, opsPageCsp, opsScript, signInPage } from './ops-page.js'
import { defineRoute, type RawReply, type RequestContext, type Route } from './route.js'

export interface OpsDeps {
  sql: Sql
  jobs: JobQueue
  /** OPS_TOKEN: without it, the ops pages answer 404. */
  opsToken: string | undefined
  log: Logger
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/
const recentLimit = 50

const Status = z.enum(['queued', 'running', 'succeeded', 'failed', 'dead'])

export const OpsJob = z.object({
  id: z.string(),
  name: z.string(),
  queue: z.string(),
  status: Status,
  attempts: z.number(),
  maxAttempts: z.number(),
  error: z.string().nullable(),
  orgId: z.string().nullable(),
  updatedAt: z.string(),
})

export const OpsJobs = z.object({
  queues: z.array(
    z.object({
      queue: z.string(),
      depth: z.number().describe('jobs recorded as queued in Postgres, due or delayed (not read from JetStream)'),
      running: z.number(),
      succeeded: z.number(),
      failed: z.number().describe('failed at least once and waiting for their next attempt'),
      dead: z.number(),
    }),
  ),
  recent: z.array(OpsJob).describe(`the ${recentLimit} most recently changed jobs, newest first`),
})

const noStore = { 'cache-control': 'no-store' }

/**
 * The operators' view of the job queues, at /ops/jobs, for whoever holds OPS_TOKEN. Without a token configured
 * no route exists, so every /ops path is a plain 404.
 */
export function opsRoutes(d: OpsDeps): Route[] {
  if (!d.opsToken) return []
  const auth = createOpsAuth(d.opsToken)
  const page = (html: string): RawReply => ({
    status: 200,
    contentType: 'text/html; charset=utf-8',
    data: html,
    headers: { ...noStore, 'content-security-policy': opsPageCsp },
  })
  // Behind a TLS-terminating proxy the cookie is marked Secure; on plain http://localhost it cannot be.
  const secure = (ctx: RequestContext) => ctx.headers['x-forwarded-proto'] === 'https'

  return [
    defineRoute({
      method: 'get',
      path: '/ops/jobs',
      operationId: 'opsJobsPage',
      summary: 'The ops page: queues, recent jobs, retry of dead jobs (a sign-in form without a session)',
      tags: ['ops'],
      hidden: true,
      responses: { 200: { description: 'HTML page', contentType: 'text/html' } },
      handler: (ctx) => page(auth.hasSession(ctx.headers) ? jobsPage : signInPage),
    }),
    defineRoute({
      method: 'get',
      path: '/ops/assets/ops-jobs.js',
      operationId: 'opsJobsScript',
      summary: "The ops pages' script",
      tags: ['ops'],
      hidden: true,
      responses: { 200: { description: 'script', contentType: 'text/javascript' } },
      handler: () => ({ status: 200, contentType: 'text/javascript; charset=utf-8', data: opsScript, headers: noStore }),
    }),
    defineRoute({
      method: 'post',
      path: '/ops/session',
      operationId: 'opsSignIn',
      summary: 'Trade the operator token for a browser session cookie (HttpOnly, SameSite=Strict, Path=/ops)',
      tags: ['ops'],
      body: z.object({ token: z.string().min(1).max(1024) }),
      responses: { 303: { description: 'signed in; see /ops/jobs' }, 401: { description: 'not the operator token' } },
      handler: (ctx) => {
        if (!auth.isToken(ctx.body.token)) {
          d.log.warn({ ip: ctx.ip, requestId: ctx.requestId }, 'ops sign-in with a wrong token')
          throw new AppError('auth.invalid_token', 'that is not the operator token')
        }
        return {
          status: 303,
          headers: {
            location: '/ops/jobs',
            'set-cookie': sessionCookie(auth.newSession(), { secure: secure(ctx), maxAgeSeconds: opsSessionSeconds }),
            ...noStore,
          },
        }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/ops/session/logout',
      operationId: 'opsSignOut',
      summary: 'End the browser session (clears the cookie)',
      tags: ['ops'],
      responses: { 303: { description: 'signed out; see /ops/jobs' } },
      handler: (ctx) => ({
        status: 303,
        headers: { location: '/ops/jobs', 'set-cookie': sessionCookie('', { secure: secure(ctx), maxAgeSeconds: 0 }), ...noStore },
      }),
    }),
    defineRoute({
      method: 'get',
      path: '/ops/api/jobs',
      operationId: 'opsListJobs',
      summary: 'Counts per queue and the most recently changed jobs (session cookie or Authorization: Bearer <OPS_TOKEN>)',
      tags: ['ops'],
      query: z.object({ status: Status.optional() }),
      responses: { 200: { description: 'queues and recent jobs', schema: OpsJobs }, 401: { description: 'no session and no operator token' } },
      handler: async (ctx) => {
        auth.check(ctx.headers)
        const [counts, recent] = await Promise.all([jobCounts(d.sql), recentJobs(d.sql, recentLimit, ctx.query.status)])
        // Queues that jobs are defined for show up before their first job.
        const byQueue = new Map(d.jobs.definitions.map((def) => [def.queue, { queue: def.queue, depth: 0, running: 0, succeeded: 0, failed: 0, dead: 0 }]))
        for (const c of counts) byQueue.set(c.queue, { queue: c.queue, depth: c.queued, running: c.running, succeeded: c.succeeded, failed: c.failed, dead: c.dead })
        const queues = [...byQueue.values()].sort((a, b) => a.queue.localeCompare(b.queue))
        return { status: 200, body: { queues, recent: recent.map(opsJobView) }, headers: noStore }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/ops/api/jobs/:id/retry',
      operationId: 'opsRetryJob',
      summary: 'Queue a dead job again, whatever its organization (its attempts start over)',
      tags: ['ops'],
      params: z.object({ id: z.string().min(1).max(64) }),
      responses: {
        200: { description: 'the job, queued', schema: OpsJob },
        401: { description: 'no session and no operator token' },
        404: { description: 'no such job' },
        409: { description: 'the job is not dead' },
      },
      handler: async (ctx) => {
        auth.check(ctx.headers)
        const id = ctx.params.id
        if (!uuid.test(id)) throw notFound('job')
        const job = await d.jobs.retryDead(id)
        d.log.info({ jobId: id, job: job.name, generation: job.generation, requestId: ctx.requestId }, 'ops: dead job queued again')
        return { status: 200, body: opsJobView(job), headers: noStore }
      },
    }),
  ]
}

function opsJobView(j: JobRecord): z.infer<typeof OpsJob> {
  return {
    id: j.id,
    name: j.name,
    queue: j.queue,
    status: j.status,
    attempts: j.attempts,
    maxAttempts: j.maxAttempts,
    error: j.error,
    orgId: j.orgId,
    updatedAt: j.updatedAt.toISOString(),
  }
}
