import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { plainHistogram, type PlainSeries } from '../core/plain-metrics.js'

export interface ActorMetrics {
  active: Gauge<'kind'>
  /** `actor_handler_seconds` by kind and outcome, with `actor_messages_total` counting the same (plain numbers). */
  handled: { series(kind: string, outcome: string): PlainSeries }
  batchSize: Histogram<'kind'>
  mailboxDepth: Gauge
  activations: Counter<'kind'>
  passivations: Counter<'kind'>
  fencingConflicts: Counter<'kind'>
  partitionsOwned: Gauge
  leaseRenewFailures: Counter
  leasesLost: Counter
}

export function createActorMetrics(registry: Registry): ActorMetrics {
  const registers = [registry]
  return {
    active: new Gauge({ name: 'actors_active', help: 'Actors in memory, by kind', labelNames: ['kind'], registers }),
    handled: plainHistogram(registry, {
      name: 'actor_handler_seconds',
      help: 'Time in an actor handler, by kind and outcome',
      labelNames: ['kind', 'outcome'],
      buckets: [0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5],
      counter: { name: 'actor_messages_total', help: 'Messages handled, by kind and outcome' },
    }),
    batchSize: new Histogram({
      name: 'actor_batch_size',
      help: 'Messages handled together as one group (group commit), by kind',
      labelNames: ['kind'],
      buckets: [2, 4, 8, 16, 32, 64, 128],
      registers,
    }),
    mailboxDepth: new Gauge({ name: 'actor_mailbox_depth', help: 'Messages waiting in actor mailboxes on this node', registers }),
    activations: new Counter({ name: 'actor_activations_total', help: 'Actor activations (state loaded), by kind', labelNames: ['kind'], registers }),
    passivations: new Counter({ name: 'actor_passivations_total', help: 'Actor passivations, by kind', labelNames: ['kind'], registers }),
    fencingConflicts: new Counter({
      name: 'actor_fencing_conflicts_total',
      help: 'Writes refused because a newer version existed (a stale activation), by kind',
      labelNames: ['kind'],
      registers,
    }),
    partitionsOwned: new Gauge({ name: 'actor_partitions_owned', help: 'Partitions whose lease this node holds', registers }),
    leaseRenewFailures: new Counter({ name: 'actor_lease_renew_failures_total', help: 'Partition lease renewals that failed', registers }),
    leasesLost: new Counter({ name: 'actor_leases_lost_total', help: 'Partitions dropped because their lease could not be kept', registers }),
  }
}
