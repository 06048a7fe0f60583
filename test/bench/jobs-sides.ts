/**
 * The two systems of the `jobs` benchmark behind one shape: how each tells that jobs are done, where ours
 * spends a pickup, and the CPU each side's processes and services use.
 */
import { readdirSync, readFileSync } from 'node:fs'
import { jetstreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import type postgres from 'postgres'
import { control, WorkerStats } from './jobs-control.js'
import { processCpuSeconds, sleep, type ServerProcess } from './harness.js'

export type Side = 'ours' | 'bullmq'

export interface Completion {
  /** Resolves once `total` jobs (all enqueued so far) are done: when the last finished, and how many failed. */
  waitFor(total: number, timeoutMs: number): Promise<{ lastDoneAt: number; failed: number }>
}

export interface Pair {
  worker: ServerProcess
  enqueuer: ServerProcess
  completion: Completion
  /** Where the pickup time of the probes enqueued since `since` (epoch ms) went, where the records tell. */
  breakdown?(since: number): Promise<string>
}

/**
 * Ours is done when the work-queue stream is empty (a message is acked only after its finish write) and Postgres
 * has every `system.noop` record succeeded or dead; the end is the last `finished_at`, so the polling interval
 * does not add to the time measured. The stream is polled first because it is cheap: counting 50,000 rows a
 * few times a second would take a share of the Postgres being measured.
 */
export function oursCompletion(sql: postgres.Sql, nc: NatsConnection, stream: string): Completion {
  return {
    async waitFor(total, timeoutMs) {
      const jsm = await jetstreamManager(nc)
      const deadline = Date.now() + timeoutMs
      let left = Number.NaN
      while (Date.now() < deadline) {
        left = (await jsm.streams.info(stream)).state.messages
        if (left === 0) break
        await sleep(20)
      }
      for (;;) {
        const [row] = await sql<{ ok: number; bad: number; last: Date | null }[]>`
          select count(*) filter (where status = 'succeeded')::int as ok, count(*) filter (where status = 'dead')::int as bad,
                 max(finished_at) as last
          from jobs where name = 'system.noop'`
        if (row && row.ok + row.bad >= total && row.last) return { lastDoneAt: row.last.getTime(), failed: row.bad }
        if (Date.now() > deadline) throw new Error(`ours: ${row?.ok ?? 0} of ${total} jobs succeeded, ${left} messages left in the queue after ${timeoutMs} ms`)
        await sleep(50)
      }
    },
  }
}

/**
 * The probes' records hold Postgres timestamps of each step (statement start times, same clock as the payload's
 * `t`): enqueue call → insert (`created_at`: the enqueuer's event loop and pool wait), insert → start write
 * (`started_at`: insert commit, JetStream publish, delivery, a free slot, the start batch window), and, for
 * reference, insert → `published_at` (commit, publish ack, the published mark; only jobs still waiting half a
 * second after their publish are marked).
 */
export async function oursBreakdown(sql: postgres.Sql, since: number): Promise<string> {
  const [row] = await sql<{ toInsert: number[]; insertToStart: number[]; insertToPublished: number[] | null; toStart: number[] }[]>`
    with p as (
      select extract(epoch from created_at) * 1000 - (payload->>'t')::float8 as to_insert,
             extract(epoch from started_at - created_at) * 1000 as insert_to_start,
             extract(epoch from published_at - created_at) * 1000 as insert_to_published,
             extract(epoch from started_at) * 1000 - (payload->>'t')::float8 as to_start
      from jobs where name = 'bench.probe' and not payload ? 'warm' and (payload->>'t')::float8 >= ${since})
    select percentile_cont(array[0.5, 0.99]) within group (order by to_insert) as "toInsert",
           percentile_cont(array[0.5, 0.99]) within group (order by insert_to_start) as "insertToStart",
           percentile_cont(array[0.5, 0.99]) within group (order by insert_to_published) as "insertToPublished",
           percentile_cont(array[0.5, 0.99]) within group (order by to_start) as "toStart"
    from p`
  if (!row?.toStart) return ''
  // Jobs that start within half a second are never marked published (their status says as much): no figure.
  const pair = (v: number[] | null) => (v ? `${v[0]!.toFixed(1)}/${v[1]!.toFixed(1)}` : 'n/a')
  return (
    `p50/p99 ms: call → insert ${pair(row.toInsert)}, insert → start write ${pair(row.insertToStart)} ` +
    `(insert → published mark ${pair(row.insertToPublished)}), call → start write ${pair(row.toStart)}`
  )
}

/** BullMQ is done when its worker has seen `total` `completed` events; the end is the last one's time. */
export function bullCompletion(worker: ServerProcess): Completion {
  return {
    async waitFor(total, timeoutMs) {
      const deadline = Date.now() + timeoutMs
      for (;;) {
        const stats = await control(worker.url, 'stats', {}, WorkerStats)
        if ((stats.completed ?? 0) >= total) return { lastDoneAt: stats.lastCompletedAt ?? 0, failed: 0 }
        if (Date.now() > deadline) throw new Error(`bullmq: ${stats.completed ?? 0} of ${total} jobs completed after ${timeoutMs} ms`)
        await sleep(20)
      }
    },
  }
}

// ---------------------------------------------------------------------------------------------------------
// CPU: the two Node processes of a side, and the services it leans on: Postgres (the backends of the isolated
// database and the shared WAL writer, checkpointer and background writer, not other databases' backends) and
// NATS, or Redis. NATS and Redis are whole servers: anything else using them at the time counts too.

function serviceCpuSeconds(side: Side, database: string): number {
  const counted = (pid: string): boolean => {
    const comm = readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
    if (side === 'bullmq') return comm === 'redis-server'
    if (comm === 'nats-server') return true
    if (comm !== 'postgres') return false
    // A backend's title names its database: "postgres: 15/main: <user> <database> <client> <state>".
    const title = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ')
    return title.includes(` ${database} `) || /: (walwriter|checkpointer|background writer)/.test(title)
  }
  let total = 0
  for (const pid of readdirSync('/proc')) {
    if (!/^\d+$/.test(pid)) continue
    try {
      if (counted(pid)) total += processCpuSeconds(Number(pid)) ?? 0
    } catch {
      // The process ended meanwhile.
    }
  }
  return total
}

export function cpuMeter(side: Side, pair: Pair, database: string) {
  const read = () => ({ node: (pair.worker.cpuSeconds() ?? 0) + (pair.enqueuer.cpuSeconds() ?? 0), service: serviceCpuSeconds(side, database) })
  const before = read()
  return (jobs: number) => {
    const after = read()
    return { nodeUsPerJob: ((after.node - before.node) * 1e6) / jobs, serviceUsPerJob: ((after.service - before.service) * 1e6) / jobs }
  }
}
