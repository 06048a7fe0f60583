import type { Queryable } from './postgres.js'

export async function insertExport(sql: Queryable, e: { id: string; orgId: string; jobId: string; content: unknown; bytes: number }): Promise<void> {
  await sql`insert into exports (id, org_id, job_id, content, bytes)
            values (${e.id}, ${e.orgId}, ${e.jobId}, ${sql.json(e.content as Parameters<typeof sql.json>[0])}, ${e.bytes})`
}

export async function findExport(sql: Queryable, orgId: string, id: string): Promise<{ content: unknown; createdAt: Date } | undefined> {
  const [row] = await sql<{ content: unknown; createdAt: Date }[]>`select content, created_at as "createdAt" from exports where org_id = ${orgId} and id = ${id}`
  return row
}
