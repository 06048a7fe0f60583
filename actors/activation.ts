import { AppError, internalError } from '../core/errors.js'
import type { Logger } from '../core/log.js'
import type { Principal } from '../core/principal.js'
import { FencingError, MovedError } from './errors.js'
import type { ActorKind, Batching, Command, MessageContext, Outcome } from './kind.js'
import type { ActorMetrics } from './metrics.js'
import type { PlainSeries } from '../core/plain-metrics.js'

export interface Envelope {
  command: Command
  principal: Principal
  requestId: string
  deadline: number
  resolve(reply: unknown): void
  reject(err: unknown): void
}

const unloaded: unique symbol = Symbol('unloaded')

/**
 * One live actor: its state and its mailbox. Messages run one at a time in arrival order; the state a
 * message produces is adopted only when its handler succeeds.
 */
export class Activation {
  private state: unknown | typeof unloaded = unloaded
  private readonly queue: Envelope[] = []
  private head = 0
  private running = false
  private closed = false
  lastActive = Date.now()
  private readonly ok: PlainSeries
  private readonly failed: PlainSeries

  constructor(
    readonly kind: ActorKind<unknown>,
    readonly id: string,
    readonly partition: number,
    private readonly capacity: number,
    private readonly log: Logger,
    private readonly metrics: ActorMetrics,
    /** Whether this node still holds the partition's lease: checked before every message, not only on arrival. */
    private readonly owns: () => boolean,
  ) {
    // Labelled children once per activation: labels() builds and hashes a label object on every call.
    this.ok = metrics.handled.series(kind.name, 'ok')
    this.failed = metrics.handled.series(kind.name, 'error')
  }

  get depth(): number {
    return this.queue.length - this.head
  }

  get idle(): boolean {
    return !this.running && this.depth === 0
  }

  /** False when the mailbox is full: the caller answers `unavailable` instead of queueing without bound. */
  enqueue(envelope: Envelope): boolean {
    if (this.closed) {
      envelope.reject(new MovedError(`${this.kind.name}/${this.id} is passivating`))
      return true
    }
    // An idle, loaded actor runs the message at once: no queue, no mailbox gauge, no async pump, so an in-memory
    // reply is given before enqueue returns. The lease was checked on arrival, in this same tick (the system does,
    // before delivering); the pump re-checks only for messages that waited. A passed deadline takes the pump's path.
    if (!this.running && this.depth === 0 && this.state !== unloaded) {
      const now = Date.now()
      if (envelope.deadline > now) {
        this.running = true
        let running: Promise<void> | undefined
        try {
          running = this.run(envelope)
        } finally {
          if (running) this.start(running)
          else this.ranDry(now)
        }
        return true
      }
    }
    if (this.depth >= this.capacity) return false
    this.queue.push(envelope)
    this.metrics.mailboxDepth.inc()
    if (!this.running) this.start()
    return true
  }

  /** Stops taking messages; queued ones still run. Resolves once the mailbox is empty and nothing runs. */
  async close(): Promise<void> {
    this.closed = true
    while (!this.idle) await this.drained()
  }

  /** Whether a handler is running right now (abandon() does not stop one). */
  get busy(): boolean {
    return this.running
  }

  /** Resolves when the running handler (if any) has finished. */
  async settled(): Promise<void> {
    while (this.running) await this.drained()
  }

  /** Stops at once: queued messages are answered `moved` so their callers retry on the new owner. */
  abandon(): void {
    this.closed = true
    while (this.depth > 0) this.take().reject(new MovedError(`${this.kind.name}/${this.id} moved`))
  }

  private waiters: (() => void)[] = []
  private drained(): Promise<void> {
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  private take(): Envelope {
    const envelope = this.queue[this.head]!
    this.queue[this.head++] = undefined as unknown as Envelope
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
    this.metrics.mailboxDepth.dec()
    return envelope
  }

  /** `first`: a message already running, which the pump waits for before taking the next. */
  private start(first?: Promise<void>): void {
    this.pump(first).catch((err: unknown) => this.log.error({ err, kind: this.kind.name, id: this.id }, 'actor mailbox failed'))
  }

  private async pump(first?: Promise<void>): Promise<void> {
    this.running = true
    try {
      if (first) await first
      while (this.depth > 0) {
        if (!this.owns()) {
          // The lease ran out while these waited. Only this node received them (no other node could hold the
          // partition when they arrived), so `moved` is safe: the caller's retry cannot apply them twice.
          this.abandon()
          return
        }
        if (this.state === unloaded && !(await this.load())) return
        const envelope = this.take()
        if (envelope.deadline <= Date.now()) {
          envelope.reject(new AppError('timeout', `${this.kind.name}/${this.id} did not get to the message before its deadline`))
          continue
        }
        const batch = this.kind.batch
        if (batch && this.depth > 0 && batch.accepts(envelope.command) && batch.accepts(this.queue[this.head]!.command)) {
          await this.runBatch(this.group(envelope, batch))
          continue
        }
        const running = this.run(envelope)
        if (running) await running
      }
    } finally {
      this.ranDry(Date.now())
    }
  }

  /** Nothing runs any more: a message that arrived meanwhile (from within a handler) starts the pump again. */
  private ranDry(now: number): void {
    this.running = false
    this.lastActive = now
    if (this.depth > 0 && !this.closed) this.start()
    if (this.waiters.length > 0) for (const wake of this.waiters.splice(0)) wake()
  }

  private async load(): Promise<boolean> {
    try {
      this.state = await this.kind.load(this.id, { log: this.log })
      this.metrics.activations.labels(this.kind.name).inc()
      return true
    } catch (err) {
      this.log.error({ err, kind: this.kind.name, id: this.id }, 'actor failed to load')
      const failure = new AppError('unavailable', `${this.kind.name}/${this.id} could not be loaded`, { cause: err })
      while (this.depth > 0) this.take().reject(failure)
      return false
    }
  }

  /** The first message and the acceptable ones right behind it, up to the kind's maximum. */
  private group(first: Envelope, batch: Batching<unknown>): Envelope[] {
    const group = [first]
    const now = Date.now()
    while (group.length < batch.max && this.depth > 0 && batch.accepts(this.queue[this.head]!.command)) {
      const next = this.take()
      if (next.deadline <= now) next.reject(new AppError('timeout', `${this.kind.name}/${this.id} did not get to the message before its deadline`))
      else group.push(next)
    }
    return group
  }

  private async runBatch(group: Envelope[]): Promise<void> {
    const started = performance.now()
    let outcome: Awaited<ReturnType<Batching<unknown>['handle']>>
    try {
      outcome = await this.kind.batch!.handle(
        this.state as Readonly<unknown>,
        group.map((envelope) => ({ command: envelope.command, ctx: this.context(envelope) })),
      )
    } catch (err) {
      for (const envelope of group) this.fail(envelope, err, started)
      return
    }
    if (outcome.state !== undefined) this.state = outcome.state
    this.metrics.batchSize.labels(this.kind.name).observe(group.length)
    group.forEach((envelope, i) => {
      const result = outcome.results[i]
      if (result?.ok) this.succeed(envelope, { reply: result.reply }, started)
      else this.fail(envelope, result ? result.error : new Error(`batch handler gave no result for item ${i}`), started)
    })
  }

  private context(envelope: Envelope): MessageContext {
    return { kind: this.kind.name, id: this.id, principal: envelope.principal, requestId: envelope.requestId, deadline: envelope.deadline, log: this.log }
  }

  /** Runs one message; returns a Promise only when the handler did, so in-memory reads need no microtask. */
  private run(envelope: Envelope): Promise<void> | undefined {
    const started = performance.now()
    const ctx: MessageContext = {
      kind: this.kind.name,
      id: this.id,
      principal: envelope.principal,
      requestId: envelope.requestId,
      deadline: envelope.deadline,
      log: this.log,
    }
    let result: Outcome<unknown> | Promise<Outcome<unknown>>
    try {
      result = this.kind.handle(this.state as Readonly<unknown>, envelope.command, ctx)
    } catch (err) {
      this.fail(envelope, err, started)
      return undefined
    }
    // A postgres.js query is a thenable, not a Promise (deploy/patches): a handler hands one back from an async function.
    if (result instanceof Promise) {
      return result.then(
        (outcome) => this.succeed(envelope, outcome, started),
        (err: unknown) => this.fail(envelope, err, started),
      )
    }
    this.succeed(envelope, result, started)
    return undefined
  }

  private fail(envelope: Envelope, err: unknown, started: number): void {
    this.failed.observe((performance.now() - started) / 1000)
    if (err instanceof FencingError) {
      // Another activation wrote a newer version: everything this one holds is stale.
      this.log.error({ kind: this.kind.name, id: this.id, requestId: envelope.requestId, err }, 'fencing: stale activation refused a write')
      this.metrics.fencingConflicts.labels(this.kind.name).inc()
      this.state = unloaded
    } else if (!(err instanceof AppError)) {
      // An unexpected failure may have left storage and memory out of step: reload before the next message.
      this.log.error({ kind: this.kind.name, id: this.id, requestId: envelope.requestId, err }, 'actor handler failed')
      this.state = unloaded
      // Local and remote callers see the same thing: `internal`, with nothing of the cause.
      envelope.reject(internalError(err))
      return
    }
    envelope.reject(err)
  }

  private succeed(envelope: Envelope, outcome: Outcome<unknown>, started: number): void {
    if (outcome.state !== undefined) this.state = outcome.state
    this.ok.observe((performance.now() - started) / 1000)
    envelope.resolve(outcome.reply)
  }
}
