import type { Logger } from '../core/log.js'
import type { Principal } from '../core/principal.js'

/** A message to an actor: commands are imperative (`member.add`), with their fields beside `type`. */
export interface Command {
  readonly type: string
  readonly [field: string]: unknown
}

export interface MessageContext {
  readonly kind: string
  readonly id: string
  readonly principal: Principal
  readonly requestId: string
  /** Epoch milliseconds after which the caller no longer waits. */
  readonly deadline: number
  readonly log: Logger
}

/**
 * What a handler hands back: the reply for the caller and, when the message changed something, the next
 * state. Handlers never mutate the state they are given, so a handler that throws leaves the actor exactly
 * as it was before the message.
 */
export interface Outcome<S> {
  reply?: unknown
  state?: S
}

export interface BatchItem {
  readonly command: Command
  readonly ctx: MessageContext
}

export type BatchResult = { ok: true; reply: unknown } | { ok: false; error: unknown }

/**
 * Several queued messages handled together, in arrival order: a kind that writes to Postgres commits a whole
 * group in one transaction (group commit) instead of one transaction per message.
 */
export interface Batching<S> {
  /** Which commands may join a group; a group ends at the first message that may not. */
  accepts(command: Command): boolean
  readonly max: number
  /** One result per item, in order. Throwing fails every item of the group and leaves the state as it was. */
  handle(state: Readonly<S>, items: readonly BatchItem[]): Promise<{ state?: S; results: BatchResult[] }>
}

export interface ActorKind<S> {
  readonly name: string
  /** Passivate after this long without a message (default from the runtime). */
  readonly idleTimeoutMs?: number
  /** Messages that may wait in one actor's mailbox before callers get `unavailable`. */
  readonly mailboxCapacity?: number
  /** Loads the state on activation; runs once however many first messages arrive together. */
  load(id: string, ctx: { log: Logger }): Promise<S>
  handle(state: Readonly<S>, command: Command, ctx: MessageContext): Outcome<S> | Promise<Outcome<S>>
  /** Used when at least two acceptable messages wait in the mailbox; one alone goes through `handle`. */
  readonly batch?: Batching<S>
}

/** Erases the state type so kinds of different states share one registry. */
export function defineKind<S>(kind: ActorKind<S>): ActorKind<unknown> {
  return kind as unknown as ActorKind<unknown>
}
