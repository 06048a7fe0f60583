import { afterAll, beforeAll, expect, inject, test } from 'vitest'
import { bearer, register, type SignedIn } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { addMember, apiKey, call, createApiKey, createOrg, createProject, expectJson, freshSlug, type Auth, type Call } from './support/orgs.js'

// Every endpoint of the organizations API × every kind of caller, for a target in the caller's own organization
// and for the same kind of target in another organization. The expected table is written out by hand from
// API.md's role definitions, not derived from the code under test.

type Who = 'owner' | 'admin' | 'member' | 'viewer' | 'key' | 'outsider'
const everyone: Who[] = ['owner', 'admin', 'member', 'viewer', 'key', 'outsider']

interface World {
  orgId: string
  owner: Auth
  callers: Record<Who, Auth>
}

let node: TestNode
const worlds: World[] = []

async function buildWorld(): Promise<World> {
  const ownerUser = await register(node.url)
  const org = await createOrg(node.url, ownerUser)
  const owner = bearer(ownerUser.accessToken)
  const member = async (role: string) => bearer((await addMember(node.url, node.sql, org.id, owner, role)).accessToken)
  const [admin, memberAuth, viewer, outsider] = await Promise.all([member('admin'), member('member'), member('viewer'), register(node.url).then((u: SignedIn) => bearer(u.accessToken))])
  const key = apiKey((await createApiKey(node.url, org.id, owner, ['member'])).key)
  return { orgId: org.id, owner, callers: { owner, admin, member: memberAuth, viewer, key, outsider } }
}

beforeAll(async () => {
  node = await startTestNode({ NAMESPACE: `${inject('namespace')}_rbac` })
  worlds.push(...(await Promise.all([buildWorld(), buildWorld()])))
}, 60_000)
afterAll(() => node.shutdown())

/** Fresh targets in `w`, made by its owner, so each cell acts on something of its own. */
const make = {
  project: async (w: World) => (await createProject(node.url, w.orgId, w.owner)).id,
  viewer: async (w: World) => {
    const u = await addMember(node.url, node.sql, w.orgId, w.owner, 'viewer')
    return u.user.id
  },
  team: async (w: World) => (await expectJson<{ id: string }>(await call(node.url, w.owner, { method: 'POST', path: `/v1/orgs/${w.orgId}/teams`, body: { name: freshSlug() } }), 201)).id,
  key: async (w: World) => (await createApiKey(node.url, w.orgId, w.owner, ['viewer'])).id,
  job: async (w: World) => {
    const project = await make.project(w)
    return (await expectJson<{ jobId: string }>(await call(node.url, w.owner, { method: 'POST', path: `/v1/orgs/${w.orgId}/projects/${project}/export` }), 202)).jobId
  },
}

interface Endpoint {
  name: string
  /** Who succeeds when the target is in their own organization; every other member gets 403. */
  allowed: Who[]
  ok: number
  /** Users only: an API key gets 401. */
  usersOnly?: boolean
  /** Not scoped to an organization: the answer does not depend on whose target it is. */
  unscoped?: boolean
  request(w: World): Promise<Call>
}

const o = (w: World) => `/v1/orgs/${w.orgId}`
const managers: Who[] = ['owner', 'admin']
const readers: Who[] = ['owner', 'admin', 'member', 'viewer', 'key']
const writers: Who[] = ['owner', 'admin', 'member', 'key']

const endpoints: Endpoint[] = [
  { name: 'GET /v1/orgs', allowed: ['owner', 'admin', 'member', 'viewer', 'outsider'], ok: 200, usersOnly: true, unscoped: true, request: async () => ({ method: 'GET', path: '/v1/orgs' }) },
  { name: 'POST /v1/orgs', allowed: ['owner', 'admin', 'member', 'viewer', 'outsider'], ok: 201, usersOnly: true, unscoped: true, request: async () => ({ method: 'POST', path: '/v1/orgs', body: { name: 'x', slug: freshSlug() } }) },
  { name: 'GET org', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: o(w) }) },
  { name: 'PATCH org', allowed: managers, ok: 200, request: async (w) => ({ method: 'PATCH', path: o(w), body: { name: `renamed ${freshSlug()}` } }) },
  { name: 'GET members', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/members` }) },
  { name: 'PATCH member', allowed: managers, ok: 200, request: async (w) => ({ method: 'PATCH', path: `${o(w)}/members/${await make.viewer(w)}`, body: { roles: ['member'] } }) },
  { name: 'DELETE member', allowed: managers, ok: 204, request: async (w) => ({ method: 'DELETE', path: `${o(w)}/members/${await make.viewer(w)}` }) },
  { name: 'POST invitation', allowed: managers, ok: 201, request: async (w) => ({ method: 'POST', path: `${o(w)}/invitations`, body: { email: `${freshSlug()}@example.com`, role: 'viewer' } }) },
  { name: 'GET invitations', allowed: managers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/invitations` }) },
  { name: 'GET roles', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/roles` }) },
  { name: 'POST role', allowed: managers, ok: 201, request: async (w) => ({ method: 'POST', path: `${o(w)}/roles`, body: { name: `r${freshSlug().slice(4)}`, permissions: ['projects:read'] } }) },
  { name: 'GET teams', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/teams` }) },
  { name: 'POST team', allowed: managers, ok: 201, request: async (w) => ({ method: 'POST', path: `${o(w)}/teams`, body: { name: freshSlug() } }) },
  { name: 'PUT team member', allowed: managers, ok: 204, request: async (w) => ({ method: 'PUT', path: `${o(w)}/teams/${await make.team(w)}/members/${await make.viewer(w)}` }) },
  {
    name: 'DELETE team member',
    allowed: managers,
    ok: 204,
    request: async (w) => {
      const [team, user] = await Promise.all([make.team(w), make.viewer(w)])
      await expectJson(await call(node.url, w.owner, { method: 'PUT', path: `${o(w)}/teams/${team}/members/${user}` }), 204)
      return { method: 'DELETE', path: `${o(w)}/teams/${team}/members/${user}` }
    },
  },
  { name: 'GET api-keys', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/api-keys` }) },
  { name: 'POST api-key', allowed: managers, ok: 201, request: async (w) => ({ method: 'POST', path: `${o(w)}/api-keys`, body: { name: 'k', roles: ['viewer'] } }) },
  { name: 'DELETE api-key', allowed: managers, ok: 204, request: async (w) => ({ method: 'DELETE', path: `${o(w)}/api-keys/${await make.key(w)}` }) },
  { name: 'GET audit-log', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/audit-log` }) },
  { name: 'GET projects', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/projects` }) },
  { name: 'POST project', allowed: writers, ok: 201, request: async (w) => ({ method: 'POST', path: `${o(w)}/projects`, body: { name: 'p' } }) },
  { name: 'GET project', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `${o(w)}/projects/${await make.project(w)}` }) },
  { name: 'PATCH project', allowed: writers, ok: 200, request: async (w) => ({ method: 'PATCH', path: `${o(w)}/projects/${await make.project(w)}`, body: { status: 'archived' } }) },
  { name: 'DELETE project', allowed: managers, ok: 204, request: async (w) => ({ method: 'DELETE', path: `${o(w)}/projects/${await make.project(w)}` }) },
  { name: 'POST project export', allowed: readers, ok: 202, request: async (w) => ({ method: 'POST', path: `${o(w)}/projects/${await make.project(w)}/export` }) },
  { name: 'GET job', allowed: readers, ok: 200, request: async (w) => ({ method: 'GET', path: `/v1/jobs/${await make.job(w)}` }) },
  // Last: it takes the organization with it. Each cell gets an organization of its own for this one.
  { name: 'DELETE org', allowed: ['owner'], ok: 204, request: async (w) => ({ method: 'DELETE', path: o(w) }) },
]

function expected(e: Endpoint, who: Who, own: boolean): number {
  if (e.usersOnly && who === 'key') return 401
  if (e.unscoped) return e.allowed.includes(who) ? e.ok : 403
  if (!own || who === 'outsider') return 404
  return e.allowed.includes(who) ? e.ok : 403
}

test('every endpoint × every caller × own and other organization answers exactly as API.md says', async () => {
  const actual: Record<string, Record<string, number>> = {}
  const wanted: Record<string, Record<string, number>> = {}
  for (const e of endpoints) {
    actual[e.name] = {}
    wanted[e.name] = {}
    for (const [mine, target, own] of [
      [worlds[0]!, worlds[0]!, true],
      [worlds[0]!, worlds[1]!, false],
    ] as const) {
      if (e.unscoped && !own) continue
      for (const who of everyone) {
        const cell = `${who}${own ? '' : ' → other org'}`
        // Deleting an organization is done on a copy, so the rest of the matrix keeps its world.
        const world = e.name === 'DELETE org' && own && who === 'owner' ? await buildWorld() : target
        const caller = e.name === 'DELETE org' && own && who === 'owner' ? world.callers.owner : mine.callers[who]
        const res = await call(node.url, caller, await e.request(world))
        actual[e.name]![cell] = res.status
        wanted[e.name]![cell] = expected(e, who, own)
        if (res.status >= 400) expect(res.headers.get('content-type')).toBe('application/problem+json')
        await res.arrayBuffer()
      }
    }
  }
  expect(actual).toEqual(wanted)
}, 120_000)
