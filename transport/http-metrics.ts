import type { Registry } from 'prom-client'

const buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

interface StatusSeries {
  count: number
  sum: number
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  buckets: Float64Array
}

/** The request statistics of one method and route pattern. Recording is a few array writes: no label hashing. */
export class RouteSeries {
  readonly byStatus = new Map<number, StatusSeries>()
  constructor(
    readonly method: string,
    readonly route: string,
  ) {}

  record(status: number, seconds: number): void {
    let series = this.byStatus.get(status)
    if (!series) {
      series = { count: 0, sum: 0, buckets: new Float64Array(buckets.length + 1) }
      this.byStatus.set(status, series)
    }
    series.count++
    series.sum += seconds
    let i = 0
    while (i < buckets.length && seconds > buckets[i]!) i++
    series.buckets[i]!++
  }
}

export interface RequestRecorder {
  series(method: string, route: string): RouteSeries
}

type Labels = Record<string, string | number>
interface Sample {
  labels: Labels
  value: number
  metricName?: string
}

/**
 * `http_requests_total` and `http_request_duration_seconds`, kept as plain numbers per (method, route, status)
 * and turned into Prometheus samples only when scraped. prom-client's own Counter and Histogram hash the label
 * set on every call, which cost a measurable share of a request on the hot path.
 */
export function createRequestRecorder(registry: Registry): RequestRecorder {
  const all = new Map<string, RouteSeries>()
  const each = function* () {
    for (const route of all.values()) for (const [status, s] of route.byStatus) yield { labels: { method: route.method, route: route.route, status: String(status) }, s }
  }
  const metric = (name: string, help: string, type: 'counter' | 'histogram', values: () => Sample[]) => ({
    name,
    help,
    type,
    aggregator: 'sum',
    get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
    reset: () => {},
  })
  // prom-client's registry takes any object with this shape (its own metrics are no more than that).
  const register = (m: ReturnType<typeof metric>) => registry.registerMetric(m as unknown as Parameters<Registry['registerMetric']>[0])
  register(
    metric('http_requests_total', 'HTTP requests answered, by method, route pattern and status', 'counter', () =>
      [...each()].map(({ labels, s }) => ({ labels, value: s.count })),
    ),
  )
  register(
    metric('http_request_duration_seconds', 'HTTP request time from first byte to response, by method, route pattern and status', 'histogram', () => {
      const out: Sample[] = []
      for (const { labels, s } of each()) {
        let cumulative = 0
        buckets.forEach((le, i) => {
          cumulative += s.buckets[i]!
          out.push({ labels: { ...labels, le }, value: cumulative, metricName: 'http_request_duration_seconds_bucket' })
        })
        out.push({ labels: { ...labels, le: '+Inf' }, value: s.count, metricName: 'http_request_duration_seconds_bucket' })
        out.push({ labels, value: s.sum, metricName: 'http_request_duration_seconds_sum' })
        out.push({ labels, value: s.count, metricName: 'http_request_duration_seconds_count' })
      }
      return out
    }),
  )
  return {
    series(method, route) {
      const key = `${method} ${route}`
      let series = all.get(key)
      if (!series) {
        series = new RouteSeries(method, route)
        all.set(key, series)
      }
      return series
    },
  }
}
