import { z } from 'zod'
import { defineJob } from './define.js'

/** Does nothing: checks that workers run jobs end to end (smoke tests, benchmarks, operators). */
export const noopJob = defineJob({
  name: 'system.noop',
  queue: 'default',
  schema: z.object({ n: z.number().int().optional() }).strict(),
  maxAttempts: 1,
  run: async () => null,
})
