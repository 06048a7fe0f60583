import type { Redis } from 'ioredis'
import { AppError, unavailable } from '../core/errors.js'

export interface Limit {
  /** Redis key (under the namespace prefix). */
  key: string
  max: number
  windowSeconds: number
}

export interface RateLimiter {
  /** Counts one hit; throws 429 with `retry-after` and `ratelimit-*` headers when over the limit. */
  hit(limit: Limit): Promise<void>
  /** Throws 429 when the limit is already used up, without counting. */
  check(limit: Limit): Promise<void>
  reset(key: string): Promise<void>
}

// Fixed window: INCR, and set the expiry only on the first hit so the window does not slide forward.
const incr = `local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return {n, redis.call('TTL', KEYS[1])}`

/** Counters in Redis, shared by every node. Redis down means 503, not an open door. */
export function createRateLimiter(redis: Redis): RateLimiter {
  // `used` is how many the window has seen counting this one (hit) or before it (check).
  const refuse = (limit: Limit, used: number, ttl: number) => {
    if (used <= limit.max) return
    const reset = Math.max(1, ttl)
    throw new AppError('rate_limited', `too many attempts; try again in ${reset} s`, {
      headers: {
        'retry-after': String(reset),
        'ratelimit-limit': String(limit.max),
        'ratelimit-remaining': '0',
        'ratelimit-reset': String(reset),
        'ratelimit-policy': `${limit.max};w=${limit.windowSeconds}`,
      },
    })
  }
  const guard = async <T>(run: () => Promise<T>): Promise<T> => {
    try {
      return await run()
    } catch (err) {
      throw unavailable('rate limiting (Redis)', err)
    }
  }
  return {
    async hit(limit) {
      const [count, ttl] = (await guard(() => redis.eval(incr, 1, limit.key, limit.windowSeconds))) as [number, number]
      refuse(limit, count, ttl)
    },
    async check(limit) {
      const [count, ttl] = await guard(() => Promise.all([redis.get(limit.key), redis.ttl(limit.key)]))
      // The next attempt would be one more than what is counted.
      refuse(limit, Number(count ?? 0) + 1, ttl)
    },
    async reset(key) {
      await guard(() => redis.del(key))
    },
  }
}
