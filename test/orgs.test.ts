import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { bearer, freshEmail, lastEmail, problem, register, type SignedIn } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { createOrgListCache } from '../storage/org-cache.js'
import { listUserOrgs } from '../storage/orgs.js'
import { addMember, apiKey, call, createApiKey, createOrg, createProject, expectJson, type Auth, type OrgView } from './support/orgs.js'

// Two nodes of one cluster: whatever one node changes, the other must honour on the very next request.
let a: TestNode
let b: TestNode

beforeAll(async () => {
  const namespace = `${inject('namespace')}_orgs`
  a = await startTestNode({ NAMESPACE: namespace })
  b = await startTestNode({ NAMESPACE: namespace })
})
afterAll(() => Promise.all([a.shutdown(), b.shutdown()]))

const get = (node: TestNode, auth: Auth, path: string) => call(node.url, auth, { method: 'GET', path })
const send = (node: TestNode, auth: Auth, method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
  call(node.url, auth, { method, path, ...(body !== undefined ? { body } : {}), ...(headers ? { headers } : {}) })

async function orgWithOwner(): Promise<{ org: OrgView; owner: SignedIn; auth: Auth }> {
  const owner = await register(a.url)
  const org = await createOrg(a.url, owner)
  return { org, owner, auth: bearer(owner.accessToken) }
}

const roleOf = async (node: TestNode, auth: Auth, orgId: string) => {
  const list = await expectJson<{ items: { id: string; roles: string[] }[] }>(await get(node, auth, '/v1/orgs'), 200)
  return list.items.find((o) => o.id === orgId)?.roles
}

describe('organizations', () => {
  test('the creator is owner; the list shows each organization with the caller’s roles', async () => {
    const { org, auth } = await orgWithOwner()
    expect(org).toMatchObject({ version: 1 })
    expect(await roleOf(b, auth, org.id)).toEqual(['owner'])
    expect(await expectJson(await get(b, auth, `/v1/orgs/${org.id}`), 200)).toEqual(org)
  })

  test('a list read that began before a membership change cannot put the old list back in the cache', async () => {
    const { org, owner, auth } = await orgWithOwner()
    const userId = owner.user.id
    // A second reader of node a's cache: same Redis keys, as another gateway would have.
    const cache = createOrgListCache(a.redis, a.log)
    const miss = await cache.read<unknown[]>(userId)
    expect(miss.value).toBeUndefined()
    // A slow GET /v1/orgs: it read Postgres before the change below...
    const stale = await listUserOrgs(a.sql, userId)
    expect(stale.map((o) => o.id)).toEqual([org.id])
    const second = await createOrg(a.url, owner)
    // ...and tries to cache what it read after the change dropped the entry.
    await cache.fill(userId, stale, miss.version)
    const list = await expectJson<{ items: { id: string }[] }>(await get(b, auth, '/v1/orgs'), 200)
    expect(list.items.map((o) => o.id).sort()).toEqual([org.id, second.id].sort())
    // A fill with no change in between is kept, and served.
    const fresh = await cache.read<{ id: string }[]>(userId)
    expect(fresh.value?.map((o) => o.id).sort()).toEqual([org.id, second.id].sort())
  })

  test('slugs are unique regardless of case; a bad slug is refused and nothing is created', async () => {
    const { org, auth } = await orgWithOwner()
    await problem(await send(a, auth, 'POST', '/v1/orgs', { name: 'Copy', slug: org.slug }), 409, 'org.slug_taken')
    const bad = await problem(await send(a, auth, 'POST', '/v1/orgs', { name: 'Bad', slug: 'Not A Slug!' }), 400, 'validation.failed')
    expect(bad.errors).toEqual([expect.objectContaining({ path: 'slug' })])
    const { count } = (await a.sql<{ count: number }[]>`select count(*)::int from organizations where name in ('Copy', 'Bad')`)[0]!
    expect(count).toBe(0)
    const other = await createOrg(a.url, (await register(a.url)))
    await problem(await send(a, auth, 'PATCH', `/v1/orgs/${org.id}`, { slug: other.slug }), 409, 'org.slug_taken')
  })

  test('updates honour if-match; a stale version is 409 and changes nothing', async () => {
    const { org, auth } = await orgWithOwner()
    const renamed = await expectJson<OrgView>(await send(a, auth, 'PATCH', `/v1/orgs/${org.id}`, { name: 'Renamed' }, { 'if-match': '1' }), 200)
    expect(renamed).toMatchObject({ name: 'Renamed', version: 2 })
    await problem(await send(b, auth, 'PATCH', `/v1/orgs/${org.id}`, { name: 'Stale' }, { 'if-match': '1' }), 409, 'conflict')
    await problem(await send(b, auth, 'PATCH', `/v1/orgs/${org.id}`, { name: 'x' }, { 'if-match': 'yesterday' }), 400, 'validation.failed')
    expect(await expectJson(await get(b, auth, `/v1/orgs/${org.id}`), 200)).toMatchObject({ name: 'Renamed', version: 2 })
  })

  test('deleting an organization removes it for every member at once', async () => {
    const { org, auth } = await orgWithOwner()
    const viewer = bearer((await addMember(a.url, a.sql, org.id, auth, 'viewer')).accessToken)
    expect(await roleOf(b, viewer, org.id)).toEqual(['viewer'])
    expect((await send(a, auth, 'DELETE', `/v1/orgs/${org.id}`)).status).toBe(204)
    await problem(await get(b, viewer, `/v1/orgs/${org.id}`), 404, 'not_found')
    expect(await roleOf(b, viewer, org.id)).toBeUndefined()
    const { count } = (await a.sql<{ count: number }[]>`select count(*)::int from memberships where org_id = ${org.id}`)[0]!
    expect(count).toBe(0)
  })

  test('an unknown or malformed organization id is 404', async () => {
    const { auth } = await orgWithOwner()
    await problem(await get(a, auth, '/v1/orgs/01900000-0000-7000-8000-000000000000'), 404, 'not_found')
    await problem(await get(a, auth, '/v1/orgs/not-an-id'), 404, 'not_found')
  })
})

describe('members and roles', () => {
  test('a role change applies to the member’s very next request on the other node', async () => {
    const { org, auth } = await orgWithOwner()
    const user = await addMember(a.url, a.sql, org.id, auth, 'member')
    const them = bearer(user.accessToken)
    await createProject(b.url, org.id, them)
    await expectJson(await send(a, auth, 'PATCH', `/v1/orgs/${org.id}/members/${user.user.id}`, { roles: ['viewer'] }), 200)
    await problem(await send(b, them, 'POST', `/v1/orgs/${org.id}/projects`, { name: 'no longer' }), 403, 'rbac.forbidden')
    // The gateway's cached organization list follows too.
    expect(await roleOf(b, them, org.id)).toEqual(['viewer'])
    expect((await send(a, auth, 'DELETE', `/v1/orgs/${org.id}/members/${user.user.id}`)).status).toBe(204)
    await problem(await get(b, them, `/v1/orgs/${org.id}/projects`), 404, 'not_found')
    expect(await roleOf(b, them, org.id)).toBeUndefined()
  })

  test('the members list shows profiles and roles', async () => {
    const { org, owner, auth } = await orgWithOwner()
    const viewer = await addMember(a.url, a.sql, org.id, auth, 'viewer')
    const list = await expectJson<{ items: { userId: string; email: string; roles: string[] }[] }>(await get(b, auth, `/v1/orgs/${org.id}/members`), 200)
    expect(list.items).toEqual([
      expect.objectContaining({ userId: owner.user.id, email: owner.user.email, roles: ['owner'] }),
      expect.objectContaining({ userId: viewer.user.id, email: viewer.user.email, roles: ['viewer'] }),
    ])
  })

  test('an organization always keeps an owner', async () => {
    const { org, owner, auth } = await orgWithOwner()
    await problem(await send(a, auth, 'PATCH', `/v1/orgs/${org.id}/members/${owner.user.id}`, { roles: ['admin'] }), 409, 'rbac.last_owner')
    await problem(await send(a, auth, 'DELETE', `/v1/orgs/${org.id}/members/${owner.user.id}`), 409, 'rbac.last_owner')
    const second = await addMember(a.url, a.sql, org.id, auth, 'owner')
    // With a second owner, the first may step down and then leave.
    await expectJson(await send(a, auth, 'PATCH', `/v1/orgs/${org.id}/members/${owner.user.id}`, { roles: ['admin'] }), 200)
    expect((await send(b, auth, 'DELETE', `/v1/orgs/${org.id}/members/${owner.user.id}`)).status).toBe(204)
    await problem(await send(a, bearer(second.accessToken), 'DELETE', `/v1/orgs/${org.id}/members/${second.user.id}`), 409, 'rbac.last_owner')
  })

  test('nobody grants what they lack or edits someone above them', async () => {
    const { org, owner, auth } = await orgWithOwner()
    const adminUser = await addMember(a.url, a.sql, org.id, auth, 'admin')
    const admin = bearer(adminUser.accessToken)
    const target = await addMember(a.url, a.sql, org.id, auth, 'viewer')
    const path = `/v1/orgs/${org.id}`
    await problem(await send(a, admin, 'PATCH', `${path}/members/${target.user.id}`, { roles: ['owner'] }), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'PATCH', `${path}/members/${owner.user.id}`, { roles: ['viewer'] }), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'DELETE', `${path}/members/${owner.user.id}`), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'PATCH', `${path}/members/${adminUser.user.id}`, { roles: ['owner'] }), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'POST', `${path}/invitations`, { email: freshEmail(), role: 'owner' }), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'POST', `${path}/roles`, { name: 'deleter', permissions: ['org:delete'] }), 403, 'rbac.forbidden')
    await problem(await send(a, admin, 'POST', `${path}/api-keys`, { name: 'root', roles: ['owner'] }), 403, 'rbac.forbidden')
    // What an admin holds, an admin may grant.
    await expectJson(await send(a, admin, 'PATCH', `${path}/members/${target.user.id}`, { roles: ['admin'] }), 200)
    // None of the refused attempts changed anything.
    expect(await roleOf(a, bearer(owner.accessToken), org.id)).toEqual(['owner'])
    const { count } = (await a.sql<{ count: number }[]>`select count(*)::int from roles where org_id = ${org.id}`)[0]!
    expect(count).toBe(0)
  })

  test('custom roles come from the catalogue and grant exactly their permissions', async () => {
    const { org, auth } = await orgWithOwner()
    const path = `/v1/orgs/${org.id}`
    const bad = await problem(await send(a, auth, 'POST', `${path}/roles`, { name: 'wizard', permissions: ['spells:cast'] }), 400, 'validation.failed')
    expect(bad.errors).toEqual([expect.objectContaining({ path: 'permissions.0' })])
    const role = await expectJson<{ id: string; name: string; permissions: string[] }>(
      await send(a, auth, 'POST', `${path}/roles`, { name: 'janitor', permissions: ['projects:read', 'projects:delete'] }),
      201,
    )
    expect(role).toMatchObject({ name: 'janitor', permissions: ['projects:delete', 'projects:read'] })
    await problem(await send(a, auth, 'POST', `${path}/roles`, { name: 'janitor', permissions: [] }), 409, 'conflict')
    await problem(await send(a, auth, 'POST', `${path}/roles`, { name: 'admin', permissions: [] }), 409, 'conflict')
    const janitorUser = await addMember(a.url, a.sql, org.id, auth, 'janitor')
    const janitor = bearer(janitorUser.accessToken)
    const project = await createProject(a.url, org.id, auth)
    await problem(await send(b, janitor, 'POST', `${path}/projects`, { name: 'x' }), 403, 'rbac.forbidden')
    expect((await send(b, janitor, 'DELETE', `${path}/projects/${project.id}`)).status).toBe(204)
    await problem(await get(b, janitor, `${path}/roles`), 403, 'rbac.forbidden')
    const roles = await expectJson<{ items: { name: string; builtIn: boolean }[] }>(await get(b, auth, `${path}/roles`), 200)
    expect(roles.items.map((r) => r.name)).toEqual(['owner', 'admin', 'member', 'viewer', 'janitor'])
    const unknown = await problem(await send(a, auth, 'PATCH', `${path}/members/${janitorUser.user.id}`, { roles: ['nonexistent'] }), 400, 'validation.failed')
    expect(unknown.errors).toEqual([expect.objectContaining({ path: 'roles' })])
  })

  test('teams hold members of the organization only', async () => {
    const { org, auth } = await orgWithOwner()
    const path = `/v1/orgs/${org.id}`
    const team = await expectJson<{ id: string }>(await send(a, auth, 'POST', `${path}/teams`, { name: 'Platform' }), 201)
    await problem(await send(a, auth, 'POST', `${path}/teams`, { name: 'Platform' }), 409, 'conflict')
    const member = await addMember(a.url, a.sql, org.id, auth, 'member')
    const stranger = await register(a.url)
    expect((await send(a, auth, 'PUT', `${path}/teams/${team.id}/members/${member.user.id}`)).status).toBe(204)
    expect((await send(a, auth, 'PUT', `${path}/teams/${team.id}/members/${member.user.id}`)).status).toBe(204)
    await problem(await send(a, auth, 'PUT', `${path}/teams/${team.id}/members/${stranger.user.id}`), 404, 'not_found')
    const teams = await expectJson<{ items: { id: string; memberIds: string[] }[] }>(await get(b, auth, `${path}/teams`), 200)
    expect(teams.items).toEqual([expect.objectContaining({ id: team.id, name: 'Platform', memberIds: [member.user.id] })])
    // Removing the member from the organization takes them out of its teams as well.
    expect((await send(a, auth, 'DELETE', `${path}/members/${member.user.id}`)).status).toBe(204)
    const after = await expectJson<{ items: { memberIds: string[] }[] }>(await get(b, auth, `${path}/teams`), 200)
    expect(after.items[0]!.memberIds).toEqual([])
  })
})

describe('invitations', () => {
  test('accepting needs the invited email, works once, and the latest invitation replaces earlier ones', async () => {
    const { org, auth } = await orgWithOwner()
    const email = freshEmail()
    const first = await expectJson<{ id: string; role: string }>(await send(a, auth, 'POST', `/v1/orgs/${org.id}/invitations`, { email, role: 'member' }), 201)
    expect(first.role).toBe('member')
    const firstToken = (await lastEmail(a.sql, email, 'invitation'))!.token
    await expectJson(await send(a, auth, 'POST', `/v1/orgs/${org.id}/invitations`, { email: email.toUpperCase(), role: 'viewer' }), 201)
    const mail = (await lastEmail(a.sql, email, 'invitation', { count: 2 }))!
    expect(mail.body).toContain(org.name)

    const wrong = await register(a.url)
    await problem(await send(b, bearer(wrong.accessToken), 'POST', '/v1/invitations/accept', { token: mail.token }), 403, 'invitation.email_mismatch')
    const invitee = await register(a.url, email)
    await problem(await send(b, bearer(invitee.accessToken), 'POST', '/v1/invitations/accept', { token: firstToken }), 400, 'invitation.invalid')
    const membership = await expectJson(await send(b, bearer(invitee.accessToken), 'POST', '/v1/invitations/accept', { token: mail.token }), 200)
    expect(membership).toMatchObject({ orgId: org.id, userId: invitee.user.id, roles: ['viewer'] })
    await problem(await send(a, bearer(invitee.accessToken), 'POST', '/v1/invitations/accept', { token: mail.token }), 400, 'invitation.invalid')
    await problem(await send(a, bearer(invitee.accessToken), 'POST', '/v1/invitations/accept', { token: 'x'.repeat(43) }), 400, 'invitation.invalid')
    const list = await expectJson<{ items: { status: string }[] }>(await get(a, auth, `/v1/orgs/${org.id}/invitations`), 200)
    expect(list.items.map((i) => i.status)).toEqual(['accepted', 'revoked'])
  })

  test('an expired invitation cannot be accepted', async () => {
    const { org, auth } = await orgWithOwner()
    const email = freshEmail()
    const invitation = await expectJson<{ id: string }>(await send(a, auth, 'POST', `/v1/orgs/${org.id}/invitations`, { email, role: 'viewer' }), 201)
    const token = (await lastEmail(a.sql, email, 'invitation'))!.token
    await a.sql`update invitations set expires_at = now() - interval '1 second' where id = ${invitation.id}`
    const invitee = await register(a.url, email)
    await problem(await send(a, bearer(invitee.accessToken), 'POST', '/v1/invitations/accept', { token }), 400, 'invitation.invalid')
    expect(await roleOf(a, bearer(invitee.accessToken), org.id)).toBeUndefined()
  })
})

describe('API keys', () => {
  test('a key acts with its own roles in its organization only, is shown once, and dies at once when revoked', async () => {
    const { org, auth } = await orgWithOwner()
    const other = await orgWithOwner()
    const created = await createApiKey(a.url, org.id, auth, ['member'])
    expect(created.key).toMatch(/^ak_/)
    const key = apiKey(created.key)
    const listed = await expectJson<{ items: Record<string, unknown>[] }>(await get(a, auth, `/v1/orgs/${org.id}/api-keys`), 200)
    expect(listed.items).toEqual([expect.objectContaining({ id: created.id, roles: ['member'], prefix: created.key.slice(0, 11) })])
    expect(JSON.stringify(listed)).not.toContain(created.key)
    const { hash } = (await a.sql<{ hash: Buffer }[]>`select key_hash as hash from api_keys where id = ${created.id}`)[0]!
    expect(hash.toString()).not.toContain(created.key)

    await createProject(b.url, org.id, key)
    await problem(await send(b, key, 'DELETE', `/v1/orgs/${org.id}/projects/${(await createProject(a.url, org.id, auth)).id}`), 403, 'rbac.forbidden')
    await problem(await get(b, key, `/v1/orgs/${other.org.id}/projects`), 404, 'not_found')
    await problem(await get(b, key, '/v1/users/me'), 401, 'auth.unauthenticated')
    await problem(await get(b, key, '/v1/orgs'), 401, 'auth.unauthenticated')
    await problem(await get(b, { authorization: 'ApiKey ak_not-a-real-key-at-all-000000' }, `/v1/orgs/${org.id}`), 401, 'auth.invalid_token')

    expect((await send(a, auth, 'DELETE', `/v1/orgs/${org.id}/api-keys/${created.id}`)).status).toBe(204)
    await problem(await get(b, key, `/v1/orgs/${org.id}/projects`), 401, 'auth.invalid_token')
  })
})

describe('audit', () => {
  test('every kind of change to an organization leaves exactly one audit row carrying its request id', async () => {
    const { org, auth } = await orgWithOwner()
    const path = `/v1/orgs/${org.id}`
    let n = 0
    const rid = () => ({ 'x-request-id': `aud-${org.id.slice(-12)}-${++n}` })
    const member = await addMember(a.url, a.sql, org.id, auth, 'viewer')
    const steps: [string, string, unknown?][] = [
      ['PATCH', path, { name: 'Audited Org' }],
      ['PATCH', `${path}/members/${member.user.id}`, { roles: ['member'] }],
      ['POST', `${path}/invitations`, { email: freshEmail(), role: 'viewer' }],
      ['POST', `${path}/roles`, { name: 'auditor', permissions: ['audit:read'] }],
      ['POST', `${path}/teams`, { name: 'Audit team' }],
      ['POST', `${path}/api-keys`, { name: 'audit key', roles: ['viewer'] }],
    ]
    const answers: Record<string, unknown>[] = []
    for (const [method, p, body] of steps) answers.push(await expectJson(await send(a, auth, method, p, body, rid()), method === 'POST' ? 201 : 200))
    const teamId = String(answers[4]!.id)
    const keyId = String(answers[5]!.id)
    expect((await send(b, auth, 'PUT', `${path}/teams/${teamId}/members/${member.user.id}`, undefined, rid())).status).toBe(204)
    expect((await send(b, auth, 'DELETE', `${path}/teams/${teamId}/members/${member.user.id}`, undefined, rid())).status).toBe(204)
    expect((await send(b, auth, 'DELETE', `${path}/api-keys/${keyId}`, undefined, rid())).status).toBe(204)
    expect((await send(b, auth, 'DELETE', `${path}/members/${member.user.id}`, undefined, rid())).status).toBe(204)

    const log = await expectJson<{ items: { action: string; requestId: string; changes: Record<string, unknown> }[] }>(await send(a, auth, 'GET', `${path}/audit-log?limit=100`), 200)
    const ours = log.items.filter((e) => e.requestId.startsWith(`aud-${org.id.slice(-12)}-`)).reverse()
    expect(ours.map((e) => [e.action, e.requestId])).toEqual(
      [
        'org.updated',
        'member.roles_changed',
        'invitation.created',
        'role.created',
        'team.created',
        'apikey.created',
        'team.member_added',
        'team.member_removed',
        'apikey.revoked',
        'member.removed',
      ].map((action, i) => [action, `aud-${org.id.slice(-12)}-${i + 1}`]),
    )
    expect(ours[0]!.changes).toEqual({ name: { from: org.name, to: 'Audited Org' } })
    // The invitation row and the key row carry no secret.
    expect(JSON.stringify(log)).not.toContain(String(answers[5]!.key))
    expect(log.items.map((e) => e.action)).toEqual(expect.arrayContaining(['org.created', 'invitation.accepted']))
  })
})
