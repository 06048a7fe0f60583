import type { SessionRevocations } from '../actors/session-revocations.js'
import type { AccessClaims, AccessTokens } from '../core/access-tokens.js'
import { AppError } from '../core/errors.js'
import type { Principal } from '../core/principal.js'

const challenge = { 'www-authenticate': 'Bearer' }

/**
 * `Authorization: Bearer <access token>` into a user principal. The signature check is cached per token by
 * AccessTokens; the revocation check is an in-memory lookup, so a revoked session fails on every node as soon
 * as the broadcast arrives.
 */
export function createAuthenticator(tokens: AccessTokens, revocations: SessionRevocations): (authorization: string | undefined) => Principal | Promise<Principal> {
  const principal = (claims: AccessClaims): Principal => {
    if (revocations.isRevoked(claims.sid)) throw new AppError('auth.session_revoked', 'this session was revoked; sign in again', { headers: challenge })
    return { type: 'user', userId: claims.sub, sessionId: claims.sid }
  }
  return (authorization) => {
    if (!authorization) throw new AppError('auth.unauthenticated', 'this endpoint needs `Authorization: Bearer <access token>`', { headers: challenge })
    // A token seen before answers without a Promise or a regex: the common case costs a map lookup. Only
    // exactly `Bearer <token>` can hit the cache, since the cache holds bare tokens that passed the check below.
    if (authorization.length > 7 && authorization.slice(0, 7).toLowerCase() === 'bearer ') {
      const cached = tokens.cached(authorization.slice(7))
      if (cached) return principal(cached)
    }
    // The whole header must be the scheme and one token: nothing may trail it unnoticed.
    const match = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(authorization)
    if (!match) throw new AppError('auth.unauthenticated', 'the authorization header must be `Bearer <access token>`', { headers: challenge })
    return tokens.verify(match[1]!).then(principal, (err: unknown) => {
      if (err instanceof AppError) throw new AppError(err.code, err.message, { cause: err, headers: { 'www-authenticate': 'Bearer error="invalid_token"' } })
      throw err
    })
  }
}
