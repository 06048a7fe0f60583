import { afterAll, beforeAll, expect, test } from 'vitest'
import { startTestNode, type TestNode } from './support/node.js'

let node: TestNode
beforeAll(async () => {
  node = await startTestNode()
})
afterAll(() => node.shutdown())

const scrape = async () => {
  const res = await fetch(`${node.url}/metrics`)
  expect(res.status).toBe(200)
  expect(res.headers.get('content-type')).toMatch(/^text\/plain/)
  return res.text()
}

const sample = (text: string, name: string, labels: string) => {
  const line = text.split('\n').find((l) => l.startsWith(`${name}{`) && labels.split(',').every((p) => l.includes(p)))
  return line ? Number(line.split(' ').pop()) : 0
}

test('requests are counted and timed by method, route pattern and status', async () => {
  const before = await scrape()
  for (let i = 0; i < 3; i++) await fetch(`${node.url}/health`)
  await fetch(`${node.url}/no/such/path`)
  const after = await scrape()
  const ok = 'method="get",route="/health",status="200"'
  expect(sample(after, 'http_requests_total', ok) - sample(before, 'http_requests_total', ok)).toBe(3)
  expect(sample(after, 'http_request_duration_seconds_count', ok) - sample(before, 'http_request_duration_seconds_count', ok)).toBe(3)
  expect(sample(after, 'http_requests_total', 'route="unmatched",status="404"')).toBeGreaterThanOrEqual(1)
})

test('process, event loop and Postgres metrics are exported', async () => {
  await fetch(`${node.url}/health/db`)
  const text = await scrape()
  for (const name of ['process_cpu_seconds_total', 'nodejs_eventloop_lag_seconds', 'nodejs_heap_size_used_bytes', 'db_pool_max', 'db_query_duration_seconds_bucket', 'db_queries_in_flight']) {
    expect(text).toContain(`\n${name}`)
  }
  expect(sample(text, 'db_query_duration_seconds_count', 'query="health",outcome="ok"')).toBeGreaterThanOrEqual(1)
  expect(text).toMatch(new RegExp(`node="${node.config.nodeId}"`))
})
