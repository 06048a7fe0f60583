import { Agent, request, type IncomingHttpHeaders } from 'node:http'
import { expect, inject, test } from 'vitest'
import { exited, logLine, spawnMain } from './support/child.js'
import { startTestNode } from './support/node.js'
import { probeRoutes } from './support/probe-routes.js'

test('shutdown turns readiness off, stops listening and lets an in-flight request finish', async () => {
  let open!: () => void
  let entered!: () => void
  const inHandler = new Promise<void>((r) => (entered = r))
  const gate = { wait: new Promise<void>((r) => (open = r)), entered }
  const node = await startTestNode({ SHUTDOWN_TIMEOUT_MS: '5000' }, { routes: () => probeRoutes(gate) })

  const slow = fetch(`${node.url}/test/slow`)
  await inHandler
  const stopped = node.shutdown()
  let finished = false
  void stopped.then(() => (finished = true))

  expect(node.server.draining).toBe(true)
  // The listen socket is closed: a new connection is refused, so load balancers move on.
  await expect(fetch(`${node.url}/health`, { headers: { connection: 'close' } })).rejects.toThrow()
  expect(finished).toBe(false)

  open()
  const res = await slow
  expect(res.status).toBe(200)
  expect(await res.json()).toEqual({ done: true })
  await stopped
  expect(node.server.inFlight).toBe(0)
})

test('readiness answers 503 on an open connection while draining', async () => {
  let open!: () => void
  let entered!: () => void
  const inHandler = new Promise<void>((r) => (entered = r))
  const node = await startTestNode({}, { routes: () => probeRoutes({ wait: new Promise<void>((r) => (open = r)), entered }) })
  // One kept-alive socket: the readiness probe after shutdown starts travels on the connection already open.
  const agent = new Agent({ keepAlive: true, maxSockets: 1 })
  expect((await get(`${node.url}/health/ready`, agent)).status).toBe(200)
  const slow = fetch(`${node.url}/test/slow`)
  await inHandler
  const stopped = node.shutdown()
  const draining = await get(`${node.url}/health/ready`, agent)
  expect(draining.status).toBe(503)
  expect(draining.body).toMatchObject({ status: 'degraded', checks: { node: { status: 'draining' } } })
  expect(draining.headers.connection).toBe('close')
  open()
  await slow
  await stopped
  agent.destroy()
})

function get(url: string, agent: Agent): Promise<{ status: number; body: unknown; headers: IncomingHttpHeaders }> {
  return new Promise((resolve, reject) => {
    request(url, { agent }, (res) => {
      let data = ''
      res.on('data', (chunk: Buffer) => (data += chunk.toString()))
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: JSON.parse(data), headers: res.headers }))
    })
      .on('error', reject)
      .end()
  })
}

test('SIGTERM stops the program cleanly with exit code 0', async () => {
  const child = spawnMain({
    DATABASE_URL: inject('databaseUrl'),
    NAMESPACE: inject('namespace'),
    PORT: '0',
    HOST: '127.0.0.1',
  })
  const result = exited(child)
  const started = await logLine(child, 'node started')
  const res = await fetch(`http://127.0.0.1:${String(started.port)}/health`)
  expect(res.status).toBe(200)
  child.kill('SIGTERM')
  const exit = await result
  expect(exit.code).toBe(0)
  expect(exit.stdout).toMatch(/"msg":"node stopped"/)
})
