import { AppError } from '../core/errors.js'
import { loadApiKeys } from '../storage/api-keys.js'
import { loadCustomRoles, loadMembers, loadTeams, findOrg } from '../storage/orgs.js'
import { listProjects as loadProjects } from '../storage/projects.js'
import { inTenant } from '../storage/tenant.js'
import { channelSeq } from '../storage/outbox.js'
import { isSeqConflict } from '../storage/postgres.js'
import { orgChannel } from '../core/events.js'
import { FencingError } from './errors.js'
import { defineKind, type ActorKind, type Command, type MessageContext } from './kind.js'
import {
  changeTeamMember,
  createApiKey,
  createOrg,
  createRole,
  createTeam,
  deleteOrgCommand,
  getJob,
  retryJob,
  jobChanged,
  getExport,
  getOrg,
  authorizeChannel,
  listApiKeys,
  listAuditCommand,
  listRoles,
  listTeams,
  noteKeyUse,
  revokeApiKeyCommand,
  updateOrgCommand,
} from './org-admin.js'
import type { OrgActorDeps, OrgContext, OrgHandler } from './org-context.js'
import { acceptInvitationCommand, createInvitation, listInvitationsOf, listMembers, removeMember, updateMember } from './org-members.js'
import { batchableProjectCommands, getProject, getProjectJson, listProjects, projectBatch, projectWrite } from './org-projects.js'
import { emptyState, orgView, permissionsOf, projectView, type OrgState } from './org-state.js'

export type { OrgActorDeps } from './org-context.js'

/** A clash on the channel's event number means another activation wrote first: this one's state is stale. */
async function fenced<T>(work: T | Promise<T>, orgId: string): Promise<T> {
  try {
    return await work
  } catch (err) {
    if (isSeqConflict(err)) throw new FencingError(`organization ${orgId}`, -1)
    throw err
  }
}

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Reads answered from memory, synchronously: the hot paths. */
const reads: Record<string, (s: OrgState, c: Command, x: OrgContext) => unknown> = {
  'org.get': getOrg,
  'channel.authorize': authorizeChannel,
  'project.get': getProject,
  'project.json': getProjectJson,
  'projects.list': listProjects,
  'roles.list': listRoles,
  'teams.list': listTeams,
  'apikeys.list': listApiKeys,
}

const commands: Record<string, OrgHandler> = {
  'org.create': createOrg,
  'org.update': updateOrgCommand,
  'org.delete': deleteOrgCommand,
  'members.list': listMembers,
  'member.update': updateMember,
  'member.remove': removeMember,
  'invitation.create': createInvitation,
  'invitations.list': listInvitationsOf,
  'invitation.accept': acceptInvitationCommand,
  'role.create': createRole,
  'team.create': createTeam,
  'team.member.add': changeTeamMember,
  'team.member.remove': changeTeamMember,
  'apikey.create': createApiKey,
  'apikey.revoke': revokeApiKeyCommand,
  'audit.list': listAuditCommand,
  'job.get': getJob,
  'job.retry': retryJob,
  'job.changed': jobChanged,
  'export.get': getExport,
  'project.create': projectWrite,
  'project.update': projectWrite,
  'project.delete': projectWrite,
  'project.export': projectWrite,
}

/**
 * One actor per organization: it holds the members, roles, teams, API keys and projects in memory and is the
 * one place that decides what a principal may do there. Every change commits with its audit row in one
 * tenant-scoped transaction before memory changes.
 */
export function orgKind(d: OrgActorDeps): ActorKind<unknown> {
  const context = (ctx: MessageContext): OrgContext => ({ d, msg: ctx, orgId: ctx.id })
  return defineKind<OrgState>({
    name: 'org',
    async load(id) {
      const s = emptyState()
      // Not an id we could have issued: nothing to read, and no cast error from Postgres.
      if (!uuid.test(id)) return s
      await inTenant(d.sql, id, async (tx) => {
        const org = await findOrg(tx, id)
        if (!org) return
        const [members, roles, teams, keys, projects] = await Promise.all([
          loadMembers(tx, id),
          loadCustomRoles(tx, id),
          loadTeams(tx, id),
          loadApiKeys(tx, id),
          loadProjects(tx, id, Number.MAX_SAFE_INTEGER),
        ])
        s.org = org
        s.view = orgView(org)
        s.seq = await channelSeq(tx, orgChannel(id))
        for (const r of roles) s.roles.set(r.name, r)
        for (const m of members) s.members.set(m.userId, { ...m, permissions: permissionsOf(s, m.roles) })
        for (const t of teams) s.teams.set(t.id, t)
        for (const k of keys) s.apiKeys.set(k.id, { ...k, permissions: permissionsOf(s, k.roles) })
        for (const p of projects) {
          s.projects.set(p.id, { row: p, view: projectView(p) })
          s.projectOrder.push(p.id)
        }
      })
      // Events a previous owner committed but did not publish go out first, before any of this activation's.
      if (s.org) void d.events.flush(orgChannel(id))
      return s
    },
    handle(s, command, ctx) {
      const x = context(ctx)
      if (command.type === 'outbox.flush') {
        void d.events.flush(orgChannel(ctx.id))
        return { reply: null }
      }
      if (ctx.principal.type === 'apiKey') noteKeyUse(s, x)
      const read = reads[command.type]
      if (read) return { reply: read(s, command, x) }
      const handler = commands[command.type]
      if (!handler) throw new AppError('bad_request', `unknown organization command ${command.type}`)
      return fenced(handler(s, command, x), ctx.id)
    },
    batch: {
      accepts: (command) => batchableProjectCommands.has(command.type),
      max: 128,
      handle: (s, items) => fenced(projectBatch(s, items, (item) => context(item.ctx)), items[0]!.ctx.id),
    },
  })
}
