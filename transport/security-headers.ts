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

/**
 * helmet's headers and the request id in one `writeHeader` call. uWS writes `name: value\r\n` verbatim, so a
 * "name" that carries the fixed header lines and ends in `x-request-id` yields byte-for-byte the same response
 * as fifteen calls, with the fixed part encoded once at start-up. Safe only because those bytes are ours and
 * fixed, and the value written after them (the request id) is a validated token; never put a client's bytes
 * into the name.
 */
export function headerBlockBeforeRequestId(headers: ReadonlyArray<readonly [string, string]>): Buffer {
  return Buffer.from([...headers.map(([name, value]) => `${name}: ${value}`), 'x-request-id'].join('\r\n'))
}
