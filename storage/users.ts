import type { Queryable } from './postgres.js'

export interface User {
  id: string
  email: string
  name: string
  emailVerifiedAt: Date | null
  version: number
  createdAt: Date
}

export async function findUser(sql: Queryable, id: string): Promise<User | undefined> {
  const [row] = await sql<User[]>`
    select id, email, name, email_verified_at as "emailVerifiedAt", version, created_at as "createdAt" from users where id = ${id}`
  return row
}

/** Who signs in with this email, and their password hash; undefined when nobody does. */
export async function findLogin(sql: Queryable, email: string): Promise<{ userId: string; hash: string } | undefined> {
  const [row] = await sql<{ userId: string; hash: string }[]>`
    select u.id as "userId", p.hash from users u join password_credentials p on p.user_id = u.id where u.email = ${email}`
  return row
}

export async function findUserIdByEmail(sql: Queryable, email: string): Promise<string | undefined> {
  const [row] = await sql<{ id: string }[]>`select id from users where email = ${email}`
  return row?.id
}

/** Inserts the user and their password; undefined when the email is taken (by anyone, any case). */
export async function insertUser(sql: Queryable, u: { id: string; email: string; name: string; hash: string }): Promise<User | undefined> {
  const [row] = await sql<User[]>`
    insert into users (id, email, name) values (${u.id}, ${u.email}, ${u.name})
    on conflict (email) do nothing
    returning id, email, name, email_verified_at as "emailVerifiedAt", version, created_at as "createdAt"`
  if (!row) return undefined
  await sql`insert into password_credentials (user_id, hash) values (${u.id}, ${u.hash})`
  return row
}

/** Versioned update: `count` is 0 when the row moved on (a stale writer). */
export async function updateUser(
  sql: Queryable,
  id: string,
  expectedVersion: number,
  changes: { name?: string; emailVerifiedAt?: Date },
): Promise<User | undefined> {
  const [row] = await sql<User[]>`
    update users set
      name = coalesce(${changes.name ?? null}, name),
      email_verified_at = coalesce(${changes.emailVerifiedAt ?? null}, email_verified_at),
      version = version + 1, updated_at = now()
    where id = ${id} and version = ${expectedVersion}
    returning id, email, name, email_verified_at as "emailVerifiedAt", version, created_at as "createdAt"`
  return row
}

export async function setPasswordHash(sql: Queryable, userId: string, hash: string): Promise<void> {
  await sql`update password_credentials set hash = ${hash}, updated_at = now() where user_id = ${userId}`
}
