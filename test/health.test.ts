import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { startTestNode, type TestNode } from './support/node.js'
import { eventually } from './support/eventually.js'
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
