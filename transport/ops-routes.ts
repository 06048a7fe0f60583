import type { JobQueue } from '../actors/job-queue.js'
import type { Logger } from '../core/log.js'
import type { Sql } from '../storage/postgres.js'
import type { Route } from './route.js'

export interface OpsDeps {
  sql: Sql
  jobs: JobQueue
  /** OPS_TOKEN: without it, the ops pages answer 404. */
  opsToken: string | undefined
  log: Logger
}

/** The operators' view of the job queues at /ops/jobs (being built). */
export function opsRoutes(_d: OpsDeps): Route[] {
  return []
}
