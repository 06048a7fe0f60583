import { Counter, Histogram, type Registry } from 'prom-client'

export interface RequestRecorder {
  record(method: string, route: string, status: number, seconds: number): void
}

export function createRequestRecorder(registry: Registry): RequestRecorder {
  const total = new Counter({
    name: 'http_requests_total',
    help: 'HTTP requests answered, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'],
    registers: [registry],
  })
  const duration = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP request time from first byte to response, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers: [registry],
  })
  // prom-client hashes the label set on every call; a child per (method, route, status) is looked up once.
  const children = new Map<string, { inc: () => void; observe: (v: number) => void }>()
  return {
    record(method, route, status, seconds) {
      const key = `${method} ${route} ${status}`
      let child = children.get(key)
      if (!child) {
        const labels = { method, route, status: String(status) }
        const counter = total.labels(labels)
        const histogram = duration.labels(labels)
        child = { inc: () => counter.inc(), observe: (v) => histogram.observe(v) }
        children.set(key, child)
      }
      child.inc()
      child.observe(seconds)
    },
  }
}
