import { Gauge, type Registry } from 'prom-client'
import { parseChannel } from '../core/events.js'
import type { Logger } from '../core/log.js'
import { channelsBehind, prunePublished, relayLagSeconds } from '../storage/outbox.js'
import type { Sql } from '../storage/postgres.js'
import type { ActorSystem } from './system.js'

export interface OutboxRelayOptions {
  sql: Sql
  actors: ActorSystem
  log: Logger
  registry: Registry
  intervalMs: number
  /** Published rows are kept this long in Postgres (the stream holds the history clients resume from). */
  retentionHours?: number
}

/**
 * Finds events committed but not published (their node died between commit and publish, or NATS was away)
 * and asks the channel's owning actor to flush them: publishing stays with the single writer of the channel,
 * so the stream receives each channel's events in order.
 */
export function startOutboxRelay(o: OutboxRelayOptions): { stop(): Promise<void> } {
  const lag = new Gauge({ name: 'events_relay_lag_seconds', help: 'Age of the oldest committed event not yet published', registers: [o.registry] })
  let stopped = false
  let lastPrune = 0
  let running: Promise<void> = Promise.resolve()

  const tick = async () => {
    lag.set(await relayLagSeconds(o.sql))
    for (const channel of await channelsBehind(o.sql, o.intervalMs, 200)) {
      const parsed = parseChannel(channel)
      if (!parsed) continue
      await o.actors.ask(parsed.kind, parsed.id, { type: 'outbox.flush' }, { timeoutMs: 5_000 }).catch((err: unknown) => o.log.warn({ err, channel }, 'outbox flush failed'))
    }
    if (Date.now() - lastPrune > 10 * 60_000) {
      lastPrune = Date.now()
      await prunePublished(o.sql, o.retentionHours ?? 24)
    }
  }
  const timer = setInterval(() => {
    running = running.then(() => (stopped ? undefined : tick().catch((err: unknown) => o.log.warn({ err }, 'outbox relay pass failed'))))
  }, o.intervalMs)
  timer.unref()
  return {
    async stop() {
      stopped = true
      clearInterval(timer)
      await running
    },
  }
}
