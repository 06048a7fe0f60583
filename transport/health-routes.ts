import { z } from 'zod'
import { AppError } from '../core/errors.js'
import { defineRoute, type Route } from './route.js'

export type Probe = () => Promise<number>

export interface HealthDeps {
  postgres: Probe
  nats: Probe
  redis: Probe
  /** Whether the node has finished joining (and is not draining). */
  nodeState: () => 'joining' | 'ready' | 'draining'
}

const CheckResult = z.object({
  status: z.enum(['ok', 'down']),
  latencyMs: z.number().optional(),
  error: z.string().optional(),
})
const Ready = z.object({
  status: z.enum(['ok', 'degraded']),
  checks: z.object({
    postgres: CheckResult,
    nats: CheckResult,
    redis: CheckResult,
    node: z.object({ status: z.enum(['joining', 'ready', 'draining']) }),
  }),
})

// Liveness is probed often (and benchmarked): its answer is serialized once.
const alive = { status: 200, contentType: 'application/json', data: JSON.stringify({ status: 'ok' }) } as const

export function healthRoutes(deps: HealthDeps): Route[] {
  return [
    defineRoute({
      method: 'get',
      path: '/health',
      operationId: 'health',
      summary: 'Liveness: 200 while the process is alive',
      tags: ['health'],
      responses: { 200: { description: 'alive', schema: z.object({ status: z.literal('ok') }) } },
      handler: () => alive,
    }),
    defineRoute({
      method: 'get',
      path: '/health/db',
      operationId: 'healthDb',
      summary: 'Postgres reachability and round-trip time',
      tags: ['health'],
      responses: {
        200: { description: 'Postgres answered', schema: z.object({ status: z.literal('ok'), latencyMs: z.number() }) },
        503: { description: 'Postgres is unreachable' },
      },
      handler: async () => {
        try {
          const latencyMs = await deps.postgres()
          return { status: 200, body: { status: 'ok', latencyMs: round(latencyMs) } }
        } catch (err) {
          throw new AppError('unavailable', `Postgres is unreachable: ${describe(err)}`, { cause: err })
        }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/health/ready',
      operationId: 'healthReady',
      summary: 'Readiness: Postgres, NATS and Redis reachable and the node joined',
      tags: ['health'],
      responses: {
        200: { description: 'ready for traffic', schema: Ready },
        503: { description: 'a dependency is down, the node is joining or draining', schema: Ready },
      },
      handler: async () => {
        const [postgres, nats, redis] = await Promise.all([check(deps.postgres), check(deps.nats), check(deps.redis)])
        const node = { status: deps.nodeState() }
        const healthy = postgres.status === 'ok' && nats.status === 'ok' && redis.status === 'ok' && node.status === 'ready'
        return {
          status: healthy ? 200 : 503,
          body: { status: healthy ? 'ok' : 'degraded', checks: { postgres, nats, redis, node } },
          headers: { 'cache-control': 'no-store' },
        }
      },
    }),
  ]
}

async function check(probe: Probe): Promise<z.infer<typeof CheckResult>> {
  try {
    return { status: 'ok', latencyMs: round(await probe()) }
  } catch (err) {
    return { status: 'down', error: describe(err) }
  }
}

const round = (ms: number) => Math.round(ms * 100) / 100

function describe(err: unknown): string {
  if (err instanceof Error) return 'code' in err && typeof err.code === 'string' ? `${err.code}: ${err.message}` : err.message
  return String(err)
}
