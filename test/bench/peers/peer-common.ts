/**
 * What the benchmark peers (fastify-projects.ts, socketio-fanout.ts) share: their configuration, pool and JWT
 * verifier, the membership check against `member_roles` with the built-in role table, and the project
 * queries. Each peer stays what a typical hand-written service is: the token verified on every request, no
 * caching, the same queries as before.
 */
import { createLocalJWKSet, jwtVerify, type JSONWebKeySet } from 'jose'
import postgres from 'postgres'
import { loadConfig, type Config } from '../../../core/config.js'
import { newId } from '../../../core/ids.js'
import { builtInRoles, isBuiltInRole, type Permission } from '../../../core/rbac.js'

export type Sql = postgres.Sql

export interface ProjectRow {
  id: string
  orgId: string
  teamId: string | null
  name: string
  description: string
  status: string
  version: number
  createdAt: Date
  updatedAt: Date
}

export interface PeerContext {
  config: Config
  sql: Sql
  /** Verifies a JWT (EdDSA pinned, issuer, audience, `sub` and `exp` required) and returns its subject; throws when invalid. */
  verify(token: string): Promise<string>
}

export interface PeerStart {
  /** The script's file name, for the usage line. */
  script: string
  /** Postgres `application_name` of the pool. */
  applicationName: string
  argv: readonly string[]
  env: Record<string, string | undefined>
}

/**
 * Reads the JWKS URL from argv[2] (exits with a usage line without one), loads the configuration as ours does,
 * fetches the public keys once and opens the postgres.js pool.
 */
export async function loadPeerContext(start: PeerStart): Promise<PeerContext> {
  const jwksUrl = start.argv[2]
  if (!jwksUrl) {
    process.stderr.write(`usage: ${start.script} <jwks url>\n`)
    process.exit(2)
  }
  const config = loadConfig(start.env)
  const jwksResponse = await fetch(jwksUrl, { signal: AbortSignal.timeout(5_000) })
  if (!jwksResponse.ok) throw new Error(`GET ${jwksUrl} answered ${jwksResponse.status}`)
  const jwks = createLocalJWKSet((await jwksResponse.json()) as JSONWebKeySet)
  const sql = postgres(config.databaseUrl, {
    max: config.dbPoolMax,
    onnotice: () => {},
    connection: { application_name: start.applicationName },
  })
  const verify = async (token: string): Promise<string> => {
    const { payload } = await jwtVerify(token, jwks, {
      algorithms: ['EdDSA'],
      issuer: config.jwtIssuer,
      audience: config.jwtAudience,
      requiredClaims: ['sub', 'exp'],
    })
    return payload.sub!
  }
  return { config, sql, verify }
}

/** Whether the caller's built-in roles in the organization grant `permission`: 'yes', 'no' (403) or 'not member' (404). */
export async function permissionOf(sql: Sql, orgId: string, userId: string, permission: Permission): Promise<'yes' | 'no' | 'not member'> {
  const rows = await sql<{ role: string }[]>`select role from member_roles where org_id = ${orgId} and user_id = ${userId}`
  if (rows.length === 0) return 'not member'
  return rows.some(({ role }) => isBuiltInRole(role) && (builtInRoles[role] as readonly Permission[]).includes(permission)) ? 'yes' : 'no'
}

/** The columns of `projects` as a ProjectRow names them, for `select ${columns}` and `returning ${columns}`. */
export function projectColumns(sql: Sql): postgres.PendingQuery<postgres.Row[]> {
  return sql`id, org_id as "orgId", team_id as "teamId", name, description, status, version, created_at as "createdAt", updated_at as "updatedAt"`
}

export interface NewProject {
  orgId: string
  userId: string
  requestId: string
  name: string
  description: string
}

/** Inserts the project and its `project.created` audit row in one transaction; returns the project. */
export async function insertProjectWithAudit(sql: Sql, p: NewProject): Promise<ProjectRow> {
  const columns = projectColumns(sql)
  return sql.begin(async (tx) => {
    const [project] = await tx<ProjectRow[]>`
      insert into projects (id, org_id, name, description) values (${newId()}, ${p.orgId}, ${p.name}, ${p.description})
      returning ${columns}`
    const changes = { name: p.name, description: p.description, status: project!.status, teamId: null }
    await tx`
      insert into audit_log (id, org_id, actor_type, actor_id, action, target_type, target_id, request_id, changes)
      values (${newId()}, ${p.orgId}, 'user', ${p.userId}, 'project.created', 'project', ${project!.id}, ${p.requestId}, ${tx.json(changes)})`
    return project!
  })
}
