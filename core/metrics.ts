import { Registry, collectDefaultMetrics } from 'prom-client'

export type { Registry }

/** One registry per process (or per in-process test node): every floor registers its own metrics on it. */
export function createRegistry(labels: Record<string, string>): Registry {
  const registry = new Registry()
  registry.setDefaultLabels(labels)
  // Process CPU, memory, handles and event-loop lag (nodejs_eventloop_lag_*), sampled by prom-client.
  collectDefaultMetrics({ register: registry, eventLoopMonitoringPrecision: 20 })
  return registry
}
