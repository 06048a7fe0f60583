import { randomBytes } from 'node:crypto'
import postgres from 'postgres'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { startTestNode, type TestNode } from './support/node.js'
import { eventually } from './support/eventually.js'
import { bearer, register } from './support/identity.js'
import { call, createOrg, createProject, expectJson } from './support/orgs.js'
import { natsUrl, redisUrl } from './support/services.js'
import { proxyFor, type TcpProxy } from './support/tcp-proxy.js'

describe('health endpoints', () => {
  let node: TestNode
  beforeAll(async () => {
    node = await startTestNode()
  })
  afterAll(() => node.shutdown())

  test('/health is 200 while the process lives', async () => {
    const res = await fetch(`${node.url}/health`)
    expect(res.status).toBe(200)
    expect(await res.json()).toEqual({ status: 'ok' })
  })

  test('/health/db reports the Postgres round trip', async () => {
    const res = await fetch(`${node.url}/health/db`)
    expect(res.status).toBe(200)
    const body = (await res.json()) as { status: string; latencyMs: number }
    expect(body.status).toBe('ok')
    expect(body.latencyMs).toBeGreaterThanOrEqual(0)
  })

  test('/health/ready checks every dependency and the node', async () => {
    const res = await fetch(`${node.url}/health/ready`)
    expect(res.status).toBe(200)
    expect(await res.json()).toMatchObject({
      status: 'ok',
      checks: { postgres: { status: 'ok' }, nats: { status: 'ok' }, redis: { status: 'ok' }, node: { status: 'ready' } },
    })
  })
})

describe('Postgres outage', () => {
  let proxy: TcpProxy
  let node: TestNode
  beforeAll(async () => {
    let url: string
    ;({ proxy, url } = await proxyFor(inject('databaseUrl'), 5432))
    node = await startTestNode({ DATABASE_URL: url })
  })
  afterAll(async () => {
    await node.shutdown()
    await proxy.close()
  })

  const timed = async (path: string) => {
    const started = performance.now()
    const res = await fetch(`${node.url}${path}`)
    return { res, ms: performance.now() - started, body: (await res.json()) as Record<string, unknown> }
  }

  test('answers 503 within 2 s while Postgres is unreachable and 200 again after it returns, without a restart', async () => {
    expect((await timed('/health/db')).res.status).toBe(200)

    await proxy.cut()
    const down = await timed('/health/db')
    expect(down.res.status).toBe(503)
    expect(down.ms).toBeLessThan(2_000)
    expect(down.body).toMatchObject({ code: 'unavailable', status: 503 })
    const ready = await timed('/health/ready')
    expect(ready.res.status).toBe(503)
    expect(ready.ms).toBeLessThan(2_000)
    expect(ready.body).toMatchObject({ status: 'degraded', checks: { postgres: { status: 'down' }, nats: { status: 'ok' }, redis: { status: 'ok' } } })
    // The process itself is still alive and serving.
    expect((await timed('/health')).res.status).toBe(200)

    await proxy.restore()
    // The pool reconnects on the next query; the first one may still see a connection that died in the cut.
    let back = await timed('/health/db')
    for (let i = 0; i < 5 && back.res.status !== 200; i++) back = await timed('/health/db')
    expect(back.res.status).toBe(200)
    expect((await timed('/health/ready')).res.status).toBe(200)
  })
})

describe('Postgres answers lost on an open connection', () => {
  let proxy: TcpProxy
  let node: TestNode
  beforeAll(async () => {
    let url: string
    ;({ proxy, url } = await proxyFor(inject('databaseUrl'), 5432))
    // One pooled connection: every query goes to the one whose answer gets lost (no workers role, whose
    // scheduler would keep a connection of its own).
    node = await startTestNode({
      DATABASE_URL: url,
      NAMESPACE: `${inject('namespace')}_silent`,
      ROLES: 'gateway,actors',
      DB_POOL_MAX: '1',
      DB_SILENCE_TIMEOUT_MS: '1000',
    })
  })
  afterAll(async () => {
    await proxy.close()
    await node.shutdown()
  })

  test('the silent connection is given up, so once Postgres answers again nothing waits behind the lost answer', async () => {
    expect((await fetch(`${node.url}/health/db`)).status).toBe(200)
    proxy.blackhole()
    const down = await fetch(`${node.url}/health/db`)
    expect(down.status).toBe(503)
    await proxy.restore()
    // Without the silence limit the lost answer would hold the connection, and every later query pipelined
    // on it, until TCP gave up: /health/db would stay 503.
    const started = performance.now()
    await eventually(
      async () => (await fetch(`${node.url}/health/db`)).status,
      (status) => status === 200,
      5_000,
      'Postgres checks to pass again',
    )
    expect(performance.now() - started).toBeLessThan(3_000)
  })
})

describe('a statement that waits on a lock longer than the silence limit', () => {
  const nodeId = `lockwait-${randomBytes(4).toString('hex')}`
  let node: TestNode
  let holder: postgres.Sql
  beforeAll(async () => {
    node = await startTestNode({ NAMESPACE: `${inject('namespace')}_lockwait`, NODE_ID: nodeId, ROLES: 'gateway,actors', DB_SILENCE_TIMEOUT_MS: '500' })
    holder = postgres(inject('databaseUrl'), { max: 2, onnotice: () => {} })
  })
  afterAll(async () => {
    await holder.end({ timeout: 1 })
    await node.shutdown()
  })

  /** This node's Postgres sessions still waiting for a lock, whether or not the node still has their connection. */
  const waiting = async () =>
    (await holder<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where application_name = ${`actorbase-${nodeId}`} and wait_event_type = 'Lock'`)[0]!.n

  test('is cancelled on the server when the node gives up on it, so failed requests leave no session waiting behind them', async () => {
    const owner = await register(node.url)
    const auth = bearer(owner.accessToken)
    const org = await createOrg(node.url, owner)
    const project = await createProject(node.url, org.id, auth, { name: 'Locked' })
    const rename = (name: string) => call(node.url, auth, { method: 'PATCH', path: `/v1/orgs/${org.id}/projects/${project.id}`, body: { name } })

    // Another session holds the project's row, as a long maintenance transaction might.
    const lock = await holder.reserve()
    try {
      await lock`begin`
      await lock`select id from projects where id = ${project.id} for update`
      for (const name of ['First', 'Second', 'Third']) {
        const started = performance.now()
        const res = await rename(name)
        expect(res.status).toBe(503)
        expect(await res.json()).toMatchObject({ code: 'unavailable' })
        expect(performance.now() - started).toBeLessThan(3_000)
      }
      // Without the cancel each failed request would leave its session queued for the lock until the holder
      // finished, keeping a connection slot of Postgres (and any locks it held) for all that time.
      await eventually(waiting, (n) => n === 0, 3_000, 'the abandoned statements to be cancelled')
      expect((await fetch(`${node.url}/health/db`)).status).toBe(200)
    } finally {
      await lock`rollback`
      lock.release()
    }

    const renamed = await expectJson<{ name: string; version: number }>(await rename('Free'), 200)
    // The three failed renames changed nothing: this is the project's first change.
    expect(renamed).toMatchObject({ name: 'Free', version: project.version + 1 })
  })
})

describe.each([
  ['Redis', 'REDIS_URL', 'redis'],
  ['NATS', 'NATS_URL', 'nats'],
] as const)('%s outage', (_name, variable, check) => {
  let proxy: TcpProxy
  let node: TestNode
  beforeAll(async () => {
    let url: string
    ;({ proxy, url } = await proxyFor(variable === 'REDIS_URL' ? redisUrl : natsUrl, variable === 'REDIS_URL' ? 6379 : 4222))
    node = await startTestNode({ [variable]: url })
  })
  afterAll(async () => {
    await node.shutdown()
    await proxy.close()
  })

  test('readiness turns 503 within 2 s, liveness stays 200, and both recover without a restart', async () => {
    expect((await fetch(`${node.url}/health/ready`)).status).toBe(200)
    await proxy.cut()
    const started = performance.now()
    const res = await fetch(`${node.url}/health/ready`)
    expect(performance.now() - started).toBeLessThan(2_000)
    expect(res.status).toBe(503)
    expect(await res.json()).toMatchObject({ status: 'degraded', checks: { [check]: { status: 'down' }, postgres: { status: 'ok' } } })
    expect((await fetch(`${node.url}/health`)).status).toBe(200)

    await proxy.restore()
    // The clients reconnect on their own backoff; readiness follows.
    await eventually(async () => (await fetch(`${node.url}/health/ready`)).status, (s) => s === 200, 10_000, 'readiness to recover')
  })
})
