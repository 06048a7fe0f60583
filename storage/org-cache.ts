import type { Redis } from 'ioredis'
import type { Logger } from '../core/log.js'
import { withTimeout } from '../core/timeout.js'

/**
 * What gateways read without an actor hop: each user's list of organizations and roles, kept in Redis and
 * dropped by the org actor whenever it changes a membership. Redis is only a cache here: when it is down,
 * readers go to Postgres and writers log, and the short expiry bounds how long a missed drop can last.
 *
 * A reader that missed fills the cache only if no drop happened since its miss: each drop bumps the user's
 * version, and `fill` writes only while the version is still the one `read` saw. Without that, a reader
 * whose Postgres read began before a membership change and finished after its drop would put the old list
 * back for the whole expiry.
 */
export interface OrgListCache {
  /**
   * The cached list, or on a miss (`value` undefined) the version to hand back to `fill`; no version when Redis
   * did not answer, and then `fill` writes nothing.
   */
  read<T>(userId: string): Promise<{ value: T | undefined; version: string | undefined }>
  fill(userId: string, value: unknown, version: string | undefined): Promise<void>
  invalidate(userIds: Iterable<string>): Promise<void>
}

const listKey = (userId: string) => `orgs:${userId}`
const versionKey = (userId: string) => `orgs:v:${userId}`
/** No version key yet reads as this, so a first fill and a first drop still race safely. */
const NONE = '0'

// KEYS: list, version. ARGV: version seen at the miss, value, ttl (s). Sets only if the version is unchanged.
const fillScript = `
local current = redis.call('GET', KEYS[2]) or '${NONE}'
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
return 1`

export function createOrgListCache(redis: Redis, log: Logger, ttlSeconds = 60, timeoutMs = 500): OrgListCache {
  // Versions outlive any read by far, so one cannot expire between a miss and its fill and read as unchanged.
  const versionTtlSeconds = ttlSeconds * 60
  return {
    async read<T>(userId: string) {
      try {
        const [text, version] = await withTimeout(redis.mget(listKey(userId), versionKey(userId)), timeoutMs, 'redis mget')
        if (text) return { value: JSON.parse(text) as T, version: undefined }
        return { value: undefined, version: version ?? NONE }
      } catch (err) {
        log.warn({ err, userId }, 'organization list cache unavailable; reading Postgres')
        return { value: undefined, version: undefined }
      }
    },
    async fill(userId, value, version) {
      if (version === undefined) return
      await withTimeout(redis.eval(fillScript, 2, listKey(userId), versionKey(userId), version, JSON.stringify(value), ttlSeconds), timeoutMs, 'redis fill').catch(
        (err: unknown) => log.warn({ err, userId }, 'organization list not cached'),
      )
    },
    async invalidate(userIds) {
      const users = [...userIds]
      if (users.length === 0) return
      const batch = redis.multi()
      for (const u of users) batch.incr(versionKey(u)).expire(versionKey(u), versionTtlSeconds).del(listKey(u))
      await withTimeout(batch.exec(), timeoutMs, 'redis invalidate').catch((err: unknown) =>
        log.warn({ err, users: users.length }, `organization list cache not cleared; entries expire within ${ttlSeconds} s`),
      )
    },
  }
}
