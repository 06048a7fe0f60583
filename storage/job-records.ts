import type { Queryable } from './postgres.js'

export type JobStatus = 'queued' | 'running' | 'succeeded' | 'failed' | 'dead'

export interface JobRecord {
  id: string
  orgId: string | null
  name: string
  queue: string
  status: JobStatus
  payload: Record<string, unknown>
  attempts: number
  requestId: string | null
  result: unknown
  error: string | null
  createdAt: Date
  updatedAt: Date
}

export async function insertJobRecord(sql: Queryable, j: Pick<JobRecord, 'id' | 'orgId' | 'name' | 'queue' | 'payload' | 'requestId' | 'createdAt'>): Promise<void> {
  await sql`
    insert into jobs (id, org_id, name, queue, payload, request_id, created_at, updated_at)
    values (${j.id}, ${j.orgId}, ${j.name}, ${j.queue}, ${sql.json(j.payload as Parameters<typeof sql.json>[0])}, ${j.requestId}, ${j.createdAt}, ${j.createdAt})`
}

export async function findJobRecord(sql: Queryable, id: string): Promise<JobRecord | undefined> {
  const [row] = await sql<JobRecord[]>`
    select id, org_id as "orgId", name, queue, status, payload, attempts, request_id as "requestId", result, error,
           created_at as "createdAt", updated_at as "updatedAt"
    from jobs where id = ${id}`
  return row
}
