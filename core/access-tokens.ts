import { errors as joseErrors, jwtVerify, SignJWT, type JWTPayload, type JWTVerifyGetKey } from 'jose'
import { AppError } from './errors.js'
import { newId } from './ids.js'
import { signingAlg, type KeySet } from './keys.js'

export interface AccessClaims {
  sub: string
  sid: string
  exp: number
}

export interface AccessTokens {
  sign(userId: string, sessionId: string): Promise<{ token: string; expiresIn: number }>
  /** Verified claims, or 401 `auth.invalid_token`. Verified tokens are cached until they expire. */
  verify(token: string): Promise<AccessClaims>
  /** The claims of a token verified before and not yet expired, without a Promise; undefined otherwise. */
  cached(token: string): AccessClaims | undefined
  jwks(): { keys: object[] }
}

export interface AccessTokenOptions {
  keys: KeySet
  issuer: string
  audience: string
  ttlSeconds: number
  /** Verified tokens kept in memory (least recently verified dropped first). */
  cacheSize?: number
}

const typ = 'at+jwt'

/**
 * Cached tokens are keyed by their last characters (part of the signature): a Map hashes its string key on
 * every lookup, and the whole token, fresh from each request, was the largest single cost of a cached hit.
 */
const keyLength = 16
const cacheKey = (token: string) => (token.length > keyLength ? token.slice(-keyLength) : token)

interface CacheEntry {
  token: string
  claims: AccessClaims
}

/**
 * Short-lived EdDSA access tokens. Verification pins the algorithm, issuer, audience and `typ`, and resolves
 * keys only by `kid` from our own key set: `alg: none`, HMAC with the public key as secret, unknown keys,
 * expired or not-yet-valid tokens all fail.
 */
export function createAccessTokens(o: AccessTokenOptions): AccessTokens {
  const byKid = new Map(o.keys.verifying.map((k) => [k.kid, k.key]))
  const getKey: JWTVerifyGetKey = (header) => {
    const key = header.kid === undefined ? undefined : byKid.get(header.kid)
    if (!key) throw new AppError('auth.invalid_token', 'the token was signed by an unknown key')
    return key
  }
  const cache = new Map<string, CacheEntry>()
  const cacheSize = o.cacheSize ?? 10_000

  return {
    async sign(userId, sessionId) {
      const token = await new SignJWT({ sid: sessionId })
        .setProtectedHeader({ alg: signingAlg, kid: o.keys.signing.kid, typ })
        .setSubject(userId)
        .setIssuer(o.issuer)
        .setAudience(o.audience)
        .setIssuedAt()
        .setExpirationTime(`${o.ttlSeconds}s`)
        .setJti(newId())
        .sign(o.keys.signing.privateKey)
      return { token, expiresIn: o.ttlSeconds }
    },
    cached(token) {
      const key = cacheKey(token)
      const entry = cache.get(key)
      // The full comparison keeps a forged token that shares a valid one's tail from borrowing its claims.
      if (!entry || entry.token !== token) return undefined
      if (entry.claims.exp * 1000 > Date.now()) return entry.claims
      cache.delete(key)
      return undefined
    },
    async verify(token) {
      const cached = this.cached(token)
      if (cached) return cached
      let payload: JWTPayload
      try {
        ;({ payload } = await jwtVerify(token, getKey, {
          algorithms: [signingAlg],
          issuer: o.issuer,
          audience: o.audience,
          typ,
          requiredClaims: ['sub', 'sid', 'exp', 'iat', 'jti'],
          // No token lives longer than we issue them for, whatever its `exp` says: contains a leaked key or a
          // faulty signer. The tolerance absorbs clock skew between nodes.
          maxTokenAge: o.ttlSeconds + 60,
          clockTolerance: 30,
        }))
      } catch (err) {
        if (err instanceof AppError) throw err
        const expired = err instanceof joseErrors.JWTExpired
        throw new AppError('auth.invalid_token', expired ? 'the access token has expired' : 'the access token is not valid', { cause: err })
      }
      if (typeof payload.sid !== 'string' || typeof payload.sub !== 'string' || typeof payload.exp !== 'number') {
        throw new AppError('auth.invalid_token', 'the access token is not valid')
      }
      // maxTokenAge bounds the age since `iat`; this bounds the lifetime the token claims for itself.
      if (typeof payload.iat !== 'number' || payload.exp - payload.iat > o.ttlSeconds + 60) {
        throw new AppError('auth.invalid_token', 'the access token claims a longer lifetime than tokens are issued for')
      }
      const claims: AccessClaims = { sub: payload.sub, sid: payload.sid, exp: payload.exp }
      const key = cacheKey(token)
      if (!cache.has(key) && cache.size >= cacheSize) cache.delete(cache.keys().next().value!)
      cache.set(key, { token, claims })
      return claims
    },
    jwks: () => ({ keys: o.keys.verifying.map((k) => k.publicJwk) }),
  }
}
