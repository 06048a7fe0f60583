import type { KV } from '@nats-io/kv'
import type { Logger } from '../core/log.js'
import { withTimeout } from '../core/timeout.js'
import type { ActorMetrics } from './metrics.js'

export interface LeaseOptions {
  kv: KV
  nodeId: string
  partitions: number
  ttlMs: number
  log: Logger
  metrics: ActorMetrics
  /** The lease is ours: start serving. */
  onAcquired(partition: number): void
  /**
   * We are giving the partition away: finish what is queued, then stop. Resolves true when nothing runs any
   * more (the lease may be deleted), false when a handler outlived the deadline (the lease is left to expire).
   */
  onReleasing(partition: number, deadline: number): Promise<boolean>
  /** The lease could not be kept: stop serving at once. */
  onLost(partition: number): void
  /** Something changed that other nodes should look at now rather than at their next tick. */
  announce(): void
}

interface Held {
  revision: number
  /**
   * Monotonic time (performance.now) until which this node may serve: the last successful renewal's send time
   * plus the TTL, less a margin. Monotonic, so a stepped wall clock cannot stretch it.
   */
  validUntil: number
  /** Drops the partition at `validUntil` even when a round is stuck waiting on NATS. */
  expiry: NodeJS.Timeout
}

const now = () => performance.now()

const leaseKey = (p: number) => `p.${p}`
const memberKey = (nodeId: string) => `node.${nodeId}`

/**
 * Partition leases in a NATS KV bucket whose bucket-level TTL expires every key that is not rewritten in
 * time. A node serves a partition only while it holds the key: taken with `create` (fails if it exists),
 * renewed with `update` on the revision it last wrote (fails if anyone else wrote since), deleted on hand-over.
 * Its right to serve ends at the last successful renewal's send time plus the TTL, less a margin: before the
 * key can expire on the server and be taken by another node. Nodes spread partitions evenly: with N members,
 * each holds ⌊P/N⌋ or ⌈P/N⌉ (by rank of node id), releasing extras and taking free ones on every tick.
 */
export class PartitionLeases {
  private readonly held = new Map<number, Held>()
  /** Partitions being handed over: still held (and renewed) until their mailboxes are drained. */
  private readonly releasing = new Map<number, Promise<void>>()
  private timer: NodeJS.Timeout | undefined
  private ticking: Promise<void> | undefined
  private again = false
  private stopped = false
  private readonly margin: number
  readonly tickMs: number

  constructor(private readonly o: LeaseOptions) {
    this.margin = Math.max(200, o.ttlMs / 5)
    this.tickMs = Math.max(100, Math.floor(o.ttlMs / 4))
  }

  /** Joins the cluster: resolves after the first balancing round. */
  async start(): Promise<void> {
    await this.tick()
    this.schedule()
  }

  /** Serving check for every message: the lease is held and its validity has not run out. */
  owns(partition: number): boolean {
    const held = this.held.get(partition)
    return held !== undefined && now() < held.validUntil
  }

  owned(): number[] {
    return [...this.held.keys()].sort((a, b) => a - b)
  }

  /** Run a balancing round soon (another node joined, left or released partitions). */
  nudge(): void {
    if (this.stopped) return
    if (this.ticking) {
      this.again = true
      return
    }
    clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.tick().finally(() => this.schedule()), 20)
  }

  /** Leaves the cluster: hands every partition over (draining first) and removes this node's membership. */
  async stop(): Promise<void> {
    this.stopped = true
    clearTimeout(this.timer)
    await this.ticking
    await this.o.kv.delete(memberKey(this.o.nodeId)).catch(() => undefined)
    for (const p of this.owned()) this.startRelease(p)
    // Rounds have stopped, but partitions still draining must stay valid until they are handed over, or a
    // slow drain would end in lease expiry (a TTL-long gap) instead of a hand-over.
    const renewer = setInterval(() => void this.renewAll().catch(() => undefined), this.tickMs)
    try {
      await Promise.all(this.releasing.values())
    } finally {
      clearInterval(renewer)
    }
    this.o.announce()
  }

  private schedule(): void {
    if (this.stopped) return
    clearTimeout(this.timer)
    this.timer = setTimeout(() => void this.tick().finally(() => this.schedule()), this.again ? 20 : this.tickMs)
    this.again = false
  }

  private tick(): Promise<void> {
    this.ticking ??= this.round()
      .catch((err: unknown) => this.o.log.warn({ err }, 'lease round failed'))
      .finally(() => {
        this.ticking = undefined
      })
    return this.ticking
  }

  private async round(): Promise<void> {
    await this.renewAll()
    if (this.stopped) return
    const budget = Math.max(200, this.o.ttlMs / 2)
    await this.o.kv.put(memberKey(this.o.nodeId), JSON.stringify({ at: new Date().toISOString(), held: this.held.size }), { timeout: budget })
    const keys = await withTimeout(this.keys(), budget, 'lease key listing')
    const members = keys.filter((k) => k.startsWith('node.')).map((k) => k.slice(5))
    if (!members.includes(this.o.nodeId)) members.push(this.o.nodeId)
    members.sort()
    const rank = members.indexOf(this.o.nodeId)
    const quota = Math.floor(this.o.partitions / members.length) + (rank < this.o.partitions % members.length ? 1 : 0)

    const keeping = this.held.size - this.releasing.size
    if (keeping > quota) {
      // Give away the highest-numbered extras, in the background so renewals go on while they drain; the
      // others see them free on their next round (nudged when each is released).
      for (const p of this.owned().filter((p) => !this.releasing.has(p)).slice(quota)) this.startRelease(p)
    } else if (keeping < quota) {
      const taken = new Set(keys.filter((k) => k.startsWith('p.')).map((k) => Number(k.slice(2))))
      const free = shuffle(Array.from({ length: this.o.partitions }, (_, p) => p).filter((p) => !taken.has(p) && !this.held.has(p)))
      let need = quota - keeping
      for (const p of free) {
        if (need === 0 || this.stopped) break
        if (this.releasing.has(p)) continue
        if (await this.acquire(p)) need--
      }
    }
    this.o.metrics.partitionsOwned.set(this.held.size)
  }

  private async keys(): Promise<string[]> {
    const out: string[] = []
    for await (const key of await this.o.kv.keys()) out.push(key)
    return out
  }

  private hold(partition: number, revision: number, sentAt: number): void {
    const previous = this.held.get(partition)
    if (previous) clearTimeout(previous.expiry)
    const validUntil = sentAt + this.o.ttlMs - this.margin
    const held: Held = { revision, validUntil, expiry: setTimeout(() => this.lose(partition, held), Math.max(0, validUntil - now())) }
    held.expiry.unref()
    this.held.set(partition, held)
  }

  private async acquire(partition: number): Promise<boolean> {
    const sentAt = now()
    try {
      const revision = await this.o.kv.create(leaseKey(partition), this.o.nodeId)
      if (now() >= sentAt + this.o.ttlMs - this.margin) return false
      this.hold(partition, revision, sentAt)
      this.o.onAcquired(partition)
      return true
    } catch {
      // Taken by another node a moment ago (or NATS is unreachable): either way, not ours.
      return false
    }
  }

  private async renewAll(): Promise<void> {
    await Promise.all(
      [...this.held].map(async ([partition, held]) => {
        const sentAt = now()
        try {
          // No answer within what is left of the lease is as good as no lease: never wait longer than that.
          const revision = await this.o.kv.update(leaseKey(partition), this.o.nodeId, held.revision, Math.max(50, held.validUntil - sentAt))
          // The revision check passed, so the key stayed ours throughout: validity counts from this send time.
          if (this.held.get(partition) === held) this.hold(partition, revision, sentAt)
          return
        } catch (err) {
          this.o.metrics.leaseRenewFailures.inc()
          if (isWrongRevision(err)) {
            // Maybe an earlier renewal timed out on our side but was applied: the key may still be ours.
            const entry = await this.o.kv.get(leaseKey(partition)).catch(() => null)
            if (entry && entry.operation === 'PUT' && entry.string() === this.o.nodeId && this.held.get(partition) === held) {
              this.hold(partition, entry.revision, sentAt)
              return
            }
            this.o.log.warn({ partition }, 'partition lease taken by another node')
            this.lose(partition, held)
          }
          // Otherwise NATS is slow or away: the expiry timer drops the partition when its validity runs out.
        }
      }),
    )
  }

  private lose(partition: number, held: Held): void {
    if (this.held.get(partition) !== held) return
    clearTimeout(held.expiry)
    this.held.delete(partition)
    this.o.metrics.leasesLost.inc()
    this.o.onLost(partition)
  }

  private startRelease(partition: number): void {
    if (this.releasing.has(partition)) return
    const done = this.release(partition)
      .catch((err: unknown) => this.o.log.warn({ partition, err }, 'partition release failed'))
      .finally(() => {
        this.releasing.delete(partition)
        this.o.announce()
      })
    this.releasing.set(partition, done)
  }

  private async release(partition: number): Promise<void> {
    if (!this.held.has(partition)) return
    const idle = await this.o.onReleasing(partition, now() + Math.max(500, this.o.ttlMs / 2))
    // Whatever happened meanwhile (renewed or lost), this partition is no longer ours.
    const current = this.held.get(partition)
    if (current) clearTimeout(current.expiry)
    this.held.delete(partition)
    if (!current || !idle) {
      // A handler still runs (or the lease is already gone): deleting would let another node start the actor
      // beside it. The key expires by TTL instead.
      if (!idle) this.o.log.warn({ partition }, 'a handler outlived the hand-over; the lease is left to expire')
      return
    }
    await this.o.kv.delete(leaseKey(partition), { previousSeq: current.revision }).catch((err: unknown) => {
      this.o.log.warn({ partition, err }, 'lease was not deleted on release; it expires by TTL')
    })
  }
}

function isWrongRevision(err: unknown): boolean {
  // JetStream API error 10071: "wrong last sequence".
  if (typeof err === 'object' && err !== null && 'code' in err && (err.code === 10071 || err.code === '10071')) return true
  return err instanceof Error && /wrong last sequence/i.test(err.message)
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}
