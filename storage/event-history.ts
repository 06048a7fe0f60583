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
    const lastSeq = decode(last.data).seq
    if (lastSeq <= since) return { expired: false, events: [], lastSeq }
    const consumer = await js.consumers.get(stream, { filter_subjects: subject, deliver_policy: DeliverPolicy.All })
    const events: ChannelEvent[] = []
    let first = true
    // consume() hands messages over as they come, so reading stops at the last one instead of waiting out a
    // fetch's expiry for a batch that will not fill.
    const messages = await consumer.consume({ max_messages: 256 })
    try {
      for await (const m of messages) {
        const e = decode(m.data)
        // The oldest event kept is already past the one the client needs next.
        if (first && e.seq > since + 1) return { expired: true }
        first = false
        if (e.seq > since && e.seq <= lastSeq && (events.length === 0 || e.seq > events.at(-1)!.seq)) events.push(e)
        if (e.seq >= lastSeq) break
      }
    } finally {
      messages.stop()
      await consumer.delete().catch(() => undefined)
    }
    return { expired: false, events, lastSeq }
  }
}

export type EventHistory = ReturnType<typeof createEventHistory>
