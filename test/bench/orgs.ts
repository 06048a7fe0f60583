import { randomBytes } from 'node:crypto'
import {
  expectResponse,
  median,
  portLine,
  round,
  startRawAndOurs,
  startServer,
  withIsolated,
  type BenchSettings,
  type ResultRow,
  type Scenario,
  type ScenarioResult,
  type ServerProcess,
} from './harness.js'
import { runWrkMeasured, wrkRow, type MeasuredRun as Run, type WrkOptions } from './wrk.js'

const RAW_TARGET = 0.4
const PEER_GET_TARGET = 2
const PEER_POST_TARGET = 1.5
const password = 'correct horse battery staple'
const projectFields = ['id', 'orgId', 'teamId', 'name', 'description', 'status', 'version', 'createdAt', 'updatedAt'] as const

/**
 * The organizations example resource under load: authenticated `GET /v1/orgs/:orgId/projects/:id` (RBAC
 * checked, served from the org actor's memory) against a raw uWebSockets.js hello world and against the same
 * endpoint written as a typical Fastify 5 service (test/bench/peers/fastify-projects.ts: jose on every
 * request, roles and row read from Postgres); then `POST /v1/orgs/:orgId/projects` (project and audit row in
 * one transaction; ours group-commits concurrent writes) against the peer doing the same in `sql.begin`.
 * Every pair is measured back to back in rounds with the same wrk settings; ratios are medians of the pairs.
 */
const scenario: Scenario = {
  name: 'orgs',
  description: 'GET/POST org projects (RBAC, audit) vs raw uWS and a typical Fastify 5 + jose + postgres.js peer',
  run: (settings, log) =>
    withIsolated(log, async (isolated, servers) => {
      // A long token lifetime so that long runs (BENCH_DURATION, BENCH_ROUNDS) never measure 401s.
      const { raw, ours } = await startRawAndOurs(isolated, servers, { ACCESS_TOKEN_TTL_S: '86400' })
      // The peer starts after ours: ours migrated the database and serves the public keys it verifies with.
      const peer = await startServer({
        name: 'fastify peer',
        script: 'test/bench/peers/fastify-projects.ts',
        args: [`${ours.url}/.well-known/jwks.json`],
        env: { ...isolated.env, HOST: '127.0.0.1', PORT: '0' },
        portFrom: portLine,
      })
      servers.push(peer)
      log(`raw on ${raw.url}, ours on ${ours.url}, peer on ${peer.url}`)
      await expectResponse(`${raw.url}/health`, 200, '{"status":"ok"}')
      const world = await buildWorld(ours.url)
      await checkAnswers(world, ours.url, peer.url)
      log(`org ${world.orgId}, project ${world.projectId}; ours and the peer answer alike`)
      return await measure(settings, log, { raw, ours, peer }, world)
    }),
}

export default scenario

// ---------------------------------------------------------------------------------------------------------
// The world: an owner with two organizations (ours writes into one, the peer into the other, so our org
// actor's memory stays what is in its tables) and an outsider who belongs to neither.

interface World {
  owner: Record<string, string>
  outsider: Record<string, string>
  orgId: string
  peerOrgId: string
  projectId: string
  postBody: string
}

interface Answer {
  status: number
  body: unknown
}

async function call(method: 'GET' | 'POST', url: string, headers: Record<string, string> = {}, body?: unknown): Promise<Answer> {
  const res = await fetch(url, {
    method,
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(10_000),
  })
  const text = await res.text()
  let parsed: unknown = text
  try {
    parsed = JSON.parse(text)
  } catch {
    // Not JSON: kept as text for the error message.
  }
  return { status: res.status, body: parsed }
}

async function expectStatus(what: string, answer: Promise<Answer>, status: number): Promise<Record<string, unknown>> {
  const a = await answer
  if (a.status !== status || typeof a.body !== 'object' || a.body === null) {
    throw new Error(`${what} answered ${a.status} ${JSON.stringify(a.body)}, expected ${status}`)
  }
  return a.body as Record<string, unknown>
}

async function register(base: string, name: string): Promise<Record<string, string>> {
  const email = `bench-${randomBytes(6).toString('hex')}@example.com`
  const body = await expectStatus(`register ${name}`, call('POST', `${base}/v1/auth/register`, {}, { email, password, name }), 201)
  return { authorization: `Bearer ${String(body.accessToken)}` }
}

async function buildWorld(ours: string): Promise<World> {
  const owner = await register(ours, 'Bench Owner')
  const outsider = await register(ours, 'Bench Outsider')
  const createOrg = async (label: string) => {
    const slug = `bench-${label}-${randomBytes(4).toString('hex')}`
    const org = await expectStatus(`POST /v1/orgs (${label})`, call('POST', `${ours}/v1/orgs`, owner, { name: `Bench ${label}`, slug }), 201)
    return String(org.id)
  }
  const orgId = await createOrg('ours')
  const peerOrgId = await createOrg('peer')
  const body = { name: 'Benchmark project', description: 'created under load' }
  const project = await expectStatus('POST project', call('POST', `${ours}/v1/orgs/${orgId}/projects`, owner, body), 201)
  return { owner, outsider, orgId, peerOrgId, projectId: String(project.id), postBody: JSON.stringify(body) }
}

/** Never benchmark an error page: both sides answer the owner alike and refuse the outsider. */
async function checkAnswers(w: World, ours: string, peer: string): Promise<void> {
  const path = `/v1/orgs/${w.orgId}/projects/${w.projectId}`
  const mine = await expectStatus(`ours GET ${path}`, call('GET', `${ours}${path}`, w.owner), 200)
  const theirs = await expectStatus(`peer GET ${path}`, call('GET', `${peer}${path}`, w.owner), 200)
  const differs = projectFields.filter((f) => JSON.stringify(mine[f]) !== JSON.stringify(theirs[f]))
  if (differs.length) throw new Error(`the peer's project differs from ours in ${differs.join(', ')}: ${JSON.stringify(theirs)} vs ${JSON.stringify(mine)}`)
  const body = JSON.parse(w.postBody) as unknown
  const created = [
    await expectStatus('ours POST project', call('POST', `${ours}/v1/orgs/${w.orgId}/projects`, w.owner, body), 201),
    await expectStatus('peer POST project', call('POST', `${peer}/v1/orgs/${w.peerOrgId}/projects`, w.owner, body), 201),
  ]
  for (const p of created) {
    const missing = projectFields.filter((f) => !(f in p))
    if (missing.length) throw new Error(`a created project lacks ${missing.join(', ')}: ${JSON.stringify(p)}`)
  }
  for (const [side, base, org] of [['ours', ours, w.orgId], ['peer', peer, w.peerOrgId]] as const) {
    await expectStatus(`${side} GET as outsider`, call('GET', `${base}${path}`, w.outsider), 404)
    await expectStatus(`${side} POST as outsider`, call('POST', `${base}/v1/orgs/${org}/projects`, w.outsider, body), 404)
    const anonymous = await call('GET', `${base}${path}`)
    if (anonymous.status !== 401) throw new Error(`${side} GET without a token answered ${anonymous.status}, expected 401`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// Measuring

interface Servers {
  raw: ServerProcess
  ours: ServerProcess
  peer: ServerProcess
}

async function measure(settings: BenchSettings, log: (line: string) => void, s: Servers, w: World): Promise<ScenarioResult> {
  const wrk = (server: ServerProcess, path: string, extra: Partial<WrkOptions>): Promise<Run> =>
    runWrkMeasured(server, { url: `${server.url}${path}`, threads: settings.threads, connections: settings.connections, durationSec: settings.durationSec, ...extra }, settings.warmupSec)
  const getPath = `/v1/orgs/${w.orgId}/projects/${w.projectId}`
  const auth = { headers: w.owner }
  const runs = { raw: [] as Run[], oursGet: [] as Run[], peerGet: [] as Run[], oursPost: [] as Run[], peerPost: [] as Run[] }
  const say = (n: number, what: string, r: Run) =>
    log(
      `round ${n}/${settings.rounds} ${what.padEnd(9)} ${Math.round(r.requestsPerSec)} req/s, p50 ${r.latencyP50Ms} ms, p99 ${r.latencyP99Ms} ms, ${r.errors} errors` +
        (r.cpuUsPerReq === undefined ? '' : `, server CPU ${r.cpuUsPerReq.toFixed(1)} µs/req`),
    )
  for (let n = 1; n <= settings.rounds; n++) {
    runs.raw.push(await wrk(s.raw, '/health', {}))
    say(n, 'raw', runs.raw.at(-1)!)
    runs.oursGet.push(await wrk(s.ours, getPath, auth))
    say(n, 'ours GET', runs.oursGet.at(-1)!)
    runs.peerGet.push(await wrk(s.peer, getPath, auth))
    say(n, 'peer GET', runs.peerGet.at(-1)!)
  }
  for (let n = 1; n <= settings.rounds; n++) {
    runs.oursPost.push(await wrk(s.ours, `/v1/orgs/${w.orgId}/projects`, { ...auth, postJson: w.postBody }))
    say(n, 'ours POST', runs.oursPost.at(-1)!)
    runs.peerPost.push(await wrk(s.peer, `/v1/orgs/${w.peerOrgId}/projects`, { ...auth, postJson: w.postBody }))
    say(n, 'peer POST', runs.peerPost.at(-1)!)
  }

  const pairs = (a: readonly Run[], b: readonly Run[]) => a.map((r, i) => r.requestsPerSec / b[i]!.requestsPerSec)
  const ratios = [
    { key: 'oursToRaw', what: 'ours GET ÷ raw', target: RAW_TARGET, pairs: pairs(runs.oursGet, runs.raw) },
    { key: 'oursToPeerGet', what: 'ours GET ÷ peer GET', target: PEER_GET_TARGET, pairs: pairs(runs.oursGet, runs.peerGet) },
    { key: 'oursToPeerPost', what: 'ours POST ÷ peer POST', target: PEER_POST_TARGET, pairs: pairs(runs.oursPost, runs.peerPost) },
  ].map((r) => ({ ...r, ratio: median(r.pairs) }))
  const all = Object.values(runs).flat()
  const errors = all.reduce((sum, r) => sum + r.errors, 0)
  const pass = ratios.every((r) => r.ratio >= r.target)

  const rows: ResultRow[] = [
    ...runs.raw.map((r, i) => wrkRow(`raw uWS GET /health run ${i + 1}`, r)),
    ...runs.oursGet.map((r, i) => wrkRow(`ours GET project run ${i + 1}`, r)),
    ...runs.peerGet.map((r, i) => wrkRow(`fastify GET project run ${i + 1}`, r)),
    ...runs.oursPost.map((r, i) => wrkRow(`ours POST project run ${i + 1}`, r, 'txn + audit')),
    ...runs.peerPost.map((r, i) => wrkRow(`fastify POST project run ${i + 1}`, r, 'txn + audit')),
  ]
  const medianRps = (r: readonly Run[]) => Math.round(median(r.map((x) => x.requestsPerSec)))
  return {
    rows,
    headline:
      ratios
        .map((r) => `${r.what} = ${r.ratio.toFixed(2)} (pairs ${r.pairs.map((p) => p.toFixed(2)).join(', ')}; target >= ${r.target}): ${r.ratio >= r.target ? 'pass' : 'MISSED'}`)
        .join('; ') + (errors ? `; ${errors} wrk errors (non-2xx or socket)` : ''),
    summary: {
      scenario: 'orgs',
      pass,
      ...Object.fromEntries(ratios.map((r) => [r.key, round(r.ratio, 3)])),
      targets: Object.fromEntries(ratios.map((r) => [r.key, r.target])),
      rawRps: medianRps(runs.raw),
      oursGetRps: medianRps(runs.oursGet),
      peerGetRps: medianRps(runs.peerGet),
      oursPostRps: medianRps(runs.oursPost),
      peerPostRps: medianRps(runs.peerPost),
      errors,
      runs: settings.rounds,
      durationSec: settings.durationSec,
      connections: settings.connections,
      threads: settings.threads,
    },
  }
}
