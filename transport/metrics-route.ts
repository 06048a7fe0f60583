import type { Registry } from '../core/metrics.js'
import { defineRoute, type Route } from './route.js'

export function metricsRoute(registry: Registry): Route {
  return defineRoute({
    method: 'get',
    path: '/metrics',
    operationId: 'metrics',
    summary: 'Prometheus metrics in text exposition format',
    tags: ['ops'],
    responses: { 200: { description: 'metrics', contentType: 'text/plain; version=0.0.4' } },
    handler: async () => ({ status: 200, contentType: registry.contentType, data: await registry.metrics() }),
  })
}
