import { createHash, createHmac, timingSafeEqual } from 'node:crypto'
import { AppError } from '../core/errors.js'

export const opsCookie = 'ops_session'
/** How long a browser stays signed in to the ops pages. */
export const opsSessionSeconds = 12 * 60 * 60

/**
 * Operator access from OPS_TOKEN. A browser session is `<expiry>.<HMAC of the expiry keyed by the token>`:
 * stateless, so any node with the same token accepts it, it lapses by itself, and changing the token ends every
 * session. The token itself never leaves the server.
 */
export interface OpsAuth {
  /** The cookie value of a new session. */
  newSession(now?: number): string
  /** Whether a presented token is the operator token (constant time). */
  isToken(presented: string): boolean
  /** Throws 401 unless the request carries a valid session cookie or `Authorization: Bearer <OPS_TOKEN>`. */
  check(headers: Readonly<Record<string, string>>): void
  /** Whether the request carries a valid session cookie. */
  hasSession(headers: Readonly<Record<string, string>>): boolean
}

export function createOpsAuth(token: string): OpsAuth {
  const tokenDigest = digest(token)
  const mac = (expiry: string) => createHmac('sha256', token).update(`ops-session:${expiry}`).digest()

  const validSession = (value: string | undefined, now: number): boolean => {
    if (!value) return false
    const dot = value.indexOf('.')
    const expiry = value.slice(0, dot)
    if (dot < 1 || !/^\d{1,15}$/.test(expiry) || Number(expiry) * 1000 <= now) return false
    const presented = Buffer.from(value.slice(dot + 1), 'base64url')
    const expected = mac(expiry)
    return presented.length === expected.length && timingSafeEqual(presented, expected)
  }

  const auth: OpsAuth = {
    newSession(now = Date.now()) {
      const expiry = String(Math.floor(now / 1000) + opsSessionSeconds)
      return `${expiry}.${mac(expiry).toString('base64url')}`
    },
    // Both sides hashed first: equal lengths for timingSafeEqual, and the token's length is not revealed.
    isToken: (presented) => timingSafeEqual(digest(presented), tokenDigest),
    hasSession: (headers) => validSession(cookieValue(headers['cookie'], opsCookie), Date.now()),
    check(headers) {
      if (auth.hasSession(headers)) return
      const authorization = headers['authorization']
      if (authorization === undefined) {
        throw new AppError('auth.unauthenticated', 'sign in at /ops/jobs, or send Authorization: Bearer <OPS_TOKEN>')
      }
      const match = /^Bearer\s+(\S+)\s*$/i.exec(authorization)
      if (!match || !auth.isToken(match[1]!)) throw new AppError('auth.invalid_token', 'that is not the operator token')
    },
  }
  return auth
}

function digest(value: string): Buffer {
  return createHash('sha256').update(value).digest()
}

/** One cookie's value from a `cookie` header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (!header) return undefined
  for (const part of header.split(';')) {
    const eq = part.indexOf('=')
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim()
  }
  return undefined
}

/**
 * The session cookie: HttpOnly (page scripts never see it), SameSite=Strict (other sites cannot make the browser
 * send it, which is what keeps the retry button safe from cross-site requests), limited to /ops. `secure` when
 * the request came over HTTPS (behind a proxy that says so); plain http://localhost must keep working.
 */
export function sessionCookie(value: string, o: { secure: boolean; maxAgeSeconds: number }): string {
  return `${opsCookie}=${value}; Path=/ops; Max-Age=${o.maxAgeSeconds}; HttpOnly; SameSite=Strict${o.secure ? '; Secure' : ''}`
}
