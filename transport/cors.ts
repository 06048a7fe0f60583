export interface Cors {
  /** False when no origin is allowed: the `origin` header need not even be read. */
  readonly enabled: boolean
  /** The headers for a response to `origin`, or undefined when that origin is not allowed. */
  responseHeaders(origin: string | undefined): ReadonlyArray<readonly [string, string]> | undefined
  allows(origin: string): boolean
  preflightHeaders(allowedMethods: readonly string[]): ReadonlyArray<readonly [string, string]>
}

const exposed = 'x-request-id, retry-after, ratelimit-limit, ratelimit-remaining, ratelimit-reset, ratelimit-policy'
const allowedRequestHeaders = 'authorization, content-type, if-match, x-request-id, idempotency-key'

export function createCors(origins: readonly string[]): Cors {
  const allowed = new Set(origins)
  // Precomputed per origin: the hot path only looks the answer up.
  const perOrigin = new Map<string, ReadonlyArray<readonly [string, string]>>(
    origins.map((o) => [o, [['access-control-allow-origin', o], ['access-control-expose-headers', exposed], ['vary', 'Origin']] as const]),
  )
  const varyOnly = [['vary', 'Origin']] as const
  return {
    enabled: allowed.size > 0,
    allows: (origin) => allowed.has(origin),
    responseHeaders(origin) {
      if (origin === undefined) return allowed.size > 0 ? varyOnly : undefined
      return perOrigin.get(origin)
    },
    preflightHeaders(methods) {
      // allow-origin and `vary: Origin` come from responseHeaders, written on every answer.
      return [
        ['access-control-allow-methods', methods.join(', ')],
        ['access-control-allow-headers', allowedRequestHeaders],
        ['access-control-max-age', '600'],
        ['vary', 'Access-Control-Request-Method, Access-Control-Request-Headers'],
      ]
    },
  }
}
