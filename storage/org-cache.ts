import type { Redis } from 'ioredis'
import type { Logger } from '../core/log.js'
import { withTimeout } from '../core/timeout.js'

/**
 * What gateways read without an actor hop: each user's list of organizations and roles, kept in Redis and
 * dropped by the org actor whenever it changes a membership. Redis is only a cache here: when it is down,
 * readers go to Postgres and writers log, and the short expiry bounds how long a missed drop can last.
 */
export interface OrgListCache {
  get<T>(userId: string): Promise<T | undefined>
  set(userId: string, value: unknown): Promise<void>
  invalidate(userIds: Iterable<string>): Promise<void>
}

const key = (userId: string) => `orgs:${userId}`

export function createOrgListCache(redis: Redis, log: Logger, ttlSeconds = 60, timeoutMs = 500): OrgListCache {
  return {
    async get<T>(userId: string) {
      try {
        const text = await withTimeout(redis.get(key(userId)), timeoutMs, 'redis get')
        return text === null ? undefined : (JSON.parse(text) as T)
      } catch (err) {
        log.warn({ err, userId }, 'organization list cache unavailable; reading Postgres')
        return undefined
      }
    },
    async set(userId, value) {
      await withTimeout(redis.set(key(userId), JSON.stringify(value), 'EX', ttlSeconds), timeoutMs, 'redis set').catch((err: unknown) =>
        log.warn({ err, userId }, 'organization list not cached'),
      )
    },
    async invalidate(userIds) {
      const keys = [...userIds].map(key)
      if (keys.length === 0) return
      await withTimeout(redis.del(...keys), timeoutMs, 'redis del').catch((err: unknown) =>
        log.warn({ err, users: keys.length }, `organization list cache not cleared; entries expire within ${ttlSeconds} s`),
      )
    },
  }
}
