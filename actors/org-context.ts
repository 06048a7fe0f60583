import { orgChannel, type ChannelEvent } from '../core/events.js'
import { newId } from '../core/ids.js'
import { insertAudit } from '../storage/audit.js'
import { insertEvents } from '../storage/outbox.js'
import { inTenant } from '../storage/tenant.js'
import type { TransactionSql } from '../storage/postgres.js'
import type { EventPublisher } from './event-publisher.js'
import type { JobQueue } from './job-queue.js'
import type { OrgListCache } from '../storage/org-cache.js'
import type { Sql } from '../storage/postgres.js'
import type { AuditEntry } from '../storage/audit.js'
import type { Command, MessageContext, Outcome } from './kind.js'
import type { Caller, OrgState } from './org-state.js'

export interface OrgActorDeps {
  sql: Sql
  /** Durable jobs: invitation emails, exports. */
  jobs: JobQueue
  cache: OrgListCache
  /** Base of the links in invitation emails. */
  publicUrl: string
  invitationTtlHours: number
  events: EventPublisher
}

/** What every org command handler gets besides the state and the command. */
export interface OrgContext {
  d: OrgActorDeps
  msg: MessageContext
  orgId: string
}

export type OrgHandler = (s: OrgState, c: Command, x: OrgContext) => Outcome<OrgState> | Promise<Outcome<OrgState>>

/** One audit row: who did what to which target, with the fields that changed (never secrets). */
export function auditEntry(x: OrgContext, caller: Caller, action: string, target: { type: string; id: string }, changes: Record<string, unknown> = {}): AuditEntry {
  return { id: newId(), orgId: x.orgId, at: new Date(), actor: caller.actor, action, target, requestId: x.msg.requestId, changes }
}

/** The event of a change, numbered after the `offset` events before it in the same transaction. */
export function eventOf(s: OrgState, x: OrgContext, at: Date, event: { type: string; data: unknown }, offset = 0): ChannelEvent {
  return {
    id: newId(),
    channel: orgChannel(x.orgId),
    seq: s.seq + 1 + offset,
    type: event.type,
    data: event.data,
    at: at.toISOString(),
    requestId: x.msg.requestId,
  }
}

/**
 * Commits one change of the organization: its writes, its audit row and its event, in one tenant-scoped
 * transaction; then advances the channel's number and hands the event to the publisher.
 */
export async function commitChange<T>(
  s: OrgState,
  x: OrgContext,
  audit: AuditEntry,
  event: { type: string; data: unknown },
  work: (tx: TransactionSql) => Promise<T>,
): Promise<T> {
  const e = eventOf(s, x, audit.at, event)
  const result = await inTenant(x.d.sql, x.orgId, async (tx) => {
    const done = await work(tx)
    await Promise.all([insertAudit(tx, audit), insertEvents(tx, [e])])
    return done
  })
  s.seq = e.seq
  x.d.events.publish([e])
  return result
}

/** The fields of `next` that differ from `prev`, as `{ field: { from, to } }`. */
export function diff<T extends object>(prev: T, next: Partial<T>): Record<string, { from: unknown; to: unknown }> {
  const changes: Record<string, { from: unknown; to: unknown }> = {}
  for (const [field, to] of Object.entries(next)) {
    const from = (prev as Record<string, unknown>)[field]
    if (to !== undefined && to !== from) changes[field] = { from, to }
  }
  return changes
}
