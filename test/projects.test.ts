import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { eventually } from './support/eventually.js'
import { bearer, problem, register } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { call, createOrg, createProject, expectJson, type Auth, type ProjectView } from './support/orgs.js'
import { proxyFor, type TcpProxy } from './support/tcp-proxy.js'

let a: TestNode
let b: TestNode

beforeAll(async () => {
  const namespace = `${inject('namespace')}_proj`
  a = await startTestNode({ NAMESPACE: namespace })
  b = await startTestNode({ NAMESPACE: namespace })
})
afterAll(() => Promise.all([a.shutdown(), b.shutdown()]))

interface Page<T> {
  items: T[]
  nextCursor: string | null
}

async function tenant(node = a): Promise<{ orgId: string; auth: Auth; base: string }> {
  const owner = await register(node.url)
  const org = await createOrg(node.url, owner)
  return { orgId: org.id, auth: bearer(owner.accessToken), base: `/v1/orgs/${org.id}/projects` }
}

const send = (node: TestNode, auth: Auth, method: string, path: string, body?: unknown, headers?: Record<string, string>) =>
  call(node.url, auth, { method, path, ...(body !== undefined ? { body } : {}), ...(headers ? { headers } : {}) })

const count = async (table: 'projects' | 'audit_log', orgId: string) => {
  const [row] = await a.sql<{ n: number }[]>`select count(*)::int as n from ${a.sql(table)} where org_id = ${orgId}`
  return row!.n
}

describe('projects', () => {
  test('create, read, update with if-match, delete; a stale version is 409 and changes nothing', async () => {
    const t = await tenant()
    const created = await createProject(a.url, t.orgId, t.auth, { name: 'Apollo', description: 'to the moon' })
    expect(created).toMatchObject({ orgId: t.orgId, name: 'Apollo', description: 'to the moon', status: 'active', teamId: null, version: 1 })
    expect(await expectJson(await send(b, t.auth, 'GET', `${t.base}/${created.id}`), 200)).toEqual(created)

    const updated = await expectJson<ProjectView>(await send(b, t.auth, 'PATCH', `${t.base}/${created.id}`, { status: 'archived' }, { 'if-match': '1' }), 200)
    expect(updated).toMatchObject({ status: 'archived', version: 2, name: 'Apollo' })
    await problem(await send(a, t.auth, 'PATCH', `${t.base}/${created.id}`, { name: 'Stale' }, { 'if-match': '1' }), 409, 'conflict')
    await problem(await send(a, t.auth, 'DELETE', `${t.base}/${created.id}`, undefined, { 'if-match': '1' }), 409, 'conflict')
    const [row] = await a.sql<{ name: string; version: number }[]>`select name, version from projects where id = ${created.id}`
    expect(row).toEqual({ name: 'Apollo', version: 2 })

    expect((await send(a, t.auth, 'DELETE', `${t.base}/${created.id}`, undefined, { 'if-match': '2' })).status).toBe(204)
    await problem(await send(b, t.auth, 'GET', `${t.base}/${created.id}`), 404, 'not_found')
  })

  test('concurrent updates with the same if-match: exactly one wins', async () => {
    const t = await tenant()
    const p = await createProject(a.url, t.orgId, t.auth)
    const results = await Promise.all(
      Array.from({ length: 6 }, (_, i) => send(i % 2 ? a : b, t.auth, 'PATCH', `${t.base}/${p.id}`, { name: `n${i}` }, { 'if-match': '1' })),
    )
    expect(results.map((r) => r.status).sort()).toEqual([200, 409, 409, 409, 409, 409])
  })

  test('invalid input is a 400 problem and writes nothing', async () => {
    const t = await tenant()
    const before = [await count('projects', t.orgId), await count('audit_log', t.orgId)]
    const cases: [unknown, string][] = [
      [{ name: '' }, 'name'],
      [{ name: 'x', status: 'paused' }, 'status'],
      [{ name: 'x', extra: true }, ''],
      [{ name: 'x', description: 'd'.repeat(2_001) }, 'description'],
    ]
    for (const [body, path] of cases) {
      const doc = await problem(await send(a, t.auth, 'POST', t.base, body), 400, 'validation.failed')
      if (path) expect(doc.errors).toEqual(expect.arrayContaining([expect.objectContaining({ path })]))
    }
    const p = await createProject(a.url, t.orgId, t.auth)
    await problem(await send(a, t.auth, 'PATCH', `${t.base}/${p.id}`, {}), 400, 'validation.failed')
    await problem(await send(a, t.auth, 'GET', `${t.base}?limit=0`), 400, 'validation.failed')
    await problem(await send(a, t.auth, 'GET', `${t.base}?cursor=bm90LWEtY3Vyc29y`), 400, 'validation.failed')
    expect([await count('projects', t.orgId), await count('audit_log', t.orgId)]).toEqual([before[0]! + 1, before[1]! + 1])
  })

  test('pages have no duplicates and no gaps while projects are being added', async () => {
    const t = await tenant()
    const initial: string[] = []
    for (let i = 0; i < 25; i++) initial.push((await createProject(a.url, t.orgId, t.auth, { name: `p${i}` })).id)
    const seen: string[] = []
    const adding: Promise<ProjectView>[] = []
    let cursor: string | null = null
    do {
      const path: string = `${t.base}?limit=4${cursor ? `&cursor=${cursor}` : ''}`
      const res: Page<ProjectView> = await expectJson<Page<ProjectView>>(await send(b, t.auth, 'GET', path), 200)
      seen.push(...res.items.map((p) => p.id))
      // Someone keeps creating projects between page reads.
      adding.push(createProject(a.url, t.orgId, t.auth))
      cursor = res.nextCursor
    } while (cursor)
    await Promise.all(adding)
    expect(new Set(seen).size).toBe(seen.length)
    expect(seen.slice(0, initial.length)).toEqual(initial)
    expect([...seen].sort()).toEqual(seen)
  })

  test('a burst of writes is committed in groups, each with its audit row; one bad write fails alone', async () => {
    const t = await tenant()
    const results = await Promise.all([
      ...Array.from({ length: 40 }, (_, i) => send(i % 2 ? a : b, t.auth, 'POST', t.base, { name: `burst ${i}` })),
      send(a, t.auth, 'POST', t.base, { name: 'bad team', teamId: '01900000-0000-7000-8000-000000000000' }),
    ])
    const statuses = results.map((r) => r.status)
    expect(statuses.filter((s) => s === 201)).toHaveLength(40)
    expect(statuses.at(-1)).toBe(400)
    expect(await count('projects', t.orgId)).toBe(40)
    const { n } = (await a.sql<{ n: number }[]>`select count(*)::int as n from audit_log where org_id = ${t.orgId} and action = 'project.created'`)[0]!
    expect(n).toBe(40)
  })
})

describe('tenant isolation', () => {
  test("another organization's project is 404 by every path, and its ids are refused in bodies", async () => {
    const mine = await tenant()
    const theirs = await tenant()
    const their = await createProject(a.url, theirs.orgId, theirs.auth)
    const theirTeam = await expectJson<{ id: string }>(await send(a, theirs.auth, 'POST', `/v1/orgs/${theirs.orgId}/teams`, { name: 'Theirs' }), 201)
    for (const [method, suffix, body] of [
      ['GET', '', undefined],
      ['PATCH', '', { name: 'mine now' }],
      ['DELETE', '', undefined],
      ['POST', '/export', undefined],
    ] as const) {
      await problem(await send(a, mine.auth, method, `${mine.base}/${their.id}${suffix}`, body), 404, 'not_found')
      await problem(await send(a, mine.auth, method, `${theirs.base}/${their.id}${suffix}`, body), 404, 'not_found')
    }
    await problem(await send(a, mine.auth, 'POST', mine.base, { name: 'x', teamId: theirTeam.id }), 400, 'validation.failed')
    const list = await expectJson<Page<ProjectView>>(await send(a, mine.auth, 'GET', mine.base), 200)
    expect(list.items).toEqual([])
    expect(await expectJson(await send(a, theirs.auth, 'GET', `${theirs.base}/${their.id}`), 200)).toEqual(their)
  })

  test('row-level security hides other tenants from a query that forgets the org filter', async () => {
    const one = await tenant()
    const two = await tenant()
    await createProject(a.url, one.orgId, one.auth)
    await createProject(a.url, two.orgId, two.auth)
    const [role] = await a.sql<{ rolsuper: boolean; rolbypassrls: boolean }[]>`select rolsuper, rolbypassrls from pg_roles where rolname = 'actorbase_app'`
    expect(role).toEqual({ rolsuper: false, rolbypassrls: false })

    const asApp = <T>(orgId: string | null, query: (tx: typeof a.sql) => Promise<T>) =>
      a.sql.begin(async (tx) => {
        await tx`set local role actorbase_app`
        if (orgId) await tx`select set_config('app.org_id', ${orgId}, true)`
        return query(tx as unknown as typeof a.sql)
      })
    // No organization set: nothing at all, though both tenants have rows.
    expect(await asApp(null, (tx) => tx`select id from projects`)).toHaveLength(0)
    const seen = await asApp(one.orgId, (tx) => tx<{ orgId: string }[]>`select org_id as "orgId" from projects`)
    expect(seen.map((r) => r.orgId)).toEqual([one.orgId])
    // Nor can it write into another tenant.
    await expect(asApp(one.orgId, (tx) => tx`insert into projects (id, org_id, name) values (gen_random_uuid(), ${two.orgId}, 'smuggled')`)).rejects.toThrow(/row-level security/)
    await expect(asApp(one.orgId, (tx) => tx`set row_security = off`.then(() => tx`select id from projects`))).rejects.toThrow(/row-level security/)
  })
})

describe('audit log and jobs', () => {
  test('every change leaves one audit row with its actor and request id, newest first, in pages', async () => {
    const owner = await register(a.url)
    const org = await createOrg(a.url, owner)
    const auth = bearer(owner.accessToken)
    const base = `/v1/orgs/${org.id}/projects`
    const rid = (n: number) => ({ 'x-request-id': `audit-${org.id}-${n}` })
    const p = await expectJson<ProjectView>(await send(a, auth, 'POST', base, { name: 'Audited' }, rid(1)), 201)
    await expectJson(await send(b, auth, 'PATCH', `${base}/${p.id}`, { name: 'Renamed' }, rid(2)), 200)
    await expectJson(await send(a, auth, 'POST', `${base}/${p.id}/export`, undefined, rid(3)), 202)
    expect((await send(b, auth, 'DELETE', `${base}/${p.id}`, undefined, rid(4))).status).toBe(204)

    type Entry = { action: string; requestId: string; actor: { type: string; id: string }; target: { id: string }; changes: Record<string, unknown> }
    const first = await expectJson<Page<Entry>>(await send(a, auth, 'GET', `/v1/orgs/${org.id}/audit-log?limit=3`), 200)
    const rest = await expectJson<Page<Entry>>(await send(a, auth, 'GET', `/v1/orgs/${org.id}/audit-log?limit=3&cursor=${first.nextCursor}`), 200)
    expect(rest.nextCursor).toBeNull()
    const entries = [...first.items, ...rest.items]
    expect(entries.map((e) => [e.action, e.requestId])).toEqual([
      ['project.deleted', `audit-${org.id}-4`],
      ['project.export_requested', `audit-${org.id}-3`],
      ['project.updated', `audit-${org.id}-2`],
      ['project.created', `audit-${org.id}-1`],
      ['org.created', expect.any(String)],
    ])
    expect(entries[2]).toMatchObject({ actor: { type: 'user', id: owner.user.id }, target: { id: p.id }, changes: { name: { from: 'Audited', to: 'Renamed' } } })
  })

  test('an export answers 202 with a job whose record is readable by members only', async () => {
    const t = await tenant()
    const outsider = bearer((await register(a.url)).accessToken)
    const p = await createProject(a.url, t.orgId, t.auth)
    const { jobId } = await expectJson<{ jobId: string }>(await send(a, t.auth, 'POST', `${t.base}/${p.id}/export`), 202)
    // The export runs on a worker: the job record follows it to `succeeded`, and its result names the export.
    const done = await eventually(
      async () => expectJson<{ status: string; attempts: number; result?: { location: string; projects: number } }>(await send(b, t.auth, 'GET', `/v1/jobs/${jobId}`), 200),
      (j) => j.status === 'succeeded',
      10_000,
      'the export job to finish',
    )
    expect(done).toMatchObject({ id: jobId, name: 'projects.export', attempts: 1, result: { projects: 1, location: expect.stringMatching(`^/v1/orgs/${t.orgId}/exports/`) } })
    const exported = await expectJson<{ orgId: string; projects: { id: string }[] }>(await send(a, t.auth, 'GET', done.result!.location), 200)
    expect(exported).toMatchObject({ orgId: t.orgId, projects: [expect.objectContaining({ id: p.id })] })
    await problem(await send(a, outsider, 'GET', done.result!.location), 404, 'not_found')
    await problem(await send(b, outsider, 'GET', `/v1/jobs/${jobId}`), 404, 'not_found')
    await problem(await send(b, t.auth, 'GET', '/v1/jobs/01900000-0000-7000-8000-000000000000'), 404, 'not_found')
  })
})

describe('Postgres outage', () => {
  let proxy: TcpProxy
  let node: TestNode
  beforeAll(async () => {
    let url: string
    ;({ proxy, url } = await proxyFor(inject('databaseUrl'), 5432))
    node = await startTestNode({ NAMESPACE: `${inject('namespace')}_projdb`, DATABASE_URL: url })
  })
  afterAll(async () => {
    await node.shutdown()
    await proxy.close()
  })

  test('writes answer 503 quickly while Postgres is away, write nothing, and work again when it is back', async () => {
    const t = await tenant(node)
    await createProject(node.url, t.orgId, t.auth)
    await proxy.cut()
    const started = performance.now()
    await problem(await send(node, t.auth, 'POST', t.base, { name: 'during outage' }), 503, 'unavailable')
    expect(performance.now() - started).toBeLessThan(2_000)
    await proxy.restore()
    // The first request after the outage may still meet a connection that died in the cut; the next works.
    let res = await send(node, t.auth, 'POST', t.base, { name: 'after outage' })
    if (res.status === 503) res = await send(node, t.auth, 'POST', t.base, { name: 'after outage' })
    expect(res.status).toBe(201)
    const names = (await a.sql<{ name: string }[]>`select name from projects where org_id = ${t.orgId}`).map((r) => r.name)
    expect(names).not.toContain('during outage')
    expect(names).toContain('after outage')
  })
})
