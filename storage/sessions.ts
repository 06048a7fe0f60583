import { createHash, randomBytes } from 'node:crypto'
import type { Queryable } from './postgres.js'

export interface Session {
  id: string
  userId: string
  userAgent: string | null
  ip: string | null
  createdAt: Date
  lastUsedAt: Date
  revokedAt: Date | null
}

/** Refresh tokens are 256 random bits; only their SHA-256 is stored. */
export function newOpaqueToken(): { token: string; hash: Buffer } {
  const token = randomBytes(32).toString('base64url')
  return { token, hash: hashToken(token) }
}

export function hashToken(token: string): Buffer {
  return createHash('sha256').update(token).digest()
}

export async function insertSession(sql: Queryable, s: { id: string; userId: string; userAgent: string | null; ip: string | null }): Promise<void> {
  await sql`insert into sessions (id, user_id, user_agent, ip) values (${s.id}, ${s.userId}, ${s.userAgent}, ${s.ip})`
}

export async function insertRefreshToken(sql: Queryable, t: { id: string; sessionId: string; hash: Buffer; ttlDays: number }): Promise<void> {
  await sql`insert into refresh_tokens (id, session_id, token_hash, expires_at)
            values (${t.id}, ${t.sessionId}, ${t.hash}, now() + make_interval(days => ${t.ttlDays}))`
}

export interface RefreshTokenRow {
  id: string
  sessionId: string
  userId: string
  expiresAt: Date
  rotatedAt: Date | null
  sessionRevokedAt: Date | null
}

export async function findRefreshToken(sql: Queryable, hash: Buffer): Promise<RefreshTokenRow | undefined> {
  const [row] = await sql<RefreshTokenRow[]>`
    select t.id, t.session_id as "sessionId", s.user_id as "userId", t.expires_at as "expiresAt",
           t.rotated_at as "rotatedAt", s.revoked_at as "sessionRevokedAt"
    from refresh_tokens t join sessions s on s.id = t.session_id
    where t.token_hash = ${hash}`
  return row
}

/** Marks the token used; false when it was already rotated (another refresh got there first). */
export async function rotateRefreshToken(sql: Queryable, id: string): Promise<boolean> {
  const result = await sql`update refresh_tokens set rotated_at = now() where id = ${id} and rotated_at is null`
  return result.count === 1
}

export async function touchSession(sql: Queryable, id: string): Promise<void> {
  await sql`update sessions set last_used_at = now() where id = ${id}`
}

/** Revokes sessions of a user (one, or all when `sessionId` is undefined); returns the ids it revoked. */
export async function revokeSessions(sql: Queryable, userId: string, reason: string, sessionId?: string): Promise<string[]> {
  const rows = await sql<{ id: string }[]>`
    update sessions set revoked_at = now(), revoked_reason = ${reason}
    where user_id = ${userId} and revoked_at is null ${sessionId ? sql`and id = ${sessionId}` : sql``}
    returning id`
  return rows.map((r) => r.id)
}

export async function listSessions(sql: Queryable, userId: string): Promise<Session[]> {
  return sql<Session[]>`
    select id, user_id as "userId", user_agent as "userAgent", ip, created_at as "createdAt",
           last_used_at as "lastUsedAt", revoked_at as "revokedAt"
    from sessions where user_id = ${userId} and revoked_at is null order by created_at desc limit 100`
}
