import { AppError, forbidden, notFound } from '../core/errors.js'
import type { Principal } from '../core/principal.js'
import { builtInRoles, isBuiltInRole, permissionCatalogue, type Permission } from '../core/rbac.js'
import type { ApiKey } from '../storage/api-keys.js'
import type { AuditActor } from '../storage/audit.js'
import type { CustomRole, Member, Org, Team } from '../storage/orgs.js'
import type { Project } from '../storage/projects.js'

export interface OrgView {
  id: string
  name: string
  slug: string
  version: number
  createdAt: string
}

export interface ProjectView {
  id: string
  orgId: string
  teamId: string | null
  name: string
  description: string
  status: string
  version: number
  createdAt: string
  updatedAt: string
}

export interface MemberEntry extends Member {
  permissions: ReadonlySet<string>
}

export interface KeyEntry extends ApiKey {
  permissions: ReadonlySet<string>
}

/**
 * Everything the org actor decides from. Maps are changed in place, but only after the change has committed,
 * so a message that fails leaves them as they were.
 */
export interface OrgState {
  org: Org | undefined
  view: OrgView | undefined
  members: Map<string, MemberEntry>
  roles: Map<string, CustomRole>
  teams: Map<string, Team>
  apiKeys: Map<string, KeyEntry>
  projects: Map<string, { row: Project; view: ProjectView }>
  /** Project ids in creation (id) order, for keyset pages. */
  projectOrder: string[]
  /** The last event number of the organization's channel. */
  seq: number
}

export function emptyState(): OrgState {
  return { org: undefined, view: undefined, members: new Map(), roles: new Map(), teams: new Map(), apiKeys: new Map(), projects: new Map(), projectOrder: [], seq: 0 }
}

export const orgView = (o: Org): OrgView => ({ id: o.id, name: o.name, slug: o.slug, version: o.version, createdAt: o.createdAt.toISOString() })

export const projectView = (p: Project): ProjectView => ({
  id: p.id,
  orgId: p.orgId,
  teamId: p.teamId,
  name: p.name,
  description: p.description,
  status: p.status,
  version: p.version,
  createdAt: p.createdAt.toISOString(),
  updatedAt: p.updatedAt.toISOString(),
})

const all: ReadonlySet<string> = new Set(permissionCatalogue)

/** The permissions a set of role names grants here; unknown names grant nothing. */
export function permissionsOf(s: OrgState, roles: readonly string[]): Set<string> {
  const granted = new Set<string>()
  for (const name of roles) {
    const perms: readonly string[] = isBuiltInRole(name) ? builtInRoles[name] : (s.roles.get(name)?.permissions ?? [])
    for (const p of perms) granted.add(p)
  }
  return granted
}

export function roleExists(s: OrgState, name: string): boolean {
  return isBuiltInRole(name) || s.roles.has(name)
}

/** Recomputes every member's and key's permissions, after a custom role appeared or changed. */
export function refreshPermissions(s: OrgState): void {
  for (const m of s.members.values()) m.permissions = permissionsOf(s, m.roles)
  for (const k of s.apiKeys.values()) k.permissions = permissionsOf(s, k.roles)
}

export interface Caller {
  actor: AuditActor
  /** Set for users: their membership. */
  userId: string | undefined
  permissions: ReadonlySet<string>
}

/**
 * Who is calling, as this organization sees them. Anyone who is not part of it (and any organization that
 * does not exist) gets 404, never 403, so ids of other tenants reveal nothing.
 */
export function callerOf(s: OrgState, principal: Principal): Caller {
  if (!s.org) throw notFound('organization')
  switch (principal.type) {
    case 'user': {
      const member = s.members.get(principal.userId)
      if (!member) throw notFound('organization')
      return { actor: { type: 'user', id: principal.userId }, userId: principal.userId, permissions: member.permissions }
    }
    case 'apiKey': {
      if (principal.orgId !== s.org.id) throw notFound('organization')
      const key = s.apiKeys.get(principal.keyId)
      if (!key) throw new AppError('auth.invalid_token', 'this API key was revoked', { headers: { 'www-authenticate': 'ApiKey' } })
      return { actor: { type: 'apiKey', id: key.id }, userId: undefined, permissions: key.permissions }
    }
    case 'system':
      return { actor: { type: 'system', id: principal.name }, userId: undefined, permissions: all }
    default:
      throw notFound('organization')
  }
}

export function mustHave(caller: Caller, permission: Permission): void {
  if (!caller.permissions.has(permission)) throw forbidden(permission)
}

export function ownersOf(s: OrgState): string[] {
  return [...s.members.values()].filter((m) => m.roles.includes('owner')).map((m) => m.userId)
}
