import type { Sql, TransactionSql } from './postgres.js'

/** The role tenant transactions run as (see migration 0003): it cannot bypass row-level security. */
export const tenantRole = 'actorbase_app'

/**
 * Runs `work` in a transaction scoped to one organization: as the application role, with `app.org_id` set, so
 * row-level security hides every other tenant's rows even from a query that forgets its `org_id` filter.
 */
export async function inTenant<T>(sql: Sql, orgId: string, work: (tx: TransactionSql) => Promise<T>): Promise<T> {
  return (await sql.begin(async (tx) => {
    // Not awaited on its own: it is pipelined with BEGIN (deploy/patches/postgres+3.4.9.patch) and the first
    // queries of `work` on the same connection, and a failure here fails those too. A small write thus costs two
    // round trips (the work, the commit) rather than three.
    const scoped = tx`select set_config('role', ${tenantRole}, true), set_config('app.org_id', ${orgId}, true)`.execute()
    scoped.catch(() => undefined)
    const result = await work(tx)
    await scoped
    return result
  })) as T
}
