import { Agent, request } from 'node:http'
import { afterAll, beforeAll, describe, expect, test } from 'vitest'
import { probeRoutes } from './support/probe-routes.js'
import { startTestNode, type TestNode } from './support/node.js'

let node: TestNode
const allowed = 'https://app.example.com'

beforeAll(async () => {
  node = await startTestNode({ CORS_ORIGINS: `${allowed},http://localhost:3000`, BODY_LIMIT_BYTES: '2048' }, { routes: () => probeRoutes() })
})
afterAll(() => node.shutdown())

const post = (path: string, body: string, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  fetch(`${node.url}${path}`, { method: 'POST', body, headers })

async function expectProblem(res: Response, status: number, code: string) {
  expect(res.status).toBe(status)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  const problem = (await res.json()) as Record<string, unknown>
  expect(problem).toMatchObject({ status, code, type: `urn:problem-type:${code}`, requestId: res.headers.get('x-request-id') })
  expect(typeof problem.title).toBe('string')
  expect(typeof problem.detail).toBe('string')
  return problem
}

describe('request validation', () => {
  test('a valid body reaches the handler', async () => {
    const res = await post('/test/widgets', JSON.stringify({ name: 'gear', size: 3 }))
    expect(res.status).toBe(201)
    expect(await res.json()).toEqual({ name: 'gear', size: 3 })
  })

  test('malformed JSON is 400 validation.malformed_json and reaches no handler', async () => {
    const before = await (await fetch(`${node.url}/test/widgets?limit=100`)).json()
    await expectProblem(await post('/test/widgets', '{"name": "gear", '), 400, 'validation.malformed_json')
    await expectProblem(await post('/test/widgets', ''), 400, 'validation.malformed_json')
    expect(await (await fetch(`${node.url}/test/widgets?limit=100`)).json()).toEqual(before)
  })

  test('an invalid body is 400 validation.failed with field errors', async () => {
    const res = await post('/test/widgets', JSON.stringify({ name: '', size: 1.5, tags: ['a', 'b', 'c', 'd'] }))
    const problem = await expectProblem(res, 400, 'validation.failed')
    const paths = (problem.errors as { path: string; message: string }[]).map((e) => e.path).sort()
    expect(paths).toEqual(['name', 'size', 'tags'])
  })

  test('a body over the limit is 413, by content-length or by what actually arrives', async () => {
    await expectProblem(await post('/test/widgets', JSON.stringify({ name: 'x'.repeat(4000), size: 1 })), 413, 'payload_too_large')
    // Chunked upload: no content-length to reject up front, so the limit applies while reading.
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(`${node.url}/test/widgets`, { method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
        res.resume()
        resolve(res.statusCode ?? 0)
      })
      req.on('error', reject)
      for (let i = 0; i < 10; i++) req.write(`${' '.repeat(500)}`)
      req.end('{}')
    })
    expect(status).toBe(413)
  })

  test('a body that is not JSON is 415', async () => {
    await expectProblem(await post('/test/widgets', 'name=gear', { 'content-type': 'application/x-www-form-urlencoded' }), 415, 'unsupported_media_type')
    await expectProblem(await post('/test/widgets', '{}', {}), 415, 'unsupported_media_type')
    const ok = await post('/test/widgets', JSON.stringify({ name: 'g', size: 1 }), { 'content-type': 'application/json; charset=utf-8' })
    expect(ok.status).toBe(201)
  })

  test('path and query parameters are validated and decoded', async () => {
    const id = '0190b6f2-3a1e-7c3d-9f00-000000000001'
    expect(await (await fetch(`${node.url}/test/widgets/${id}`)).json()).toEqual({ id })
    const bad = await expectProblem(await fetch(`${node.url}/test/widgets/not-a-uuid`), 400, 'validation.failed')
    expect(bad.errors).toEqual([expect.objectContaining({ path: 'params.id' })])
    const query = await expectProblem(await fetch(`${node.url}/test/widgets?limit=500`), 400, 'validation.failed')
    expect(query.errors).toEqual([expect.objectContaining({ path: 'query.limit' })])
    expect(((await (await fetch(`${node.url}/test/widgets?limit=2`)).json()) as { limit: number }).limit).toBe(2)
  })
})

describe('routing', () => {
  test('an unknown path is 404', async () => {
    await expectProblem(await fetch(`${node.url}/v1/nothing-here`), 404, 'not_found')
  })

  test('a wrong method on a known path is 405 with allow', async () => {
    const res = await fetch(`${node.url}/test/widgets/0190b6f2-3a1e-7c3d-9f00-000000000001`, { method: 'PUT' })
    await expectProblem(res, 405, 'method_not_allowed')
    expect(res.headers.get('allow')).toBe('GET, DELETE, HEAD, OPTIONS')
  })

  test('HEAD answers like GET without a body', async () => {
    const res = await fetch(`${node.url}/health`, { method: 'HEAD' })
    expect(res.status).toBe(200)
    expect(res.headers.get('content-type')).toBe('application/json')
    expect(await res.text()).toBe('')
  })

  test('HEAD on an unknown path or a wrong method sends no body, so the kept-alive connection stays usable', async () => {
    const agent = new Agent({ keepAlive: true, maxSockets: 1 })
    const send = (method: string, path: string) =>
      new Promise<{ status: number; body: string }>((resolve, reject) => {
        request(`${node.url}${path}`, { method, agent }, (res) => {
          let body = ''
          res.on('data', (c: Buffer) => (body += c.toString()))
          res.on('end', () => resolve({ status: res.statusCode ?? 0, body }))
        })
          .on('error', reject)
          .end()
      })
    expect((await send('HEAD', '/nope')).status).toBe(404)
    expect((await send('HEAD', '/test/conflict')).body).toBe('')
    // Had a stray body been sent, this answer would be garbled on the shared socket.
    expect(await send('GET', '/health')).toEqual({ status: 200, body: '{"status":"ok"}' })
    agent.destroy()
  })

  test('a body JSON cannot express is answered 500, not left hanging', async () => {
    await expectProblem(await fetch(`${node.url}/test/bigint`), 500, 'internal')
  })

  test('204 answers carry no body', async () => {
    const res = await fetch(`${node.url}/test/widgets/x`, { method: 'DELETE' })
    expect(res.status).toBe(204)
    expect(await res.text()).toBe('')
  })

  test('an AppError keeps its code; any other error is a 500 that leaks nothing', async () => {
    await expectProblem(await fetch(`${node.url}/test/conflict`), 409, 'conflict')
    const problem = await expectProblem(await fetch(`${node.url}/test/boom`), 500, 'internal')
    expect(JSON.stringify(problem)).not.toMatch(/hunter2|db\.ts|secret/)
  })
})

describe('request ids', () => {
  test('a safe client id is echoed, a missing one generated, an unsafe one replaced', async () => {
    const echoed = await fetch(`${node.url}/health`, { headers: { 'x-request-id': 'client-123.abc' } })
    expect(echoed.headers.get('x-request-id')).toBe('client-123.abc')
    const generated = await fetch(`${node.url}/health`)
    const other = await fetch(`${node.url}/health`)
    expect(generated.headers.get('x-request-id')).toMatch(/^\S+$/)
    expect(generated.headers.get('x-request-id')).not.toBe(other.headers.get('x-request-id'))
    for (const unsafe of ['has space', 'x'.repeat(129), '<script>alert(1)</script>', 'quo"te']) {
      const res = await fetch(`${node.url}/health`, { headers: { 'x-request-id': unsafe } })
      expect(res.headers.get('x-request-id')).not.toBe(unsafe)
      expect(res.headers.get('x-request-id')).toMatch(/^[A-Za-z0-9-]+$/)
    }
  })

  test('problem documents carry the request id', async () => {
    const res = await fetch(`${node.url}/nope`, { headers: { 'x-request-id': 'trace-42' } })
    expect(((await res.json()) as { requestId: string }).requestId).toBe('trace-42')
  })
})

describe('security headers and CORS', () => {
  test("helmet's default headers are on every answer, errors included", async () => {
    for (const res of [await fetch(`${node.url}/health`), await fetch(`${node.url}/nope`)]) {
      expect(res.headers.get('x-content-type-options')).toBe('nosniff')
      expect(res.headers.get('x-frame-options')).toBe('SAMEORIGIN')
      expect(res.headers.get('strict-transport-security')).toMatch(/max-age=\d+/)
      expect(res.headers.get('content-security-policy')).toMatch(/default-src 'self'/)
      expect(res.headers.get('referrer-policy')).toBe('no-referrer')
      expect(res.headers.get('cross-origin-opener-policy')).toBe('same-origin')
      expect(res.headers.get('x-powered-by')).toBeNull()
    }
  })

  test('a preflight from an allowed origin is answered with the methods of that path', async () => {
    const res = await fetch(`${node.url}/test/widgets`, {
      method: 'OPTIONS',
      headers: { origin: allowed, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type, authorization' },
    })
    expect(res.status).toBe(204)
    expect(res.headers.get('access-control-allow-origin')).toBe(allowed)
    expect(res.headers.get('access-control-allow-methods')).toBe('POST, GET, HEAD, OPTIONS')
    expect(res.headers.get('access-control-allow-headers')).toMatch(/authorization/)
    expect(res.headers.get('access-control-allow-headers')).toMatch(/content-type/)
    expect(res.headers.get('vary')).toMatch(/Origin/)
  })

  test('a preflight from another origin is refused with 403', async () => {
    const res = await fetch(`${node.url}/test/widgets`, {
      method: 'OPTIONS',
      headers: { origin: 'https://evil.example.com', 'access-control-request-method': 'POST' },
    })
    await expectProblem(res, 403, 'cors.origin_not_allowed')
    expect(res.headers.get('access-control-allow-origin')).toBeNull()
  })

  test('actual requests get allow-origin only for allowed origins', async () => {
    const ok = await fetch(`${node.url}/health`, { headers: { origin: 'http://localhost:3000' } })
    expect(ok.headers.get('access-control-allow-origin')).toBe('http://localhost:3000')
    expect(ok.headers.get('access-control-expose-headers')).toMatch(/x-request-id/)
    const refused = await fetch(`${node.url}/health`, { headers: { origin: 'https://evil.example.com' } })
    expect(refused.headers.get('access-control-allow-origin')).toBeNull()
  })
})
