import type { Registry } from 'prom-client'

/** One label combination's observations: a few array writes per observation, no label hashing. */
export class PlainSeries {
  count = 0
  sum = 0
  /** Per-bucket (not cumulative) counts; the last slot is +Inf. */
  readonly buckets: Float64Array
  constructor(private readonly bounds: readonly number[]) {
    this.buckets = new Float64Array(bounds.length + 1)
  }
  observe(value: number): void {
    this.count++
    this.sum += value
    let i = 0
    while (i < this.bounds.length && value > this.bounds[i]!) i++
    this.buckets[i]!++
  }
}

type Labels = Record<string, string | number>
interface Sample {
  labels: Labels
  value: number
  metricName?: string
}

export interface PlainHistogramOptions {
  name: string
  help: string
  labelNames: readonly string[]
  buckets: readonly number[]
  /** Also expose the observation counts as this counter (requests, messages). */
  counter?: { name: string; help: string }
}

/**
 * A histogram (and optionally a counter of the same observations) kept as plain numbers per label set and
 * turned into Prometheus samples only when scraped. prom-client's own Counter and Histogram hash the label
 * set on every call, a measurable share of a request or an actor message on the hot paths. Callers keep the
 * series they get, so recording costs no lookup either.
 */
export function plainHistogram(registry: Registry, o: PlainHistogramOptions): { series(...labelValues: string[]): PlainSeries } {
  const all = new Map<string, { labels: Labels; s: PlainSeries }>()
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
  if (o.counter) register(metric(o.counter.name, o.counter.help, 'counter', () => [...all.values()].map(({ labels, s }) => ({ labels, value: s.count }))))
  register(
    metric(o.name, o.help, 'histogram', () => {
      const out: Sample[] = []
      for (const { labels, s } of all.values()) {
        let cumulative = 0
        o.buckets.forEach((le, i) => {
          cumulative += s.buckets[i]!
          out.push({ labels: { ...labels, le }, value: cumulative, metricName: `${o.name}_bucket` })
        })
        out.push({ labels: { ...labels, le: '+Inf' }, value: s.count, metricName: `${o.name}_bucket` })
        out.push({ labels, value: s.sum, metricName: `${o.name}_sum` })
        out.push({ labels, value: s.count, metricName: `${o.name}_count` })
      }
      return out
    }),
  )
  return {
    series(...values) {
      const key = values.join('\u0000')
      let entry = all.get(key)
      if (!entry) {
        entry = { labels: Object.fromEntries(o.labelNames.map((n, i) => [n, values[i] ?? ''])), s: new PlainSeries(o.buckets) }
        all.set(key, entry)
      }
      return entry.s
    },
  }
}
