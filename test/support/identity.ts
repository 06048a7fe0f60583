import { randomUUID } from 'node:crypto'
import type postgres from 'postgres'
import { expect } from 'vitest'

export interface SignedIn {
  user: { id: string; email: string; name: string; emailVerified: boolean }
  accessToken: string
  refreshToken: string
  expiresIn: number
  tokenType: string
}

export const json = (body: unknown, headers: Record<string, string> = {}) => ({
  method: 'POST',
  body: JSON.stringify(body),
  headers: { 'content-type': 'application/json', ...headers },
})

export const freshEmail = () => `user-${randomUUID()}@example.com`
export const password = 'correct horse battery staple'

export async function register(url: string, email = freshEmail(), pw = password): Promise<SignedIn> {
  const res = await fetch(`${url}/v1/auth/register`, json({ email, password: pw, name: 'Ada Lovelace' }))
  expect(res.status).toBe(201)
  return (await res.json()) as SignedIn
}

export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/**
 * The newest email of a kind sent to an address, read from the development mailbox once at least `count`
 * such emails arrived (they go out through the job queue, so shortly after the request); undefined when
 * they did not within `timeoutMs`.
 */
export async function lastEmail(
  sql: postgres.Sql,
  to: string,
  kind: string,
  { count = 1, timeoutMs = 5_000 }: { count?: number; timeoutMs?: number } = {},
): Promise<{ token: string; body: string } | undefined> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const rows = await sql<{ data: { token: string }; body: string }[]>`
      select data, body from dev_mailbox where recipient = ${to} and kind = ${kind} order by sent_at desc`
    if (rows.length >= count) return { token: rows[0]!.data.token, body: rows[0]!.body }
    if (Date.now() >= deadline) return undefined
    await new Promise((r) => setTimeout(r, 25))
  }
}

export async function problem(res: Response, status: number, code: string): Promise<Record<string, unknown>> {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  const body = (await res.json()) as Record<string, unknown>
  expect(body.code).toBe(code)
  return body
}
