import type { z } from 'zod'
import type { Logger } from '../../core/log.js'
import type { JobPriority } from '../../storage/job-records.js'

export interface JobContext {
  id: string
  /** 1 for the first attempt. */
  attempt: number
  orgId: string | null
  requestId: string | null
  log: Logger
  /** Aborted when the job runs past its timeout or the worker stops. */
  signal: AbortSignal
}

/** A job type, declared in code: what it accepts, where it runs and how it retries. */
export interface JobDefinition<P = unknown> {
  name: string
  queue: string
  /** Checked at enqueue: a payload that fails it is refused there, not discovered by a worker later. */
  schema: z.ZodType<P>
  priority?: JobPriority
  maxAttempts?: number
  /** First retry delay; each further one doubles, with jitter. */
  backoffMs?: number
  maxBackoffMs?: number
  timeoutMs?: number
  run(payload: P, ctx: JobContext): Promise<unknown>
}

export function defineJob<P>(def: JobDefinition<P>): JobDefinition<unknown> {
  return def as unknown as JobDefinition<unknown>
}

/** Thrown by a job that must not be retried (bad input, a resource gone): the job goes straight to dead. */
export class PermanentJobError extends Error {
  override name = 'PermanentJobError'
}

/** Exponential backoff with full jitter, capped. */
export function backoffDelay(def: JobDefinition, attempt: number): number {
  const base = def.backoffMs ?? 1_000
  const cap = def.maxBackoffMs ?? 5 * 60_000
  const exp = Math.min(cap, base * 2 ** Math.max(0, attempt - 1))
  return Math.round(exp / 2 + Math.random() * (exp / 2))
}
