import { jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { Gauge, Histogram, type Registry } from 'prom-client'
import { plainHistogram, type PlainSeries } from '../core/plain-metrics.js'
import type { Names } from '../core/names.js'

export interface JobMetrics {
  /** Jobs running in this process per queue: counted here as plain numbers, read when scraped. */
  running: Map<string, number>
  /** `job_duration_seconds` and `jobs_finished_total` by queue, job and status (succeeded, failed, dead). */
  attempts: { series(queue: string, name: string, status: string): PlainSeries }
  pickup: Histogram
}

/**
 * Job metrics; queue depth is read from JetStream when scraped (messages waiting per durable consumer), so it
 * is the cluster's depth, not this process's.
 */
export function createJobMetrics(registry: Registry, nc: NatsConnection, names: Names): JobMetrics {
  const registers = [registry]
  new Gauge({
    name: 'jobs_queue_depth',
    help: 'Jobs waiting on the queue, by queue and priority (cluster-wide)',
    labelNames: ['queue', 'priority'],
    registers,
    async collect() {
      this.reset()
      try {
        const jsm = await jetstreamManager(nc)
        for await (const c of jsm.consumers.list(names.jobsStream)) {
          const m = /^w_(.+)_(high|default|low)$/.exec(c.name)
          if (m) this.labels(m[1]!, m[2]!).set(c.num_pending + c.num_ack_pending)
        }
      } catch {
        // NATS away: the gauge is left empty for this scrape rather than failing /metrics.
      }
    },
  })
  const running = new Map<string, number>()
  new Gauge({
    name: 'jobs_running',
    help: 'Jobs running in this process, by queue',
    labelNames: ['queue'],
    registers,
    collect() {
      for (const [queue, n] of running) this.labels(queue).set(n)
    },
  })
  return {
    running,
    // Plain numbers: prom-client's labelled metrics hash their labels on every call, several times per job.
    attempts: plainHistogram(registry, {
      name: 'job_duration_seconds',
      help: 'Time a job attempt ran, by queue, job and how it ended',
      labelNames: ['queue', 'name', 'status'],
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30, 120],
      counter: { name: 'jobs_finished_total', help: 'Job attempts that ended, by queue, job and status (succeeded, failed, dead)' },
    }),
    pickup: new Histogram({
      name: 'job_pickup_latency_seconds',
      help: 'From a job being queued to a worker receiving it',
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5],
      registers,
    }),
  }
}
