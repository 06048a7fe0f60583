import type { Queryable } from './postgres.js'

export interface ApiKey {
  id: string
  orgId: string
  name: string
  prefix: string
  roles: string[]
  createdBy: string | null
  createdAt: Date
  lastUsedAt: Date | null
}

export async function insertApiKey(sql: Queryable, k: ApiKey, keyHash: Buffer): Promise<void> {
  await sql`
    insert into api_keys (id, org_id, name, prefix, key_hash, roles, created_by, created_at)
    values (${k.id}, ${k.orgId}, ${k.name}, ${k.prefix}, ${keyHash}, ${k.roles}, ${k.createdBy}, ${k.createdAt})`
}

/** Live keys only: a revoked key is gone from the org actor's memory and from every answer. */
export async function loadApiKeys(sql: Queryable, orgId: string): Promise<ApiKey[]> {
  return sql<ApiKey[]>`
    select id, org_id as "orgId", name, prefix, roles, created_by as "createdBy", created_at as "createdAt", last_used_at as "lastUsedAt"
    from api_keys where org_id = ${orgId} and revoked_at is null order by id`
}

export async function revokeApiKey(sql: Queryable, orgId: string, id: string): Promise<number> {
  const result = await sql`update api_keys set revoked_at = now() where org_id = ${orgId} and id = ${id} and revoked_at is null`
  return result.count
}

/** Which organization a key belongs to (revoked or not): a cross-tenant lookup by hash, for the gateway. */
export async function findApiKeyOwner(sql: Queryable, keyHash: Buffer): Promise<{ id: string; orgId: string } | undefined> {
  const [row] = await sql<{ id: string; orgId: string }[]>`select id, org_id as "orgId" from api_keys where key_hash = ${keyHash}`
  return row
}

export async function touchApiKeys(sql: Queryable, orgId: string, ids: readonly string[], at: Date): Promise<void> {
  await sql`update api_keys set last_used_at = ${at} where org_id = ${orgId} and id = any(${ids as string[]})`
}
