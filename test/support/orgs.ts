import { randomUUID } from 'node:crypto'
import type postgres from 'postgres'
import { expect } from 'vitest'
import { bearer, freshEmail, lastEmail, register, type SignedIn } from './identity.js'

export type Auth = Record<string, string>

export interface Call {
  method: string
  path: string
  body?: unknown
  headers?: Record<string, string>
}

/** One HTTP call as a principal; JSON in, the Response out. */
export function call(url: string, auth: Auth, c: Call): Promise<Response> {
  const headers: Record<string, string> = { ...auth, ...c.headers }
  if (c.body !== undefined) headers['content-type'] = 'application/json'
  return fetch(`${url}${c.path}`, { method: c.method, headers, ...(c.body !== undefined ? { body: JSON.stringify(c.body) } : {}) })
}

/** The JSON of a call that must answer `status`; the problem document is shown when it does not. */
export async function expectJson<T = Record<string, unknown>>(res: Response, status: number): Promise<T> {
  const text = await res.text()
  expect(res.status, text).toBe(status)
  return (text ? JSON.parse(text) : undefined) as T
}

export const freshSlug = () => `org-${randomUUID().slice(0, 8)}`

export interface OrgView {
  id: string
  name: string
  slug: string
  version: number
}

export async function createOrg(url: string, owner: SignedIn, slug = freshSlug()): Promise<OrgView> {
  return expectJson<OrgView>(await call(url, bearer(owner.accessToken), { method: 'POST', path: '/v1/orgs', body: { name: `Org ${slug}`, slug } }), 201)
}

/** Registers a user and brings them into the organization through an invitation, as a real user would come. */
export async function addMember(url: string, sql: postgres.Sql, orgId: string, inviter: Auth, role: string): Promise<SignedIn> {
  const email = freshEmail()
  await expectJson(await call(url, inviter, { method: 'POST', path: `/v1/orgs/${orgId}/invitations`, body: { email, role } }), 201)
  const mail = await lastEmail(sql, email, 'invitation')
  const user = await register(url, email)
  await expectJson(await call(url, bearer(user.accessToken), { method: 'POST', path: '/v1/invitations/accept', body: { token: mail!.token } }), 200)
  return user
}

export async function createApiKey(url: string, orgId: string, creator: Auth, roles: string[]): Promise<{ id: string; key: string }> {
  return expectJson(await call(url, creator, { method: 'POST', path: `/v1/orgs/${orgId}/api-keys`, body: { name: `key ${roles.join(',')}`, roles } }), 201)
}

export const apiKey = (key: string): Auth => ({ authorization: `ApiKey ${key}` })

export interface ProjectView {
  id: string
  orgId: string
  teamId: string | null
  name: string
  description: string
  status: string
  version: number
}

export async function createProject(url: string, orgId: string, auth: Auth, body: Record<string, unknown> = {}): Promise<ProjectView> {
  return expectJson<ProjectView>(await call(url, auth, { method: 'POST', path: `/v1/orgs/${orgId}/projects`, body: { name: `p-${randomUUID().slice(0, 6)}`, ...body } }), 201)
}
