import type { SessionRevocations } from '../actors/session-revocations.js'
import type { AccessClaims, AccessTokens } from '../core/access-tokens.js'
import { AppError } from '../core/errors.js'
import type { Principal } from '../core/principal.js'
import type { ApiKeyOwner } from '../storage/api-key-owners.js'
import type { AuthMode } from './route.js'

const challenge = { 'www-authenticate': 'Bearer' }
const apiKeyShape = /^ApiKey +(ak_[A-Za-z0-9_-]{20,100}) *$/i

/**
 * `Authorization: Bearer <access token>` into a user principal, and on routes that take them
 * `Authorization: ApiKey <key>` into a service-account principal. The signature check is cached per token by
 * AccessTokens; the revocation check is an in-memory lookup, so a revoked session fails on every node as soon
 * as the broadcast arrives. An API key is only mapped to its organization here: the org actor decides whether
 * it still works.
 */
export function createAuthenticator(
  tokens: AccessTokens,
  revocations: SessionRevocations,
  apiKeyOwner?: (key: string) => Promise<ApiKeyOwner | undefined>,
): (authorization: string | undefined, accepts: AuthMode) => Principal | Promise<Principal> {
  const principal = (claims: AccessClaims): Principal => {
    if (revocations.isRevoked(claims.sid)) throw new AppError('auth.session_revoked', 'this session was revoked; sign in again', { headers: challenge })
    return { type: 'user', userId: claims.sub, sessionId: claims.sid }
  }
  const apiKey = async (authorization: string, accepts: AuthMode): Promise<Principal> => {
    if (accepts !== 'any' || !apiKeyOwner) throw new AppError('auth.unauthenticated', 'this endpoint needs a signed-in user, not an API key', { headers: challenge })
    const match = apiKeyShape.exec(authorization)
    const owner = match ? await apiKeyOwner(match[1]!) : undefined
    if (!owner) throw new AppError('auth.invalid_token', 'the API key is not valid', { headers: { 'www-authenticate': 'ApiKey' } })
    return { type: 'apiKey', keyId: owner.id, orgId: owner.orgId }
  }
  return (authorization, accepts) => {
    if (!authorization) throw new AppError('auth.unauthenticated', 'this endpoint needs `Authorization: Bearer <access token>`', { headers: challenge })
    // A token seen before answers without a Promise or a regex: the common case costs a map lookup. Only
    // exactly `Bearer <token>` can hit the cache, since the cache holds bare tokens that passed the check below.
    if (authorization.length > 7 && authorization.slice(0, 7).toLowerCase() === 'bearer ') {
      const cached = tokens.cached(authorization.slice(7))
      if (cached) return principal(cached)
    } else if (authorization.slice(0, 7).toLowerCase() === 'apikey ') {
      return apiKey(authorization, accepts)
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
