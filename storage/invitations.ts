import type { Queryable } from './postgres.js'

export interface Invitation {
  id: string
  orgId: string
  email: string
  role: string
  invitedBy: string | null
  createdAt: Date
  expiresAt: Date
  acceptedAt: Date | null
  revokedAt: Date | null
}

const columns = (sql: Queryable) =>
  sql`id, org_id as "orgId", email, role, invited_by as "invitedBy", created_at as "createdAt", expires_at as "expiresAt",
      accepted_at as "acceptedAt", revoked_at as "revokedAt"`

export async function insertInvitation(sql: Queryable, i: Invitation, tokenHash: Buffer): Promise<void> {
  await sql`
    insert into invitations (id, org_id, email, role, token_hash, invited_by, created_at, expires_at)
    values (${i.id}, ${i.orgId}, ${i.email}, ${i.role}, ${tokenHash}, ${i.invitedBy}, ${i.createdAt}, ${i.expiresAt})`
}

/** A new invitation to the same address replaces the pending one, so only the latest link works. */
export async function revokePendingInvitations(sql: Queryable, orgId: string, email: string): Promise<void> {
  await sql`update invitations set revoked_at = now()
            where org_id = ${orgId} and email = ${email} and accepted_at is null and revoked_at is null`
}

/** Which organization a token invites to: a cross-tenant lookup by hash, made before the org actor is known. */
export async function findInvitationByToken(sql: Queryable, tokenHash: Buffer): Promise<Invitation | undefined> {
  const [row] = await sql<Invitation[]>`select ${columns(sql)} from invitations where token_hash = ${tokenHash}`
  return row
}

/** Marks the invitation accepted; false when it was accepted, revoked or expired meanwhile. */
export async function acceptInvitation(sql: Queryable, orgId: string, id: string, userId: string, at: Date): Promise<boolean> {
  const result = await sql`
    update invitations set accepted_at = ${at}, accepted_by = ${userId}
    where org_id = ${orgId} and id = ${id} and accepted_at is null and revoked_at is null and expires_at > ${at}`
  return result.count === 1
}

export async function listInvitations(sql: Queryable, orgId: string, limit: number, before?: string): Promise<Invitation[]> {
  return sql<Invitation[]>`
    select ${columns(sql)} from invitations
    where org_id = ${orgId} ${before ? sql`and id < ${before}` : sql``}
    order by id desc limit ${limit}`
}
