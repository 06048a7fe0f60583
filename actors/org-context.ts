import { newId } from '../core/ids.js'
import type { Mailer } from '../storage/mailer.js'
import type { OrgListCache } from '../storage/org-cache.js'
import type { Sql } from '../storage/postgres.js'
import type { AuditEntry } from '../storage/audit.js'
import type { Command, MessageContext, Outcome } from './kind.js'
import type { Caller, OrgState } from './org-state.js'

export interface OrgActorDeps {
  sql: Sql
  mailer: Mailer
  cache: OrgListCache
  /** Base of the links in invitation emails. */
  publicUrl: string
  invitationTtlHours: number
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

/** The fields of `next` that differ from `prev`, as `{ field: { from, to } }`. */
export function diff<T extends object>(prev: T, next: Partial<T>): Record<string, { from: unknown; to: unknown }> {
  const changes: Record<string, { from: unknown; to: unknown }> = {}
  for (const [field, to] of Object.entries(next)) {
    const from = (prev as Record<string, unknown>)[field]
    if (to !== undefined && to !== from) changes[field] = { from, to }
  }
  return changes
}
