/**
 * Our side of the `jobs` benchmark: `node --import tsx test/bench/jobs-node.ts worker|enqueuer` with NAMESPACE,
 * DATABASE_URL, ROLES, JOB_CONCURRENCY, ... in the environment. A full node (startNode) that also knows the
 * bench-only job `bench.probe` (payload `{ t }`: its handler records `now - t`, the enqueue-to-start time);
 * driven through the control server of jobs-control.ts:
 *
 * - worker (ROLES=workers): `stats` (probe handlers run), `pickup` (the samples so far, then forgets them);
 * - enqueuer (ROLES=gateway): `bulk` (`system.noop` jobs through `jobs.enqueueMany`, batch after batch) and
 *   `paced` (single `bench.probe` jobs through `jobs.enqueue` at a fixed rate).
 *
 * Stops cleanly on SIGTERM/SIGINT.
 */
import { loadConfig } from '../../core/config.js'
import { defineJob } from '../../actors/jobs/define.js'
import { startNode } from '../../main.js'
import { BulkRequest, enqueueBulk, enqueuePaced, PacedRequest, pickupRecorder, preciseNow, ProbePayload, serveControl, type ControlHandler } from './jobs-control.js'

const role = process.argv[2]
if (role !== 'worker' && role !== 'enqueuer') {
  process.stderr.write('usage: jobs-node.ts worker|enqueuer\n')
  process.exit(2)
}

const pickup = pickupRecorder()
const probeJob = defineJob<ProbePayload>({
  name: 'bench.probe',
  queue: 'default',
  schema: ProbePayload,
  maxAttempts: 1,
  run: async (p) => {
    // Runs after the worker recorded the start in Postgres: this is the pickup as a job's owner sees it.
    const elapsed = preciseNow() - p.t
    if (!p.warm) pickup.record(elapsed)
    return null
  },
})

const node = await startNode(loadConfig(process.env), { jobs: () => [probeJob] })

const handlers: Record<string, ControlHandler> =
  role === 'worker'
    ? {
        stats: async () => ({ probes: pickup.measured }),
        pickup: async () => pickup.take(),
      }
    : {
        bulk: async (body) => {
          const r = BulkRequest.parse(body)
          return enqueueBulk(r, async (size) => {
            await node.jobs.enqueueMany(Array.from({ length: size }, () => ({ name: 'system.noop', payload: {} })))
          })
        },
        paced: async (body) =>
          enqueuePaced(PacedRequest.parse(body), async (payload) => {
            await node.jobs.enqueue({ name: 'bench.probe', payload })
          }),
      }
const controlServer = await serveControl(handlers)

const stop = () =>
  void Promise.allSettled([controlServer.close(), node.shutdown()]).then(
    () => process.exit(0),
    () => process.exit(1),
  )
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
