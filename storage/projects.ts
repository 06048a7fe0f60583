import type { Queryable } from './postgres.js'

export type ProjectStatus = 'active' | 'archived'

export interface Project {
  id: string
  orgId: string
  teamId: string | null
  name: string
  description: string
  status: ProjectStatus
  version: number
  createdAt: Date
  updatedAt: Date
}

const columns = (sql: Queryable) =>
  sql`id, org_id as "orgId", team_id as "teamId", name, description, status, version, created_at as "createdAt", updated_at as "updatedAt"`

/** The org actor sets every field (timestamps too), so its memory equals the row without reading it back. */
export async function insertProject(sql: Queryable, p: Project): Promise<void> {
  await sql`
    insert into projects (id, org_id, team_id, name, description, status, version, created_at, updated_at)
    values (${p.id}, ${p.orgId}, ${p.teamId}, ${p.name}, ${p.description}, ${p.status}, ${p.version}, ${p.createdAt}, ${p.updatedAt})`
}

/** Writes `p` over the row at `expectedVersion`; 0 when another writer got there first. */
export async function updateProject(sql: Queryable, p: Project, expectedVersion: number): Promise<number> {
  const result = await sql`
    update projects set team_id = ${p.teamId}, name = ${p.name}, description = ${p.description}, status = ${p.status},
      version = ${p.version}, updated_at = ${p.updatedAt}
    where org_id = ${p.orgId} and id = ${p.id} and version = ${expectedVersion}`
  return result.count
}

export async function deleteProject(sql: Queryable, orgId: string, id: string, expectedVersion: number): Promise<number> {
  const result = await sql`delete from projects where org_id = ${orgId} and id = ${id} and version = ${expectedVersion}`
  return result.count
}

export async function findProject(sql: Queryable, orgId: string, id: string): Promise<Project | undefined> {
  const [row] = await sql<Project[]>`select ${columns(sql)} from projects where org_id = ${orgId} and id = ${id}`
  return row
}

/** Creation order; `after` is the id of the last project of the previous page. */
export async function listProjects(sql: Queryable, orgId: string, limit: number, after?: string): Promise<Project[]> {
  return sql<Project[]>`
    select ${columns(sql)} from projects
    where org_id = ${orgId} ${after ? sql`and id > ${after}` : sql``}
    order by id limit ${limit}`
}
