/**
 * Polls a condition that no event announces (a lease expiring on another node, an idle actor passivated)
 * until it holds, or fails after `timeoutMs` with the last value seen.
 */
export async function eventually<T>(probe: () => T | Promise<T>, accept: (value: T) => boolean, timeoutMs: number, what: string): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let last: T | undefined
  let lastError: unknown
  while (Date.now() < deadline) {
    try {
      last = await probe()
      if (accept(last)) return last
    } catch (err) {
      lastError = err
    }
    await new Promise((r) => setTimeout(r, 25))
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last value ${JSON.stringify(last)}`, { cause: lastError })
}
