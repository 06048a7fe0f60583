/**
 * The peer of the `ws-fanout` benchmark: organization change fan-out written the way a typical Socket.IO 4
 * service would, against the same database as ours:
 *
 * - a plain Node `http` server; Socket.IO 4 attached with its defaults (but no client bundle served);
 * - a Socket.IO middleware verifies the JWT from the handshake's `auth.token` with jose (EdDSA pinned,
 *   issuer and audience checked; public keys fetched once from our `/.well-known/jwks.json`);
 * - `subscribe` (with an acknowledgement) joins the room `org:<orgId>` after a membership check against
 *   Postgres `member_roles` (any built-in role may read projects);
 * - `POST /v1/orgs/:orgId/projects` verifies the bearer JWT, checks `projects:write` from `member_roles`,
 *   inserts the project and its audit row in one `sql.begin`, answers 201 and then
 *   `io.to('org:<orgId>').emit('event', ...)` the change, shaped like our event frame (a per-room counter
 *   in memory stands in for `seq`; nothing is persisted for replay, unlike ours' outbox and stream).
 *
 * Usage: node --import tsx test/bench/peers/socketio-fanout.ts <jwks url>
 * Configuration: DATABASE_URL, DB_POOL_MAX, JWT_ISSUER, JWT_AUDIENCE, HOST, PORT (0: any free port), as ours.
 * Prints `{"port":<n>}` on stdout once listening; one process, no adapter, no cluster; exits on SIGTERM/SIGINT.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { Server } from 'socket.io'
import { newRequestId } from '../../../core/ids.js'
import { insertProjectWithAudit, loadPeerContext, permissionOf } from './peer-common.js'

interface SocketData {
  userId: string
}

/** The frame the clients receive: the shape of ours' `event` frame. */
export interface EventFrame {
  channel: string
  seq: number
  event: { type: string; data: unknown; at: string; requestId: string }
}

type Ack = (answer: { ok: true } | { error: string }) => void

interface ClientToServer {
  subscribe(channel: string, ack: Ack): void
}

interface ServerToClient {
  event(frame: EventFrame): void
}

const { config, sql, verify } = await loadPeerContext({
  script: 'socketio-fanout.ts',
  applicationName: 'bench-socketio-peer',
  argv: process.argv,
  env: process.env,
})

const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i
const safeRequestId = /^[A-Za-z0-9._~:/+=-]{1,128}$/
const seqs = new Map<string, number>()

const http = createServer((req, res) => {
  handle(req, res).catch((err: unknown) => {
    process.stderr.write(`request failed: ${err instanceof Error ? err.message : String(err)}\n`)
    if (!res.headersSent) answer(res, 500, { status: 500, title: 'internal' })
  })
})
const io = new Server<ClientToServer, ServerToClient, Record<string, never>, SocketData>(http, { serveClient: false })

io.use((socket, next) => {
  const auth = socket.handshake.auth as { token?: unknown }
  if (typeof auth.token !== 'string') return next(new Error('unauthenticated'))
  verify(auth.token).then(
    (userId) => {
      socket.data.userId = userId
      next()
    },
    () => next(new Error('unauthenticated')),
  )
})

io.on('connection', (socket) => {
  socket.on('subscribe', (channel: unknown, reply: unknown) => {
    // Frames come from the network: check their shape before trusting the declared types.
    if (typeof reply !== 'function') return
    const ack = reply as Ack
    const orgId = typeof channel === 'string' && channel.startsWith('org:') ? channel.slice(4) : ''
    if (!uuid.test(orgId)) return ack({ error: 'validation.failed' })
    permissionOf(sql, orgId, socket.data.userId, 'projects:read').then(
      (answer) => {
        if (answer !== 'yes') return ack({ error: 'rbac.forbidden' })
        void socket.join(`org:${orgId}`)
        ack({ ok: true })
      },
      () => ack({ error: 'unavailable' }),
    )
  })
})

function answer(res: ServerResponse, status: number, body: unknown, requestId?: string): void {
  const text = JSON.stringify(body)
  res.writeHead(status, {
    'content-type': status >= 400 ? 'application/problem+json' : 'application/json',
    'content-length': Buffer.byteLength(text),
    ...(requestId ? { 'x-request-id': requestId } : {}),
  })
  res.end(text)
}

async function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > limit) throw new Error('body too large')
    chunks.push(chunk)
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'))
}

async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
  const incoming = req.headers['x-request-id']
  const requestId = typeof incoming === 'string' && safeRequestId.test(incoming) ? incoming : newRequestId()
  const path = (req.url ?? '/').split('?')[0]!
  if (req.method === 'GET' && path === '/health') return answer(res, 200, { status: 'ok' }, requestId)
  const match = /^\/v1\/orgs\/([^/]+)\/projects$/.exec(path)
  if (req.method !== 'POST' || !match) return answer(res, 404, { status: 404, title: 'not found' }, requestId)
  const orgId = match[1]!
  const header = req.headers.authorization
  if (!header?.startsWith('Bearer ')) return answer(res, 401, { status: 401, title: 'missing bearer token' }, requestId)
  let userId: string
  try {
    userId = await verify(header.slice(7))
  } catch {
    return answer(res, 401, { status: 401, title: 'invalid token' }, requestId)
  }
  if (!uuid.test(orgId)) return answer(res, 400, { status: 400, title: 'invalid orgId' }, requestId)
  let body: unknown
  try {
    body = await readJson(req, config.bodyLimitBytes)
  } catch {
    return answer(res, 400, { status: 400, title: 'malformed body' }, requestId)
  }
  const { name, description = '' } = (typeof body === 'object' && body !== null ? body : {}) as { name?: unknown; description?: unknown }
  if (typeof name !== 'string' || name.length < 1 || name.length > 100 || typeof description !== 'string' || description.length > 2000) {
    return answer(res, 400, { status: 400, title: 'invalid body' }, requestId)
  }
  const allowed = await permissionOf(sql, orgId, userId, 'projects:write')
  if (allowed === 'not member') return answer(res, 404, { status: 404, title: 'organization not found' }, requestId)
  if (allowed === 'no') return answer(res, 403, { status: 403, title: 'missing permission projects:write' }, requestId)
  const project = await insertProjectWithAudit(sql, { orgId, userId, requestId, name, description })
  answer(res, 201, project, requestId)
  // After the commit, as a typical Socket.IO service does: no outbox, a crash here loses the event.
  const channel = `org:${orgId}`
  const seq = (seqs.get(channel) ?? 0) + 1
  seqs.set(channel, seq)
  io.to(channel).emit('event', { channel, seq, event: { type: 'project.created', data: project, at: new Date().toISOString(), requestId } })
}

http.listen(config.port, config.host, () => {
  const bound = http.address()
  process.stdout.write(`${JSON.stringify({ port: typeof bound === 'object' && bound ? bound.port : config.port })}\n`)
})

const stop = () => {
  void io
    .close()
    .then(() => sql.end({ timeout: 1 }))
    .finally(() => process.exit(0))
}
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
