import type { Queryable } from './postgres.js'

export interface AuditActor {
  type: 'user' | 'apiKey' | 'system'
  id: string
}

export interface AuditEntry {
  id: string
  orgId: string
  at: Date
  actor: AuditActor
  action: string
  target: { type: string; id: string }
  requestId: string | null
  /** What changed, field by field; never secrets. */
  changes: Record<string, unknown>
}

export async function insertAudit(sql: Queryable, e: AuditEntry): Promise<void> {
  await sql`
    insert into audit_log (id, org_id, at, actor_type, actor_id, action, target_type, target_id, request_id, changes)
    values (${e.id}, ${e.orgId}, ${e.at}, ${e.actor.type}, ${e.actor.id}, ${e.action}, ${e.target.type}, ${e.target.id},
            ${e.requestId}, ${sql.json(e.changes as Parameters<typeof sql.json>[0])})`
}

/** Newest first; `before` is the id of the last entry of the previous page. */
export async function listAudit(sql: Queryable, orgId: string, limit: number, before?: string): Promise<AuditEntry[]> {
  const rows = await sql<
    { id: string; orgId: string; at: Date; actorType: AuditActor['type']; actorId: string; action: string; targetType: string; targetId: string; requestId: string | null; changes: Record<string, unknown> }[]
  >`
    select id, org_id as "orgId", at, actor_type as "actorType", actor_id as "actorId", action, target_type as "targetType",
           target_id as "targetId", request_id as "requestId", changes
    from audit_log
    where org_id = ${orgId} ${before ? sql`and id < ${before}` : sql``}
    order by id desc
    limit ${limit}`
  return rows.map((r) => ({
    id: r.id,
    orgId: r.orgId,
    at: r.at,
    actor: { type: r.actorType, id: r.actorId },
    action: r.action,
    target: { type: r.targetType, id: r.targetId },
    requestId: r.requestId,
    changes: r.changes,
  }))
}
