import type { z } from 'zod'
import type { Logger } from '../core/log.js'
import type { Principal } from '../core/principal.js'

export type AuthMode = 'user' | 'any'

export type Method = 'get' | 'post' | 'put' | 'patch' | 'delete'

export interface RequestContext<P = unknown, Q = unknown, B = unknown> {
  method: Method
  path: string
  params: P
  query: Q
  body: B
  /** Lower-case header names, copied before the first await (uWS invalidates `req` after it). */
  headers: Readonly<Record<string, string>>
  requestId: string
  /** Who is calling: a signed-in user on routes with `auth: 'user'`, otherwise anonymous. */
  principal: Principal
  /** The client address, read from the socket on first use: read it before the answer is written. */
  ip: string
  log: Logger
}

export interface JsonReply {
  status: number
  body?: unknown
  headers?: Record<string, string>
}

export interface RawReply {
  status: number
  contentType: string
  data: string | Uint8Array
  headers?: Record<string, string>
}

export type Reply = JsonReply | RawReply

export interface ResponseDoc {
  description: string
  schema?: z.ZodType
  contentType?: string
}

export interface RouteDef<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType> {
  method: Method
  /** uWebSockets.js pattern: `/v1/orgs/:orgId` */
  path: string
  operationId: string
  summary: string
  tags: string[]
  params?: P
  query?: Q
  body?: B
  responses: Record<number, ResponseDoc>
  /** Left out of the OpenAPI document (static assets of the docs page, say). */
  hidden?: boolean
  /**
   * `user`: a valid bearer access token is required (401 otherwise) and becomes `ctx.principal`; `any`: an API
   * key (`Authorization: ApiKey <key>`) is accepted too.
   */
  auth?: AuthMode
  handler(ctx: RequestContext<z.output<P>, z.output<Q>, z.output<B>>): Reply | Promise<Reply>
}

// The route table holds routes of many shapes; the handler is a method so that it stays assignable here.
export type Route = RouteDef<z.ZodType, z.ZodType, z.ZodType>

/** Ties a handler's context type to the schemas that produce it. */
export function defineRoute<P extends z.ZodType, Q extends z.ZodType, B extends z.ZodType>(def: RouteDef<P, Q, B>): Route {
  return def as unknown as Route
}

export function isRawReply(reply: Reply): reply is RawReply {
  return 'contentType' in reply
}
