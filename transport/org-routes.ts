import { z } from 'zod'
import type { Command } from '../actors/kind.js'
import type { ActorSystem } from '../actors/system.js'
import type { PublicUser } from '../actors/user-actor.js'
import { AppError } from '../core/errors.js'
import { newId } from '../core/ids.js'
import type { Principal } from '../core/principal.js'
import { findInvitationByToken } from '../storage/invitations.js'
import type { OrgListCache } from '../storage/org-cache.js'
import { listUserOrgs } from '../storage/orgs.js'
import type { Sql } from '../storage/postgres.js'
import { hashToken } from '../storage/sessions.js'
import { ifMatchVersion } from './if-match.js'
import {
  ApiKeyView,
  AuditView,
  Id,
  InvitationCreated,
  InvitationView,
  MemberView,
  Membership,
  MyOrg,
  Name,
  OrgParams,
  OrgView,
  PageQuery,
  Permission,
  RoleName,
  RoleView,
  Slug,
  TeamView,
  decodeCursor,
  page,
  pageOf,
} from './org-schemas.js'
import { defineRoute, type RequestContext, type Route } from './route.js'

export interface OrgRoutesDeps {
  actors: ActorSystem
  sql: Sql
  cache: OrgListCache
}

const Email = z.email().max(254).transform((e) => e.toLowerCase())
const Roles = z.array(RoleName).min(1).max(10)
const MemberParams = OrgParams.extend({ userId: Id })
const TeamMemberParams = OrgParams.extend({ teamId: Id, userId: Id })
const tags = ['organizations']

const userOf = (p: Principal) => {
  if (p.type !== 'user') throw new AppError('auth.unauthenticated', 'sign in first')
  return p
}

/** Asks an organization's actor, as the caller: the actor decides what the caller may do there. */
export function orgAsker(actors: ActorSystem) {
  return <R>(ctx: RequestContext, orgId: string, command: Command) => actors.ask<R>('org', orgId, command, { principal: ctx.principal, requestId: ctx.requestId })
}

/** A list command with `?limit=&cursor=`: the cursor decoded for the actor, its answer's cursor made opaque again. */
export function pagedAsker(actors: ActorSystem) {
  const ask = orgAsker(actors)
  return async (ctx: RequestContext<{ orgId: string }, { limit: number; cursor?: string | undefined }>, type: string) => {
    const after = decodeCursor(ctx.query.cursor)
    const reply = await ask<{ items: unknown[]; nextCursor: string | null }>(ctx, ctx.params.orgId, { type, limit: ctx.query.limit, ...(after ? { after } : {}) })
    return { status: 200, body: page(reply) }
  }
}

export function orgRoutes(d: OrgRoutesDeps): Route[] {
  const ask = orgAsker(d.actors)
  const paged = pagedAsker(d.actors)

  return [
    defineRoute({
      method: 'post',
      path: '/v1/orgs',
      operationId: 'createOrg',
      summary: 'Create an organization; the caller becomes its owner',
      tags,
      auth: 'user',
      body: z.object({ name: Name, slug: Slug }),
      responses: { 201: { description: 'the organization', schema: OrgView }, 409: { description: '`org.slug_taken`' } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, newId(), { type: 'org.create', ...ctx.body }) }),
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs',
      operationId: 'listMyOrgs',
      summary: "The caller's organizations with the caller's roles in each",
      tags,
      auth: 'user',
      responses: { 200: { description: 'organizations', schema: pageOf(MyOrg) } },
      handler: async (ctx) => {
        const { userId } = userOf(ctx.principal)
        const cached = await d.cache.read<unknown[]>(userId)
        if (cached.value !== undefined) return { status: 200, body: { items: cached.value, nextCursor: null } }
        const items = (await listUserOrgs(d.sql, userId)).map((o) => ({ ...o, createdAt: o.createdAt.toISOString() }))
        await d.cache.fill(userId, items, cached.version)
        return { status: 200, body: { items, nextCursor: null } }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId',
      operationId: 'getOrg',
      summary: 'One organization (members only)',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 200: { description: 'the organization', schema: OrgView } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'org.get' }) }),
    }),
    defineRoute({
      method: 'patch',
      path: '/v1/orgs/:orgId',
      operationId: 'updateOrg',
      summary: 'Rename an organization or change its slug (`if-match: <version>` refuses a stale update)',
      tags,
      auth: 'any',
      params: OrgParams,
      body: z.object({ name: Name.optional(), slug: Slug.optional() }).strict(),
      responses: { 200: { description: 'the organization', schema: OrgView }, 409: { description: 'stale version or slug taken' } },
      handler: async (ctx) => {
        const ifMatch = ifMatchVersion(ctx.headers)
        return { status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'org.update', changes: ctx.body, ...(ifMatch !== undefined ? { ifMatch } : {}) }) }
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/orgs/:orgId',
      operationId: 'deleteOrg',
      summary: 'Delete an organization and everything it owns',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 204: { description: 'deleted' } },
      handler: async (ctx) => {
        await ask(ctx, ctx.params.orgId, { type: 'org.delete' })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/members',
      operationId: 'listMembers',
      summary: 'Members with their roles',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 200: { description: 'members', schema: pageOf(MemberView) } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'members.list' }) }),
    }),
    defineRoute({
      method: 'patch',
      path: '/v1/orgs/:orgId/members/:userId',
      operationId: 'updateMember',
      summary: "Set a member's roles; applies to their very next request",
      tags,
      auth: 'any',
      params: MemberParams,
      body: z.object({ roles: Roles }).strict(),
      responses: { 200: { description: 'the member', schema: MemberView }, 409: { description: '`rbac.last_owner`' } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'member.update', userId: ctx.params.userId, roles: ctx.body.roles }) }),
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/orgs/:orgId/members/:userId',
      operationId: 'removeMember',
      summary: 'Remove a member, or leave (your own user id)',
      tags,
      auth: 'any',
      params: MemberParams,
      responses: { 204: { description: 'removed' }, 409: { description: '`rbac.last_owner`' } },
      handler: async (ctx) => {
        await ask(ctx, ctx.params.orgId, { type: 'member.remove', userId: ctx.params.userId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/orgs/:orgId/invitations',
      operationId: 'createInvitation',
      summary: 'Invite someone by email; a new invitation to the same address replaces the pending one',
      tags,
      auth: 'any',
      params: OrgParams,
      body: z.object({ email: Email, role: RoleName }).strict(),
      responses: { 201: { description: 'the invitation', schema: InvitationCreated } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, ctx.params.orgId, { type: 'invitation.create', ...ctx.body }) }),
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/invitations',
      operationId: 'listInvitations',
      summary: 'Invitations, newest first',
      tags,
      auth: 'any',
      params: OrgParams,
      query: PageQuery,
      responses: { 200: { description: 'invitations', schema: pageOf(InvitationView) } },
      handler: (ctx) => paged(ctx, 'invitations.list'),
    }),
    defineRoute({
      method: 'post',
      path: '/v1/invitations/accept',
      operationId: 'acceptInvitation',
      summary: 'Accept an invitation as the signed-in user whose email it was sent to',
      tags,
      auth: 'user',
      body: z.object({ token: z.string().min(20).max(200) }).strict(),
      responses: { 200: { description: 'the new membership', schema: Membership }, 400: { description: '`invitation.invalid`' }, 403: { description: '`invitation.email_mismatch`' } },
      handler: async (ctx) => {
        const me = userOf(ctx.principal)
        const invitation = await findInvitationByToken(d.sql, hashToken(ctx.body.token))
        if (!invitation || invitation.acceptedAt || invitation.revokedAt || invitation.expiresAt.getTime() <= Date.now()) {
          throw new AppError('invitation.invalid', 'the invitation is invalid, used or expired')
        }
        const profile = await d.actors.ask<PublicUser>('user', me.userId, { type: 'user.get' }, { principal: me, requestId: ctx.requestId })
        const membership = await ask(ctx, invitation.orgId, {
          type: 'invitation.accept',
          invitationId: invitation.id,
          invitationEmail: invitation.email,
          role: invitation.role,
          userEmail: profile.email,
        })
        return { status: 200, body: membership }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/roles',
      operationId: 'listRoles',
      summary: 'Built-in and custom roles with their permissions',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 200: { description: 'roles', schema: pageOf(RoleView) } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'roles.list' }) }),
    }),
    defineRoute({
      method: 'post',
      path: '/v1/orgs/:orgId/roles',
      operationId: 'createRole',
      summary: 'Define a custom role from the permission catalogue (only permissions the caller holds)',
      tags,
      auth: 'any',
      params: OrgParams,
      body: z.object({ name: RoleName, permissions: z.array(Permission).max(64) }).strict(),
      responses: { 201: { description: 'the role', schema: RoleView }, 409: { description: 'name taken' } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, ctx.params.orgId, { type: 'role.create', ...ctx.body }) }),
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/teams',
      operationId: 'listTeams',
      summary: 'Teams with their members',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 200: { description: 'teams', schema: pageOf(TeamView) } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'teams.list' }) }),
    }),
    defineRoute({
      method: 'post',
      path: '/v1/orgs/:orgId/teams',
      operationId: 'createTeam',
      summary: 'Create a team',
      tags,
      auth: 'any',
      params: OrgParams,
      body: z.object({ name: Name }).strict(),
      responses: { 201: { description: 'the team', schema: TeamView }, 409: { description: 'name taken' } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, ctx.params.orgId, { type: 'team.create', name: ctx.body.name }) }),
    }),
    defineRoute({
      method: 'put',
      path: '/v1/orgs/:orgId/teams/:teamId/members/:userId',
      operationId: 'addTeamMember',
      summary: 'Add a member of the organization to a team',
      tags,
      auth: 'any',
      params: TeamMemberParams,
      responses: { 204: { description: 'in the team' } },
      handler: async (ctx) => {
        await ask(ctx, ctx.params.orgId, { type: 'team.member.add', teamId: ctx.params.teamId, userId: ctx.params.userId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/orgs/:orgId/teams/:teamId/members/:userId',
      operationId: 'removeTeamMember',
      summary: 'Take a member out of a team',
      tags,
      auth: 'any',
      params: TeamMemberParams,
      responses: { 204: { description: 'not in the team' } },
      handler: async (ctx) => {
        await ask(ctx, ctx.params.orgId, { type: 'team.member.remove', teamId: ctx.params.teamId, userId: ctx.params.userId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/api-keys',
      operationId: 'listApiKeys',
      summary: 'Live API keys (never the keys themselves)',
      tags,
      auth: 'any',
      params: OrgParams,
      responses: { 200: { description: 'API keys', schema: pageOf(ApiKeyView) } },
      handler: async (ctx) => ({ status: 200, body: await ask(ctx, ctx.params.orgId, { type: 'apikeys.list' }) }),
    }),
    defineRoute({
      method: 'post',
      path: '/v1/orgs/:orgId/api-keys',
      operationId: 'createApiKey',
      summary: 'Create a service-account key with its own roles; the key is in this answer only',
      tags,
      auth: 'any',
      params: OrgParams,
      body: z.object({ name: Name, roles: Roles }).strict(),
      responses: { 201: { description: 'the key, shown once', schema: ApiKeyView.extend({ key: z.string() }) } },
      handler: async (ctx) => ({ status: 201, body: await ask(ctx, ctx.params.orgId, { type: 'apikey.create', ...ctx.body }) }),
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/orgs/:orgId/api-keys/:id',
      operationId: 'revokeApiKey',
      summary: 'Revoke an API key; it stops working at once',
      tags,
      auth: 'any',
      params: OrgParams.extend({ id: Id }),
      responses: { 204: { description: 'revoked' } },
      handler: async (ctx) => {
        await ask(ctx, ctx.params.orgId, { type: 'apikey.revoke', keyId: ctx.params.id })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/orgs/:orgId/audit-log',
      operationId: 'listAuditLog',
      summary: 'Every change, newest first',
      tags,
      auth: 'any',
      params: OrgParams,
      query: PageQuery,
      responses: { 200: { description: 'audit entries', schema: pageOf(AuditView) } },
      handler: (ctx) => paged(ctx, 'audit.list'),
    }),
  ]
}
