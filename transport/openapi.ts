import { z } from 'zod'
import { errorCodes } from '../core/errors.js'
import { defineRoute, type Route } from './route.js'

type JsonSchema = Record<string, unknown>

export interface OpenApiInfo {
  title: string
  version: string
  description: string
}

const Problem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  detail: z.string(),
  code: z.enum(Object.keys(errorCodes) as [keyof typeof errorCodes, ...(keyof typeof errorCodes)[]]),
  requestId: z.string(),
  errors: z.array(z.object({ path: z.string(), message: z.string() })).optional(),
})

const problemRef = { $ref: '#/components/schemas/Problem' }

/** Builds the OpenAPI 3.1 document from the very zod schemas the routes validate with. */
export function buildOpenApi(routes: readonly Route[], info: OpenApiInfo): JsonSchema {
  const paths: Record<string, Record<string, unknown>> = {}
  for (const route of routes) {
    if (route.hidden) continue
    const path = route.path.replace(/:(\w+)/g, '{$1}')
    const operation: Record<string, unknown> = {
      operationId: route.operationId,
      summary: route.summary,
      tags: route.tags,
      parameters: [...parameters(route.params, 'path'), ...parameters(route.query, 'query')],
      responses: responses(route),
    }
    if (route.body) {
      operation.requestBody = { required: true, content: { 'application/json': { schema: toSchema(route.body, 'input') } } }
    }
    paths[path] = { ...paths[path], [route.method]: operation }
  }
  return {
    openapi: '3.1.0',
    info,
    paths,
    components: {
      schemas: { Problem: toSchema(Problem, 'output') },
      securitySchemes: {
        bearer: { type: 'http', scheme: 'bearer', bearerFormat: 'JWT' },
        apiKey: { type: 'apiKey', in: 'header', name: 'Authorization', description: 'ApiKey <key>' },
      },
    },
  }
}

function toSchema(schema: z.ZodType, io: 'input' | 'output'): JsonSchema {
  const json = z.toJSONSchema(schema, { target: 'draft-2020-12', io, unrepresentable: 'any' }) as JsonSchema
  delete json.$schema
  return json
}

function parameters(schema: z.ZodType | undefined, where: 'path' | 'query'): unknown[] {
  if (!schema) return []
  const json = toSchema(schema, 'input')
  const properties = (json.properties ?? {}) as Record<string, JsonSchema>
  const required = new Set((json.required ?? []) as string[])
  return Object.entries(properties).map(([name, property]) => ({
    name,
    in: where,
    required: where === 'path' || required.has(name),
    schema: property,
    ...(typeof property.description === 'string' ? { description: property.description } : {}),
  }))
}

function responses(route: Route): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [status, doc] of Object.entries(route.responses)) {
    const contentType = doc.contentType ?? (Number(status) >= 400 && !doc.schema ? 'application/problem+json' : 'application/json')
    const schema = doc.schema ? toSchema(doc.schema, 'output') : contentType === 'application/problem+json' ? problemRef : undefined
    out[status] = { description: doc.description, ...(Number(status) === 204 ? {} : { content: { [contentType]: schema ? { schema } : {} } }) }
  }
  if (route.body) {
    out['400'] ??= problem('malformed JSON or invalid body (see `errors`)')
    out['413'] ??= problem('request body too large')
    out['415'] ??= problem('content-type is not application/json')
  } else if (route.params || route.query) {
    out['400'] ??= problem('invalid path or query parameters (see `errors`)')
  }
  // Any operation can meet a dependency outage (503) or a bug (500); both are problem documents.
  out.default = problem('an error, as an RFC 9457 problem document')
  return out
}

const problem = (description: string) => ({ description, content: { 'application/problem+json': { schema: problemRef } } })

export function openApiRoute(document: () => JsonSchema): Route {
  let cached: string | undefined
  return defineRoute({
    method: 'get',
    path: '/openapi.json',
    operationId: 'openapi',
    summary: 'This OpenAPI 3.1 document',
    tags: ['docs'],
    responses: { 200: { description: 'the OpenAPI document' } },
    handler: () => {
      cached ??= JSON.stringify(document())
      return { status: 200, contentType: 'application/json', data: cached }
    },
  })
}
