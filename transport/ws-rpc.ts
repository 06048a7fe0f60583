import { z } from 'zod'
import type { Command } from '../actors/kind.js'
import type { ActorSystem } from '../actors/system.js'
import { AppError } from '../core/errors.js'
import type { Principal } from '../core/principal.js'
import { Id, PageQuery, decodeCursor, page } from './org-schemas.js'
import { ProjectChanges, ProjectCreate, hasChange } from './project-routes.js'
import { fieldErrors } from '../core/validation.js'

const OrgRef = z.object({ orgId: Id })
const Version = z.number().int().min(0).optional()

interface Method {
  params: z.ZodType
  command(params: Record<string, unknown>): { orgId: string; command: Command; page?: boolean }
}

/**
 * The commands clients may run over a WebSocket: the same org actor commands as the HTTP endpoints, with
 * the same validation and the same permission checks (the actor's).
 */
const methods: Record<string, Method> = {
  'projects.create': {
    params: OrgRef.extend(ProjectCreate.shape).strict(),
    command: ({ orgId, ...fields }) => ({ orgId: String(orgId), command: { type: 'project.create', ...fields } }),
  },
  'projects.update': {
    params: OrgRef.extend({ id: Id, ifMatch: Version, ...ProjectChanges.shape }).strict().refine(({ orgId: _o, id: _i, ifMatch: _v, ...changes }) => hasChange(changes), 'change at least one field'),
    command: ({ orgId, id, ifMatch, ...changes }) => ({
      orgId: String(orgId),
      command: { type: 'project.update', projectId: id, changes, ...(ifMatch !== undefined ? { ifMatch } : {}) },
    }),
  },
  'projects.delete': {
    params: OrgRef.extend({ id: Id, ifMatch: Version }).strict(),
    command: ({ orgId, id, ifMatch }) => ({ orgId: String(orgId), command: { type: 'project.delete', projectId: id, ...(ifMatch !== undefined ? { ifMatch } : {}) } }),
  },
  'projects.get': {
    params: OrgRef.extend({ id: Id }).strict(),
    command: ({ orgId, id }) => ({ orgId: String(orgId), command: { type: 'project.get', projectId: id } }),
  },
  'projects.list': {
    params: OrgRef.extend(PageQuery.shape).strict(),
    command: ({ orgId, limit, cursor }) => {
      const after = decodeCursor(cursor as string | undefined)
      return { orgId: String(orgId), command: { type: 'projects.list', limit, ...(after ? { after } : {}) }, page: true }
    },
  },
}

export const rpcMethods = Object.keys(methods)

export async function runRpc(actors: ActorSystem, method: string, params: unknown, principal: Principal, requestId: string): Promise<unknown> {
  const m = methods[method]
  if (!m) throw new AppError('not_found', `no RPC method ${method}; there are ${rpcMethods.join(', ')}`)
  const parsed = m.params.safeParse(params)
  if (!parsed.success) throw new AppError('validation.failed', 'the params are invalid', { errors: fieldErrors(parsed.error, '') })
  const { orgId, command, page: paged } = m.command(parsed.data as Record<string, unknown>)
  const result = await actors.ask('org', orgId, command, { principal, requestId })
  return paged ? page(result as { items: unknown[]; nextCursor: string | null }) : result
}
