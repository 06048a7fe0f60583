import { randomBytes } from 'node:crypto'
import type { HttpRequest, HttpResponse, TemplatedApp, us_socket_context_t } from 'uWebSockets.js'
import type { SessionRevocations } from '../actors/session-revocations.js'
import type { ActorSystem } from '../actors/system.js'
import type { AccessTokens } from '../core/access-tokens.js'
import type { Config } from '../core/config.js'
import { AppError, internalError, problemOf } from '../core/errors.js'
import { parseChannel, type ChannelEvent } from '../core/events.js'
import { newRequestId } from '../core/ids.js'
import type { Logger } from '../core/log.js'
import type { ChannelFeed, ChannelHub } from './channel-hub.js'
import { topicOf } from './channel-hub.js'
import type { Presence } from './presence.js'
import { Conn, type SocketData } from './ws-conn.js'
import { ClientFrame, decodeFrame, encodeFrame, subprotocols, type WireProtocol } from './ws-frames.js'
import type { WsMetrics } from './ws-metrics.js'
import { runRpc } from './ws-rpc.js'

/** The limits come straight from configuration (`WS_*`). */
type WsLimits = Config['ws']

export interface WsOptions extends WsLimits {
  app: TemplatedApp
  path: string
  corsOrigins: readonly string[]
  actors: ActorSystem
  tokens: AccessTokens
  revocations: SessionRevocations
  hub: ChannelHub
  presence: Presence
  metrics: WsMetrics
  log: Logger
}

/** Sockets the watchdog checks for a full send buffer per 100 ms tick (all of them every tick up to this many). */
const SWEEP_BATCH = 2_000

/** The auth deadline of a socket whose token is being checked: none (the check is local and short). */
const CHECKING = Number.POSITIVE_INFINITY

/** Close codes of API.md. */
export const CloseCode = { unauthenticated: 4001, revoked: 4003, tooSlow: 4008, rateLimited: 4029, badFrames: 1008, goingAway: 1001 } as const

/**
 * `GET /v1/ws`: the WebSocket sessions of API.md. Sockets authenticate with their first frame, subscribe to
 * channels the owning actor allows, receive events through the channel hub (uWebSockets.js topics), resume
 * with `since`, run RPC commands through the same actors as HTTP, and see presence. Revocation reaches open
 * sockets: a membership change drops the channel, a revoked session closes the socket.
 */
export function createWsServer(o: WsOptions) {
  // Sockets are indexed once each: by session once authenticated, before that in `pending` with the time
  // their auth frame is due (the watchdog enforces it: no timer per socket). A user's sockets are found
  // through the user's sessions, which costs per session rather than per socket.
  const pending = new Map<Conn, number>()
  const bySession = new Map<string, Set<Conn>>()
  const sessionsOf = new Map<string, Set<string>>()
  let open = 0
  let serials = 0
  /** Connection ids are this server's random prefix and the socket's serial number, made only when needed. */
  const node = randomBytes(6).toString('base64url')
  const connectionId = (conn: Conn) => `${node}-${conn.serial}`
  const allowed = new Set(o.corsOrigins)
  let draining = false

  const indexSession = (conn: Conn) => {
    let sockets = bySession.get(conn.sessionId)
    if (!sockets) {
      bySession.set(conn.sessionId, (sockets = new Set()))
      let sessions = sessionsOf.get(conn.userId)
      if (!sessions) sessionsOf.set(conn.userId, (sessions = new Set()))
      sessions.add(conn.sessionId)
    }
    sockets.add(conn)
  }
  const unindexSession = (conn: Conn) => {
    const sockets = bySession.get(conn.sessionId)
    if (!sockets?.delete(conn) || sockets.size > 0) return
    bySession.delete(conn.sessionId)
    const sessions = sessionsOf.get(conn.userId)
    sessions?.delete(conn.sessionId)
    if (sessions?.size === 0) sessionsOf.delete(conn.userId)
  }
  const socketsOf = (userId: string): Conn[] => [...(sessionsOf.get(userId) ?? [])].flatMap((s) => [...(bySession.get(s) ?? [])])
  const everySocket = (): Conn[] => [...pending.keys(), ...[...bySession.values()].flatMap((s) => [...s])]

  const close = (conn: Conn, code: number, reason: string) => {
    if (!conn.open || !conn.ws) return
    o.metrics.closed.labels(String(code)).inc()
    if (code === CloseCode.tooSlow) o.metrics.slowReadersClosed.inc()
    // end() runs the close handler synchronously, which does the bookkeeping.
    conn.ws.end(code, reason)
  }

  /** Sends one frame to one socket, from inside a uWS callback or after an await alike. */
  const send = (conn: Conn, frame: unknown) => {
    if (!conn.open || !conn.ws) return
    const ws = conn.ws
    const data = encodeFrame(frame, conn.protocol)
    ws.cork(() => ws.send(data, conn.protocol === 'msgpack'))
    if (ws.getBufferedAmount() > o.maxBufferedBytes) close(conn, CloseCode.tooSlow, 'too slow a reader')
  }
  const sendRaw = (conn: Conn, data: string | Uint8Array) => {
    if (!conn.open || !conn.ws) return
    const ws = conn.ws
    ws.cork(() => ws.send(data, typeof data !== 'string'))
  }
  const error = (conn: Conn, id: string | number | undefined, err: unknown) => {
    const e = err instanceof AppError ? err : internalError(err)
    if (!(err instanceof AppError)) o.log.error({ err, connectionId: connectionId(conn) }, 'websocket command failed')
    const problem = problemOf(e, connectionId(conn))
    send(conn, { ...(id !== undefined ? { id } : {}), type: 'error', code: e.code, message: e.message, ...(problem.errors ? { errors: problem.errors } : {}) })
  }

  /**
   * Drops one channel from a socket: its topic, its feed reference and its presence. A subscribe still in
   * progress only loses its place here; it gives back what it took itself when it resumes.
   */
  const drop = (conn: Conn, channel: string) => {
    const wasReady = conn.remove(channel)
    if (wasReady === undefined) return
    o.metrics.subscriptions.dec()
    if (!wasReady) return
    if (conn.open && conn.ws) conn.ws.unsubscribe(topicOf(channel, conn.protocol))
    o.hub.release(channel)
    if (channel.startsWith('org:') && conn.authenticated) {
      o.presence.leave(channel, conn.userId)
      o.presence.unwatch(channel)
    }
  }

  const principalOf = (conn: Conn) => ({ type: 'user' as const, userId: conn.userId, sessionId: conn.sessionId })

  const authorize = async (conn: Conn, channel: string): Promise<void> => {
    const parsed = parseChannel(channel)
    if (!parsed) throw new AppError('validation.failed', 'channels are `org:<id>` or `user:<id>`', { errors: [{ path: 'channel', message: 'unknown channel' }] })
    if (parsed.kind === 'user') {
      if (parsed.id !== conn.userId) throw new AppError('rbac.forbidden', 'a user channel is only its user’s')
      return
    }
    try {
      await o.actors.ask('org', parsed.id, { type: 'channel.authorize' }, { principal: principalOf(conn), requestId: newRequestId() })
    } catch (err) {
      // Not a member (or no such organization) looks the same as lacking the permission.
      if (err instanceof AppError && (err.code === 'not_found' || err.code === 'rbac.forbidden')) throw new AppError('rbac.forbidden', `not permitted on ${channel}`)
      throw err
    }
  }

  const subscribe = async (conn: Conn, id: string | number, channel: string, since: number | undefined) => {
    if (conn.has(channel)) return send(conn, { id, type: 'ok' })
    await authorize(conn, channel)
    if (!conn.open) return
    if (conn.has(channel)) return send(conn, { id, type: 'ok' })
    const attempt = conn.add(channel)
    o.metrics.subscriptions.inc()
    const userId = conn.userId
    const isOrg = channel.startsWith('org:')
    // What this subscribe has taken so far, given back exactly if it fails or the socket goes meanwhile.
    let joined = false
    let watching = false
    let feed: ChannelFeed | undefined
    const undo = () => {
      if (feed) o.hub.release(channel)
      if (watching) o.presence.unwatch(channel)
      if (joined) o.presence.leave(channel, userId)
      // Only its own place: after an unsubscribe and a new subscribe the channel is that one's.
      if (conn.owns(channel, attempt)) {
        conn.remove(channel)
        o.metrics.subscriptions.dec()
      }
    }
    // Still wanted: the socket is open and nobody unsubscribed (or unsubscribed and subscribed anew) meanwhile.
    const wanted = () => conn.open && conn.owns(channel, attempt)
    let replay: ChannelEvent[] = []
    try {
      if (isOrg) {
        o.presence.join(channel, userId)
        joined = true
        await o.presence.watch(channel)
        watching = true
      }
      feed = await o.hub.acquire(channel)
      if (!wanted()) return undo()
      if (since !== undefined && !(feed.liveSeq !== undefined && (since >= feed.liveSeq || (feed.ring[0] && feed.ring[0].event.seq <= since + 1)))) {
        // Not all in this node's recent events: the stream has the rest.
        const history = await o.hub.history(channel, feed.subject, since)
        if (history.expired) throw new AppError('history.expired', `events after ${since} on ${channel} are no longer kept; fetch the current state again`)
        replay = history.events
        if (feed.liveSeq === undefined) feed.liveSeq = history.lastSeq
        else if (feed.liveSeq < history.lastSeq) await feed.reach(history.lastSeq, 2_000)
      }
    } catch (err) {
      undo()
      throw err
    }
    if (!wanted()) return undo()
    // From here to the topic subscription nothing awaits, so no live event can fall between replay and live.
    send(conn, { id, type: 'ok' })
    let last = since ?? Number.POSITIVE_INFINITY
    for (const e of replay) {
      if (e.seq <= last) continue
      send(conn, { type: 'event', channel, seq: e.seq, event: { type: e.type, data: e.data, at: e.at, ...(e.requestId ? { requestId: e.requestId } : {}) } })
      last = e.seq
      o.metrics.replayed.inc()
    }
    if (since !== undefined) {
      for (const d of feed.ring) {
        if (d.event.seq <= last) continue
        sendRaw(conn, conn.protocol === 'json' ? d.json : d.msgpack)
        last = d.event.seq
        o.metrics.replayed.inc()
      }
    }
    if (!wanted()) return undo()
    conn.ws!.subscribe(topicOf(channel, conn.protocol))
    conn.ready(feed.channel, attempt)
  }

  const authenticate = async (conn: Conn, token: string) => {
    let claims
    try {
      claims = o.tokens.cached(token) ?? (await o.tokens.verify(token))
    } catch {
      return close(conn, CloseCode.unauthenticated, 'invalid token')
    }
    if (!conn.open) return
    if (o.revocations.isRevoked(claims.sid)) return close(conn, CloseCode.revoked, 'session revoked')
    conn.userId = claims.sub
    conn.sessionId = claims.sid
    pending.delete(conn)
    indexSession(conn)
    send(conn, { type: 'ready', userId: claims.sub, sessionId: claims.sid, connectionId: connectionId(conn) })
  }

  const handle = async (conn: Conn, frame: ClientFrame) => {
    if (!conn.authenticated) {
      if (frame.type !== 'auth') return close(conn, CloseCode.unauthenticated, 'the first frame must be auth')
      // One token check at a time: a second auth frame while the first is checked would index the socket twice.
      if (pending.get(conn) === CHECKING) return error(conn, undefined, new AppError('bad_request', 'authentication is already under way'))
      pending.set(conn, CHECKING)
      return authenticate(conn, frame.token)
    }
    switch (frame.type) {
      case 'auth':
        return error(conn, undefined, new AppError('bad_request', 'already authenticated'))
      case 'ping':
        return send(conn, { type: 'pong' })
      case 'subscribe':
        return subscribe(conn, frame.id, frame.channel, frame.since).catch((err: unknown) => error(conn, frame.id, err))
      case 'unsubscribe':
        drop(conn, frame.channel)
        return send(conn, { id: frame.id, type: 'ok' })
      case 'presence':
        if (!frame.channel.startsWith('org:') || !conn.has(frame.channel)) {
          return error(conn, frame.id, new AppError('rbac.forbidden', 'subscribe to the org channel before asking who is there'))
        }
        return send(conn, { id: frame.id, type: 'presence', channel: frame.channel, members: o.presence.members(frame.channel) })
      case 'rpc':
        return runRpc(o.actors, frame.method, frame.params, principalOf(conn), newRequestId()).then(
          (result) => send(conn, { id: frame.id, type: 'result', result: result ?? null }),
          (err: unknown) => error(conn, frame.id, err),
        )
    }
  }

  const badFrame = (conn: Conn, err: AppError) => {
    conn.badFrames++
    error(conn, undefined, err)
    if (conn.badFrames >= o.maxBadFrames) close(conn, CloseCode.badFrames, 'too many bad frames')
  }

  /** Token bucket per connection: a steady rate with a burst allowance, counted in thousandths of a frame. */
  const withinRate = (conn: Conn) => {
    const now = Math.floor(performance.now())
    conn.credit = Math.min(o.rateBurst * 1000, conn.credit + (now - conn.refilledAt) * o.ratePerSecond)
    conn.refilledAt = now
    if (conn.credit < 1000) return false
    conn.credit -= 1000
    return true
  }

  // Membership changes reach open sockets through the organization's own channel, on every node.
  o.hub.onEvent = (event) => {
    if (event.type !== 'member.removed' && event.type !== 'member.updated' && event.type !== 'org.deleted') return
    const channel = event.channel
    const userId = (event.data as { userId?: string } | null)?.userId
    const affected = event.type === 'org.deleted' ? everySocket() : socketsOf(userId ?? '')
    for (const conn of affected) {
      if (!conn.has(channel)) continue
      const revoke = (reason: string) => {
        if (!conn.has(channel)) return
        drop(conn, channel)
        send(conn, { type: 'unsubscribed', channel, reason })
      }
      if (event.type === 'member.updated') authorize(conn, channel).catch(() => revoke('forbidden'))
      else revoke(event.type === 'org.deleted' ? 'deleted' : 'removed')
    }
  }
  o.revocations.onRevoked((sessionId) => {
    for (const conn of [...(bySession.get(sessionId) ?? [])]) close(conn, CloseCode.revoked, 'session revoked')
  })

  // Closes sockets whose auth frame is late. And uWebSockets.js skips a socket whose buffer is full rather than
  // closing it; this watch closes readers that fell too far behind before that can happen, so they reconnect
  // and resume instead of silently missing events. It looks at SWEEP_BATCH sockets a tick, carrying on where
  // it stopped, so its cost per tick stays the same however many sockets the node holds.
  function* authenticated(): Generator<Conn> {
    for (const sockets of bySession.values()) yield* sockets
  }
  let sweep = authenticated()
  const watchdog = setInterval(() => {
    const now = performance.now()
    for (const [conn, due] of pending) if (now >= due) close(conn, CloseCode.unauthenticated, 'no auth frame in time')
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = sweep.next()
      if (next.done) {
        sweep = authenticated()
        break
      }
      const conn = next.value
      if (conn.open && conn.ws && conn.ws.getBufferedAmount() > o.maxBufferedBytes) close(conn, CloseCode.tooSlow, 'too slow a reader')
    }
    o.metrics.presence.set(o.presence.size())
  }, 100)
  watchdog.unref()

  o.app.ws<SocketData>(o.path, {
    maxPayloadLength: o.maxFrameBytes,
    idleTimeout: o.idleTimeoutS,
    sendPingsAutomatically: true,
    // Above our own limit, so the watchdog closes slow readers before uWebSockets.js starts skipping them.
    maxBackpressure: o.maxBufferedBytes * 16,
    upgrade(res: HttpResponse, req: HttpRequest, context: us_socket_context_t) {
      const origin = req.getHeader('origin')
      const key = req.getHeader('sec-websocket-key')
      const offered = req.getHeader('sec-websocket-protocol')
      const extensions = req.getHeader('sec-websocket-extensions')
      const refuse = (status: string, err: AppError): void => {
        res.cork(() => res.writeStatus(status).writeHeader('content-type', 'application/problem+json').end(JSON.stringify(problemOf(err, newRequestId()))))
      }
      if (draining) return refuse('503 Service Unavailable', new AppError('unavailable', 'this node is shutting down; connect to another'))
      // A browser always sends Origin; servers and native clients usually do not, and are not a CSRF risk.
      if (origin && !allowed.has(origin)) return refuse('403 Forbidden', new AppError('cors.origin_not_allowed', `origin ${origin} is not allowed`))
      let protocol: WireProtocol = 'json'
      let chosen = ''
      if (offered) {
        const known = offered.split(',').map((p) => p.trim()).find((p) => p in subprotocols)
        if (!known) return refuse('400 Bad Request', new AppError('bad_request', `unsupported subprotocol; use ${Object.keys(subprotocols).join(' or ')}`))
        protocol = subprotocols[known]!
        chosen = known
      }
      const conn = new Conn(++serials, protocol, o.rateBurst * 1000, Math.floor(performance.now()))
      // uWebSockets.js copies the user data's properties onto its socket object: one property, not the state's.
      res.cork(() => res.upgrade<SocketData>({ conn }, key, chosen, extensions, context))
    },
    open(ws) {
      const conn = ws.getUserData().conn
      conn.ws = ws
      conn.open = true
      pending.set(conn, performance.now() + o.authTimeoutMs)
      open++
      o.metrics.connections.inc()
    },
    message(ws, data, isBinary) {
      const conn = ws.getUserData().conn
      if (!withinRate(conn)) return close(conn, CloseCode.rateLimited, 'rate limited')
      let decoded: unknown
      try {
        decoded = decodeFrame(data, isBinary, conn.protocol)
      } catch {
        return badFrame(conn, new AppError('validation.malformed_json', `the frame is not valid ${conn.protocol === 'json' ? 'JSON text' : 'MessagePack'}`))
      }
      const parsed = ClientFrame.safeParse(decoded)
      if (!parsed.success) {
        return badFrame(conn, new AppError('validation.failed', 'unknown or malformed frame', { errors: parsed.error.issues.map((i) => ({ path: i.path.join('.'), message: i.message })) }))
      }
      void handle(conn, parsed.data).catch((err: unknown) => error(conn, 'id' in parsed.data ? parsed.data.id : undefined, err))
    },
    close(ws) {
      const conn = ws.getUserData().conn
      conn.open = false
      open--
      o.metrics.connections.dec()
      for (const channel of conn.channels()) drop(conn, channel)
      if (conn.authenticated) unindexSession(conn)
      else pending.delete(conn)
      conn.ws = undefined
    },
  })

  return {
    get connections() {
      return open
    },
    /** Refuses new sockets and closes open ones with 1001, so clients reconnect to another node and resume. */
    closeAll(): void {
      draining = true
      clearInterval(watchdog)
      for (const conn of everySocket()) close(conn, CloseCode.goingAway, 'node shutting down')
    },
  }
}

export type WsServer = ReturnType<typeof createWsServer>
