import { errors as natsErrors, type Msg, type NatsConnection, type Subscription } from '@nats-io/transport-node'
import { Kvm } from '@nats-io/kv'
import { AppError } from '../core/errors.js'
import { withTimeout } from '../core/timeout.js'
import { newRequestId } from '../core/ids.js'
import type { Logger } from '../core/log.js'
import type { Registry } from '../core/metrics.js'
import type { Names } from '../core/names.js'
import { anonymous, type Principal } from '../core/principal.js'
import type { Envelope } from './activation.js'
import { MovedError } from './errors.js'
import { ActorHost } from './host.js'
import type { ActorKind, Command } from './kind.js'
import { PartitionLeases } from './leases.js'
import { createActorMetrics } from './metrics.js'
import { partitionOf } from './partition.js'
import { decodeCall, decodeReply, encodeCall, encodeFailure, encodeReply } from './wire.js'

export interface ActorSystemOptions {
  nc: NatsConnection
  names: Names
  nodeId: string
  /** False for nodes whose roles exclude `actors`: they host nothing but can call everything. */
  hosting: boolean
  kinds: readonly ActorKind<unknown>[]
  partitions: number
  leaseTtlMs: number
  askTimeoutMs: number
  idleMs: number
  mailboxCapacity: number
  log: Logger
  registry: Registry
}

export interface AskOptions {
  principal?: Principal
  requestId?: string
  /** Epoch milliseconds; wins over `timeoutMs`. */
  deadline?: number
  timeoutMs?: number
}

export interface ActorRef {
  readonly kind: string
  readonly id: string
  /** The actor's reply, or the AppError it raised; `timeout` when the deadline passes first. */
  ask<R = unknown>(command: Command, options?: AskOptions): Promise<R>
  /** Fire and forget; tells from one ref arrive in the order they were made. Failures are logged. */
  tell(command: Command, options?: AskOptions): void
}

export interface ActorSystem {
  ref(kind: string, id: string): ActorRef
  ask<R = unknown>(kind: string, id: string, command: Command, options?: AskOptions): Promise<R>
  /** Joins the cluster (hosting nodes take their share of partitions) and resolves once done. */
  start(): Promise<void>
  /** Hands every partition over, draining queued messages first. */
  stop(): Promise<void>
  readonly joined: boolean
  ownedPartitions(): number[]
  partitionOf(kind: string, id: string): number
  /** Whether the actor is in memory on this node (for tests and introspection). */
  isActive(kind: string, id: string): boolean
}

const safeId = /^[A-Za-z0-9_:@+=-]{1,200}$/

export function createActorSystem(o: ActorSystemOptions): ActorSystem {
  const metrics = createActorMetrics(o.registry)
  const kinds = new Map(o.kinds.map((k) => [k.name, k]))
  let leases: PartitionLeases | undefined
  const host = new ActorHost({
    kinds,
    defaultIdleMs: o.idleMs,
    defaultMailboxCapacity: o.mailboxCapacity,
    log: o.log,
    metrics,
    owns: (partition) => leases?.owns(partition) ?? false,
  })
  const subscriptions = new Map<number, Subscription>()
  const rebalanceSubject = `${o.names.namespace}.ctl.rebalance`
  let joined = !o.hosting
  let control: Subscription | undefined

  const serve = (partition: number) => {
    host.open(partition)
    subscriptions.set(
      partition,
      // No queue group: a node cut off from NATS keeps its subscription on the server until the server notices,
      // and a queue group would keep sending it a share of the requests. Every subscriber gets each request; a
      // node that does not hold the lease stays silent, so the owner's answer is the only one.
      o.nc.subscribe(`${o.names.namespace}.act.${partition}.>`, {
        callback: (err, msg) => {
          if (err || !leases?.owns(partition)) return
          let call: ReturnType<typeof decodeCall>
          try {
            call = decodeCall(msg.data, msg.headers)
          } catch (e) {
            return respondSafely(msg, () => encodeFailure(new AppError('bad_request', 'undecodable actor message', { cause: e })), o.log, partition)
          }
          host.deliver(call.kind, call.id, partition, new RemoteEnvelope(call, msg, o.log, partition))
        },
      }),
    )
  }
  // Draining (not unsubscribing) answers every request already on its way to us, with `moved` once the host has
  // closed the partition, so no caller is left waiting for its deadline.
  const unsubscribe = async (partition: number) => {
    const sub = subscriptions.get(partition)
    subscriptions.delete(partition)
    // Bounded: during a NATS outage the drain's round trip would wait for the client's own ping-out.
    if (sub) await withTimeout(sub.drain(), 2_000, 'subscription drain').catch(() => sub.unsubscribe())
  }

  // Ids reach us as every kind of V8 string (sliced, cons, flat), which makes partitionOf's char loop
  // polymorphic and ten times slower; a Map hashes any string natively and keeps the hash on it. Only ids
  // that passed the check are remembered, so a hit skips the regex too.
  const partitionsById = new Map<string, Map<string, number>>()
  const partitionFor = (kind: string, id: string): number => {
    let byId = partitionsById.get(kind)
    if (!byId) partitionsById.set(kind, (byId = new Map()))
    let partition = byId.get(id)
    if (partition === undefined) {
      if (!safeId.test(id)) throw new AppError('validation.failed', `actor id ${JSON.stringify(id)} is not a valid id`)
      if (byId.size >= 10_000) byId.clear()
      partition = partitionOf(kind, id, o.partitions)
      byId.set(id, partition)
    }
    return partition
  }

  /** Hands the message to this process's mailbox; the envelope says at once whether it was already answered. */
  function deliverLocally(kind: string, id: string, partition: number, command: Command, principal: Principal, requestId: string, deadline: number): LocalEnvelope {
    const envelope = new LocalEnvelope(kind, id, command, principal, requestId, deadline)
    host.deliver(kind, id, partition, envelope)
    return envelope
  }

  async function remote<R>(kind: string, id: string, partition: number, command: Command, principal: Principal, requestId: string, deadline: number): Promise<R> {
    const { data, headers } = encodeCall({ kind, id, command }, principal, requestId, deadline)
    let reply
    try {
      reply = await o.nc.request(o.names.actorSubject(partition, kind, id), data, { timeout: Math.max(1, deadline - Date.now()), headers })
    } catch (err) {
      if (err instanceof natsErrors.RequestError && err.isNoResponders()) throw new MovedError(`partition ${partition} has no owner yet`)
      if (err instanceof natsErrors.TimeoutError) throw timeoutError(kind, id)
      throw new AppError('unavailable', `actor ${kind}/${id} cannot be reached`, { cause: err })
    }
    return decodeReply(reply.data) as R
  }

  // Not async: a local actor that answers while the message is delivered (an in-memory read) costs one settled
  // Promise, with no deadline timer and no async frame. Everything else goes through `untilAnswered`.
  function ask<R>(kind: string, id: string, command: Command, options: AskOptions = {}): Promise<R> {
    try {
      const partition = partitionFor(kind, id)
      const deadline = options.deadline ?? Date.now() + (options.timeoutMs ?? o.askTimeoutMs)
      const principal = options.principal ?? anonymous
      const requestId = options.requestId ?? newRequestId()
      // Same process owns it: skip the network, keep the mailbox.
      if (!(leases?.owns(partition) && host.serves(partition))) return untilAnswered<R>(kind, id, partition, command, principal, requestId, deadline, 0, undefined)
      const envelope = deliverLocally(kind, id, partition, command, principal, requestId, deadline)
      if (envelope.moved) return untilAnswered<R>(kind, id, partition, command, principal, requestId, deadline, 1, undefined)
      const answer = envelope.answer() as Promise<R>
      return envelope.settled ? answer : untilAnswered<R>(kind, id, partition, command, principal, requestId, deadline, 0, answer)
    } catch (err) {
      return Promise.reject(err as Error)
    }
  }

  /** Attempt `attempt` onwards, backing off between attempts; `pending` is a local attempt already under way. */
  async function untilAnswered<R>(
    kind: string,
    id: string,
    partition: number,
    command: Command,
    principal: Principal,
    requestId: string,
    deadline: number,
    attempt: number,
    pending: Promise<R> | undefined,
  ): Promise<R> {
    for (; ; attempt++) {
      if (attempt > 0) {
        const remaining = deadline - Date.now()
        if (remaining <= 0) throw timeoutError(kind, id)
        await new Promise((r) => setTimeout(r, Math.min(remaining, 5 * 2 ** Math.min(attempt - 1, 5))))
      }
      try {
        if (pending) return await pending
        if (leases?.owns(partition) && host.serves(partition)) {
          return (await deliverLocally(kind, id, partition, command, principal, requestId, deadline).answer()) as R
        }
        return await remote<R>(kind, id, partition, command, principal, requestId, deadline)
      } catch (err) {
        // Moved means the message was not handled: retrying cannot apply it twice.
        if (!(err instanceof MovedError)) throw err
        pending = undefined
      }
    }
  }

  return {
    ask,
    ref(kind, id) {
      let tail: Promise<unknown> = Promise.resolve()
      return {
        kind,
        id,
        ask: (command, options) => ask(kind, id, command, options),
        tell(command, options) {
          tail = tail
            .then(() => ask(kind, id, command, options))
            .catch((err: unknown) => o.log.warn({ err, kind, id, command: command.type }, 'tell failed'))
        },
      }
    },
    async start() {
      if (!o.hosting) return
      host.start()
      control = o.nc.subscribe(rebalanceSubject, { callback: () => leases?.nudge() })
      const kv = await new Kvm(o.nc).open(o.names.leasesBucket)
      leases = new PartitionLeases({
        kv,
        nodeId: o.nodeId,
        partitions: o.partitions,
        ttlMs: o.leaseTtlMs,
        log: o.log,
        metrics,
        onAcquired: serve,
        onReleasing: async (partition, deadline) => {
          const closing = host.close(partition, deadline)
          await unsubscribe(partition)
          return closing
        },
        onLost: (partition) => {
          host.drop(partition)
          void unsubscribe(partition)
        },
        announce: () => o.nc.publish(rebalanceSubject),
      })
      await leases.start()
      o.nc.publish(rebalanceSubject)
      joined = true
      o.log.info({ partitions: leases.owned().length }, 'actor host joined')
    },
    async stop() {
      control?.unsubscribe()
      await leases?.stop()
      host.stop()
    },
    get joined() {
      return joined
    },
    ownedPartitions: () => leases?.owned() ?? [],
    partitionOf: (kind, id) => partitionOf(kind, id, o.partitions),
    isActive: (kind, id) => host.isActive(kind, id),
  }
}

/** Answers a request; an unencodable reply (a symbol, a cycle) still answers, a closed connection cannot. */
function respondSafely(msg: Msg, data: () => Uint8Array, log: Logger, partition: number): void {
  try {
    msg.respond(data())
  } catch (e) {
    try {
      msg.respond(encodeFailure(new AppError('internal', 'the actor reply could not be encoded', { cause: e })))
    } catch {
      log.warn({ err: e, partition }, 'actor reply not sent')
    }
  }
}

// Envelopes are classes rather than object literals with closures: two or three closures per message were a
// measurable share of a local ask.

/** A message from another node: the reply goes back over NATS. */
class RemoteEnvelope implements Envelope {
  readonly command: Command
  readonly principal: Principal
  readonly requestId: string
  readonly deadline: number
  constructor(
    call: ReturnType<typeof decodeCall>,
    private readonly msg: Msg,
    private readonly log: Logger,
    private readonly partition: number,
  ) {
    this.command = call.command
    this.principal = call.principal
    this.requestId = call.requestId
    this.deadline = call.deadline
  }
  resolve(value: unknown): void {
    respondSafely(this.msg, () => encodeReply(value), this.log, this.partition)
  }
  reject(err: unknown): void {
    respondSafely(this.msg, () => encodeFailure(err), this.log, this.partition)
  }
}

/**
 * A message from this process. It settles the caller's promise directly, or times it out at its deadline;
 * the Promise and the timer are only made once `answer()` is called, and not at all for a reply given before.
 */
class LocalEnvelope implements Envelope {
  /** Answered (either way) before `answer()` was called. */
  settled = false
  private failed = false
  private outcome: unknown = undefined
  private promise: Promise<unknown> | undefined
  private settle: ((value: unknown) => void) | undefined
  private fail: ((err: unknown) => void) | undefined
  private timer: NodeJS.Timeout | undefined
  constructor(
    private readonly kind: string,
    private readonly id: string,
    readonly command: Command,
    readonly principal: Principal,
    readonly requestId: string,
    readonly deadline: number,
  ) {}
  /** Answered `moved` before `answer()`: not handled, so the caller may retry. */
  get moved(): boolean {
    return this.failed && this.outcome instanceof MovedError
  }
  answer(): Promise<unknown> {
    if (this.promise) return this.promise
    if (this.settled) {
      this.promise = this.failed ? Promise.reject(this.outcome) : Promise.resolve(this.outcome)
      return this.promise
    }
    this.promise = new Promise((resolve, reject) => {
      this.settle = resolve
      this.fail = reject
    })
    this.timer = setTimeout(() => this.fail!(timeoutError(this.kind, this.id)), this.deadline - Date.now())
    return this.promise
  }
  resolve(value: unknown): void {
    if (this.settle) {
      clearTimeout(this.timer)
      this.settle(value)
    } else if (!this.settled) {
      this.settled = true
      this.outcome = value
    }
  }
  reject(err: unknown): void {
    if (this.fail) {
      clearTimeout(this.timer)
      this.fail(err)
    } else if (!this.settled) {
      this.settled = true
      this.failed = true
      this.outcome = err
    }
  }
}

function timeoutError(kind: string, id: string): AppError {
  return new AppError('timeout', `actor ${kind}/${id} did not answer before the deadline`)
}
