import type { Queryable } from './postgres.js'

export type OneTimePurpose = 'email_verify' | 'password_reset'

export async function insertOneTimeToken(
  sql: Queryable,
  t: { id: string; userId: string; purpose: OneTimePurpose; hash: Buffer; ttlMinutes: number },
): Promise<void> {
  await sql`insert into one_time_tokens (id, user_id, purpose, token_hash, expires_at)
            values (${t.id}, ${t.userId}, ${t.purpose}, ${t.hash}, now() + make_interval(mins => ${t.ttlMinutes}))`
}

/** The user a live (unused, unexpired) token of this purpose belongs to. */
export async function findOneTimeToken(sql: Queryable, hash: Buffer, purpose: OneTimePurpose): Promise<{ id: string; userId: string } | undefined> {
  const [row] = await sql<{ id: string; userId: string }[]>`
    select id, user_id as "userId" from one_time_tokens
    where token_hash = ${hash} and purpose = ${purpose} and used_at is null and expires_at > now()`
  return row
}

/** Single use: false when the token was used (or expired) in the meantime. */
export async function consumeOneTimeToken(sql: Queryable, id: string): Promise<boolean> {
  const result = await sql`update one_time_tokens set used_at = now() where id = ${id} and used_at is null and expires_at > now()`
  return result.count === 1
}
