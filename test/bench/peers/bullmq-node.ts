/**
 * The BullMQ peer of the `jobs` benchmark: `node --import tsx test/bench/peers/bullmq-node.ts worker|enqueuer
 * <prefix>`, on REDIS_URL (default the loopback Redis), queue `bench` under the key prefix `<prefix>` (unique per
 * run, so its keys are removed afterwards by prefix). Driven through the same control server and enqueueing code
 * as ours (test/bench/jobs-control.ts):
 *
 * - worker: one `Worker` with concurrency JOB_CONCURRENCY (default 100) and a no-op processor; a job with a
 *   `{ t }` payload records `now - t` (enqueue to start). Answers `stats` (probes run, completions and the time
 *   of the last one, from the worker's `completed` event, i.e. once the job is recorded completed in Redis) and
 *   `pickup`;
 * - enqueuer: one `Queue`; `bulk` (`Queue.addBulk`, batch after batch) and `paced` (`Queue.add`, one job each).
 *
 * Settings: BullMQ's defaults (one attempt, completed jobs kept by age/count as below, Redis as configured),
 * except `removeOnComplete: { age: 3600, count: 1000 }` and `removeOnFail: { age: 86400 }`, the pruning BullMQ's
 * guide recommends for production queues (otherwise completed jobs pile up in Redis memory forever).
 * Stops on SIGTERM/SIGINT.
 */
import { Queue, Worker, type ConnectionOptions, type Job } from 'bullmq'
import { BulkRequest, enqueueBulk, enqueuePaced, PacedRequest, pickupRecorder, preciseNow, ProbePayload, serveControl, type ControlHandler } from '../jobs-control.js'

const [role, prefix] = process.argv.slice(2)
if ((role !== 'worker' && role !== 'enqueuer') || !prefix) {
  process.stderr.write('usage: bullmq-node.ts worker|enqueuer <prefix>\n')
  process.exit(2)
}

const redisUrl = new URL(process.env.REDIS_URL || 'redis://127.0.0.1:6379')
const connection: ConnectionOptions = { host: redisUrl.hostname, port: Number(redisUrl.port || 6379) }
const concurrency = Number(process.env.JOB_CONCURRENCY || 100)
const queueName = 'bench'

let close: () => Promise<void>
let handlers: Record<string, ControlHandler>
if (role === 'worker') {
  const pickup = pickupRecorder()
  let completed = 0
  let lastCompletedAt = 0
  const worker = new Worker(
    queueName,
    async (job: Job) => {
      const probe = ProbePayload.safeParse(job.data)
      if (probe.success && !probe.data.warm) pickup.record(preciseNow() - probe.data.t)
      return null
    },
    { connection, prefix, concurrency },
  )
  worker.on('completed', () => {
    completed++
    lastCompletedAt = Date.now()
  })
  worker.on('error', (err) => process.stderr.write(`bullmq worker: ${err.message}\n`))
  await worker.waitUntilReady()
  handlers = {
    stats: async () => ({ probes: pickup.measured, completed, lastCompletedAt }),
    pickup: async () => pickup.take(),
  }
  close = () => worker.close()
} else {
  const queue = new Queue(queueName, {
    connection,
    prefix,
    defaultJobOptions: { removeOnComplete: { age: 3600, count: 1000 }, removeOnFail: { age: 86_400 } },
  })
  await queue.waitUntilReady()
  handlers = {
    bulk: async (body) => {
      const r = BulkRequest.parse(body)
      return enqueueBulk(r, async (size) => {
        await queue.addBulk(Array.from({ length: size }, () => ({ name: 'noop', data: {} })))
      })
    },
    paced: async (body) =>
      enqueuePaced(PacedRequest.parse(body), async (payload) => {
        await queue.add('probe', payload)
      }),
  }
  close = () => queue.close()
}
const controlServer = await serveControl(handlers)

const stop = () =>
  void Promise.allSettled([controlServer.close(), close()]).then(
    () => process.exit(0),
    () => process.exit(1),
  )
process.once('SIGTERM', stop)
process.once('SIGINT', stop)
