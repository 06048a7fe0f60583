/** Every permission there is: `resource:action`. Custom roles may only be made of these. */
export const permissionCatalogue = [
  'org:read',
  'org:update',
  'org:delete',
  'org:transfer',
  'members:read',
  'members:manage',
  'members:invite',
  'roles:read',
  'roles:manage',
  'teams:read',
  'teams:manage',
  'apikeys:read',
  'apikeys:manage',
  'projects:read',
  'projects:write',
  'projects:delete',
  'audit:read',
  'jobs:read',
  'jobs:manage',
] as const

export type Permission = (typeof permissionCatalogue)[number]

const catalogue: ReadonlySet<string> = new Set(permissionCatalogue)
export const isPermission = (p: string): p is Permission => catalogue.has(p)

const reads = permissionCatalogue.filter((p) => p.endsWith(':read'))

/**
 * The built-in roles of every organization. `org:transfer` is what granting or taking away `owner` needs, so
 * an admin can neither make an owner nor demote one.
 */
export const builtInRoles = {
  owner: [...permissionCatalogue],
  admin: permissionCatalogue.filter((p) => p !== 'org:delete' && p !== 'org:transfer'),
  member: [...reads, 'projects:write'],
  viewer: reads,
} as const satisfies Record<string, readonly Permission[]>

export type BuiltInRole = keyof typeof builtInRoles
export const isBuiltInRole = (name: string): name is BuiltInRole => Object.hasOwn(builtInRoles, name)

/** Whether `have` holds every permission in `want`: nobody grants what they lack. */
export function covers(have: ReadonlySet<string>, want: Iterable<string>): boolean {
  for (const p of want) if (!have.has(p)) return false
  return true
}
