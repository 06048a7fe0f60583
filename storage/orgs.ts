import type { Queryable } from './postgres.js'

export interface Org {
  id: string
  name: string
  slug: string
  version: number
  createdAt: Date
  updatedAt: Date
}

export interface Member {
  userId: string
  roles: string[]
  joinedAt: Date
}

export interface CustomRole {
  id: string
  name: string
  permissions: string[]
}

export interface Team {
  id: string
  name: string
  memberIds: string[]
  createdAt: Date
}

/** Inserts the organization; false when the slug is taken. */
export async function insertOrg(sql: Queryable, o: Org): Promise<boolean> {
  const rows = await sql`
    insert into organizations (id, name, slug, version, created_at, updated_at)
    values (${o.id}, ${o.name}, ${o.slug}, ${o.version}, ${o.createdAt}, ${o.updatedAt})
    on conflict (slug) do nothing returning id`
  return rows.length === 1
}

export async function findOrg(sql: Queryable, id: string): Promise<Org | undefined> {
  const [row] = await sql<Org[]>`
    select id, name, slug, version, created_at as "createdAt", updated_at as "updatedAt" from organizations where id = ${id}`
  return row
}

/** Versioned update; 0 when the row moved on. Throws a unique violation (23505) when the slug is taken. */
export async function updateOrg(sql: Queryable, o: Org, expectedVersion: number): Promise<number> {
  const result = await sql`
    update organizations set name = ${o.name}, slug = ${o.slug}, version = ${o.version}, updated_at = ${o.updatedAt}
    where id = ${o.id} and version = ${expectedVersion}`
  return result.count
}

export async function deleteOrg(sql: Queryable, id: string): Promise<void> {
  await sql`delete from organizations where id = ${id}`
}

export async function loadMembers(sql: Queryable, orgId: string): Promise<Member[]> {
  return sql<Member[]>`
    select m.user_id as "userId", m.joined_at as "joinedAt",
           coalesce(array_agg(r.role order by r.role) filter (where r.role is not null), '{}') as roles
    from memberships m left join member_roles r on r.org_id = m.org_id and r.user_id = m.user_id
    where m.org_id = ${orgId}
    group by m.user_id, m.joined_at`
}

export async function insertMember(sql: Queryable, orgId: string, m: Member): Promise<void> {
  await sql`insert into memberships (org_id, user_id, joined_at) values (${orgId}, ${m.userId}, ${m.joinedAt})`
  await setMemberRoles(sql, orgId, m.userId, m.roles)
}

export async function setMemberRoles(sql: Queryable, orgId: string, userId: string, roles: readonly string[]): Promise<void> {
  await sql`delete from member_roles where org_id = ${orgId} and user_id = ${userId}`
  if (roles.length > 0) await sql`insert into member_roles ${sql(roles.map((role) => ({ org_id: orgId, user_id: userId, role })))}`
}

export async function deleteMember(sql: Queryable, orgId: string, userId: string): Promise<void> {
  await sql`delete from memberships where org_id = ${orgId} and user_id = ${userId}`
}

/** Members with their email and name, for the members list (profiles are the user actor's, so read fresh). */
export async function listMemberProfiles(sql: Queryable, orgId: string): Promise<{ userId: string; email: string; name: string }[]> {
  return sql`select u.id as "userId", u.email, u.name from memberships m join users u on u.id = m.user_id where m.org_id = ${orgId}`
}

export async function loadCustomRoles(sql: Queryable, orgId: string): Promise<CustomRole[]> {
  return sql<CustomRole[]>`
    select r.id, r.name, coalesce(array_agg(p.permission order by p.permission) filter (where p.permission is not null), '{}') as permissions
    from roles r left join role_permissions p on p.role_id = r.id
    where r.org_id = ${orgId}
    group by r.id, r.name`
}

/** False when the organization already has a role of that name. */
export async function insertCustomRole(sql: Queryable, orgId: string, role: CustomRole): Promise<boolean> {
  const rows = await sql`insert into roles (id, org_id, name) values (${role.id}, ${orgId}, ${role.name}) on conflict (org_id, name) do nothing returning id`
  if (rows.length === 0) return false
  if (role.permissions.length > 0) {
    await sql`insert into role_permissions ${sql(role.permissions.map((permission) => ({ org_id: orgId, role_id: role.id, permission })))}`
  }
  return true
}

export async function loadTeams(sql: Queryable, orgId: string): Promise<Team[]> {
  return sql<Team[]>`
    select t.id, t.name, t.created_at as "createdAt",
           coalesce(array_agg(m.user_id order by m.added_at) filter (where m.user_id is not null), '{}') as "memberIds"
    from teams t left join team_members m on m.team_id = t.id
    where t.org_id = ${orgId}
    group by t.id, t.name, t.created_at`
}

/** False when the organization already has a team of that name. */
export async function insertTeam(sql: Queryable, orgId: string, team: Team): Promise<boolean> {
  const rows = await sql`
    insert into teams (id, org_id, name, created_at) values (${team.id}, ${orgId}, ${team.name}, ${team.createdAt})
    on conflict (org_id, name) do nothing returning id`
  return rows.length === 1
}

export async function addTeamMember(sql: Queryable, orgId: string, teamId: string, userId: string): Promise<void> {
  await sql`insert into team_members (org_id, team_id, user_id) values (${orgId}, ${teamId}, ${userId}) on conflict do nothing`
}

export async function removeTeamMember(sql: Queryable, orgId: string, teamId: string, userId: string): Promise<void> {
  await sql`delete from team_members where org_id = ${orgId} and team_id = ${teamId} and user_id = ${userId}`
}

/** The organizations a user belongs to, with their roles there: a cross-tenant read, so it runs as the owner role. */
export async function listUserOrgs(sql: Queryable, userId: string): Promise<(Omit<Org, 'updatedAt'> & { roles: string[] })[]> {
  return sql`
    select o.id, o.name, o.slug, o.version, o.created_at as "createdAt",
           coalesce(array_agg(r.role order by r.role) filter (where r.role is not null), '{}') as roles
    from memberships m
    join organizations o on o.id = m.org_id
    left join member_roles r on r.org_id = m.org_id and r.user_id = m.user_id
    where m.user_id = ${userId}
    group by o.id
    order by o.created_at, o.id`
}
