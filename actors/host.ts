import { AppError } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import { Activation, type Envelope } from './activation.js'
import { MovedError } from './errors.js'
import type { ActorKind } from './kind.js'
import type { ActorMetrics } from './metrics.js'

export interface HostOptions {
  kinds: ReadonlyMap<string, ActorKind<unknown>>
  defaultIdleMs: number
  defaultMailboxCapacity: number
  log: Logger
  metrics: ActorMetrics
  /** The lease check, consulted by each actor before each message. */
  owns(partition: number): boolean
}

/**
 * The actors living in this process, grouped by partition so a partition can be handed over (drained) or
 * dropped as a whole. It serves only partitions it has been told it owns.
 */
export class ActorHost {
  private readonly activations = new Map<string, Activation>()
  private readonly partitions = new Map<number, Set<Activation>>()
  private sweeper: NodeJS.Timeout | undefined

  constructor(private readonly options: HostOptions) {}

  start(): void {
    const shortestIdle = Math.min(this.options.defaultIdleMs, ...[...this.options.kinds.values()].map((k) => k.idleTimeoutMs ?? Infinity))
    this.sweeper = setInterval(() => this.sweep(), Math.max(50, Math.min(shortestIdle / 2, 5_000)))
    this.sweeper.unref()
  }

  stop(): void {
    clearInterval(this.sweeper)
  }

  /** Serving starts for a partition once its lease is held. */
  open(partition: number): void {
    if (!this.partitions.has(partition)) this.partitions.set(partition, new Set())
  }

  serves(partition: number): boolean {
    return this.partitions.has(partition)
  }

  deliver(kindName: string, id: string, partition: number, envelope: Envelope): void {
    const members = this.partitions.get(partition)
    if (!members) return envelope.reject(new MovedError(`partition ${partition} is not served here`))
    const key = `${kindName}/${id}`
    let activation = this.activations.get(key)
    if (!activation) {
      const kind = this.options.kinds.get(kindName)
      if (!kind) return envelope.reject(new AppError('not_found', `no actor kind ${kindName}`))
      activation = new Activation(
        kind,
        id,
        partition,
        kind.mailboxCapacity ?? this.options.defaultMailboxCapacity,
        this.options.log,
        this.options.metrics,
        () => this.options.owns(partition),
      )
      this.activations.set(key, activation)
      members.add(activation)
      this.options.metrics.active.labels(kindName).inc()
    }
    if (!activation.enqueue(envelope)) {
      envelope.reject(new AppError('unavailable', `${key} is overloaded (mailbox full); try again shortly`))
    }
  }

  /**
   * Hand-over: new messages for the partition are answered `moved` at once, queued ones still run until
   * `deadline` (performance.now time); what is still queued then is answered `moved`, and a handler still
   * running is waited for until the deadline too. Resolves true when nothing of the partition runs any more.
   */
  async close(partition: number, deadline: number): Promise<boolean> {
    const members = this.partitions.get(partition)
    if (!members) return true
    this.partitions.delete(partition)
    const untilDeadline = <T>(work: Promise<T>) => {
      let timer: NodeJS.Timeout | undefined
      const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - performance.now()))))
      return Promise.race([work, timeout]).finally(() => clearTimeout(timer))
    }
    await untilDeadline(Promise.all([...members].map((a) => a.close())))
    for (const activation of members) activation.abandon()
    await untilDeadline(Promise.all([...members].map((a) => a.settled())))
    const idle = [...members].every((a) => !a.busy)
    for (const activation of members) this.remove(activation)
    return idle
  }

  /** The lease is gone: stop at once; queued messages go back to their callers as `moved`. */
  drop(partition: number): void {
    const members = this.partitions.get(partition)
    if (!members) return
    this.partitions.delete(partition)
    for (const activation of members) this.remove(activation)
  }

  get size(): number {
    return this.activations.size
  }

  isActive(kind: string, id: string): boolean {
    return this.activations.has(`${kind}/${id}`)
  }

  private remove(activation: Activation): void {
    activation.abandon()
    const key = `${activation.kind.name}/${activation.id}`
    if (this.activations.get(key) !== activation) return
    this.activations.delete(key)
    this.partitions.get(activation.partition)?.delete(activation)
    this.options.metrics.active.labels(activation.kind.name).dec()
    this.options.metrics.passivations.labels(activation.kind.name).inc()
  }

  private sweep(): void {
    const now = Date.now()
    for (const activation of this.activations.values()) {
      const idleMs = activation.kind.idleTimeoutMs ?? this.options.defaultIdleMs
      if (activation.idle && now - activation.lastActive >= idleMs) this.remove(activation)
    }
  }
}
