import type { KV } from '@nats-io/kv'
import type { Logger } from '../core/log.js'
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
  /** We are giving the partition away: finish what is queued, then stop. Must return before the lease is deleted. */
  onReleasing(partition: number): Promise<void>
  /** The lease could not be kept: stop serving at once. */
  onLost(partition: number): void
  /** Something changed that other nodes should look at now rather than at their next tick. */
  announce(): void
}

interface Held {
  revision: number
  /** Local time until which this node may serve: the last renewal's send time plus the TTL, less a margin. */
  validUntil: number
}

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
    return held !== undefined && Date.now() < held.validUntil
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
    await Promise.all(this.owned().map((p) => this.release(p)))
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
    await this.o.kv.put(memberKey(this.o.nodeId), JSON.stringify({ at: new Date().toISOString(), held: this.held.size }))
    const keys = await this.keys()
    const members = keys.filter((k) => k.startsWith('node.')).map((k) => k.slice(5))
    if (!members.includes(this.o.nodeId)) members.push(this.o.nodeId)
    members.sort()
    const rank = members.indexOf(this.o.nodeId)
    const quota = Math.floor(this.o.partitions / members.length) + (rank < this.o.partitions % members.length ? 1 : 0)

    if (this.held.size > quota) {
      // Give away the highest-numbered extras; the others see them free on their next round (nudged now).
      const extra = this.owned().slice(quota)
      await Promise.all(extra.map((p) => this.release(p)))
      this.o.announce()
    } else if (this.held.size < quota) {
      const taken = new Set(keys.filter((k) => k.startsWith('p.')).map((k) => Number(k.slice(2))))
      const free = shuffle(Array.from({ length: this.o.partitions }, (_, p) => p).filter((p) => !taken.has(p) && !this.held.has(p)))
      let need = quota - this.held.size
      for (const p of free) {
        if (need === 0 || this.stopped) break
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

  private async acquire(partition: number): Promise<boolean> {
    const sentAt = Date.now()
    try {
      const revision = await this.o.kv.create(leaseKey(partition), this.o.nodeId)
      this.held.set(partition, { revision, validUntil: sentAt + this.o.ttlMs - this.margin })
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
        const sentAt = Date.now()
        try {
          const revision = await this.o.kv.update(leaseKey(partition), this.o.nodeId, held.revision)
          // A renewal that answers after the validity ran out does not bring serving back mid-flight.
          if (this.held.get(partition) === held && Date.now() < held.validUntil) {
            this.held.set(partition, { revision, validUntil: sentAt + this.o.ttlMs - this.margin })
            return
          }
        } catch (err) {
          this.o.metrics.leaseRenewFailures.inc()
          // Another node wrote the key (ours expired): lost for sure. Otherwise NATS is slow or away; keep
          // serving only until the validity runs out.
          if (!isWrongRevision(err) && Date.now() < held.validUntil) return
          this.o.log.warn({ partition, err }, 'partition lease lost')
        }
        this.lose(partition, held)
      }),
    )
    for (const [partition, held] of this.held) if (Date.now() >= held.validUntil) this.lose(partition, held)
  }

  private lose(partition: number, held: Held): void {
    if (this.held.get(partition) !== held) return
    this.held.delete(partition)
    this.o.metrics.leasesLost.inc()
    this.o.onLost(partition)
  }

  private async release(partition: number): Promise<void> {
    const held = this.held.get(partition)
    if (!held) return
    await this.o.onReleasing(partition)
    this.held.delete(partition)
    await this.o.kv.delete(leaseKey(partition), { previousSeq: held.revision }).catch((err: unknown) => {
      this.o.log.warn({ partition, err }, 'lease was not deleted on release; it expires by TTL')
    })
  }
}

function isWrongRevision(err: unknown): boolean {
  return err instanceof Error && /wrong last sequence/i.test(err.message)
}

function shuffle<T>(items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1))
    ;[items[i], items[j]] = [items[j]!, items[i]!]
  }
  return items
}
