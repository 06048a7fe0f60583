import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { TemplatedApp } from 'uWebSockets.js'
import { parseChannel, type ChannelEvent } from '../core/events.js'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import type { EventHistory } from '../storage/event-history.js'
import { encodeFrame, type WireProtocol } from './ws-frames.js'
import type { WsMetrics } from './ws-metrics.js'

/** The uWebSockets.js topic a socket of `protocol` joins for `channel`: one encoding per topic. */
export const topicOf = (channel: string, protocol: WireProtocol) => `${protocol === 'json' ? 'j' : 'm'}:${channel}`

/** One event as sent to sockets; the MessagePack form is made only when a MessagePack socket needs it. */
export class Delivered {
  private packed: Uint8Array | string | undefined
  constructor(
    readonly event: ChannelEvent,
    private readonly frame: unknown,
    readonly json: string | Uint8Array,
  ) {}
  get msgpack(): string | Uint8Array {
    return (this.packed ??= encodeFrame(this.frame, 'msgpack'))
  }
}

const decoder = new TextDecoder()

const RING = 512

/**
 * One channel's live feed on this node: one NATS subscription however many sockets listen, each event
 * encoded once per wire protocol and published to the channel's uWebSockets.js topics. Events arrive in
 * order with no gap; a duplicate is dropped, and a gap (a message lost on the way) is filled from the
 * stream before anything later goes out. The last events are kept so a resuming socket can join without a
 * gap between what it replays and what it receives live.
 */
export class ChannelFeed {
  liveSeq: number | undefined
  readonly ring: Delivered[] = []
  users = 0
  private sub: Subscription | undefined
  private repairing: Promise<void> | undefined
  private held: ChannelEvent[] = []
  private waiters: { seq: number; resolve: () => void }[] = []

  constructor(
    readonly channel: string,
    readonly subject: string,
    private readonly hub: ChannelHub,
  ) {}

  async open(nc: NatsConnection): Promise<void> {
    this.sub = nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) return
        let event: ChannelEvent
        try {
          event = JSON.parse(decoder.decode(msg.data)) as ChannelEvent
        } catch {
          return
        }
        this.receive(event)
      },
    })
    // The subscription is live on the server once this round trip returns.
    await nc.flush()
  }

  close(): void {
    this.sub?.unsubscribe()
    for (const w of this.waiters.splice(0)) w.resolve()
  }

  /** Resolves once the feed has delivered `seq` (or after `timeoutMs`, when a gap repair will take over). */
  reach(seq: number, timeoutMs: number): Promise<void> {
    if (this.liveSeq !== undefined && this.liveSeq >= seq) return Promise.resolve()
    return new Promise((resolve) => {
      const waiter = { seq, resolve }
      this.waiters.push(waiter)
      setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter)
        resolve()
      }, timeoutMs).unref()
    })
  }

  private receive(event: ChannelEvent): void {
    if (this.repairing) {
      this.held.push(event)
      return
    }
    if (this.liveSeq !== undefined && event.seq <= this.liveSeq) return
    if (this.liveSeq !== undefined && event.seq > this.liveSeq + 1) {
      this.held.push(event)
      this.repairing = this.repair().finally(() => {
        this.repairing = undefined
        const held = this.held.splice(0).sort((a, b) => a.seq - b.seq)
        for (const e of held) this.receive(e)
      })
      return
    }
    this.deliver(event)
  }

  private async repair(): Promise<void> {
    const from = this.liveSeq!
    try {
      const history = await this.hub.history(this.channel, this.subject, from)
      if (history.expired) {
        this.hub.log.warn({ channel: this.channel, from }, 'events lost to this node are no longer in history; skipping ahead')
        return
      }
      for (const e of history.events) if (e.seq === (this.liveSeq ?? 0) + 1) this.deliver(e)
    } catch (err) {
      this.hub.log.warn({ err, channel: this.channel, from }, 'could not fill a gap in a channel; skipping ahead')
    }
    // Whatever could not be filled is skipped rather than stalling the channel for ever.
    const next = this.held.reduce((min, e) => Math.min(min, e.seq), Number.POSITIVE_INFINITY)
    if (this.liveSeq !== undefined && Number.isFinite(next) && next > this.liveSeq + 1) this.liveSeq = next - 1
  }

  private deliver(event: ChannelEvent): void {
    this.liveSeq = event.seq
    const frame = { type: 'event', channel: event.channel, seq: event.seq, event: { type: event.type, data: event.data, at: event.at, ...(event.requestId ? { requestId: event.requestId } : {}) } }
    const delivered = new Delivered(event, frame, encodeFrame(frame, 'json'))
    this.ring.push(delivered)
    if (this.ring.length > RING) this.ring.shift()
    this.hub.publish(this.channel, delivered)
    for (const w of this.waiters.filter((w) => w.seq <= event.seq)) w.resolve()
    this.waiters = this.waiters.filter((w) => w.seq > event.seq)
    this.hub.onEvent?.(event)
  }
}

export interface ChannelHubOptions {
  app: TemplatedApp
  nc: NatsConnection
  names: Names
  history: EventHistory
  log: Logger
  metrics: WsMetrics
}

/** Every channel some socket on this node listens to, each with its one NATS subscription. */
export class ChannelHub {
  private readonly feeds = new Map<string, ChannelFeed>()
  private readonly opening = new Map<string, Promise<ChannelFeed>>()
  /** Called for every event delivered, after the sockets got it (the session layer watches membership changes). */
  onEvent: ((event: ChannelEvent) => void) | undefined
  readonly log: Logger

  constructor(private readonly o: ChannelHubOptions) {
    this.log = o.log
  }

  history(channel: string, subject: string, since: number) {
    return this.o.history(channel, subject, since)
  }

  publish(channel: string, d: Delivered): void {
    const json = topicOf(channel, 'json')
    const msgpack = topicOf(channel, 'msgpack')
    const jsonReceivers = this.o.app.numSubscribers(json)
    const msgpackReceivers = this.o.app.numSubscribers(msgpack)
    if (jsonReceivers > 0) this.o.app.publish(json, d.json, typeof d.json !== 'string')
    if (msgpackReceivers > 0) this.o.app.publish(msgpack, d.msgpack, true)
    if (jsonReceivers + msgpackReceivers > 0) this.o.metrics.delivered.inc(jsonReceivers + msgpackReceivers)
  }

  /** The channel's feed, opened (one NATS subscription) on first use; every acquire needs a release. */
  async acquire(channel: string): Promise<ChannelFeed> {
    const existing = this.feeds.get(channel)
    if (existing) {
      existing.users++
      return existing
    }
    let opening = this.opening.get(channel)
    if (!opening) {
      const parsed = parseChannel(channel)!
      const feed = new ChannelFeed(channel, this.o.names.eventSubject(parsed.kind, parsed.id), this)
      opening = feed.open(this.o.nc).then(
        () => {
          this.feeds.set(channel, feed)
          this.opening.delete(channel)
          return feed
        },
        (err: unknown) => {
          // Not kept: the next subscriber tries again rather than meeting the same failure for ever.
          feed.close()
          this.opening.delete(channel)
          throw err
        },
      )
      this.opening.set(channel, opening)
    }
    const feed = await opening
    feed.users++
    return feed
  }

  release(channel: string): void {
    const feed = this.feeds.get(channel)
    if (!feed) return
    if (--feed.users > 0) return
    feed.close()
    this.feeds.delete(channel)
  }

  get size(): number {
    return this.feeds.size
  }

  closeAll(): void {
    for (const feed of this.feeds.values()) feed.close()
    this.feeds.clear()
  }
}
