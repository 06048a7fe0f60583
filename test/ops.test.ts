import { randomBytes, randomUUID } from 'node:crypto'
import { existsSync } from 'node:fs'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { chromium, type BrowserContext, type Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { z } from 'zod'
import { defineJob, PermanentJobError } from '../actors/jobs/define.js'
import { eventually } from './support/eventually.js'
import { problem } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { scratchDatabase } from './support/services.js'

const chromiumPath = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'
// As the machine notes say: without the background-networking flags Chromium keeps trying hosts this closed
// network refuses.
const chromiumArgs = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
]

const opsToken = randomBytes(24).toString('base64url') // 32 characters
const queue = 'ops-test'

/** Jobs that fail for good (straight to dead) until the test lets them succeed. */
const healed = new Set<string>()
const flaky = defineJob({
  name: 'test.ops.flaky',
  queue,
  schema: z.object({ label: z.string() }).strict(),
  maxAttempts: 1,
  run: async (payload, ctx) => {
    if (!healed.has(ctx.id)) throw new PermanentJobError(`boom: ${payload.label} cannot be processed`)
    return { ok: true }
  },
})

interface OpsJob {
  id: string
  name: string
  queue: string
  status: string
  attempts: number
  maxAttempts: number
  error: string | null
  orgId: string | null
  updatedAt: string
}
interface OpsJobs {
  queues: { queue: string; depth: number; running: number; succeeded: number; failed: number; dead: number }[]
  recent: OpsJob[]
}

let node: TestNode
let database: { url: string; drop: () => Promise<void> }

beforeAll(async () => {
  // A database of its own: counts and the recent list hold only this suite's jobs, whatever else runs at once.
  database = await scratchDatabase(inject('databaseUrl'))
  node = await startTestNode({ NAMESPACE: `${inject('namespace')}_ops`, DATABASE_URL: database.url, OPS_TOKEN: opsToken }, { jobs: () => [flaky] })
})
afterAll(async () => {
  await node?.shutdown()
  await database?.drop()
})

const auth = { authorization: `Bearer ${opsToken}` }
const get = (path: string, headers: Record<string, string> = auth) => fetch(`${node.url}${path}`, { headers, redirect: 'manual' })
const post = (path: string, headers: Record<string, string> = auth, body?: unknown) =>
  fetch(`${node.url}${path}`, {
    method: 'POST',
    redirect: 'manual',
    headers: body === undefined ? headers : { ...headers, 'content-type': 'application/json' },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  })

async function jobsApi(query = ''): Promise<OpsJobs> {
  const res = await get(`/ops/api/jobs${query}`)
  expect(res.status).toBe(200)
  return (await res.json()) as OpsJobs
}

/** Enqueues a job that fails for good and waits until the ops API shows it dead. */
async function deadJob(label: string): Promise<OpsJob> {
  const { id } = await node.jobs.enqueue({ name: flaky.name, payload: { label } })
  const data = await eventually(() => jobsApi(), (d) => d.recent.some((j) => j.id === id && j.status === 'dead'), 10_000, `job ${id} dead`)
  return data.recent.find((j) => j.id === id)!
}

async function signIn(): Promise<string> {
  const res = await post('/ops/session', {}, { token: opsToken })
  expect(res.status).toBe(303)
  const cookie = res.headers.get('set-cookie')!
  return cookie.split(';')[0]!
}

describe('ops: access', () => {
  test('without OPS_TOKEN configured, every /ops route is a 404 problem', async () => {
    const bare = await startTestNode({ NAMESPACE: `${inject('namespace')}_ops0`, ROLES: 'gateway' })
    try {
      for (const [method, path] of [
        ['GET', '/ops/jobs'],
        ['GET', '/ops/api/jobs'],
        ['POST', '/ops/session'],
        ['POST', `/ops/api/jobs/${randomUUID()}/retry`],
      ] as const) {
        const res = await fetch(`${bare.url}${path}`, { method, headers: { ...auth, 'content-type': 'application/json' }, ...(method === 'POST' ? { body: JSON.stringify({ token: opsToken }) } : {}) })
        await problem(res, 404, 'not_found')
      }
    } finally {
      await bare.shutdown()
    }
  })

  test('API calls need the bearer token or a session; a wrong token is 401', async () => {
    await problem(await get('/ops/api/jobs', {}), 401, 'auth.unauthenticated')
    await problem(await get('/ops/api/jobs', { authorization: `Bearer ${opsToken.slice(1)}x` }), 401, 'auth.invalid_token')
    await problem(await post(`/ops/api/jobs/${randomUUID()}/retry`, {}), 401, 'auth.unauthenticated')
    await problem(await post('/ops/session', {}, { token: 'not-the-operator-token' }), 401, 'auth.invalid_token')
    const data = await jobsApi()
    expect(data.queues.find((q) => q.queue === queue)).toBeDefined()
  })

  test('sign-in sets an HttpOnly, SameSite=Strict session cookie that is not the token; logout clears it', async () => {
    const res = await post('/ops/session', {}, { token: opsToken })
    expect(res.status).toBe(303)
    expect(res.headers.get('location')).toBe('/ops/jobs')
    const setCookie = res.headers.get('set-cookie')!
    expect(setCookie).toMatch(/^ops_session=\d+\.[\w-]{43}; Path=\/ops; Max-Age=43200; HttpOnly; SameSite=Strict$/)
    expect(setCookie).not.toContain(opsToken)
    const cookie = setCookie.split(';')[0]!

    expect((await get('/ops/api/jobs', { cookie })).status).toBe(200)
    const page = await get('/ops/jobs', { cookie })
    expect(page.status).toBe(200)
    expect(await page.text()).toContain('id="jobs"')
    expect(await (await get('/ops/jobs', {})).text()).toContain('id="signin"')

    // A cookie with its signature altered, or one past its expiry (re-signed is impossible without the token).
    const [expiry, mac] = cookie.slice('ops_session='.length).split('.') as [string, string]
    const forged = `ops_session=${expiry}.${mac.startsWith('A') ? 'B' : 'A'}${mac.slice(1)}`
    await problem(await get('/ops/api/jobs', { cookie: forged }), 401, 'auth.unauthenticated')
    await problem(await get('/ops/api/jobs', { cookie: `ops_session=${Number(expiry) + 10}.${mac}` }), 401, 'auth.unauthenticated')

    const out = await post('/ops/session/logout', { cookie })
    expect(out.status).toBe(303)
    expect(out.headers.get('set-cookie')).toMatch(/^ops_session=; Path=\/ops; Max-Age=0;/)
  })

  test('the pages carry a strict policy of their own beside the global one; only the API is in OpenAPI', async () => {
    const res = await get('/ops/jobs', {})
    const csp = res.headers.get('content-security-policy')!
    expect(csp).toContain("script-src 'self'")
    expect(csp).toContain("default-src 'none'")
    expect(csp).toMatch(/style-src 'sha256-[A-Za-z0-9+/=]+'/)
    expect(res.headers.get('cache-control')).toBe('no-store')
    const html = await res.text()
    expect(html).not.toMatch(/<script>|https?:\/\//)

    const openapi = (await (await fetch(`${node.url}/openapi.json`)).json()) as { paths: Record<string, unknown> }
    expect(Object.keys(openapi.paths)).toEqual(expect.arrayContaining(['/ops/api/jobs', '/ops/api/jobs/{id}/retry', '/ops/session']))
    expect(openapi.paths['/ops/jobs']).toBeUndefined()
  })
})

describe('ops: jobs API', () => {
  test('a dead job is listed with its attempts and error, counted, filtered, and retried by id', async () => {
    const job = await deadJob('api')
    expect(job).toMatchObject({ name: flaky.name, queue, status: 'dead', attempts: 1, maxAttempts: 1, error: 'boom: api cannot be processed', orgId: null })

    const { queues, recent } = await jobsApi('?status=dead')
    expect(recent.every((j) => j.status === 'dead')).toBe(true)
    expect(recent.map((j) => j.id)).toContain(job.id)
    expect(queues.find((q) => q.queue === queue)!.dead).toBeGreaterThanOrEqual(1)
    await problem(await get('/ops/api/jobs?status=zombie'), 400, 'validation.failed')

    await problem(await post(`/ops/api/jobs/${randomUUID()}/retry`), 404, 'not_found')
    await problem(await post('/ops/api/jobs/not-a-uuid/retry'), 404, 'not_found')

    const cookie = await signIn()
    const res = await post(`/ops/api/jobs/${job.id}/retry`, { cookie })
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({ id: job.id, status: 'queued', attempts: 0, error: null })
    await problem(await post(`/ops/api/jobs/${job.id}/retry`), 409, 'conflict')

    // Still failing: dead again, after one more attempt of the new generation.
    await eventually(() => jobsApi(), (d) => d.recent.some((j) => j.id === job.id && j.status === 'dead'), 10_000, 'dead again')
    const [row] = await node.sql<{ generation: number; attempts: number }[]>`select generation, attempts from jobs where id = ${job.id}`
    expect(row).toEqual({ generation: 1, attempts: 1 })
  })
})

describe('ops: the page in a real browser', () => {
  let context: BrowserContext | undefined
  let profile: string | undefined
  let shots: string
  const cspViolations: string[] = []
  const pageErrors: string[] = []

  // Launched by the test rather than in beforeAll, so a missing browser is a failed test that CI counts as one.
  async function openBrowser(): Promise<Page> {
    if (!existsSync(chromiumPath)) {
      throw new Error(`Chromium is not at ${chromiumPath}: install Debian's chromium package (bash deploy/services.sh does), or set CHROMIUM_PATH`)
    }
    profile = await mkdtemp(join(tmpdir(), 'ops-chromium-profile-'))
    shots = await mkdtemp(join(tmpdir(), 'ops-screenshots-'))
    context = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, headless: true, args: chromiumArgs, timeout: 30_000 })
    const page = context.pages()[0] ?? (await context.newPage())
    page.on('console', (m) => {
      if (/content security policy/i.test(m.text())) cspViolations.push(m.text())
    })
    page.on('pageerror', (e) => pageErrors.push(e.message))
    return page
  }
  afterAll(async () => {
    await context?.close()
    if (profile) await rm(profile, { recursive: true, force: true })
  })

  test('sign in, see the dead job with its error and attempts, click Retry and watch it succeed', async () => {
    const page = await openBrowser()
    const job = await deadJob('browser')

    await page.goto(`${node.url}/ops/jobs`)
    await page.locator('#token').fill('wrong-token-wrong-token')
    await page.getByRole('button', { name: 'Sign in' }).click()
    await expect.poll(() => page.locator('#error').textContent()).toContain('not the operator token')

    await page.locator('#token').fill(opsToken)
    await page.getByRole('button', { name: 'Sign in' }).click()
    await page.waitForURL(`${node.url}/ops/jobs`)

    const queueRow = page.locator(`#queues tr[data-queue="${queue}"]`)
    await queueRow.waitFor({ timeout: 5_000 })
    await expect.poll(() => queueRow.locator('td.dead').textContent()).not.toBe('0')

    const row = page.locator(`#jobs tr[data-id="${job.id}"]`)
    await row.waitFor({ timeout: 5_000 })
    expect(await row.locator('.status').textContent()).toBe('dead')
    expect(await row.locator('td.attempts').textContent()).toBe('1 / 1')
    expect(await row.locator('td.error').textContent()).toBe('boom: browser cannot be processed')
    await page.screenshot({ path: join(shots, 'ops-jobs-dead.png'), fullPage: true })

    // The next run of this job succeeds; the click queues it again and the page follows it to the end.
    healed.add(job.id)
    await row.getByRole('button', { name: 'Retry' }).click()
    await page.locator(`#jobs tr[data-id="${job.id}"][data-status="succeeded"]`).waitFor({ timeout: 10_000 })
    expect(await row.locator('td.attempts').textContent()).toBe('1 / 1')
    expect(await row.locator('td.error').textContent()).toBe('')
    expect(await row.getByRole('button', { name: 'Retry' }).isVisible()).toBe(false)
    await expect.poll(() => queueRow.locator('td.succeeded').textContent()).not.toBe('0')

    const [record] = await node.sql<{ status: string; generation: number }[]>`select status, generation from jobs where id = ${job.id}`
    expect(record).toEqual({ status: 'succeeded', generation: 1 })

    const shot = join(shots, 'ops-jobs-retried.png')
    await page.screenshot({ path: shot, fullPage: true })
    expect((await stat(shot)).size).toBeGreaterThan(1_000)
    expect(cspViolations).toEqual([])
    expect(pageErrors).toEqual([])
  })
})
