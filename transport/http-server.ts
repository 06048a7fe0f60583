import { STATUS_CODES } from 'node:http'
import uWS, { type HttpRequest, type HttpResponse, type TemplatedApp, type us_listen_socket } from 'uWebSockets.js'
import type { z } from 'zod'
import { AppError, internalError, problemOf } from '../core/errors.js'
import { isSafeRequestId, newRequestId } from '../core/ids.js'
import type { Logger } from '../core/log.js'
import type { Registry } from '../core/metrics.js'
import { anonymous, type Principal } from '../core/principal.js'
import { isJsonContentType, parseJson, readBody, tooLarge } from './body.js'
import { createCors, type Cors } from './cors.js'
import { createRequestRecorder, type RequestRecorder, type RouteSeries } from './http-metrics.js'
import { isRawReply, type Method, type Reply, type RequestContext, type Route, type AuthMode } from './route.js'
import { headerBlockBeforeRequestId, securityHeaders } from './security-headers.js'
import { fieldErrors } from '../core/validation.js'

export interface HttpServerOptions {
  host: string
  port: number
  bodyLimitBytes: number
  corsOrigins: readonly string[]
  log: Logger
  registry: Registry
  routes: readonly Route[]
  /** Turns an `authorization` header into a principal, or throws 401; synchronous when it can be. */
  authenticate?: (authorization: string | undefined, accepts: AuthMode) => Principal | Promise<Principal>
}

export interface HttpServer {
  readonly app: TemplatedApp
  /** Resolves with the bound port (useful with port 0). */
  listen(): Promise<number>
  /** Stops accepting connections and waits until in-flight requests finish or the deadline passes. */
  drain(timeoutMs: number): Promise<{ unfinished: number }>
  readonly draining: boolean
  readonly inFlight: number
}

if (typeof uWS.getParts !== 'function') {
  // The package silently falls back to a slow JS shim when its native build does not match this Node.
  throw new Error(`uWebSockets.js native build did not load for Node ${process.version}; Node 20.x is required`)
}

const statusLines = new Map<number, string>(Object.entries(STATUS_CODES).map(([code, text]) => [Number(code), `${code} ${text}`]))
const statusLine = (status: number) => statusLines.get(status) ?? String(status)
const bodyMethods = new Set<Method>(['post', 'put', 'patch'])

interface Shared {
  options: HttpServerOptions
  cors: Cors
  /** helmet's headers, then the request id, in one write (see headerBlockBeforeRequestId). */
  security: Buffer
  /** The same with `content-type: application/json`, the commonest answer. */
  securityJson: Buffer
  recorder: RequestRecorder
  unmatched: RouteSeries
  state: { draining: boolean; inFlight: number; idle?: () => void }
}

interface Exchange {
  res: HttpResponse
  series: RouteSeries
  route: string
  requestId: string
  origin: string | undefined
  started: number
  /** Set when the client went away or the answer was written: either way nothing more may touch `res`. */
  aborted: boolean
  head: boolean
  /** Still within the uWS request callback, where uWS corks the writes already; false once it went async. */
  inline: boolean
}

export function createHttpServer(options: HttpServerOptions): HttpServer {
  const app = uWS.App()
  const recorder = createRequestRecorder(options.registry)
  const shared: Shared = {
    options,
    cors: createCors(options.corsOrigins),
    security: headerBlockBeforeRequestId(securityHeaders()),
    securityJson: headerBlockBeforeRequestId([...securityHeaders(), ['content-type', 'application/json']]),
    recorder,
    unmatched: recorder.series('any', 'unmatched'),
    state: { draining: false, inFlight: 0 },
  }
  registerRoutes(app, shared)
  let listenSocket: us_listen_socket | undefined

  return {
    app,
    get draining() {
      return shared.state.draining
    },
    get inFlight() {
      return shared.state.inFlight
    },
    listen() {
      return new Promise((resolve, reject) => {
        app.listen(options.host, options.port, (socket) => {
          if (!socket) return reject(new Error(`cannot listen on ${options.host}:${options.port}`))
          listenSocket = socket
          resolve(uWS.us_socket_local_port(socket))
        })
      })
    },
    async drain(timeoutMs) {
      shared.state.draining = true
      if (listenSocket) uWS.us_listen_socket_close(listenSocket)
      listenSocket = undefined
      if (shared.state.inFlight === 0) return { unfinished: 0 }
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, timeoutMs)
        shared.state.idle = () => {
          clearTimeout(timer)
          resolve()
        }
      })
      return { unfinished: shared.state.inFlight }
    },
  }
}

function registerRoutes(app: TemplatedApp, shared: Shared): void {
  const byPath = new Map<string, Route[]>()
  for (const route of shared.options.routes) {
    const list = byPath.get(route.path) ?? []
    if (list.some((r) => r.method === route.method)) throw new Error(`duplicate route ${route.method} ${route.path}`)
    list.push(route)
    byPath.set(route.path, list)
  }
  for (const [path, routes] of byPath) {
    for (const route of routes) {
      const paramNames = [...route.path.matchAll(/:(\w+)/g)].map((m) => m[1]!)
      const series = shared.recorder.series(route.method, route.path)
      const handler = (res: HttpResponse, req: HttpRequest) => handle(shared, route, series, paramNames, res, req, false)
      app[route.method === 'delete' ? 'del' : route.method](path, handler)
    }
    const get = routes.find((r) => r.method === 'get')
    const getParams = get ? [...get.path.matchAll(/:(\w+)/g)].map((m) => m[1]!) : []
    const headSeries = shared.recorder.series('head', path)
    const optionsSeries = shared.recorder.series('options', path)
    const otherSeries = shared.recorder.series('other', path)
    const allowed = [...routes.map((r) => r.method.toUpperCase()), ...(get ? ['HEAD'] : []), 'OPTIONS']
    // Everything else sent to a known path: HEAD as GET without a body, OPTIONS (CORS preflight), or 405.
    app.any(path, (res, req) => {
      const method = req.getMethod()
      if (method === 'head' && get) return handle(shared, get, headSeries, getParams, res, req, true)
      if (method === 'options') return answerOptions(shared, optionsSeries, res, req, path, allowed)
      const ex = begin(shared, otherSeries, res, req, path, method === 'head')
      finish(shared, ex, undefined, new AppError('method_not_allowed', `${method.toUpperCase()} is not allowed on ${path}`, { headers: { allow: allowed.join(', ') } }))
    })
  }
  app.any('/*', (res, req) => {
    const method = req.getMethod()
    const ex = begin(shared, shared.unmatched, res, req, 'unmatched', method === 'head')
    finish(shared, ex, undefined, new AppError('not_found', `no route for ${method.toUpperCase()} ${req.getUrl()}`))
  })
}

/** `head`: the request is a HEAD (callers know the method already; asking uWS again costs a string per request). */
function begin(shared: Shared, series: RouteSeries, res: HttpResponse, req: HttpRequest, route: string, head: boolean): Exchange {
  const incoming = req.getHeader('x-request-id')
  const origin = shared.cors.enabled ? req.getHeader('origin') : ''
  shared.state.inFlight++
  const ex: Exchange = {
    res,
    series,
    route,
    requestId: incoming !== '' && isSafeRequestId(incoming) ? incoming : newRequestId(),
    origin: origin === '' ? undefined : origin,
    started: performance.now(),
    aborted: false,
    // HEAD gets headers only, on every path (404 and 405 included), or the stray body breaks keep-alive.
    head,
    inline: true,
  }
  res.onAborted(() => {
    // uWS may report an abort after an early answer (a 413 before the body arrived): count each exchange once.
    if (ex.aborted) return
    ex.aborted = true
    settle(shared)
  })
  return ex
}

function settle(shared: Shared): void {
  shared.state.inFlight--
  if (shared.state.inFlight === 0 && shared.state.idle) shared.state.idle()
}

function handle(shared: Shared, route: Route, series: RouteSeries, paramNames: string[], res: HttpResponse, req: HttpRequest, head: boolean): void {
  const ex = begin(shared, series, res, req, route.path, head)
  // Everything needed from `req` is read now: it is invalid after this function returns.
  const headers: Record<string, string> = {}
  req.forEach((key, value) => {
    headers[key] = value
  })
  const rawParams: Record<string, string> = {}
  for (let i = 0; i < paramNames.length; i++) rawParams[paramNames[i]!] = req.getParameter(i)
  const rawQuery = route.query ? req.getQuery() ?? '' : ''
  const url = req.getUrl()

  let ctx: RequestContext
  try {
    ctx = new Context(
      ex,
      route.method,
      url,
      route.params ? parse(route.params, decodeParams(rawParams), 'params') : rawParams,
      route.query ? parse(route.query, Object.fromEntries(new URLSearchParams(rawQuery)), 'query') : {},
      headers,
      shared.options.log,
    )
  } catch (err) {
    return finish(shared, ex, undefined, err)
  }

  // Reading the body starts now, inside the uWS callback, even when authentication has to wait.
  let body: Promise<Buffer> | undefined
  if (route.body && bodyMethods.has(route.method)) {
    const failure = checkBodyHeaders(headers, shared.options.bodyLimitBytes)
    if (failure) return finish(shared, ex, undefined, failure)
    ex.inline = false
    body = readBody(res, shared.options.bodyLimitBytes)
  }
  if (route.auth) {
    let principal: Principal | Promise<Principal>
    try {
      if (!shared.options.authenticate) throw new AppError('internal', 'no authenticator configured')
      principal = shared.options.authenticate(headers['authorization'], route.auth)
    } catch (err) {
      body?.catch(() => undefined)
      return finish(shared, ex, undefined, err)
    }
    if (principal instanceof Promise) {
      ex.inline = false
      principal.then(
        (p) => {
          ctx.principal = p
          proceed(shared, ex, route, ctx, body)
        },
        (err: unknown) => {
          body?.catch(() => undefined)
          finish(shared, ex, undefined, err)
        },
      )
      return
    }
    ctx.principal = principal
  }
  proceed(shared, ex, route, ctx, body)
}

/** Parses the body once it has arrived (if the route takes one), then runs the handler. */
function proceed(shared: Shared, ex: Exchange, route: Route, ctx: RequestContext, body: Promise<Buffer> | undefined): void {
  if (!body) return run(shared, ex, route, ctx)
  body.then(
    (buffer) => {
      try {
        ctx.body = parse(route.body!, parseJson(buffer), '')
      } catch (err) {
        return finish(shared, ex, undefined, err)
      }
      run(shared, ex, route, ctx)
    },
    (err: unknown) => finish(shared, ex, undefined, err),
  )
}

function run(shared: Shared, ex: Exchange, route: Route, ctx: RequestContext): void {
  let result: Reply | Promise<Reply>
  try {
    result = route.handler(ctx)
  } catch (err) {
    return finish(shared, ex, undefined, err)
  }
  // Synchronous handlers (health, say) answer without a microtask hop, inside uWS's own cork. A postgres.js
  // query is a thenable, not a Promise (deploy/patches): a handler returns one from an async function.
  if (result instanceof Promise) {
    ex.inline = false
    result.then(
      (reply) => finish(shared, ex, reply, undefined),
      (err: unknown) => finish(shared, ex, undefined, err),
    )
  } else {
    finish(shared, ex, result, undefined)
  }
}

function checkBodyHeaders(headers: Record<string, string>, limit: number): AppError | undefined {
  const length = headers['content-length']
  if (length !== undefined && Number(length) > limit) return tooLarge(limit)
  if (!isJsonContentType(headers['content-type'])) {
    return new AppError('unsupported_media_type', `content-type must be application/json, not ${headers['content-type'] || 'missing'}`)
  }
  return undefined
}

function decodeParams(raw: Record<string, string>): Record<string, string> {
  const decoded: Record<string, string> = {}
  for (const key in raw) {
    try {
      decoded[key] = decodeURIComponent(raw[key]!)
    } catch {
      throw new AppError('validation.failed', `path parameter ${key} is not valid percent-encoding`, {
        errors: [{ path: `params.${key}`, message: 'invalid percent-encoding' }],
      })
    }
  }
  return decoded
}

function parse(schema: z.ZodType, value: unknown, where: string): unknown {
  const result = schema.safeParse(value)
  if (result.success) return result.data
  const what = where === '' ? 'the request body' : `the ${where === 'params' ? 'path parameters' : 'query string'}`
  throw new AppError('validation.failed', `${what} did not pass validation`, { errors: fieldErrors(result.error, where) })
}

function finish(shared: Shared, ex: Exchange, reply: Reply | undefined, err: unknown): void {
  if (ex.aborted) return
  let status: number
  let contentType: string
  let payload: string | Uint8Array
  let extra: Record<string, string> | undefined
  let serialized: string | undefined
  if (reply && !isRawReply(reply) && reply.body !== undefined) {
    try {
      serialized = JSON.stringify(reply.body)
    } catch (e) {
      // A body JSON cannot express (a BigInt, a cycle) is a bug in the handler: answer 500 rather than nothing.
      reply = undefined
      err = e
    }
  }
  if (reply) {
    status = reply.status
    extra = reply.headers
    if (isRawReply(reply)) {
      contentType = reply.contentType
      payload = reply.data
    } else {
      contentType = 'application/json'
      payload = serialized ?? ''
    }
  } else {
    const appError = err instanceof AppError ? err : internalError(err)
    if (appError.code === 'internal') shared.options.log.error({ err, requestId: ex.requestId, route: ex.route }, 'request failed')
    status = appError.status
    contentType = 'application/problem+json'
    payload = JSON.stringify(problemOf(appError, ex.requestId))
    extra = appError.headers
  }
  const { res } = ex
  // Keep-alive connections are let go while draining so clients reconnect to another node.
  const close = shared.state.draining || status === 413
  if (ex.inline) writeResponse(shared, ex, status, contentType, payload, extra, close)
  else res.cork(() => writeResponse(shared, ex, status, contentType, payload, extra, close))
  ex.aborted = true
  settle(shared)
  ex.series.record(status, (performance.now() - ex.started) / 1000)
}

function writeResponse(
  shared: Shared,
  ex: Exchange,
  status: number,
  contentType: string,
  payload: string | Uint8Array,
  extra: Record<string, string> | undefined,
  close: boolean,
): void {
  const { res } = ex
  res.writeStatus(statusLine(status))
  const json = contentType === 'application/json' && status !== 204 && status !== 304
  res.writeHeader(json ? shared.securityJson : shared.security, ex.requestId)
  const cors = shared.cors.responseHeaders(ex.origin)
  if (cors) for (const [name, value] of cors) res.writeHeader(name, value)
  if (extra) for (const name in extra) res.writeHeader(name, extra[name]!)
  // No endWithoutBody: in this uWS build it leaves the connection waiting for body bytes, which kills
  // keep-alive. HEAD answers therefore say `content-length: 0` instead of the GET body's length.
  if (status === 204 || status === 304) return void res.end(undefined, close)
  if (!json) res.writeHeader('content-type', contentType)
  res.end(ex.head ? undefined : payload, close)
}

function answerOptions(shared: Shared, series: RouteSeries, res: HttpResponse, req: HttpRequest, path: string, allowed: string[]): void {
  const requestedMethod = req.getHeader('access-control-request-method')
  // Read here even when CORS is off, so a browser's preflight gets a clear refusal rather than a bare 204.
  const origin = req.getHeader('origin')
  const ex = begin(shared, series, res, req, path, false)
  if (origin !== '' && requestedMethod !== '') {
    if (!shared.cors.allows(origin)) {
      return finish(shared, ex, undefined, new AppError('cors.origin_not_allowed', `origin ${origin} is not allowed to call this API`))
    }
    const headers = Object.fromEntries(shared.cors.preflightHeaders(allowed))
    return finish(shared, ex, { status: 204, headers }, undefined)
  }
  finish(shared, ex, { status: 204, headers: { allow: allowed.join(', ') } }, undefined)
}

/**
 * The request as handlers see it. `ip` is read from the socket on first use: decoding the address on every
 * request was the largest single cost of a small request. It must be read before the answer is written.
 */
class Context implements RequestContext {
  body: unknown = undefined
  principal: Principal = anonymous
  private address: string | undefined
  constructor(
    private readonly ex: Exchange,
    readonly method: Method,
    readonly path: string,
    readonly params: unknown,
    readonly query: unknown,
    readonly headers: Readonly<Record<string, string>>,
    readonly log: Logger,
  ) {}

  get requestId(): string {
    return this.ex.requestId
  }

  get ip(): string {
    if (this.address === undefined) {
      if (this.ex.aborted) return ''
      this.address = Buffer.from(this.ex.res.getRemoteAddressAsText()).toString()
    }
    return this.address
  }
}
