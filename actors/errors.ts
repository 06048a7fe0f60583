import { AppError } from '../core/errors.js'

/**
 * The partition is not (or no longer) served here: the caller retries, and the retry finds the new owner.
 * Never reaches a client.
 */
export class MovedError extends Error {
  override name = 'MovedError'
}

/**
 * A versioned write found a newer version in the database: this activation's state is stale (another node
 * took the actor over while this one was paused or cut off). The write is refused and the activation dropped.
 */
export class FencingError extends AppError {
  constructor(what: string, expectedVersion: number) {
    super('conflict', `${what} changed elsewhere (expected version ${expectedVersion}); the write was refused`)
  }
}

/**
 * Applies a compare-and-set write's row count: exactly one row means this activation held the current
 * version; none means it is stale.
 */
export function expectFenced(rowCount: number, what: string, expectedVersion: number): void {
  if (rowCount !== 1) throw new FencingError(what, expectedVersion)
}
