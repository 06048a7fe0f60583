import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { LiveList, Tally, type LiveEntry } from '../core/churn-safe.js'
import type { Logger } from '../core/log.js'
import type { Names } from '../core/names.js'
import { recordJobStates, runnableJobs, type JobPriority, type JobStateChange } from '../storage/job-records.js'
import { retryOnDeadlock, type Sql } from '../storage/postgres.js'
import { priorities, type JobMessage, type JobQueue } from './job-queue.js'
import type { JobMetrics } from './job-metrics.js'
import { backoffDelay, PermanentJobError, type JobContext, type JobDefinition } from './jobs/define.js'

export interface WorkerOptions {
  nc: NatsConnection
  names: Names
  sql: Sql
  queue: JobQueue
  log: Logger
  metrics: JobMetrics
  /** Jobs running at once in this process, over every queue and priority. */
  concurrency: number
  /** How long a delivered job may go without an ack or a heartbeat before JetStream gives it to another worker. */
  ackWaitMs: number
  /** Told about job state changes of organizations' jobs (their events go on the org channel). */
  onChange?: (change: { id: string; orgId: string; name: string; status: string; attempts: number; error?: string }) => void
}

/**
 * Slots shared by every queue and priority of a worker: when one frees, a waiting high-priority job gets it
 * before any default one, and default before low, so a backlog of low jobs never holds up a high one.
 */
class Slots {
  private free: number
  private readonly waiting: Record<JobPriority, (() => void)[]> = { high: [], default: [], low: [] }
  constructor(size: number) {
    this.free = size
  }
  acquire(priority: JobPriority): Promise<void> {
    if (this.free > 0) {
      this.free--
      return Promise.resolve()
    }
    return new Promise((resolve) => this.waiting[priority].push(resolve))
  }
  release(): void {
    for (const p of priorities) {
      const next = this.waiting[p].shift()
      if (next) return next()
    }
    this.free++
  }
}

/**
 * A job's time limit: the run's promise loses to it once the time is up, and a handler that asked for the
 * abort signal sees it abort. The AbortController exists only if the handler asked.
 */
class Deadline {
  private abort: AbortController | undefined
  private expired: Error | undefined
  private fail: ((err: Error) => void) | undefined
  private readonly timer: NodeJS.Timeout
  constructor(ms: number) {
    this.timer = setTimeout(() => {
      this.expired = new Error(`timed out after ${ms} ms`)
      this.abort?.abort(this.expired)
      this.fail?.(this.expired)
    }, ms)
  }
  signal(): AbortSignal {
    this.abort ??= new AbortController()
    if (this.expired && !this.abort.signal.aborted) this.abort.abort(this.expired)
    return this.abort.signal
  }
  race<T>(run: Promise<T>): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.fail = reject
      if (this.expired) reject(this.expired)
      run.then(resolve, reject)
    })
  }
  clear(): void {
    clearTimeout(this.timer)
  }
}

/**
 * Group commit for job state: changes collected over a few milliseconds go to Postgres in one statement.
 * Flushes run one after another, so a job's start is never written after its end. A flush whose answer is
 * lost fails when the pool's silence limit (DB_SILENCE_TIMEOUT_MS) closes its connection, and the next goes.
 */
function batcher<T, R>(flush: (items: T[]) => Promise<R[]>, windowMs: number) {
  let items: { item: T; resolve: (r: R) => void; reject: (e: unknown) => void }[] = []
  let timer: NodeJS.Timeout | undefined
  let previous: Promise<void> = Promise.resolve()
  const run = () => {
    timer = undefined
    const batch = items
    items = []
    previous = previous.then(() =>
      flush(batch.map((b) => b.item)).then(
        (results) => batch.forEach((b, i) => b.resolve(results[i]!)),
        (err: unknown) => batch.forEach((b) => b.reject(err)),
      ),
    )
  }
  return (item: T) =>
    new Promise<R>((resolve, reject) => {
      items.push({ item, resolve, reject })
      if (items.length >= 500) {
        clearTimeout(timer)
        run()
      } else timer ??= setTimeout(run, windowMs)
    })
}

/**
 * How long job state changes gather before they go to Postgres in one statement. No job waits for its start
 * to be written, so this costs pickup nothing; it only delays acks a little, and it makes a transaction per
 * dozens of jobs rather than per few, which at thousands of jobs a second is most of Postgres's work.
 */
const RECORD_WINDOW_MS = 10

export function durableName(queue: string, priority: JobPriority): string {
  return `w_${queue}_${priority}`
}

/**
 * A worker: durable pull consumers on every queue and priority its job definitions use (shared by all worker
 * processes, so adding a process adds throughput), a bounded number of jobs at once, heartbeats for long
 * jobs, retries with backoff, and dead letters once the attempts run out.
 */
export async function startWorker(o: WorkerOptions): Promise<{ stop(timeoutMs: number): Promise<void>; readonly running: number }> {
  const jsm = await jetstreamManager(o.nc)
  const js = jetstream(o.nc)
  const slots = new Slots(o.concurrency)
  const streams: ConsumerMessages[] = []
  // Counters and a LiveList rather than Sets, which a job a millisecond would churn (core/churn-safe.ts).
  const inFlight = new Tally()
  let stopping = false

  // Only a redelivered job may already be finished (a duplicate past the queue's window, or a worker that
  // died after recording the end); a first delivery runs without asking Postgres first.
  const runnable = batcher<string, boolean>(async (ids) => {
    const ok = await runnableJobs(o.sql, ids)
    return ids.map((id) => ok.has(id))
  }, 2)
  const record = batcher<JobStateChange, { status: string; attempts: number } | undefined>(async (changes) => {
    // A start and an end of the same attempt in one batch become one write.
    const byJob = new Map<string, JobStateChange>()
    for (const c of changes) {
      const earlier = byJob.get(c.id)
      byJob.set(c.id, earlier && earlier.status === 'running' && c.status !== 'running' ? { ...c, started: true } : c)
    }
    const batch = [...byJob.values()]
    const now = await retryOnDeadlock(
      () => recordJobStates(o.sql, batch),
      (err) => o.log.warn({ err, jobs: batch.length }, 'job state write deadlocked; writing it again'),
    )
    return changes.map((c) => now.get(c.id))
  }, RECORD_WINDOW_MS)
  const settling = new Tally()
  // Running jobs tell JetStream they are alive, so they are not given to another worker while they run: one
  // timer for all of them rather than one per job.
  const alive = new LiveList<JsMsg>()
  const heartbeat = setInterval(() => {
    alive.forEach((m) => m.working())
  }, Math.max(500, Math.floor(o.ackWaitMs / 3)))
  heartbeat.unref()
  /**
   * What a handler sees of its run. The abort signal and the child logger are made only when the handler
   * asks for them: most jobs use neither, and at thousands of jobs a second each costs.
   */
  const context = (job: JobMessage, attempt: number, deadline: Deadline): JobContext => {
    let log: Logger | undefined
    return {
      id: job.id,
      attempt,
      orgId: job.orgId,
      requestId: job.requestId,
      get signal() {
        return deadline.signal()
      },
      get log() {
        return (log ??= o.log.child({ jobId: job.id, job: job.name }))
      },
    }
  }

  const queues = [...new Set(o.queue.definitions.map((d) => d.queue))]
  for (const queue of queues) {
    for (const priority of priorities) {
      const name = durableName(queue, priority)
      const config = {
        durable_name: name,
        filter_subject: `${o.names.jobSubject(queue)}.${priority}`,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        ack_wait: o.ackWaitMs * 1_000_000,
        max_deliver: -1,
        max_ack_pending: 20_000,
      }
      // Declared by every worker at start; an existing consumer is brought up to date.
      await jsm.consumers.add(o.names.jobsStream, config).catch(async () => jsm.consumers.update(o.names.jobsStream, name, config))
      const consumer = await js.consumers.get(o.names.jobsStream, name)
      const messages = await consumer.consume({ max_messages: Math.max(8, o.concurrency) })
      streams.push(messages)
      void (async () => {
        for await (const m of messages) {
          const job = safeMessage(m)
          o.metrics.pickup.observe(Math.max(0, Date.now() - (job?.enqueuedAt ?? Date.now())) / 1000)
          // Delivered but waiting for a slot still counts as taken: the heartbeat keeps it from being handed to
          // another worker (and run twice) while the slots are busy with long jobs.
          const entry: LiveEntry<JsMsg> = alive.add(m)
          await slots.acquire(priority)
          if (stopping) {
            // Not started: JetStream hands it to another worker after the ack wait; nak makes that immediate.
            alive.remove(entry)
            m.nak()
            slots.release()
            continue
          }
          inFlight.enter()
          void run(m, job)
            .finally(() => {
              alive.remove(entry)
              slots.release()
              inFlight.leave()
            })
            .catch((err: unknown) => o.log.error({ err, jobId: job?.id }, 'job run failed outside its handler; it will be delivered again'))
        }
      })().catch((err: unknown) => o.log.error({ err, queue, priority }, 'job consumer stopped'))
    }
  }

  /** Runs one delivery; resolves when the handler is done (the slot is free), while its outcome is recorded and acknowledged after. */
  async function run(m: JsMsg, job: JobMessage | undefined): Promise<void> {
    const def = job && o.queue.definition(job.name)
    if (!job || !def) {
      o.log.error({ subject: m.subject, job: job?.name }, 'a job nobody can run: sent to dead letters')
      await deadLetter(m, job, 'unknown job or undecodable message')
      return
    }
    const attempt = m.info.deliveryCount
    if (attempt > 1) {
      const ok = await runnable(job.id).catch((err: unknown) => {
        o.log.warn({ err, jobId: job.id }, 'job state unknown (database); it will be delivered again')
        m.nak(1_000)
        return null
      })
      if (ok === null) return
      if (!ok) {
        // Succeeded or dead already: acknowledged without running.
        m.ack()
        return
      }
    }
    // The start is recorded in the background (batched): the job does not wait for it.
    record({ id: job.id, status: 'running', attempt, started: true }).catch((err: unknown) => o.log.warn({ err, jobId: job.id }, 'job start not recorded'))
    o.metrics.running.set(job.queue, (o.metrics.running.get(job.queue) ?? 0) + 1)
    if (job.orgId) o.onChange?.({ id: job.id, orgId: job.orgId, name: job.name, status: 'running', attempts: attempt })
    const deadline = new Deadline(def.timeoutMs ?? 60_000)
    const began = performance.now()
    let outcome: JobStateChange
    try {
      const result = await deadline.race(def.run(job.payload, context(job, attempt, deadline)))
      outcome = { id: job.id, status: 'succeeded', attempt, started: false, result: result ?? null }
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      // Whether this was the last attempt is the record's to say (conclude); only a permanent error is dead here.
      const dead = err instanceof PermanentJobError
      outcome = dead
        ? { id: job.id, status: 'dead', attempt, started: false, error: message }
        : { id: job.id, status: 'failed', attempt, started: false, error: message, nextAttemptAt: new Date(Date.now() + backoffDelay(def, attempt)) }
      o.log.warn({ jobId: job.id, job: job.name, attempt, err, permanent: dead }, 'job attempt failed')
    } finally {
      deadline.clear()
      o.metrics.running.set(job.queue, o.metrics.running.get(job.queue)! - 1)
    }
    outcome.seconds = (performance.now() - began) / 1000
    // The slot frees now; the outcome is acknowledged only once it is recorded, so a crash in between
    // means the job runs again rather than being lost.
    settling.enter()
    void conclude(m, job, outcome)
      .finally(() => settling.leave())
      .catch((err: unknown) => o.log.error({ err, jobId: job.id }, 'job outcome handling failed after the outcome was recorded or the message answered'))
  }

  async function conclude(m: JsMsg, job: JobMessage, outcome: JobStateChange): Promise<void> {
    let now: { status: string; attempts: number } | undefined
    try {
      now = await record(outcome)
    } catch (err) {
      o.log.error({ err, jobId: job.id }, 'job outcome not recorded; it will be delivered again')
      m.nak(1_000)
      return
    }
    // The record decides: a failure that used the job's last attempt is dead; a record already finished
    // elsewhere (a stale duplicate) just takes the message off the queue.
    const status = now?.status ?? 'succeeded'
    o.metrics.attempts.series(job.queue, job.name, status).observe(outcome.seconds ?? 0)
    if (status === 'succeeded') m.ack()
    else if (status === 'failed') m.nak(backoffDelay(o.queue.definition(job.name)!, now!.attempts))
    else await deadLetter(m, job, outcome.error ?? 'failed')
    if (job.orgId && now) {
      o.onChange?.({ id: job.id, orgId: job.orgId, name: job.name, status, attempts: now.attempts, ...(outcome.error ? { error: outcome.error } : {}) })
    }
  }

  async function deadLetter(m: JsMsg, job: JobMessage | undefined, error: string): Promise<void> {
    const queue = job?.queue ?? 'unknown'
    try {
      await js.publish(o.names.deadJobSubject(queue), JSON.stringify({ job, error, at: new Date().toISOString(), subject: m.subject }), {
        msgID: job ? `${job.id}:${job.generation}:dead` : undefined,
      })
      m.term()
    } catch (err) {
      o.log.error({ err, jobId: job?.id }, 'dead letter not written; the job will be delivered again')
      m.nak(5_000)
    }
  }

  return {
    get running() {
      return inFlight.size
    },
    async stop(timeoutMs) {
      stopping = true
      for (const s of streams) s.stop()
      const deadline = new Promise((r) => setTimeout(r, timeoutMs).unref())
      await Promise.race([inFlight.drained().then(() => settling.drained()), deadline])
      clearInterval(heartbeat)
    },
  }
}

function safeMessage(m: JsMsg): JobMessage | undefined {
  try {
    return m.json<JobMessage>()
  } catch {
    return undefined
  }
}

export type { JobDefinition }
