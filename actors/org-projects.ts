import { AppError, notFound } from '../core/errors.js'
import { newId } from '../core/ids.js'
import { insertAudit } from '../storage/audit.js'
import { insertEvents } from '../storage/outbox.js'
import type { ChannelEvent } from '../core/events.js'
import { isPostgresError, isSeqConflict, type TransactionSql } from '../storage/postgres.js'
import { deleteProject, insertProject, updateProject, type Project, type ProjectStatus } from '../storage/projects.js'
import { inTenant } from '../storage/tenant.js'
import { expectFenced, FencingError } from './errors.js'
import type { BatchItem, BatchResult, Command, Outcome } from './kind.js'
import { auditEntry, diff, eventOf, type OrgContext } from './org-context.js'
import { callerOf, mustHave, projectView, type OrgState, type ProjectView } from './org-state.js'

export interface ProjectChanges {
  name?: string
  description?: string
  status?: ProjectStatus
  teamId?: string | null
}

/** Commands that may be committed together (group commit): the hot writes of the example resource. */
export const batchableProjectCommands: ReadonlySet<string> = new Set(['project.create', 'project.update', 'project.delete'])

/**
 * A write worked out in memory: what to send to Postgres, what to change in memory once that committed, and
 * the reply. Planning checks permissions and business rules; nothing is changed until `apply`.
 */
interface Plan {
  write(tx: TransactionSql): Promise<unknown>
  event: ChannelEvent
  apply(s: OrgState): void
  reply: unknown
}

/** Projects changed by earlier plans of the same group: `null` is deleted. */
type Pending = Map<string, Project | null>

function current(s: OrgState, pending: Pending, id: string): Project | undefined {
  const p = pending.has(id) ? pending.get(id) : s.projects.get(id)?.row
  return p ?? undefined
}

function checkTeam(s: OrgState, teamId: string | null | undefined): void {
  // An id of another organization's team is simply not among ours: rejected like any unknown id.
  if (teamId && !s.teams.has(teamId)) {
    throw new AppError('validation.failed', 'teamId is not a team of this organization', { errors: [{ path: 'teamId', message: 'no such team in this organization' }] })
  }
}

function checkVersion(p: Project, ifMatch: number | undefined): void {
  if (ifMatch !== undefined && ifMatch !== p.version) throw new AppError('conflict', `version ${ifMatch} is stale; the current version is ${p.version}`)
}

function plan(s: OrgState, c: Command, x: OrgContext, pending: Pending, offset: number): Plan {
  const caller = callerOf(s, x.msg.principal)
  switch (c.type) {
    case 'project.create': {
      mustHave(caller, 'projects:write')
      const f = c as Command & { name: string; description?: string; status?: ProjectStatus; teamId?: string | null }
      checkTeam(s, f.teamId)
      const now = new Date()
      const row: Project = {
        id: newId(),
        orgId: x.orgId,
        teamId: f.teamId ?? null,
        name: f.name,
        description: f.description ?? '',
        status: f.status ?? 'active',
        version: 1,
        createdAt: now,
        updatedAt: now,
      }
      pending.set(row.id, row)
      const view = projectView(row)
      const audit = auditEntry(x, caller, 'project.created', { type: 'project', id: row.id }, { name: row.name, description: row.description, status: row.status, teamId: row.teamId })
      return {
        write: (tx) => Promise.all([insertProject(tx, row), insertAudit(tx, audit)]),
        event: eventOf(s, x, audit.at, { type: 'project.created', data: view }, offset),
        apply: (st) => {
          st.projects.set(row.id, { row, view })
          insertSorted(st.projectOrder, row.id)
        },
        reply: view,
      }
    }
    case 'project.update': {
      mustHave(caller, 'projects:write')
      const f = c as Command & { projectId: string; changes: ProjectChanges; ifMatch?: number }
      const prev = current(s, pending, f.projectId)
      if (!prev) throw notFound('project')
      checkVersion(prev, f.ifMatch)
      checkTeam(s, f.changes.teamId)
      const changes = diff(prev, f.changes)
      const row: Project = { ...prev, ...definedOnly(f.changes), version: prev.version + 1, updatedAt: new Date() }
      pending.set(row.id, row)
      const view = projectView(row)
      const audit = auditEntry(x, caller, 'project.updated', { type: 'project', id: row.id }, changes)
      return {
        write: async (tx) => {
          const [count] = await Promise.all([updateProject(tx, row, prev.version), insertAudit(tx, audit)])
          expectFenced(count, `project ${row.id}`, prev.version)
        },
        event: eventOf(s, x, audit.at, { type: 'project.updated', data: view }, offset),
        apply: (st) => void st.projects.set(row.id, { row, view }),
        reply: view,
      }
    }
    case 'project.delete': {
      mustHave(caller, 'projects:delete')
      const f = c as Command & { projectId: string; ifMatch?: number }
      const prev = current(s, pending, f.projectId)
      if (!prev) throw notFound('project')
      checkVersion(prev, f.ifMatch)
      pending.set(prev.id, null)
      const audit = auditEntry(x, caller, 'project.deleted', { type: 'project', id: prev.id }, { name: prev.name })
      return {
        write: async (tx) => {
          const [count] = await Promise.all([deleteProject(tx, x.orgId, prev.id, prev.version), insertAudit(tx, audit)])
          expectFenced(count, `project ${prev.id}`, prev.version)
        },
        event: eventOf(s, x, audit.at, { type: 'project.deleted', data: { id: prev.id } }, offset),
        apply: (st) => {
          st.projects.delete(prev.id)
          const at = sortedIndex(st.projectOrder, prev.id)
          if (st.projectOrder[at] === prev.id) st.projectOrder.splice(at, 1)
        },
        reply: null,
      }
    }
    case 'project.export': {
      mustHave(caller, 'projects:read')
      const f = c as Command & { projectId: string }
      const prev = current(s, pending, f.projectId)
      if (!prev) throw notFound('project')
      const job = x.d.jobs.prepare({ name: 'projects.export', payload: { orgId: x.orgId, projectId: prev.id }, orgId: x.orgId, requestId: x.msg.requestId })
      const audit = auditEntry(x, caller, 'project.export_requested', { type: 'project', id: prev.id }, { jobId: job.id })
      return {
        // Recorded in the same transaction as its audit row and event; queued once that commits.
        write: (tx) => Promise.all([x.d.jobs.insert(tx, job), insertAudit(tx, audit)]),
        event: eventOf(s, x, audit.at, { type: 'project.export_requested', data: { projectId: prev.id, jobId: job.id } }, offset),
        apply: () => x.d.jobs.publish([job]),
        reply: { jobId: job.id },
      }
    }
    default:
      throw new AppError('bad_request', `unknown project command ${c.type}`)
  }
}

/** One project write in its own transaction. */
export async function projectWrite(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const p = plan(s, c, x, new Map(), 0)
  await inTenant(x.d.sql, x.orgId, (tx) => Promise.all([p.write(tx), insertEvents(tx, [p.event])]))
  adopt(s, x, [p])
  return { state: s, reply: p.reply }
}

/** After the commit: memory follows, the channel's number moves on and the events go to the publisher. */
function adopt(s: OrgState, x: OrgContext, plans: readonly Plan[]): void {
  for (const p of plans) p.apply(s)
  s.seq = plans.at(-1)!.event.seq
  x.d.events.publish(plans.map((p) => p.event))
}

/**
 * Group commit: every plannable command of the group goes into one transaction, so a burst of writes to one
 * organization costs one commit rather than one each. If that transaction fails, each command is retried on
 * its own, so one bad write cannot fail the others.
 */
export async function projectBatch(s: OrgState, items: readonly BatchItem[], x: (item: BatchItem) => OrgContext): Promise<{ state: OrgState; results: BatchResult[] }> {
  const pending: Pending = new Map()
  const results: BatchResult[] = []
  const plans: Plan[] = []
  for (const item of items) {
    try {
      const p = plan(s, item.command, x(item), pending, plans.length)
      plans.push(p)
      results.push({ ok: true, reply: p.reply })
    } catch (error) {
      results.push({ ok: false, error })
    }
  }
  if (plans.length === 0) return { state: s, results }
  try {
    await inTenant(x(items[0]!).d.sql, x(items[0]!).orgId, (tx) =>
      Promise.all([...plans.map((p) => p.write(tx)), insertEvents(tx, plans.map((p) => p.event))]),
    )
  } catch (err) {
    // A lost connection would fail each retry the same way, and so would a stale activation (another one
    // wrote first): only a refusal of one write is worth retrying the others alone.
    if (!(err instanceof AppError) && !isPostgresError(err)) throw err
    if (err instanceof FencingError || isSeqConflict(err)) throw err
    const one: BatchResult[] = []
    for (const item of items) {
      try {
        one.push({ ok: true, reply: (await projectWrite(s, item.command, x(item))).reply })
      } catch (error) {
        one.push({ ok: false, error })
      }
    }
    return { state: s, results: one }
  }
  adopt(s, x(items[0]!), plans)
  return { state: s, results }
}

export function getProject(s: OrgState, c: Command, x: OrgContext): ProjectView {
  mustHave(callerOf(s, x.msg.principal), 'projects:read')
  const entry = s.projects.get(String(c.projectId))
  if (!entry) throw notFound('project')
  return entry.view
}

// Each version of a project serialized once: `GET /v1/orgs/:orgId/projects/:id` is the hot read.
const serialized = new WeakMap<ProjectView, string>()

/** The project as JSON text, for the HTTP read. */
export function getProjectJson(s: OrgState, c: Command, x: OrgContext): string {
  const view = getProject(s, c, x)
  let json = serialized.get(view)
  if (json === undefined) {
    json = JSON.stringify(view)
    serialized.set(view, json)
  }
  return json
}

export function listProjects(s: OrgState, c: Command, x: OrgContext): { items: ProjectView[]; nextCursor: string | null } {
  mustHave(callerOf(s, x.msg.principal), 'projects:read')
  const f = c as Command & { limit: number; after?: string }
  const order = s.projectOrder
  let at = f.after ? sortedIndex(order, f.after) : 0
  if (f.after && order[at] === f.after) at++
  const ids = order.slice(at, at + f.limit)
  const items = ids.map((id) => s.projects.get(id)!.view)
  return { items, nextCursor: at + f.limit < order.length ? ids.at(-1)! : null }
}

/** Drops fields the caller left out, so a patch never writes `undefined` over a value. */
function definedOnly<T extends object>(o: T): Partial<T> {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as Partial<T>
}

/** First index whose id is not below `id`. */
function sortedIndex(order: readonly string[], id: string): number {
  let lo = 0
  let hi = order.length
  while (lo < hi) {
    const mid = (lo + hi) >>> 1
    if (order[mid]! < id) lo = mid + 1
    else hi = mid
  }
  return lo
}

function insertSorted(order: string[], id: string): void {
  // UUIDv7 ids from the one writer nearly always go last.
  if (order.length === 0 || order.at(-1)! < id) order.push(id)
  else order.splice(sortedIndex(order, id), 0, id)
}
