import type { WebSocket } from 'uWebSockets.js'
import type { WireProtocol } from './ws-frames.js'

/** Subscription numbers stay small integers (no boxed number per socket). */
const MAX_ATTEMPT = 0x3fffffff
let attempts = 0

/** What uWebSockets.js keeps on its socket object for us. */
export interface SocketData {
  conn: Conn
}

/**
 * One socket's state. A node holds tens of thousands of these, so each is one object with fixed fields and
 * nothing else of its own: no Sets, no closures, no id string, numbers kept as small integers. The first
 * channel lives inline, since most sockets never subscribe to a second; further ones go in a Map made when
 * needed.
 */
export class Conn {
  ws: WebSocket<SocketData> | undefined = undefined
  open = false
  /** Empty until the auth frame is accepted; both strings are the shared ones of the cached token claims. */
  userId = ''
  sessionId = ''
  badFrames = 0
  /** Rate-limit credit in thousandths of a frame (an integer, so no boxed double per socket). */
  credit: number
  /** Whole milliseconds of performance.now() when the credit was last topped up. */
  refilledAt: number
  /** The first channel, and its subscription's number: positive while being set up, negative once set up. */
  private channel: string | undefined = undefined
  private state = 0
  /** Any further channels, channel → number as above. */
  private more: Map<string, number> | undefined = undefined

  constructor(
    /** Numbers this node's sockets; the connection id is made from it when asked. */
    readonly serial: number,
    readonly protocol: WireProtocol,
    credit: number,
    now: number,
  ) {
    this.credit = credit
    this.refilledAt = now
  }

  get authenticated(): boolean {
    return this.userId !== ''
  }

  /** Subscribed or being subscribed. */
  has(channel: string): boolean {
    return this.channel === channel || (this.more?.has(channel) ?? false)
  }

  /**
   * Starts a subscription (not set up yet) and returns its number. A subscribe that waits on something checks
   * with `owns` that the channel is still its own: an unsubscribe and a new subscribe meanwhile make it
   * someone else's.
   */
  add(channel: string): number {
    attempts = attempts >= MAX_ATTEMPT ? 1 : attempts + 1
    if (this.channel === undefined || this.channel === channel) {
      this.channel = channel
      this.state = attempts
    } else (this.more ??= new Map()).set(channel, attempts)
    return attempts
  }

  owns(channel: string, attempt: number): boolean {
    const state = this.channel === channel ? this.state : this.more?.get(channel)
    return state !== undefined && Math.abs(state) === attempt
  }

  /**
   * Marks subscription `attempt` set up, if it still owns the channel. `canonical` equals the channel and is
   * the feed's own string, kept instead of the one parsed from the socket's frame so that all sockets on a
   * channel share one string.
   */
  ready(canonical: string, attempt: number): void {
    if (!this.owns(canonical, attempt)) return
    if (this.channel === canonical) {
      this.channel = canonical
      this.state = -attempt
    } else {
      this.more!.delete(canonical)
      this.more!.set(canonical, -attempt)
    }
  }

  /** Ends a subscription: undefined if there was none, else whether it had been set up. */
  remove(channel: string): boolean | undefined {
    if (this.channel === channel) {
      const wasReady = this.state < 0
      this.channel = undefined
      this.state = 0
      return wasReady
    }
    const state = this.more?.get(channel)
    if (state === undefined) return undefined
    this.more!.delete(channel)
    if (this.more!.size === 0) this.more = undefined
    return state < 0
  }

  /** Every channel, set up or not. */
  channels(): string[] {
    const all = this.channel === undefined ? [] : [this.channel]
    if (this.more) all.push(...this.more.keys())
    return all
  }
}
