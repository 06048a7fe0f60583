import { connect, nanos, type NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy, type JetStreamManager, type StreamConfig } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { withTimeout } from '../core/timeout.js'

export type { NatsConnection }

export interface NatsOptions {
  url: string
  name: string
  connectTimeoutMs: number
}

/** Connects once (failing after the timeout) and then reconnects for ever: a NATS restart is an outage, not an exit. */
export async function connectNats(options: NatsOptions, log: Logger): Promise<NatsConnection> {
  const nc = await connect({
    servers: options.url,
    name: options.name,
    timeout: options.connectTimeoutMs,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    pingInterval: 10_000,
    // Request errors are rethrown as our own (timeout, moved, unavailable): nats.js's async stack traces
    // (Error objects captured on every request) would only cost CPU.
    noAsyncTraces: true,
  })
  void (async () => {
    for await (const status of nc.status()) {
      if (status.type === 'disconnect' || status.type === 'reconnect' || status.type === 'error') {
        log.warn({ nats: status.type }, `nats ${status.type}`)
      }
    }
  })()
  return nc
}

export async function pingNats(nc: NatsConnection, timeoutMs: number): Promise<number> {
  if (nc.isClosed()) throw new Error('nats connection is closed')
  return withTimeout(nc.rtt(), timeoutMs, 'nats ping')
}

export interface StreamSettings {
  eventsMaxAgeHours: number
  /** History kept per channel (events per subject); older ones go first. */
  eventsMaxPerChannel: number
  leaseTtlMs: number
  /** How long a presence entry outlives its node's last heartbeat in storage (readers drop it sooner). */
  presenceTtlMs?: number
}

/**
 * Declares the streams and KV buckets this namespace needs; safe to run on every start and from several
 * nodes at once. Options are limited to what nats-server 2.9 understands.
 */
export async function ensureStreams(nc: NatsConnection, names: Names, settings: StreamSettings): Promise<void> {
  const jsm = await jetstreamManager(nc)
  await ensureStream(jsm, {
    name: names.eventsStream,
    subjects: [names.eventsSubjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    discard: DiscardPolicy.Old,
    max_age: nanos(settings.eventsMaxAgeHours * 3_600_000),
    max_msgs_per_subject: settings.eventsMaxPerChannel,
    duplicate_window: nanos(2 * 60_000),
  })
  await ensureStream(jsm, {
    name: names.jobsStream,
    subjects: [names.jobsSubjects],
    retention: RetentionPolicy.Workqueue,
    storage: StorageType.File,
    duplicate_window: nanos(10 * 60_000),
  })
  await ensureStream(jsm, {
    name: names.deadJobsStream,
    subjects: [names.deadJobsSubjects],
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    max_age: nanos(30 * 24 * 3_600_000),
  })
  await new Kvm(nc).create(names.presenceBucket, { history: 1, ttl: Math.max(60_000, (settings.presenceTtlMs ?? 15_000) * 4) })
  await new Kvm(nc).create(names.leasesBucket, { history: 1, ttl: settings.leaseTtlMs })
  // `create` leaves an existing bucket as it was: bring its TTL in line with the configuration.
  const leases = await jsm.streams.info(`KV_${names.leasesBucket}`)
  const ttl = nanos(settings.leaseTtlMs)
  if (leases.config.max_age !== ttl) {
    // JetStream refuses a duplicate window longer than the max age, so a shorter TTL shortens it too.
    await jsm.streams.update(leases.config.name, { ...leases.config, max_age: ttl, duplicate_window: Math.min(leases.config.duplicate_window, ttl) })
  }
}

async function ensureStream(jsm: JetStreamManager, config: Partial<StreamConfig> & { name: string }): Promise<void> {
  try {
    await jsm.streams.add(config)
  } catch (err) {
    // Already there (possibly declared by another node a moment ago): bring its settings up to date.
    if (!isStreamExists(err)) throw err
    await jsm.streams.update(config.name, config)
  }
}

function isStreamExists(err: unknown): boolean {
  return err instanceof Error && /already in use|stream name already/i.test(err.message)
}

/** Removes every stream and bucket of a namespace; used by tests and by operators retiring an install. */
export async function dropStreams(nc: NatsConnection, names: Names): Promise<void> {
  const jsm = await jetstreamManager(nc)
  for (const stream of [names.eventsStream, names.jobsStream, names.deadJobsStream, `KV_${names.leasesBucket}`, `KV_${names.presenceBucket}`]) {
    await jsm.streams.delete(stream).catch(() => false)
  }
}

/** Removes the streams and buckets of every namespace that starts with `prefix` (a test run and its sub-namespaces). */
export async function dropStreamsWithPrefix(nc: NatsConnection, prefix: string): Promise<string[]> {
  const jsm = await jetstreamManager(nc)
  const doomed: string[] = []
  for await (const info of jsm.streams.list()) {
    const name = info.config.name
    if (name.startsWith(`${prefix}`) || name.startsWith(`KV_${prefix}`)) doomed.push(name)
  }
  for (const name of doomed) await jsm.streams.delete(name).catch(() => false)
  return doomed
}
