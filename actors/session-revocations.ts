import type { NatsConnection } from '@nats-io/transport-node'
import type { Redis } from 'ioredis'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'

export interface SessionRevocations {
  /** Publishes the revocation to every node and records it in Redis for nodes that start later. */
  revoke(sessionIds: readonly string[]): Promise<void>
  /** In memory, on every request: no network hop. */
  isRevoked(sessionId: string): boolean
  /** Called for every revocation this node learns of (open WebSockets close on it). */
  onRevoked(listener: (sessionId: string) => void): void
  start(): Promise<void>
  stop(): void
}

/**
 * Access tokens are stateless, so a revoked session's tokens stay valid until they expire unless every node
 * refuses them. Each node keeps the revoked session ids in memory for one access-token lifetime: learned from
 * a NATS broadcast within milliseconds, and from Redis (`revoked:<sid>` keys with that TTL) at start-up.
 */
export function createSessionRevocations(o: { nc: NatsConnection; redis: Redis; names: Names; ttlSeconds: number; log: Logger }): SessionRevocations {
  const subject = `${o.names.namespace}.auth.revoked`
  const revoked = new Map<string, number>()
  const listeners: ((sid: string) => void)[] = []
  let sweeper: NodeJS.Timeout | undefined
  let sub: ReturnType<NatsConnection['subscribe']> | undefined
  const remember = (sid: string, until: number) => {
    const known = revoked.has(sid)
    revoked.set(sid, until)
    if (!known) for (const listener of listeners) listener(sid)
  }
  return {
    async revoke(sessionIds) {
      if (sessionIds.length === 0) return
      const until = Date.now() + o.ttlSeconds * 1000
      const pipeline = o.redis.pipeline()
      for (const sid of sessionIds) pipeline.set(`revoked:${sid}`, '1', 'EX', o.ttlSeconds)
      // The broadcast is what takes effect within seconds; Redis only serves nodes that start later, so its
      // failure is logged rather than failing the revocation (the database already holds it).
      await pipeline.exec().catch((err: unknown) => o.log.warn({ err }, 'could not record revocations in Redis'))
      for (const sid of sessionIds) remember(sid, until)
      o.nc.publish(subject, JSON.stringify({ sessionIds, until }))
    },
    isRevoked(sid) {
      const until = revoked.get(sid)
      return until !== undefined && until > Date.now()
    },
    onRevoked(listener) {
      listeners.push(listener)
    },
    async start() {
      sub = o.nc.subscribe(subject, {
        callback: (err, msg) => {
          if (err) return
          const { sessionIds, until } = JSON.parse(msg.string()) as { sessionIds: string[]; until: number }
          for (const sid of sessionIds) remember(sid, until)
        },
      })
      for (let cursor = '0'; ; ) {
        const [next, keys] = await o.redis.scan(cursor, 'MATCH', `${o.names.redisPrefix}revoked:*`, 'COUNT', 500)
        for (const key of keys) remember(key.slice(`${o.names.redisPrefix}revoked:`.length), Date.now() + o.ttlSeconds * 1000)
        cursor = next
        if (cursor === '0') break
      }
      sweeper = setInterval(() => {
        const now = Date.now()
        for (const [sid, until] of revoked) if (until <= now) revoked.delete(sid)
      }, 60_000)
      sweeper.unref()
    },
    stop() {
      clearInterval(sweeper)
      sub?.unsubscribe()
    },
  }
}
