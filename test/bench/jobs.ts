import { connect, type NatsConnection } from '@nats-io/transport-node'
import postgres from 'postgres'
import {
  BulkResult,
  control,
  controlPortLine,
  PacedResult,
  percentile,
  PickupSamples,
  WorkerStats,
} from './jobs-control.js'
import { bullCompletion, cpuMeter, oursBreakdown, oursCompletion, type Pair, type Side } from './jobs-sides.js'
import { envInt, median, round, services, sleep, startServer, withIsolated, type BenchSettings, type ResultRow, type Scenario, type ScenarioResult } from './harness.js'

const THROUGHPUT_TARGET = 1
const PICKUP_P99_TARGET_MS = 10
const CONCURRENCY = 100
/** Jobs per enqueueMany / addBulk call, one call after another. */
const BATCH = 1_000
/** A rate low enough that nothing queues: what a pickup costs on an idle path. */
const FLOOR_RATE = 100

/**
 * Durable jobs: ours (test/bench/jobs-node.ts: a worker node, ROLES=workers and JOB_CONCURRENCY=100, and an
 * enqueuer node, ROLES=gateway, each its own process) against BullMQ (test/bench/peers/bullmq-node.ts: a Worker
 * with concurrency 100 and a Queue, each its own process, on the same Redis).
 *
 * 1. Throughput: 50,000 no-op jobs (`system.noop`; BullMQ a no-op processor) enqueued in batches of 1,000
 *    (`enqueueMany` / `addBulk`, one call after another), timed from the first enqueue call to the last job
 *    recorded done: ours `max(finished_at)` of the jobs once all are `succeeded` in Postgres (the full path:
 *    record insert, JetStream publish with message id, start and finish status writes, ack), BullMQ the worker's
 *    last `completed` event. Rounds alternate ours and BullMQ after a warm-up of each; the ratio is the median of
 *    the rounds' ratios.
 * 2. Pickup: single `bench.probe` jobs (`enqueue` / `add`) at half our saturation rate (the median throughput of
 *    step 1), from a 1 ms fixed-interval scheduler, for BENCH_WARMUP s unmeasured then BENCH_DURATION s; each
 *    handler records the time since its enqueue call began. Then BullMQ at the same rate, for context, and both
 *    again at 100 jobs/s, where nothing queues (the floor of the path). For ours, the probes' records tell where
 *    the time went (Postgres timestamps of insert, start write and published mark), and the event-loop busy
 *    share of the enqueuer and the worker tells whether either process was the limit.
 * 3. The Postgres commit floor: one-row insert commits at 100/s while no jobs flow (commitFloor), the least
 *    any pickup that waits for a commit can take on this machine.
 *
 * BullMQ runs with `removeOnComplete: { age: 3600, count: 1000 }` (production pruning; ours keeps every record).
 * CPU per job is measured from /proc: the two Node processes of a side (the table's CPU column), and in the note
 * the services (Postgres backends of the isolated database + NATS, or Redis).
 * BENCH_JOBS (default 50,000) changes the job count of step 1; BENCH_ROUNDS (capped at 3 here) the rounds.
 * BENCH_PICKUP_RATE=<jobs/s> skips step 1 (after a short warm-up) and measures step 2 at that rate: a
 * diagnostic for the pickup tail, which reports no throughput and never passes. Each pickup line also gives
 * the event-loop delay (p99 / worst) of the enqueuer (over the measured phase) and the worker (over the whole
 * run, warm-up and drain included), and the garbage collections of each over the same span (count, pauses added
 * up, longest): the tail comes from stalls that hold up every job in flight at once (a garbage collection, a
 * process waiting for a core).
 */
const scenario: Scenario = {
  name: 'jobs',
  description: `durable no-op jobs (50,000 or BENCH_JOBS), concurrency ${CONCURRENCY}, vs BullMQ on the same Redis; p99 enqueue-to-start at half our saturation`,
  run: (settings, log) =>
    withIsolated(log, async (isolated, servers) => {
      // Under the namespace's Redis prefix, so the isolation's cleanup removes BullMQ's keys too.
      const bullPrefix = `${isolated.namespace}:bullmq`
      log(`BullMQ key prefix ${bullPrefix}`)
      const common = { ...isolated.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'warn', LOG_PRETTY: 'false', SHUTDOWN_TIMEOUT_MS: '2000', JOB_CONCURRENCY: String(CONCURRENCY) }
      const start = async (name: string, script: string, args: string[], env: Record<string, string>) => {
        const server = await startServer({ name, script, args, env: { ...common, ...env }, portFrom: controlPortLine })
        servers.push(server)
        return server
      }
      // The worker first: it migrates the database and declares the streams and consumers.
      const ours = {
        worker: await start('our worker', 'test/bench/jobs-node.ts', ['worker'], { ROLES: 'workers' }),
        enqueuer: await start('our enqueuer', 'test/bench/jobs-node.ts', ['enqueuer'], { ROLES: 'gateway', MIGRATE_ON_START: 'false' }),
      }
      const bull = {
        worker: await start('bullmq worker', 'test/bench/peers/bullmq-node.ts', ['worker', bullPrefix], {}),
        enqueuer: await start('bullmq enqueuer', 'test/bench/peers/bullmq-node.ts', ['enqueuer', bullPrefix], {}),
      }
      const sql = postgres(isolated.env.DATABASE_URL!, { max: 1, onnotice: () => {} })
      let nc: NatsConnection | undefined
      try {
        nc = await connect({ servers: services.natsUrl, timeout: 5_000 })
        const sides: Record<Side, Pair> = {
          ours: { ...ours, completion: oursCompletion(sql, nc, `${isolated.namespace}_jobs`), breakdown: (since) => oursBreakdown(sql, since) },
          bullmq: { ...bull, completion: bullCompletion(bull.worker) },
        }
        // Job records churn (an insert and an update or two per job), which Postgres's autovacuum cleans up as
        // it goes. CI machines may run Postgres with autovacuum off; then a VACUUM before each of our runs
        // stands in for it (said in the output), or every round would carry the previous rounds' dead rows.
        const [setting] = await sql<{ autovacuum: string }[]>`select current_setting('autovacuum') as autovacuum`
        const vacuum = setting?.autovacuum === 'off' ? async () => void (await sql`vacuum jobs`) : undefined
        if (vacuum) log('autovacuum is off on this Postgres: a VACUUM of the jobs table before each of our runs stands in for it')
        return await measure(settings, log, sides, isolated.database, vacuum, () => commitFloor(sql))
      } finally {
        await Promise.allSettled([sql.end({ timeout: 1 }), nc?.close()])
      }
    }),
}

export default scenario

const jobCount = () => envInt(process.env, 'BENCH_JOBS', 50_000, 1_000, 10_000_000)

// ---------------------------------------------------------------------------------------------------------
// Measuring

interface ThroughputRun {
  jobsPerSec: number
  seconds: number
  /** Jobs per second of the enqueue calls alone (first call to last return). */
  enqueuePerSec: number
  failed: number
  nodeUsPerJob: number
  serviceUsPerJob: number
}

interface PickupRun {
  rate: number
  achieved: number
  sent: number
  failed: number
  samples: number
  p50: number
  p99: number
  max: number
  maxBehindMs: number
  callP50Ms: number
  callP99Ms: number
  enqueuerElu: number
  workerElu: number
  /** Event-loop delay p99 / worst (ms) of the enqueuer and the worker during the run. */
  enqueuerLoop: [number, number]
  workerLoop: [number, number]
  /** Garbage collections during the run: count, pauses added up and longest (ms). */
  enqueuerGc: GcReading
  workerGc: GcReading
  breakdown: string
}

interface GcReading {
  gcCount: number
  gcTotalMs: number
  gcMaxMs: number
}

const gcText = (g: GcReading) => `${g.gcCount}/${g.gcTotalMs.toFixed(0)}/${g.gcMaxMs.toFixed(1)}`

async function measure(
  settings: BenchSettings,
  log: (line: string) => void,
  sides: Record<Side, Pair>,
  database: string,
  vacuum: (() => Promise<void>) | undefined,
  commits: () => Promise<CommitFloor>,
): Promise<ScenarioResult> {
  const jobs = jobCount()
  const rounds = Math.min(settings.rounds, 3)
  const enqueued: Record<Side, number> = { ours: 0, bullmq: 0 }

  const throughput = async (side: Side, count: number): Promise<ThroughputRun> => {
    const pair = sides[side]
    if (side === 'ours') await vacuum?.()
    const cpu = cpuMeter(side, pair, database)
    const bulk = await control(pair.enqueuer.url, 'bulk', { count, batch: BATCH }, BulkResult)
    enqueued[side] += count
    // Generous: a tenth of the slowest plausible rate (100 jobs/s).
    const done = await pair.completion.waitFor(enqueued[side], 60_000 + count * 10)
    const seconds = (done.lastDoneAt - bulk.startedAt) / 1000
    return { jobsPerSec: count / seconds, seconds, enqueuePerSec: count / ((bulk.enqueuedAt - bulk.startedAt) / 1000), failed: done.failed, ...cpu(count) }
  }
  const say = (what: string, r: ThroughputRun) =>
    log(
      `${what}: ${Math.round(r.jobsPerSec)} jobs/s (${r.seconds.toFixed(2)} s; enqueue alone ${Math.round(r.enqueuePerSec)} jobs/s), ` +
        `CPU per job: node ${Math.round(r.nodeUsPerJob)} µs, services ${Math.round(r.serviceUsPerJob)} µs${r.failed ? `, ${r.failed} failed` : ''}`,
    )

  // BENCH_PICKUP_RATE: a diagnostic run of the pickup measurements alone, at that rate, after a short warm-up.
  const fixedRate = envInt(process.env, 'BENCH_PICKUP_RATE', 0, 0, 1_000_000)
  const warmJobs = fixedRate ? 2_000 : Math.min(jobs, 10_000)
  const warm = { ours: await throughput('ours', warmJobs), bullmq: await throughput('bullmq', warmJobs) }
  say('warm-up ours', warm.ours)
  say('warm-up bullmq', warm.bullmq)
  const runs: Record<Side, ThroughputRun[]> = { ours: [], bullmq: [] }
  for (let n = 1; n <= (fixedRate ? 0 : rounds); n++) {
    for (const side of ['ours', 'bullmq'] as const) {
      runs[side].push(await throughput(side, jobs))
      say(`round ${n}/${rounds} ${side}`, runs[side].at(-1)!)
    }
  }

  const loop = ([p99, max]: [number, number]) => `${p99.toFixed(1)}/${max.toFixed(1)}`
  const saturation = fixedRate ? 2 * fixedRate : median(runs.ours.map((r) => r.jobsPerSec))
  const rate = Math.max(1, Math.round(saturation / 2))
  const pickup = async (side: Side, rate: number): Promise<PickupRun> => {
    const pair = sides[side]
    if (side === 'ours') await vacuum?.()
    await control(pair.worker.url, 'pickup', {}, PickupSamples)
    // The worker's probe count runs on over every pickup run: what this run adds is counted from here.
    const before = (await control(pair.worker.url, 'stats', {}, WorkerStats)).probes
    const since = Date.now()
    const paced = await control(pair.enqueuer.url, 'paced', { rate, warmupMs: settings.warmupSec * 1000, durationMs: settings.durationSec * 1000 }, PacedResult)
    const expected = paced.sent - paced.failed
    const deadline = Date.now() + 30_000
    while ((await control(pair.worker.url, 'stats', {}, WorkerStats)).probes - before < expected && Date.now() < deadline) await sleep(50)
    const { samples, elu, loopDelayP99Ms, loopDelayMaxMs, gcCount, gcTotalMs, gcMaxMs } = await control(pair.worker.url, 'pickup', {}, PickupSamples)
    const r: PickupRun = {
      rate,
      achieved: paced.sent / settings.durationSec,
      sent: paced.sent,
      failed: paced.failed + Math.max(0, expected - samples.length),
      samples: samples.length,
      p50: percentile(samples, 0.5),
      p99: percentile(samples, 0.99),
      max: percentile(samples, 1),
      maxBehindMs: paced.maxBehindMs,
      callP50Ms: paced.callP50Ms,
      callP99Ms: paced.callP99Ms,
      enqueuerElu: paced.elu,
      workerElu: elu,
      enqueuerLoop: [paced.loopDelayP99Ms, paced.loopDelayMaxMs],
      workerLoop: [loopDelayP99Ms, loopDelayMaxMs],
      enqueuerGc: { gcCount: paced.gcCount, gcTotalMs: paced.gcTotalMs, gcMaxMs: paced.gcMaxMs },
      workerGc: { gcCount, gcTotalMs, gcMaxMs },
      breakdown: (await pair.breakdown?.(since)) ?? '',
    }
    log(
      `pickup ${side} at ${rate} jobs/s: ${r.samples} of ${r.sent} probes, p50 ${r.p50.toFixed(2)} ms, p99 ${r.p99.toFixed(2)} ms, max ${r.max.toFixed(1)} ms; ` +
        `enqueue call p50 ${r.callP50Ms.toFixed(2)} / p99 ${r.callP99Ms.toFixed(2)} ms, scheduler at worst ${r.maxBehindMs.toFixed(1)} ms behind; ` +
        `event loops busy: enqueuer ${Math.round(r.enqueuerElu * 100)}%, worker ${Math.round(r.workerElu * 100)}%; ` +
        `loop delay p99/max ms: enqueuer ${loop(r.enqueuerLoop)}, worker ${loop(r.workerLoop)}; ` +
        `GC count/paused/longest ms: enqueuer ${gcText(r.enqueuerGc)}, worker ${gcText(r.workerGc)}` +
        (r.breakdown ? `; ${r.breakdown}` : ''),
    )
    return r
  }
  log(
    fixedRate
      ? `BENCH_PICKUP_RATE: pickup only, at ${rate} jobs/s (no throughput rounds: no ratio, no pass)`
      : `our saturation ${Math.round(saturation)} jobs/s (median of ${rounds}): pickup measured at ${rate} jobs/s, and at ${FLOOR_RATE} jobs/s for the unloaded floor`,
  )
  const oursPickup = await pickup('ours', rate)
  const bullPickup = await pickup('bullmq', rate)
  const oursFloor = await pickup('ours', FLOOR_RATE)
  const bullFloor = await pickup('bullmq', FLOOR_RATE)
  // Context only: a failure here costs the line, not the figures measured before it.
  const floor = await commits().catch((err: unknown): CommitFloor => {
    log(`Postgres commit floor not measured: ${err instanceof Error ? err.message : String(err)}`)
    return { p50: Number.NaN, p99: Number.NaN, max: Number.NaN }
  })
  log(`Postgres commit floor: one-row insert commits at ${FLOOR_RATE}/s, p50 ${floor.p50.toFixed(2)} ms, p99 ${floor.p99.toFixed(2)} ms, max ${floor.max.toFixed(1)} ms`)

  // A pickup-only run (BENCH_PICKUP_RATE) has no rounds: its throughput figures are NaN and it does not pass.
  const med = (values: readonly number[]) => (values.length ? median(values) : Number.NaN)
  const ratios = runs.ours.map((r, i) => r.jobsPerSec / runs.bullmq[i]!.jobsPerSec)
  const ratio = med(ratios)
  const throughputPass = ratio >= THROUGHPUT_TARGET
  const pickupPass = oursPickup.p99 <= PICKUP_P99_TARGET_MS && oursPickup.failed === 0
  const failedJobs = [...runs.ours, ...runs.bullmq].reduce((sum, r) => sum + r.failed, 0)

  const throughputRow = (label: string, r: ThroughputRun, note: string): ResultRow => ({
    label,
    requestsPerSec: r.jobsPerSec,
    latencyP50Ms: Number.NaN,
    latencyP99Ms: Number.NaN,
    errors: r.failed,
    serverCpuUsPerReq: r.nodeUsPerJob,
    note: `${note}; ${r.seconds.toFixed(2)} s e2e, enqueue alone ${Math.round(r.enqueuePerSec)}/s; services ${Math.round(r.serviceUsPerJob)} µs CPU/job`,
  })
  const pickupRow = (label: string, r: PickupRun): ResultRow => ({
    label,
    requestsPerSec: r.achieved,
    latencyP50Ms: r.p50,
    latencyP99Ms: r.p99,
    errors: r.failed,
    note:
      `enqueue-to-start, ${r.samples} probes, max ${r.max.toFixed(1)} ms; enqueue call p99 ${r.callP99Ms.toFixed(1)} ms, ` +
      `scheduler ≤ ${r.maxBehindMs.toFixed(1)} ms behind; busy: enqueuer ${Math.round(r.enqueuerElu * 100)}%, worker ${Math.round(r.workerElu * 100)}%; ` +
      `loop delay p99/max: enqueuer ${loop(r.enqueuerLoop)}, worker ${loop(r.workerLoop)} ms; ` +
      `GC count/paused/longest: enqueuer ${gcText(r.enqueuerGc)}, worker ${gcText(r.workerGc)} ms`,
  })
  const rows: ResultRow[] = [
    throughputRow(`ours ${warmJobs / 1000}k no-op warm-up`, warm.ours, 'pg + nats'),
    throughputRow(`bullmq ${warmJobs / 1000}k no-op warm-up`, warm.bullmq, 'redis'),
    ...runs.ours.flatMap((r, i) => [
      throughputRow(`ours ${jobs / 1000}k no-op run ${i + 1}`, r, 'pg + nats'),
      throughputRow(`bullmq ${jobs / 1000}k no-op run ${i + 1}`, runs.bullmq[i]!, 'redis'),
    ]),
    pickupRow(fixedRate ? 'ours pickup (BENCH_PICKUP_RATE)' : 'ours pickup at ½ saturation', oursPickup),
    pickupRow('bullmq pickup, same rate', bullPickup),
    pickupRow(`ours pickup at ${FLOOR_RATE}/s (floor)`, oursFloor),
    pickupRow(`bullmq pickup at ${FLOOR_RATE}/s (floor)`, bullFloor),
  ]
  const jobsPerSec = (side: Side) => Math.round(med(runs[side].map((r) => r.jobsPerSec)))
  return {
    rows,
    headline:
      `ours ÷ BullMQ throughput = ${ratio.toFixed(2)} (${jobsPerSec('ours')} vs ${jobsPerSec('bullmq')} jobs/s; rounds ${ratios.map((r) => r.toFixed(2)).join(', ')}; ` +
      `target >= ${THROUGHPUT_TARGET}): ${throughputPass ? 'pass' : 'MISSED'}; ` +
      `p99 pickup at ${rate} jobs/s (${fixedRate ? 'BENCH_PICKUP_RATE' : '½ our saturation'}) = ${oursPickup.p99.toFixed(2)} ms (p50 ${oursPickup.p50.toFixed(2)}; target <= ${PICKUP_P99_TARGET_MS}): ` +
      `${pickupPass ? 'pass' : 'MISSED'}; BullMQ at that rate p50 ${bullPickup.p50.toFixed(2)} / p99 ${bullPickup.p99.toFixed(2)} ms; ` +
      `this machine's Postgres commit alone p99 ${floor.p99.toFixed(2)} ms` +
      (failedJobs ? `; ${failedJobs} jobs failed` : ''),
    summary: {
      scenario: 'jobs',
      pass: throughputPass && pickupPass,
      throughputRatio: round(ratio, 3),
      pickupP99Ms: round(oursPickup.p99, 2),
      targets: { throughputRatio: THROUGHPUT_TARGET, pickupP99Ms: PICKUP_P99_TARGET_MS },
      oursJobsPerSec: jobsPerSec('ours'),
      bullmqJobsPerSec: jobsPerSec('bullmq'),
      oursCpuUsPerJob: { node: Math.round(med(runs.ours.map((r) => r.nodeUsPerJob))), pgAndNats: Math.round(med(runs.ours.map((r) => r.serviceUsPerJob))) },
      bullmqCpuUsPerJob: { node: Math.round(med(runs.bullmq.map((r) => r.nodeUsPerJob))), redis: Math.round(med(runs.bullmq.map((r) => r.serviceUsPerJob))) },
      pickupRate: rate,
      oursPickupP50Ms: round(oursPickup.p50, 2),
      bullmqPickupP50Ms: round(bullPickup.p50, 2),
      bullmqPickupP99Ms: round(bullPickup.p99, 2),
      oursPickupBreakdown: oursPickup.breakdown,
      floorRate: FLOOR_RATE,
      oursFloorP50Ms: round(oursFloor.p50, 2),
      oursFloorP99Ms: round(oursFloor.p99, 2),
      bullmqFloorP50Ms: round(bullFloor.p50, 2),
      bullmqFloorP99Ms: round(bullFloor.p99, 2),
      commitFloorP50Ms: round(floor.p50, 2),
      commitFloorP99Ms: round(floor.p99, 2),
      jobs,
      batch: BATCH,
      concurrency: CONCURRENCY,
      rounds,
      pickupSeconds: settings.durationSec,
      failedJobs,
    },
  }
}

interface CommitFloor {
  p50: number
  p99: number
  max: number
}

/**
 * What any pickup that waits for a Postgres commit cannot beat on this machine: one-row inserts into a plain
 * (WAL-logged) table, each its own transaction, from the scenario's own connection at the floor rate, while
 * no jobs flow (the four processes are up but idle; autovacuum, where on, may still be at work). Ours records
 * a job before it may run, so its pickup is at least this; BullMQ's Redis here writes nothing to disk.
 */
async function commitFloor(sql: postgres.Sql, count = 500): Promise<CommitFloor> {
  await sql`create table if not exists bench_commit_probe (id bigserial primary key, at timestamptz not null default now())`
  const samples: number[] = []
  const start = performance.now()
  for (let i = 0; i < count; i++) {
    const due = start + (i * 1000) / FLOOR_RATE
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    const began = performance.now()
    await sql`insert into bench_commit_probe default values`
    samples.push(performance.now() - began)
  }
  await sql`drop table bench_commit_probe`
  return { p50: percentile(samples, 0.5), p99: percentile(samples, 0.99), max: percentile(samples, 1) }
}
