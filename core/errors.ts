/** One table of error codes: the stable `code` clients match on, its HTTP status and title. */
export const errorCodes = {
  'validation.failed': { status: 400, title: 'Invalid request' },
  'validation.malformed_json': { status: 400, title: 'Malformed JSON body' },
  'bad_request': { status: 400, title: 'Bad request' },
  'auth.unauthenticated': { status: 401, title: 'Authentication required' },
  'auth.invalid_token': { status: 401, title: 'Invalid token' },
  'auth.invalid_credentials': { status: 401, title: 'Invalid email or password' },
  'auth.refresh_reused': { status: 401, title: 'Refresh token reused' },
  'auth.refresh_invalid': { status: 401, title: 'Invalid refresh token' },
  'auth.session_revoked': { status: 401, title: 'Session revoked' },
  'auth.invalid_one_time_token': { status: 400, title: 'Invalid or expired token' },
  'auth.email_taken': { status: 409, title: 'Email already registered' },
  'rbac.forbidden': { status: 403, title: 'Forbidden' },
  'rbac.last_owner': { status: 409, title: 'An organization needs an owner' },
  'invitation.invalid': { status: 400, title: 'Invalid, used or expired invitation' },
  'invitation.email_mismatch': { status: 403, title: 'Invitation is for another email address' },
  'org.slug_taken': { status: 409, title: 'Slug already taken' },
  'cors.origin_not_allowed': { status: 403, title: 'Origin not allowed' },
  'not_found': { status: 404, title: 'Not found' },
  'history.expired': { status: 410, title: 'Event history no longer available' },
  'method_not_allowed': { status: 405, title: 'Method not allowed' },
  'conflict': { status: 409, title: 'Conflict' },
  'payload_too_large': { status: 413, title: 'Payload too large' },
  'unsupported_media_type': { status: 415, title: 'Unsupported media type' },
  'rate_limited': { status: 429, title: 'Too many requests' },
  'internal': { status: 500, title: 'Internal server error' },
  'unavailable': { status: 503, title: 'Service unavailable' },
  'timeout': { status: 504, title: 'Timed out' },
} as const satisfies Record<string, { status: number; title: string }>

export type ErrorCode = keyof typeof errorCodes

export interface FieldError {
  path: string
  message: string
}

export interface AppErrorOptions {
  cause?: unknown
  errors?: FieldError[]
  headers?: Record<string, string>
}

export class AppError extends Error {
  override name = 'AppError'
  readonly errors: FieldError[] | undefined
  readonly headers: Record<string, string> | undefined

  constructor(
    readonly code: ErrorCode,
    detail: string,
    options: AppErrorOptions = {},
  ) {
    super(detail, options.cause === undefined ? undefined : { cause: options.cause })
    this.errors = options.errors
    this.headers = options.headers
  }

  get status(): number {
    return errorCodes[this.code].status
  }
}

/** RFC 9457 problem document, as API.md shapes it. */
export interface Problem {
  type: string
  title: string
  status: number
  detail: string
  code: ErrorCode
  requestId: string
  errors?: FieldError[]
}

export function problemOf(err: AppError, requestId: string): Problem {
  const { status, title } = errorCodes[err.code]
  const problem: Problem = { type: problemType(err.code), title, status, detail: err.message, code: err.code, requestId }
  if (err.errors) problem.errors = err.errors
  return problem
}

export function problemType(code: ErrorCode): string {
  return `urn:problem-type:${code}`
}

// Node's socket errors and postgres.js's own codes for a connection that is gone or never came.
const connectionCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'CONNECTION_CLOSED',
  'CONNECTION_DESTROYED',
  'CONNECTION_ENDED',
  'CONNECT_TIMEOUT',
  'CONNECTION_SILENT',
])

/** Whether an error means a dependency could not be reached, rather than that it refused what we asked. */
export function isConnectionError(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code
  return typeof code === 'string' && connectionCodes.has(code)
}

/**
 * What a client may see of an error that is not an AppError: a lost dependency is 503 (try again), anything
 * else 500, and nothing of its internals either way.
 */
export function internalError(cause: unknown): AppError {
  if (isConnectionError(cause)) return new AppError('unavailable', 'a dependency is unreachable; try again shortly', { cause })
  return new AppError('internal', 'An unexpected error occurred; it has been logged.', { cause })
}

export const notFound = (what: string) => new AppError('not_found', `${what} was not found`)
export const forbidden = (permission: string) => new AppError('rbac.forbidden', `this needs the \`${permission}\` permission`)
export const unavailable = (what: string, cause?: unknown) =>
  new AppError('unavailable', `${what} is unavailable; try again shortly`, { cause })
