import { DeliverPolicy, jetstream, jetstreamManager, type JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import type { ChannelEvent } from '../core/events.js'

export type HistoryAnswer = { expired: false; events: ChannelEvent[]; lastSeq: number } | { expired: true }

const decode = (data: Uint8Array) => JSON.parse(new TextDecoder().decode(data)) as ChannelEvent

/**
 * A channel's events after `since`, read from the JetStream events stream (the history clients resume
 * from). `expired` when events after `since` existed but are no longer kept. `lastSeq` is the channel's last
 * event in the stream; events published later are the live feed's.
 */
export function createEventHistory(nc: NatsConnection, stream: string, currentSeq: (channel: string) => Promise<number>) {
  let jsm: JetStreamManager | undefined
  const js = jetstream(nc)
  return async function read(channel: string, subject: string, since: number): Promise<HistoryAnswer> {
    jsm ??= await jetstreamManager(nc)
    const last = await jsm.streams.getMessage(stream, { last_by_subj: subject }).catch((err: unknown) => {
      if (err instanceof Error && /no message found/i.test(err.message)) return null
      throw err
    })
    if (!last) {
      // Nothing kept: fine when nothing happened after `since`, expired otherwise.
      return since >= (await currentSeq(channel)) ? { expired: false, events: [], lastSeq: since } : { expired: true }
    }
    const lastInStream = last.seq
    if (decode(last.data).seq <= since) return { expired: false, events: [], lastSeq: decode(last.data).seq }
    const consumer = await js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All })
    // Keyed by number: should a channel's events ever be stored out of order, they still come back sorted
    // and once each.
    const bySeq = new Map<number, ChannelEvent>()
    let oldest = Number.POSITIVE_INFINITY
    // consume() hands messages over as they come, so reading stops at the last one instead of waiting out a
    // fetch's expiry for a batch that will not fill.
    const messages = await consumer.consume({ max_messages: 256 })
    try {
      for await (const m of messages) {
        const e = decode(m.data)
        oldest = Math.min(oldest, e.seq)
        if (e.seq > since) bySeq.set(e.seq, e)
        if (m.info.streamSequence >= lastInStream) break
      }
    } finally {
      messages.stop()
      await consumer.delete().catch(() => undefined)
    }
    // The oldest event kept is already past the one the client needs next.
    if (oldest > since + 1) return { expired: true }
    const events = [...bySeq.values()].sort((a, b) => a.seq - b.seq)
    return { expired: false, events, lastSeq: events.at(-1)?.seq ?? since }
  }
}

export type EventHistory = ReturnType<typeof createEventHistory>
