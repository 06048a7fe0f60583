import { Validator } from '@seriousme/openapi-schema-validator'
import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestNode, type TestNode } from './support/node.js'
import { probeRoutes } from './support/probe-routes.js'

let node: TestNode
beforeAll(async () => {
  node = await startTestNode({}, { routes: () => probeRoutes() })
})
afterAll(() => node.shutdown())

interface Doc {
  openapi: string
  paths: Record<string, Record<string, { requestBody?: { content: Record<string, { schema: Record<string, unknown> }> }; parameters: { name: string; in: string }[]; responses: Record<string, unknown> }>>
}

test('/openapi.json is a valid OpenAPI 3.1 document', async () => {
  const res = await fetch(`${node.url}/openapi.json`)
  expect(res.status).toBe(200)
  const doc = (await res.json()) as Doc
  expect(doc.openapi).toBe('3.1.0')
  const result = await new Validator().validate(doc as never)
  expect(result.errors ?? []).toEqual([])
  expect(result.valid).toBe(true)
})

test('the document is generated from the schemas the routes validate with', async () => {
  const doc = (await (await fetch(`${node.url}/openapi.json`)).json()) as Doc
  expect(Object.keys(doc.paths)).toEqual(expect.arrayContaining(['/health', '/health/db', '/health/ready', '/metrics', '/openapi.json', '/docs']))
  const create = doc.paths['/test/widgets']!.post!
  expect(create.requestBody!.content['application/json']!.schema).toMatchObject({
    type: 'object',
    required: ['name', 'size'],
    properties: { name: { type: 'string', minLength: 1, maxLength: 50 }, size: { type: 'integer' } },
  })
  expect(Object.keys(create.responses)).toEqual(expect.arrayContaining(['201', '400', '413', '415']))
  expect(doc.paths['/test/widgets/{id}']!.get!.parameters).toEqual([expect.objectContaining({ name: 'id', in: 'path' })])
  expect(doc.paths['/test/widgets']!.get!.parameters).toEqual([expect.objectContaining({ name: 'limit', in: 'query', required: false })])
  // Static assets of the docs page are routes too, but not part of the API.
  expect(Object.keys(doc.paths).some((p) => p.startsWith('/docs/assets'))).toBe(false)
})

test('/docs renders the document for people, with no outside assets and no inline script', async () => {
  const res = await fetch(`${node.url}/docs`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/html/)
  const html = await res.text()
  const assets = [...html.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!)
  expect(assets.length).toBeGreaterThanOrEqual(3)
  for (const asset of assets) {
    expect(asset.startsWith('/')).toBe(true)
    const loaded = await fetch(`${node.url}${asset}`)
    expect(loaded.status).toBe(200)
    expect((await loaded.text()).length).toBeGreaterThan(10)
  }
  expect(html).not.toMatch(/<script>[^<]/)
  expect(await (await fetch(`${node.url}/docs/assets/init.js`)).text()).toContain("'/openapi.json'")
})
