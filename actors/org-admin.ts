import { randomBytes } from 'node:crypto'
import { AppError, notFound } from '../core/errors.js'
import { newId } from '../core/ids.js'
import { isPermission } from '../core/rbac.js'
import { insertApiKey, revokeApiKey, touchApiKeys } from '../storage/api-keys.js'
import { listAudit } from '../storage/audit.js'
import { insertEvents } from '../storage/outbox.js'
import { findJobRecord, type JobRecord } from '../storage/job-records.js'
import { findExport } from '../storage/exports.js'
import { deleteOrg, insertCustomRole, insertMember, insertOrg, insertTeam, addTeamMember, removeTeamMember, updateOrg, type Org, type Team } from '../storage/orgs.js'
import { isUniqueViolation, retryOnDeadlock } from '../storage/postgres.js'
import { hashToken } from '../storage/sessions.js'
import { inTenant } from '../storage/tenant.js'
import { expectFenced } from './errors.js'
import type { Command, Outcome } from './kind.js'
import { checkGrantable } from './org-members.js'
import { auditEntry, commitChange, diff, eventOf, type OrgContext } from './org-context.js'
import { callerOf, mustHave, orgView, permissionsOf, refreshPermissions, type Caller, type OrgState } from './org-state.js'

const slugTaken = () => new AppError('org.slug_taken', 'another organization already uses this slug')

export async function createOrg(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const principal = x.msg.principal
  if (principal.type !== 'user') throw new AppError('rbac.forbidden', 'only a signed-in user can create an organization')
  if (s.org) throw new AppError('conflict', 'this organization already exists')
  const f = c as Command & { name: string; slug: string }
  const now = new Date()
  const org: Org = { id: x.orgId, name: f.name, slug: f.slug, version: 1, createdAt: now, updatedAt: now }
  const roles = ['owner']
  const caller: Caller = { actor: { type: 'user', id: principal.userId }, userId: principal.userId, permissions: new Set() }
  const audit = auditEntry(x, caller, 'org.created', { type: 'org', id: org.id }, { name: org.name, slug: org.slug })
  await commitChange(s, x, audit, { type: 'org.created', data: orgView(org) }, async (tx) => {
    if (!(await insertOrg(tx, org))) throw slugTaken()
    await insertMember(tx, x.orgId, { userId: principal.userId, roles, joinedAt: now })
  })
  s.org = org
  s.view = orgView(org)
  s.members.set(principal.userId, { userId: principal.userId, roles, joinedAt: now, permissions: permissionsOf(s, roles) })
  await x.d.cache.invalidate([principal.userId])
  return { state: s, reply: s.view }
}

export function getOrg(s: OrgState, _c: Command, x: OrgContext) {
  callerOf(s, x.msg.principal)
  return s.view!
}

/** Whether the caller may follow the organization's channel (its events and presence). */
export function authorizeChannel(s: OrgState, _c: Command, x: OrgContext): null {
  mustHave(callerOf(s, x.msg.principal), 'org:read')
  return null
}

export async function updateOrgCommand(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'org:update')
  const f = c as Command & { changes: { name?: string; slug?: string }; ifMatch?: number }
  const prev = s.org!
  if (f.ifMatch !== undefined && f.ifMatch !== prev.version) throw new AppError('conflict', `version ${f.ifMatch} is stale; the current version is ${prev.version}`)
  const changes = diff(prev, f.changes)
  const next: Org = { ...prev, ...(f.changes.name !== undefined ? { name: f.changes.name } : {}), ...(f.changes.slug !== undefined ? { slug: f.changes.slug } : {}), version: prev.version + 1, updatedAt: new Date() }
  const audit = auditEntry(x, caller, 'org.updated', { type: 'org', id: prev.id }, changes)
  try {
    await commitChange(s, x, audit, { type: 'org.updated', data: orgView(next) }, async (tx) => {
      expectFenced(await updateOrg(tx, next, prev.version), `organization ${prev.id}`, prev.version)
    })
  } catch (err) {
    if (isUniqueViolation(err)) throw slugTaken()
    throw err
  }
  s.org = next
  s.view = orgView(next)
  await x.d.cache.invalidate(s.members.keys())
  return { state: s, reply: s.view }
}

export async function deleteOrgCommand(s: OrgState, _c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'org:delete')
  // Every tenant row goes with it (foreign keys cascade), the audit log included: the event and the log line
  // are what remain.
  const event = eventOf(s, x, new Date(), { type: 'org.deleted', data: { id: x.orgId } })
  // The cascade locks the organization's job rows in an order of its own, which a worker recording some of
  // them may cross: Postgres then aborts one side, and if it is this one, the deletion goes again.
  await retryOnDeadlock(
    () =>
      inTenant(x.d.sql, x.orgId, async (tx) => {
        await deleteOrg(tx, x.orgId)
        await insertEvents(tx, [event])
      }),
    (err) => x.msg.log.warn({ err, orgId: x.orgId }, 'organization deletion deadlocked; deleting again'),
  )
  x.d.events.publish([event])
  x.msg.log.info({ orgId: x.orgId, actor: caller.actor, requestId: x.msg.requestId }, 'organization deleted')
  const members = [...s.members.keys()]
  await x.d.cache.invalidate(members)
  return { state: { ...s, org: undefined, view: undefined, members: new Map(), roles: new Map(), teams: new Map(), apiKeys: new Map(), projects: new Map(), projectOrder: [], seq: event.seq }, reply: null }
}

const builtInRoleViews = () =>
  (['owner', 'admin', 'member', 'viewer'] as const).map((name) => ({ id: name, name, builtIn: true }))

export function listRoles(s: OrgState, _c: Command, x: OrgContext) {
  mustHave(callerOf(s, x.msg.principal), 'roles:read')
  const builtIn = builtInRoleViews().map((r) => ({ ...r, permissions: [...permissionsOf(s, [r.name])] }))
  const custom = [...s.roles.values()].map((r) => ({ id: r.id, name: r.name, permissions: r.permissions, builtIn: false }))
  return { items: [...builtIn, ...custom], nextCursor: null }
}

export async function createRole(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'roles:manage')
  const f = c as Command & { name: string; permissions: string[] }
  const permissions = [...new Set(f.permissions)].sort()
  const unknown = permissions.filter((p) => !isPermission(p))
  if (unknown.length > 0) {
    throw new AppError('validation.failed', `not in the permission catalogue: ${unknown.join(', ')}`, {
      errors: unknown.map((p) => ({ path: 'permissions', message: `unknown permission ${p}` })),
    })
  }
  if (permissions.some((p) => !caller.permissions.has(p))) throw new AppError('rbac.forbidden', 'a role cannot hold permissions its creator lacks')
  if (s.roles.has(f.name) || ['owner', 'admin', 'member', 'viewer'].includes(f.name)) throw new AppError('conflict', `a role named ${f.name} already exists`)
  const role = { id: newId(), name: f.name, permissions }
  const audit = auditEntry(x, caller, 'role.created', { type: 'role', id: role.id }, { name: role.name, permissions })
  await commitChange(s, x, audit, { type: 'role.created', data: role }, async (tx) => {
    if (!(await insertCustomRole(tx, x.orgId, role))) throw new AppError('conflict', `a role named ${f.name} already exists`)
  })
  s.roles.set(role.name, role)
  refreshPermissions(s)
  return { state: s, reply: { ...role, builtIn: false } }
}

const teamView = (t: Team) => ({ id: t.id, name: t.name, memberIds: t.memberIds, createdAt: t.createdAt.toISOString() })

export function listTeams(s: OrgState, _c: Command, x: OrgContext) {
  mustHave(callerOf(s, x.msg.principal), 'teams:read')
  return { items: [...s.teams.values()].sort((a, b) => (a.id < b.id ? -1 : 1)).map(teamView), nextCursor: null }
}

export async function createTeam(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'teams:manage')
  const team: Team = { id: newId(), name: String(c.name), memberIds: [], createdAt: new Date() }
  const audit = auditEntry(x, caller, 'team.created', { type: 'team', id: team.id }, { name: team.name })
  await commitChange(s, x, audit, { type: 'team.created', data: teamView(team) }, async (tx) => {
    if (!(await insertTeam(tx, x.orgId, team))) throw new AppError('conflict', `a team named ${team.name} already exists`)
  })
  s.teams.set(team.id, team)
  return { state: s, reply: teamView(team) }
}

export async function changeTeamMember(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'teams:manage')
  const f = c as Command & { teamId: string; userId: string }
  const team = s.teams.get(f.teamId)
  if (!team) throw notFound('team')
  // Only members of this organization can be in its teams; anyone else is as unknown as a random id.
  if (!s.members.has(f.userId)) throw notFound('member')
  const adding = c.type === 'team.member.add'
  const present = team.memberIds.includes(f.userId)
  if (adding === present) return { reply: null }
  const audit = auditEntry(x, caller, adding ? 'team.member_added' : 'team.member_removed', { type: 'team', id: team.id }, { userId: f.userId })
  await commitChange(s, x, audit, { type: adding ? 'team.member_added' : 'team.member_removed', data: { teamId: team.id, userId: f.userId } }, async (tx) => {
    await (adding ? addTeamMember(tx, x.orgId, team.id, f.userId) : removeTeamMember(tx, x.orgId, team.id, f.userId))
  })
  team.memberIds = adding ? [...team.memberIds, f.userId] : team.memberIds.filter((id) => id !== f.userId)
  return { state: s, reply: null }
}

const keyView = (k: { id: string; name: string; prefix: string; roles: string[]; createdAt: Date; lastUsedAt: Date | null }) => ({
  id: k.id,
  name: k.name,
  prefix: k.prefix,
  roles: k.roles,
  createdAt: k.createdAt.toISOString(),
  lastUsedAt: k.lastUsedAt?.toISOString() ?? null,
})

export function listApiKeys(s: OrgState, _c: Command, x: OrgContext) {
  mustHave(callerOf(s, x.msg.principal), 'apikeys:read')
  return { items: [...s.apiKeys.values()].map(keyView), nextCursor: null }
}

/** Keys look like `ak_<43 base64url characters>`; the first 11 characters are kept visible as the prefix. */
export async function createApiKey(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'apikeys:manage')
  const f = c as Command & { name: string; roles: string[] }
  const roles = [...new Set(f.roles)].sort()
  checkGrantable(s, caller, roles)
  const key = `ak_${randomBytes(32).toString('base64url')}`
  const entry = { id: newId(), orgId: x.orgId, name: f.name, prefix: key.slice(0, 11), roles, createdBy: caller.userId ?? null, createdAt: new Date(), lastUsedAt: null }
  const audit = auditEntry(x, caller, 'apikey.created', { type: 'apiKey', id: entry.id }, { name: entry.name, roles })
  await commitChange(s, x, audit, { type: 'apikey.created', data: { id: entry.id, name: entry.name, roles } }, async (tx) => {
    await insertApiKey(tx, entry, hashToken(key))
  })
  s.apiKeys.set(entry.id, { ...entry, permissions: permissionsOf(s, roles) })
  return { state: s, reply: { ...keyView(entry), key } }
}

export async function revokeApiKeyCommand(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'apikeys:manage')
  const id = String(c.keyId)
  const key = s.apiKeys.get(id)
  if (!key) throw notFound('API key')
  const audit = auditEntry(x, caller, 'apikey.revoked', { type: 'apiKey', id }, { name: key.name })
  await commitChange(s, x, audit, { type: 'apikey.revoked', data: { id } }, async (tx) => {
    await revokeApiKey(tx, x.orgId, id)
  })
  s.apiKeys.delete(id)
  return { state: s, reply: null }
}

/** Remembers when a key was last used, written at most once a minute per key and off the caller's path. */
export function noteKeyUse(s: OrgState, x: OrgContext): void {
  const p = x.msg.principal
  if (p.type !== 'apiKey') return
  const key = s.apiKeys.get(p.keyId)
  const now = new Date()
  if (!key || (key.lastUsedAt && now.getTime() - key.lastUsedAt.getTime() < 60_000)) return
  key.lastUsedAt = now
  inTenant(x.d.sql, x.orgId, (tx) => touchApiKeys(tx, x.orgId, [key.id], now)).catch((err: unknown) => x.msg.log.warn({ err, keyId: key.id }, 'API key use not recorded'))
}

export async function listAuditCommand(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  mustHave(callerOf(s, x.msg.principal), 'audit:read')
  const f = c as Command & { limit: number; after?: string }
  const rows = await inTenant(x.d.sql, x.orgId, (tx) => listAudit(tx, x.orgId, f.limit + 1, f.after))
  const page = rows.slice(0, f.limit)
  const items = page.map((e) => ({ id: e.id, at: e.at.toISOString(), actor: e.actor, action: e.action, target: e.target, requestId: e.requestId, changes: e.changes }))
  return { reply: { items, nextCursor: rows.length > f.limit ? page.at(-1)!.id : null } }
}

export async function getJob(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  mustHave(callerOf(s, x.msg.principal), 'jobs:read')
  const job = await inTenant(x.d.sql, x.orgId, (tx) => findJobRecord(tx, String(c.jobId)))
  if (!job) throw notFound('job')
  return { reply: jobView(job) }
}

/** A job of the organization changed state (told by a worker): its event goes on the org channel. */
export async function jobChanged(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  if (x.msg.principal.type !== 'system') throw new AppError('rbac.forbidden', 'only workers report job progress')
  if (!s.org) return { reply: null }
  const f = c as Command & { jobId: string; name: string; status: string; attempts: number; error?: string }
  const event = eventOf(s, x, new Date(), { type: 'job.updated', data: { id: f.jobId, name: f.name, status: f.status, attempts: f.attempts, ...(f.error ? { error: f.error } : {}) } })
  await inTenant(x.d.sql, x.orgId, (tx) => insertEvents(tx, [event]))
  s.seq = event.seq
  x.d.events.publish([event])
  return { state: s, reply: null }
}

/** Queues a dead job of the organization again (`jobs:manage`). */
export async function retryJob(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'jobs:manage')
  const jobId = String(c.jobId)
  const audit = auditEntry(x, caller, 'job.retried', { type: 'job', id: jobId })
  const job = await commitChange(s, x, audit, { type: 'job.updated', data: { id: jobId, status: 'queued', attempts: 0 } }, (tx) => x.d.jobs.requeueDead(tx, jobId))
  x.d.jobs.publish([job])
  return { state: s, reply: jobView(job) }
}

export function jobView(job: JobRecord) {
  return {
    id: job.id,
    name: job.name,
    status: job.status,
    attempts: job.attempts,
    ...(job.result != null ? { result: job.result } : {}),
    ...(job.error != null ? { error: job.error } : {}),
    createdAt: job.createdAt.toISOString(),
    updatedAt: job.updatedAt.toISOString(),
  }
}

export async function getExport(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  mustHave(callerOf(s, x.msg.principal), 'projects:read')
  const found = await inTenant(x.d.sql, x.orgId, (tx) => findExport(tx, x.orgId, String(c.exportId)))
  if (!found) throw notFound('export')
  return { reply: found.content }
}
