import { z } from 'zod'
import type { ActorSystem } from '../actors/system.js'
import type { Sql } from '../storage/postgres.js'
import { ifMatchVersion } from './if-match.js'
import { orgAsker, pagedAsker } from './org-routes.js'
import { Id, Name, OrgParams, PageQuery, ProjectStatus, ProjectView, pageOf } from './org-schemas.js'
import { defineRoute, type Route } from './route.js'

export interface ProjectRoutesDeps {
  actors: ActorSystem
  sql: Sql
}

const ProjectParams = OrgParams.extend({ id: Id })
const Description = z.string().max(2_000)
/** Shared with the WebSocket RPC methods, which run the same commands. */
export const ProjectCreate = z.object({ name: Name, description: Description.optional(), status: ProjectStatus.optional(), teamId: Id.nullable().optional() }).strict()
export const ProjectChanges = z.object({ name: Name.optional(), description: Description.optional(), status: ProjectStatus.optional(), teamId: Id.nullable().optional() }).strict()
export const hasChange = (b: Record<string, unknown>) => Object.values(b).some((v) => v !== undefined)
const tags = ['projects']

export function projectRoutes(d: ProjectRoutesDeps): Route[] {
  const ask = orgAsker(d.actors)
  const paged = pagedAsker(d.actors)
  const base = '/v1/orgs/:orgId/projects'
  return [
    defineRoute({
      method: 'get',
      path: base,
      operationId: 'listProjects',
      summary: 'Projects in creation order, served from the org actor',
      tags,
      auth: 'any',
      params: OrgParams,
      query: PageQuery,
      responses: { 200: { description: 'a page of projects', schema: pageOf(ProjectView) } },
      handler: (ctx) => paged(ctx, 'projects.list'),
    }),
    defineRoute({
      method: 'post',
      path: base,
      operationId: 'createProject',
      summary: 'Create a project (committed with its audit row)',
      tags,
      auth: 'any',
      params: OrgParams,
      body: ProjectCreate,
      responses: { 201: { description: 'the project', schema: ProjectView } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, ctx.params.orgId, { type: 'project.create', ...ctx.body }) }),
    }),
    defineRoute({
      method: 'get',
      path: `${base}/:id`,
      operationId: 'getProject',
      summary: 'One project, served from the org actor',
      tags,
      auth: 'any',
      params: ProjectParams,
      responses: { 200: { description: 'the project', schema: ProjectView } },
      // Served from the org actor's memory, already serialized.
      handler: async (ctx) => ({ status: 200, contentType: 'application/json', data: await ask<string>(ctx, ctx.params.orgId, { type: 'project.json', projectId: ctx.params.id }) }),
    }),
    defineRoute({
      method: 'patch',
      path: `${base}/:id`,
      operationId: 'updateProject',
      summary: 'Change a project (`if-match: <version>` refuses a stale update with 409)',
      tags,
      auth: 'any',
      params: ProjectParams,
      body: ProjectChanges.refine(hasChange, 'change at least one field'),
      responses: { 200: { description: 'the project', schema: ProjectView }, 409: { description: 'stale version' } },
      handler: async (ctx) => {
        const ifMatch = ifMatchVersion(ctx.headers)
        const body = await ask(ctx, ctx.params.orgId, { type: 'project.update', projectId: ctx.params.id, changes: ctx.body, ...(ifMatch !== undefined ? { ifMatch } : {}) })
        return { status: 200, body }
      },
    }),
    defineRoute({
      method: 'delete',
      path: `${base}/:id`,
      operationId: 'deleteProject',
      summary: 'Delete a project (`if-match` honoured)',
      tags,
      auth: 'any',
      params: ProjectParams,
      responses: { 204: { description: 'deleted' } },
      handler: async (ctx) => {
        const ifMatch = ifMatchVersion(ctx.headers)
        await ask(ctx, ctx.params.orgId, { type: 'project.delete', projectId: ctx.params.id, ...(ifMatch !== undefined ? { ifMatch } : {}) })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'post',
      path: `${base}/:id/export`,
      operationId: 'exportProject',
      summary: 'Start an export of the project as a background job',
      tags,
      auth: 'any',
      params: ProjectParams,
      responses: { 202: { description: 'the job that will do it', schema: z.object({ jobId: z.string() }) } },
      handler: async (ctx) => ({ status: 202, body: await ask(ctx, ctx.params.orgId, { type: 'project.export', projectId: ctx.params.id }) }),
    }),
  ]
}
