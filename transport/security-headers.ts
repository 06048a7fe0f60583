import helmet from 'helmet'

/**
 * The header set helmet sends by default, computed once at start-up: helmet is written for Node's
 * `res.setHeader`, and running it per request would cost more than writing a fixed list.
 */
export function securityHeaders(): ReadonlyArray<readonly [string, string]> {
  const headers: [string, string][] = []
  const res = {
    setHeader: (name: string, value: string | number | readonly string[]) => {
      headers.push([name.toLowerCase(), Array.isArray(value) ? value.join(', ') : String(value)])
    },
    removeHeader: () => {},
  }
  let failure: unknown
  helmet()({} as never, res as never, (err?: unknown) => {
    failure = err
  })
  if (failure) throw new Error('helmet refused its own defaults', { cause: failure })
  return headers
}
