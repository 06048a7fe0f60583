import type { Registry } from 'prom-client'
import { plainHistogram, type PlainSeries } from '../core/plain-metrics.js'

const buckets = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]

/** The request statistics of one method and route pattern, one series per status. */
export class RouteSeries {
  private readonly byStatus = new Map<number, PlainSeries>()
  constructor(
    readonly method: string,
    readonly route: string,
    private readonly histogram: ReturnType<typeof plainHistogram>,
  ) {}

  record(status: number, seconds: number): void {
    let series = this.byStatus.get(status)
    if (!series) {
      series = this.histogram.series(this.method, this.route, String(status))
      this.byStatus.set(status, series)
    }
    series.observe(seconds)
  }
}

export interface RequestRecorder {
  series(method: string, route: string): RouteSeries
}

/** `http_requests_total` and `http_request_duration_seconds`, as plain numbers (see plainHistogram). */
export function createRequestRecorder(registry: Registry): RequestRecorder {
  const all = new Map<string, RouteSeries>()
  const histogram = plainHistogram(registry, {
    name: 'http_request_duration_seconds',
    help: 'HTTP request time from first byte to response, by method, route pattern and status',
    labelNames: ['method', 'route', 'status'],
    buckets,
    counter: { name: 'http_requests_total', help: 'HTTP requests answered, by method, route pattern and status' },
  })
  return {
    series(method, route) {
      const key = `${method} ${route}`
      let series = all.get(key)
      if (!series) {
        series = new RouteSeries(method, route, histogram)
        all.set(key, series)
      }
      return series
    },
  }
}
