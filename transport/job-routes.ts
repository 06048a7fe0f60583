import { z } from 'zod'
import type { ActorSystem } from '../actors/system.js'
import { notFound } from '../core/errors.js'
import { findJobRecord } from '../storage/job-records.js'
import type { Sql } from '../storage/postgres.js'
import { orgAsker } from './org-routes.js'
import { Id, JobView, OrgParams } from './org-schemas.js'
import { defineRoute, type Route } from './route.js'

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

export function jobRoutes(d: { actors: ActorSystem; sql: Sql }): Route[] {
  const ask = orgAsker(d.actors)
  return [
    defineRoute({
      method: 'get',
      path: '/v1/jobs/:id',
      operationId: 'getJob',
      summary: "A job's status, visible to whoever may read jobs of its organization",
      tags: ['jobs'],
      auth: 'any',
      params: z.object({ id: Id }),
      responses: { 200: { description: 'the job', schema: JobView } },
      handler: async (ctx) => {
        // Which organization it belongs to is a cross-tenant lookup; whether the caller may see it is the org's call.
        const job = uuid.test(ctx.params.id) ? await findJobRecord(d.sql, ctx.params.id) : undefined
        if (!job?.orgId) throw notFound('job')
        return { status: 200, body: await ask(ctx, job.orgId, { type: 'job.get', jobId: job.id }) }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/orgs/:orgId/jobs/:id/retry',
      operationId: 'retryJob',
      summary: 'Queue a dead job again (its attempts start over)',
      tags: ['jobs'],
      auth: 'any',
      params: OrgParams.extend({ id: Id }),
      responses: { 200: { description: 'the job, queued', schema: JobView }, 409: { description: 'the job is not dead' } },
      handler: async (ctx) => {
        if (!uuid.test(ctx.params.id)) throw notFound('job')
        return { status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'job.retry', jobId: ctx.params.id }) }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/exports/:id',
      operationId: 'getExport',
      summary: 'A project export written by the export job (its result names this path)',
      tags: ['projects'],
      auth: 'any',
      params: OrgParams.extend({ id: Id }),
      responses: { 200: { description: 'the export' } },
      handler: async (ctx) => {
        if (!uuid.test(ctx.params.id)) throw notFound('export')
        return { status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'export.get', exportId: ctx.params.id }) }
      },
    }),
  ]
}
