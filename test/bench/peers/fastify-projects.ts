/**
 * The peer of the `orgs` benchmark: `GET /v1/orgs/:orgId/projects/:id` and `POST /v1/orgs/:orgId/projects`
 * written the way a typical hand-written Fastify 5 service would, against the same database as ours:
 *
 * - an onRequest hook verifies the bearer JWT with jose on every request (EdDSA pinned, issuer and audience
 *   checked; the public keys are fetched once from our `/.well-known/jwks.json`);
 * - a preHandler loads the caller's roles in the organization from Postgres and applies the built-in role
 *   table of core/rbac.ts (no member: 404, missing permission: 403, as ours answers);
 * - GET reads the row with postgres.js; POST inserts the project and its audit row in one `sql.begin`;
 * - JSON schemas validate params and bodies and serialize responses (fast-json-stringify), as Fastify
 *   recommends.
 *
 * Usage: node --import tsx test/bench/peers/fastify-projects.ts <jwks url>
 * Configuration comes from the same variables (and defaults) as ours: DATABASE_URL, DB_POOL_MAX, JWT_ISSUER,
 * JWT_AUDIENCE, HOST, PORT (0: any free port). Prints `{"port":<n>}` on stdout once listening; one process,
 * no cluster; exits on SIGTERM/SIGINT.
 */
import Fastify, { type FastifyReply, type FastifyRequest } from 'fastify'
import type { Permission } from '../../../core/rbac.js'
import { insertProjectWithAudit, loadPeerContext, permissionOf, projectColumns, type ProjectRow } from './peer-common.js'

declare module 'fastify' {
  interface FastifyRequest {
    userId: string
  }
}

const { config, sql, verify } = await loadPeerContext({
  script: 'fastify-projects.ts',
  applicationName: 'bench-fastify-peer',
  argv: process.argv,
  env: process.env,
})

const app = Fastify({ logger: false })
app.decorateRequest('userId', '')

const problem = (reply: FastifyReply, status: number, title: string) => reply.code(status).type('application/problem+json').send({ status, title })

app.addHook('onRequest', async (req, reply) => {
  const header = req.headers.authorization
  if (!header?.startsWith('Bearer ')) return problem(reply, 401, 'missing bearer token')
  try {
    req.userId = await verify(header.slice(7))
  } catch {
    return problem(reply, 401, 'invalid token')
  }
})

/** A preHandler that lets the request through only when the caller's roles in `:orgId` grant `permission`. */
function requirePermission(permission: Permission) {
  return async (req: FastifyRequest<{ Params: { orgId: string } }>, reply: FastifyReply) => {
    const answer = await permissionOf(sql, req.params.orgId, req.userId, permission)
    // Not a member: the organization does not exist as far as the caller is concerned.
    if (answer === 'not member') return problem(reply, 404, 'organization not found')
    if (answer === 'no') return problem(reply, 403, `missing permission ${permission}`)
  }
}

const uuid = { type: 'string', format: 'uuid' } as const
const projectSchema = {
  type: 'object',
  properties: {
    id: { type: 'string' },
    orgId: { type: 'string' },
    teamId: { type: ['string', 'null'] },
    name: { type: 'string' },
    description: { type: 'string' },
    status: { type: 'string' },
    version: { type: 'integer' },
    createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' },
  },
} as const
const columns = projectColumns(sql)

app.get<{ Params: { orgId: string; id: string } }>(
  '/v1/orgs/:orgId/projects/:id',
  {
    schema: {
      params: { type: 'object', properties: { orgId: uuid, id: uuid }, required: ['orgId', 'id'] },
      response: { 200: projectSchema },
    },
    preHandler: requirePermission('projects:read'),
  },
  async (req, reply) => {
    const [row] = await sql<ProjectRow[]>`select ${columns} from projects where org_id = ${req.params.orgId} and id = ${req.params.id}`
    if (!row) return problem(reply, 404, 'project not found')
    return row
  },
)

app.post<{ Params: { orgId: string }; Body: { name: string; description?: string } }>(
  '/v1/orgs/:orgId/projects',
  {
    schema: {
      params: { type: 'object', properties: { orgId: uuid }, required: ['orgId'] },
      body: {
        type: 'object',
        properties: { name: { type: 'string', minLength: 1, maxLength: 100 }, description: { type: 'string', maxLength: 2000 } },
        required: ['name'],
        additionalProperties: false,
      },
      response: { 201: projectSchema },
    },
    preHandler: requirePermission('projects:write'),
  },
  async (req, reply) => {
    const { orgId } = req.params
    const { name, description = '' } = req.body
    const row = await insertProjectWithAudit(sql, { orgId, userId: req.userId, requestId: req.id, name, description })
    return reply.code(201).send(row)
  },
)

await app.listen({ host: config.host, port: config.port })
const bound = app.server.address()
process.stdout.write(`${JSON.stringify({ port: typeof bound === 'object' && bound ? bound.port : config.port })}\n`)

const stop = () => {
  void app
    .close()
    .then(() => sql.end({ timeout: 1 }))
    .finally(() => process.exit(0))
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
