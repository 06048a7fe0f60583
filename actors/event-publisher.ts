import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { parseChannel, type ChannelEvent } from '../core/events.js'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { markPublished, unpublishedEvents } from '../storage/outbox.js'
import type { Sql } from '../storage/postgres.js'

export interface EventPublisher {
  /** Hands committed events over for publishing, in order per channel; returns at once. */
  publish(events: readonly ChannelEvent[]): void
  /** Publishes whatever the outbox still holds unpublished for the channel, in order (after a crash or outage). */
  flush(channel: string): Promise<void>
  /** Resolves once everything handed over so far has been published or given up on. */
  settled(): Promise<void>
}

/**
 * Publishes outbox events to JetStream, one ordered chain per channel. The message id is the event id, so a
 * re-publish (a retry, or the next owner flushing what a crashed one may already have sent) is dropped by the
 * stream's duplicate window. When a publish fails, the channel stops publishing directly: its later events
 * stay in the outbox until a flush sends everything in order, so the stream never holds a later event before
 * an earlier one.
 */
export function createEventPublisher(o: { nc: NatsConnection; names: Names; sql: Sql; log: Logger; timeoutMs?: number }): EventPublisher {
  const js: JetStreamClient = jetstream(o.nc, { timeout: o.timeoutMs ?? 2_000 })
  const chains = new Map<string, Promise<void>>()
  const broken = new Set<string>()

  const subject = (channel: string) => {
    const parsed = parseChannel(channel)
    if (!parsed) throw new Error(`not a channel: ${channel}`)
    return o.names.eventSubject(parsed.kind, parsed.id)
  }
  // Rows are marked published in batches a few milliseconds apart, not one statement per change: the mark only
  // tells the relay what it need not look at, and a row published but not yet marked is at worst published
  // again, which the stream drops as a duplicate.
  let marks: string[] = []
  let marking: NodeJS.Timeout | undefined
  const flushMarks = () => {
    marking = undefined
    const ids = marks
    marks = []
    markPublished(o.sql, ids).catch((err: unknown) => o.log.warn({ err, events: ids.length }, 'published events not marked; the relay will re-publish them'))
  }
  const send = async (channel: string, events: readonly ChannelEvent[]) => {
    // One at a time, each acknowledged before the next: were several in flight and an earlier one lost, the
    // later ones would be stored first and the stream would hold the channel out of order.
    for (const e of events) await js.publish(subject(channel), JSON.stringify(e), { msgID: e.id })
    for (const e of events) marks.push(e.id)
    marking ??= setTimeout(flushMarks, 10)
  }
  const enqueue = (channel: string, work: () => Promise<void>): Promise<void> => {
    const next = (chains.get(channel) ?? Promise.resolve()).then(work).catch((err: unknown) => {
      broken.add(channel)
      o.log.warn({ err, channel }, 'events not published; they stay in the outbox for the relay')
    })
    chains.set(channel, next)
    void next.then(() => {
      if (chains.get(channel) === next) chains.delete(channel)
    })
    return next
  }

  return {
    publish(events) {
      const byChannel = new Map<string, ChannelEvent[]>()
      for (const e of events) byChannel.set(e.channel, [...(byChannel.get(e.channel) ?? []), e])
      for (const [channel, list] of byChannel) {
        void enqueue(channel, async () => {
          if (!broken.has(channel)) await send(channel, list)
        })
      }
    },
    flush(channel) {
      return enqueue(channel, async () => {
        // Paged by number: the marks of what was just sent may not have reached Postgres yet.
        let after = 0
        for (;;) {
          const pending = await unpublishedEvents(o.sql, channel, 500, after)
          if (pending.length === 0) break
          await send(channel, pending)
          after = pending.at(-1)!.seq
        }
        broken.delete(channel)
      })
    },
    async settled() {
      while (chains.size > 0) await Promise.all(chains.values())
      if (marking) {
        clearTimeout(marking)
        const ids = marks
        marks = []
        marking = undefined
        await markPublished(o.sql, ids).catch(() => undefined)
      }
    },
  }
}
