/**
 * Rejects after `timeoutMs` unless `promise` settles first, so a dead dependency is an error, never a hang.
 * `timedOut` makes the error (by default an Error naming `what`).
 */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string, timedOut?: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(timedOut?.() ?? new Error(`${what} timed out after ${timeoutMs} ms`)), timeoutMs)
  })
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer))
}
