import { AppError, notFound } from '../core/errors.js'
import { newId } from '../core/ids.js'
import { covers } from '../core/rbac.js'
import { acceptInvitation, insertInvitation, listInvitations, revokePendingInvitations, type Invitation } from '../storage/invitations.js'
import { deleteMember, insertMember, listMemberProfiles, setMemberRoles } from '../storage/orgs.js'
import { newOpaqueToken } from '../storage/sessions.js'
import { inTenant } from '../storage/tenant.js'
import type { Command, Outcome } from './kind.js'
import { auditEntry, commitChange, type OrgContext } from './org-context.js'
import { callerOf, mustHave, ownersOf, permissionsOf, roleExists, type Caller, type OrgState } from './org-state.js'

export interface MemberView {
  userId: string
  email: string
  name: string
  roles: string[]
  joinedAt: string
}

export interface InvitationView {
  id: string
  email: string
  role: string
  expiresAt: string
  createdAt: string
  status: 'pending' | 'accepted' | 'revoked' | 'expired'
}

const invitationView = (i: Invitation, now = Date.now()): InvitationView => ({
  id: i.id,
  email: i.email,
  role: i.role,
  expiresAt: i.expiresAt.toISOString(),
  createdAt: i.createdAt.toISOString(),
  status: i.acceptedAt ? 'accepted' : i.revokedAt ? 'revoked' : i.expiresAt.getTime() <= now ? 'expired' : 'pending',
})

/** Unknown role names are a bad request; roles beyond the caller's own permissions are forbidden. */
export function checkGrantable(s: OrgState, caller: Caller, roles: readonly string[], path = 'roles'): void {
  const unknown = roles.filter((r) => !roleExists(s, r))
  if (unknown.length > 0) {
    throw new AppError('validation.failed', `unknown role ${unknown.join(', ')}`, { errors: unknown.map((r) => ({ path, message: `no role named ${r} in this organization` })) })
  }
  if (!covers(caller.permissions, permissionsOf(s, roles))) throw new AppError('rbac.forbidden', 'nobody can grant a permission they do not hold themselves')
}

/** Only someone holding every permission the target holds may change or remove them. */
function checkOutranks(caller: Caller, target: { permissions: ReadonlySet<string> }): void {
  if (!covers(caller.permissions, target.permissions)) throw new AppError('rbac.forbidden', 'this member holds permissions you do not; you cannot change them')
}

export async function listMembers(s: OrgState, _c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  mustHave(callerOf(s, x.msg.principal), 'members:read')
  // Profiles belong to the user actors and change there, so they are read fresh; roles come from memory.
  const profiles = await inTenant(x.d.sql, x.orgId, (tx) => listMemberProfiles(tx, x.orgId))
  const items: MemberView[] = profiles
    .filter((p) => s.members.has(p.userId))
    .map((p) => {
      const m = s.members.get(p.userId)!
      return { userId: p.userId, email: p.email, name: p.name, roles: m.roles, joinedAt: m.joinedAt.toISOString() }
    })
    .sort((a, b) => a.joinedAt.localeCompare(b.joinedAt) || a.userId.localeCompare(b.userId))
  return { reply: { items, nextCursor: null } }
}

export async function updateMember(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'members:manage')
  const f = c as Command & { userId: string; roles: string[] }
  const target = s.members.get(f.userId)
  if (!target) throw notFound('member')
  const roles = [...new Set(f.roles)].sort()
  checkOutranks(caller, target)
  checkGrantable(s, caller, roles)
  if (target.roles.includes('owner') && !roles.includes('owner') && ownersOf(s).length === 1) {
    throw new AppError('rbac.last_owner', 'this is the last owner; make someone else owner first')
  }
  const audit = auditEntry(x, caller, 'member.roles_changed', { type: 'user', id: f.userId }, { roles: { from: target.roles, to: roles } })
  await commitChange(s, x, audit, { type: 'member.updated', data: { userId: f.userId, roles } }, async (tx) => {
    await setMemberRoles(tx, x.orgId, f.userId, roles)
  })
  target.roles = roles
  target.permissions = permissionsOf(s, roles)
  await x.d.cache.invalidate([f.userId])
  const [profile] = (await inTenant(x.d.sql, x.orgId, (tx) => listMemberProfiles(tx, x.orgId))).filter((p) => p.userId === f.userId)
  return { state: s, reply: { userId: f.userId, email: profile?.email ?? '', name: profile?.name ?? '', roles, joinedAt: target.joinedAt.toISOString() } satisfies MemberView }
}

export async function removeMember(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  const userId = String(c.userId)
  const target = s.members.get(userId)
  const leaving = caller.userId === userId
  if (!leaving) mustHave(caller, 'members:manage')
  if (!target) throw notFound('member')
  if (!leaving) checkOutranks(caller, target)
  if (target.roles.includes('owner') && ownersOf(s).length === 1) throw new AppError('rbac.last_owner', 'the last owner cannot leave; make someone else owner first')
  const audit = auditEntry(x, caller, leaving ? 'member.left' : 'member.removed', { type: 'user', id: userId }, { roles: target.roles })
  await commitChange(s, x, audit, { type: 'member.removed', data: { userId, reason: leaving ? 'left' : 'removed' } }, async (tx) => {
    await deleteMember(tx, x.orgId, userId)
  })
  s.members.delete(userId)
  for (const team of s.teams.values()) team.memberIds = team.memberIds.filter((id) => id !== userId)
  await x.d.cache.invalidate([userId])
  return { state: s, reply: null }
}

export async function createInvitation(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  const caller = callerOf(s, x.msg.principal)
  mustHave(caller, 'members:invite')
  const f = c as Command & { email: string; role: string }
  checkGrantable(s, caller, [f.role], 'role')
  const { token, hash } = newOpaqueToken()
  const now = new Date()
  const invitation: Invitation = {
    id: newId(),
    orgId: x.orgId,
    email: f.email,
    role: f.role,
    invitedBy: caller.userId ?? null,
    createdAt: now,
    expiresAt: new Date(now.getTime() + x.d.invitationTtlHours * 3_600_000),
    acceptedAt: null,
    revokedAt: null,
  }
  const audit = auditEntry(x, caller, 'invitation.created', { type: 'invitation', id: invitation.id }, { email: f.email, role: f.role })
  const org = s.org!
  // The email is a job recorded in the invitation's own transaction: both happen, or neither.
  const email = x.d.jobs.prepare({
    name: 'email.send',
    payload: {
      to: f.email,
      subject: `You are invited to ${org.name}`,
      body: `You have been invited to join ${org.name} as ${f.role}.\n\nAccept: ${x.d.publicUrl}/accept-invitation?token=${token}\nThe link works once, until ${invitation.expiresAt.toISOString()}.\n`,
      kind: 'invitation',
      data: { token, orgId: x.orgId, invitationId: invitation.id },
    },
    orgId: x.orgId,
    requestId: x.msg.requestId,
  })
  await commitChange(s, x, audit, { type: 'invitation.created', data: { id: invitation.id, role: f.role, expiresAt: invitation.expiresAt.toISOString() } }, async (tx) => {
    await revokePendingInvitations(tx, x.orgId, f.email)
    await insertInvitation(tx, invitation, hash)
    await x.d.jobs.insert(tx, email)
  })
  x.d.jobs.publish([email])
  const view = invitationView(invitation)
  return { reply: { id: view.id, email: view.email, role: view.role, expiresAt: view.expiresAt } }
}

export async function listInvitationsOf(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  mustHave(callerOf(s, x.msg.principal), 'members:invite')
  const f = c as Command & { limit: number; after?: string }
  const rows = await inTenant(x.d.sql, x.orgId, (tx) => listInvitations(tx, x.orgId, f.limit + 1, f.after))
  const page = rows.slice(0, f.limit)
  return { reply: { items: page.map((i) => invitationView(i)), nextCursor: rows.length > f.limit ? page.at(-1)!.id : null } }
}

/** The invitee accepts: any signed-in user whose email is the invited one, member or not (yet). */
export async function acceptInvitationCommand(s: OrgState, c: Command, x: OrgContext): Promise<Outcome<OrgState>> {
  if (!s.org) throw new AppError('invitation.invalid', 'the invitation is invalid, used or expired')
  const principal = x.msg.principal
  if (principal.type !== 'user') throw new AppError('auth.unauthenticated', 'sign in to accept an invitation')
  const f = c as Command & { invitationId: string; invitationEmail: string; role: string; userEmail: string }
  if (f.userEmail.toLowerCase() !== f.invitationEmail.toLowerCase()) {
    throw new AppError('invitation.email_mismatch', 'this invitation was sent to another email address; sign in with that one')
  }
  if (s.members.has(principal.userId)) throw new AppError('conflict', 'you are already a member of this organization')
  const joinedAt = new Date()
  // The role may have been a custom one deleted since; fall back to the least privileged built-in role.
  const roles = [roleExists(s, f.role) ? f.role : 'viewer']
  const caller: Caller = { actor: { type: 'user', id: principal.userId }, userId: principal.userId, permissions: new Set() }
  const audit = auditEntry(x, caller, 'invitation.accepted', { type: 'invitation', id: f.invitationId }, { userId: principal.userId, roles })
  await commitChange(s, x, audit, { type: 'member.added', data: { userId: principal.userId, roles } }, async (tx) => {
    if (!(await acceptInvitation(tx, x.orgId, f.invitationId, principal.userId, joinedAt))) {
      throw new AppError('invitation.invalid', 'the invitation is invalid, used or expired')
    }
    await insertMember(tx, x.orgId, { userId: principal.userId, roles, joinedAt })
  })
  s.members.set(principal.userId, { userId: principal.userId, roles, joinedAt, permissions: permissionsOf(s, roles) })
  await x.d.cache.invalidate([principal.userId])
  return { state: s, reply: { orgId: x.orgId, userId: principal.userId, roles, joinedAt: joinedAt.toISOString() } }
}
