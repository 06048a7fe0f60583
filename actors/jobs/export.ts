import { z } from 'zod'
import { newId } from '../../core/ids.js'
import { insertExport } from '../../storage/exports.js'
import type { Sql } from '../../storage/postgres.js'
import { listProjects } from '../../storage/projects.js'
import { inTenant } from '../../storage/tenant.js'
import { defineJob } from './define.js'

export const ExportPayload = z.object({ orgId: z.uuid(), projectId: z.uuid() })

/**
 * Writes a JSON export of the organization's projects (it was asked for from one of them) and names where it
 * is. Reads and writes go through the tenant's row-level security like any other tenant access.
 */
export function exportJob(sql: Sql) {
  return defineJob({
    name: 'projects.export',
    queue: 'default',
    schema: ExportPayload,
    maxAttempts: 5,
    timeoutMs: 5 * 60_000,
    run: async ({ orgId, projectId }, ctx) =>
      inTenant(sql, orgId, async (tx) => {
        const projects = await listProjects(tx, orgId, Number.MAX_SAFE_INTEGER)
        const content = { orgId, requestedFrom: projectId, exportedAt: new Date().toISOString(), projects }
        const id = newId()
        const bytes = Buffer.byteLength(JSON.stringify(content))
        await insertExport(tx, { id, orgId, jobId: ctx.id, content, bytes })
        return { exportId: id, location: `/v1/orgs/${orgId}/exports/${id}`, projects: projects.length, bytes }
      }),
  })
}
