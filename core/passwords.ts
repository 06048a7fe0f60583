import argon2 from 'argon2'
import { AppError } from './errors.js'

/** OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. */
export const passwordParams = { type: argon2.argon2id, memoryCost: 19_456, timeCost: 2, parallelism: 1 } as const

export interface PasswordHasher {
  hash(password: string): Promise<string>
  /** `rehash` is true when the stored hash used weaker parameters than today's. */
  verify(hash: string, password: string): Promise<{ ok: boolean; rehash: boolean }>
  /** Spends the time of a verification on nothing, so an unknown account answers as slowly as a known one. */
  verifyNothing(password: string): Promise<void>
  readonly waiting: number
}

export interface HasherOptions {
  /** Hashes running at once (each takes a libuv thread); more wait their turn. */
  concurrency: number
  /** Hashes allowed to wait; beyond that callers get 503 at once instead of queueing for ever. */
  maxWaiting: number
}

/**
 * argon2id hashing off the event loop (argon2 runs on libuv's thread pool), with a cap on how many run at
 * once so that a storm of logins cannot take every thread (and every core) from the rest of the server.
 */
export async function createPasswordHasher(options: HasherOptions): Promise<PasswordHasher> {
  const queue: (() => void)[] = []
  let running = 0
  const slot = async <T>(work: () => Promise<T>): Promise<T> => {
    if (running >= options.concurrency) {
      if (queue.length >= options.maxWaiting) throw new AppError('unavailable', 'too many sign-ins at once; try again shortly')
      await new Promise<void>((resolve) => queue.push(resolve))
    }
    running++
    try {
      return await work()
    } finally {
      running--
      queue.shift()?.()
    }
  }
  const decoy = await argon2.hash('decoy password that matches nothing', passwordParams)
  return {
    hash: (password) => slot(() => argon2.hash(password, passwordParams)),
    verify: (hash, password) =>
      slot(async () => {
        const ok = await argon2.verify(hash, password).catch(() => false)
        return { ok, rehash: ok && argon2.needsRehash(hash, passwordParams) }
      }),
    verifyNothing: (password) => slot(async () => void (await argon2.verify(decoy, password).catch(() => false))),
    get waiting() {
      return queue.length
    },
  }
}
