import { Redis } from 'ioredis'
import { withTimeout } from '../core/timeout.js'

export type { Redis }

export interface RedisOptions {
  url: string
  keyPrefix: string
  connectTimeoutMs: number
}

/**
 * Commands fail at once while Redis is down (no offline queue) so callers answer 503 instead of waiting;
 * the client keeps reconnecting in the background and recovers by itself.
 */
export function createRedis(options: RedisOptions): Redis {
  return new Redis(options.url, {
    keyPrefix: options.keyPrefix,
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: options.connectTimeoutMs,
    retryStrategy: (attempt) => Math.min(50 * 2 ** attempt, 2_000),
  })
}

export async function pingRedis(redis: Redis, timeoutMs: number): Promise<number> {
  const started = performance.now()
  await withTimeout(redis.ping(), timeoutMs, 'redis ping')
  return performance.now() - started
}
