import { z } from 'zod'
import { AppError } from '../core/errors.js'
import { permissionCatalogue } from '../core/rbac.js'

/** Ids in paths are opaque strings: an unknown or malformed one is simply not found. */
export const Id = z.string().min(1).max(64)
export const OrgParams = z.object({ orgId: Id })

export const Name = z.string().trim().min(1).max(100)
export const Slug = z
  .string()
  .min(2)
  .max(63)
  .regex(/^[a-z0-9](?:[a-z0-9-]*[a-z0-9])?$/, 'lower-case letters, digits and inner hyphens')
export const RoleName = z
  .string()
  .min(1)
  .max(50)
  .regex(/^[a-z][a-z0-9_-]*$/, 'lower-case letters, digits, - and _, starting with a letter')

export const PageQuery = z.object({
  limit: z.coerce.number().int().min(1).max(100).default(20),
  cursor: z.string().max(200).optional(),
})

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/

/** Cursors are opaque to clients: the base64url of the last id of the previous page. */
export const encodeCursor = (id: string | null): string | null => (id === null ? null : Buffer.from(id).toString('base64url'))

export function decodeCursor(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined
  const id = Buffer.from(cursor, 'base64url').toString()
  if (!uuid.test(id)) throw new AppError('validation.failed', 'the cursor is not one this API issued', { errors: [{ path: 'cursor', message: 'invalid cursor' }] })
  return id
}

/** A page from an actor, with its cursor made opaque. */
export function page<T>(reply: { items: T[]; nextCursor: string | null }): { items: T[]; nextCursor: string | null } {
  return { items: reply.items, nextCursor: encodeCursor(reply.nextCursor) }
}

export const pageOf = <T extends z.ZodType>(item: T) => z.object({ items: z.array(item), nextCursor: z.string().nullable() })

export const OrgView = z.object({ id: z.string(), name: z.string(), slug: z.string(), version: z.number(), createdAt: z.string() })
export const MyOrg = OrgView.extend({ roles: z.array(z.string()) })
export const MemberView = z.object({ userId: z.string(), email: z.string(), name: z.string(), roles: z.array(z.string()), joinedAt: z.string() })
export const InvitationCreated = z.object({ id: z.string(), email: z.string(), role: z.string(), expiresAt: z.string() })
export const InvitationView = InvitationCreated.extend({ createdAt: z.string(), status: z.enum(['pending', 'accepted', 'revoked', 'expired']) })
export const Membership = z.object({ orgId: z.string(), userId: z.string(), roles: z.array(z.string()), joinedAt: z.string() })
export const Permission = z.enum(permissionCatalogue)
export const RoleView = z.object({ id: z.string(), name: z.string(), permissions: z.array(z.string()), builtIn: z.boolean() })
export const TeamView = z.object({ id: z.string(), name: z.string(), memberIds: z.array(z.string()), createdAt: z.string() })
export const ApiKeyView = z.object({ id: z.string(), name: z.string(), prefix: z.string(), roles: z.array(z.string()), createdAt: z.string(), lastUsedAt: z.string().nullable() })
export const AuditView = z.object({
  id: z.string(),
  at: z.string(),
  actor: z.object({ type: z.string(), id: z.string() }),
  action: z.string(),
  target: z.object({ type: z.string(), id: z.string() }),
  requestId: z.string().nullable(),
  changes: z.record(z.string(), z.unknown()),
})
export const ProjectStatus = z.enum(['active', 'archived'])
export const ProjectView = z.object({
  id: z.string(),
  orgId: z.string(),
  teamId: z.string().nullable(),
  name: z.string(),
  description: z.string(),
  status: ProjectStatus,
  version: z.number(),
  createdAt: z.string(),
  updatedAt: z.string(),
})
export const JobView = z.object({
  id: z.string(),
  name: z.string(),
  status: z.enum(['queued', 'running', 'succeeded', 'failed', 'dead']),
  attempts: z.number(),
  result: z.unknown().optional(),
  error: z.string().optional(),
  createdAt: z.string(),
  updatedAt: z.string(),
})
