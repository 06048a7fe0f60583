/**
 * What the `jobs` benchmark's child processes share, ours (test/bench/jobs-node.ts) and BullMQ's
 * (test/bench/peers/bullmq-node.ts): a small HTTP control server the scenario drives them through, and the two
 * ways of enqueueing, written once so both systems are fed exactly alike.
 *
 * Control calls are `POST /<name>` with a JSON body and a JSON answer; a process prints
 * `{"msg":"bench control","controlPort":<n>}` on stdout once it is ready to be driven.
 */
import { createServer } from 'node:http'
import { monitorEventLoopDelay, performance, PerformanceObserver } from 'node:perf_hooks'
import { z } from 'zod'
import { Tally } from '../../core/churn-safe.js'

/** Wall-clock milliseconds with sub-millisecond resolution, comparable between processes of one machine. */
export const preciseNow = (): number => performance.timeOrigin + performance.now()

export type ControlHandler = (body: unknown) => Promise<unknown>

/** Serves `POST /<name>` for each handler on 127.0.0.1 and announces the port on stdout. */
export async function serveControl(handlers: Record<string, ControlHandler>): Promise<{ port: number; close(): Promise<void> }> {
  const server = createServer((req, res) => {
    const chunks: Buffer[] = []
    req.on('data', (c: Buffer) => chunks.push(c))
    req.on('end', () => {
      const reply = (status: number, value: unknown) => {
        res.writeHead(status, { 'content-type': 'application/json' })
        res.end(JSON.stringify(value))
      }
      const handler = req.method === 'POST' ? handlers[(req.url ?? '').slice(1)] : undefined
      if (!handler) return reply(404, { error: `no control ${req.method} ${req.url}` })
      let body: unknown
      try {
        body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : {}
      } catch {
        return reply(400, { error: 'malformed JSON' })
      }
      handler(body).then(
        (value) => reply(200, value ?? {}),
        (err: unknown) => reply(500, { error: err instanceof Error ? err.message : String(err) }),
      )
    })
  })
  // Runs can be long (50,000 jobs on a slow machine): no request timeout on the control channel.
  server.requestTimeout = 0
  server.headersTimeout = 0
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const address = server.address()
  const port = typeof address === 'object' && address ? address.port : 0
  process.stdout.write(`${JSON.stringify({ msg: 'bench control', controlPort: port })}\n`)
  return { port, close: () => new Promise((resolve) => server.close(() => resolve())) }
}

/** The `portFrom` of harness.startServer for these processes. */
export function controlPortLine(line: string): number | undefined {
  if (!line.startsWith('{"msg":"bench control"')) return undefined
  const parsed = z.object({ controlPort: z.number().int() }).safeParse(JSON.parse(line))
  return parsed.success ? parsed.data.controlPort : undefined
}

/** One control call from the scenario; the answer is checked against `schema`. */
export async function control<T>(url: string, name: string, body: unknown, schema: z.ZodType<T>, timeoutMs = 600_000): Promise<T> {
  const res = await fetch(`${url}/${name}`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(timeoutMs),
  })
  const value: unknown = await res.json()
  if (res.status !== 200) throw new Error(`${url}/${name} answered ${res.status} ${JSON.stringify(value)}`)
  return schema.parse(value)
}

// ---------------------------------------------------------------------------------------------------------
// Control calls and their answers

export const BulkRequest = z.object({ count: z.number().int().min(1), batch: z.number().int().min(1) })
export type BulkRequest = z.infer<typeof BulkRequest>
export const BulkResult = z.object({ startedAt: z.number(), enqueuedAt: z.number(), count: z.number().int() })
export type BulkResult = z.infer<typeof BulkResult>

/** Garbage collections of a process over a phase: how many, their pauses added up and the longest (ms). */
const gcFields = { gcCount: z.number().int(), gcTotalMs: z.number(), gcMaxMs: z.number() }

export const PacedRequest = z.object({ rate: z.number().positive(), warmupMs: z.number().int().min(0), durationMs: z.number().int().min(1) })
export type PacedRequest = z.infer<typeof PacedRequest>
export const PacedResult = z.object({
  /** Measured jobs sent (warm-up ones not counted). */
  sent: z.number().int(),
  failed: z.number().int(),
  /** How far behind its schedule the enqueuer fell at worst, in ms (a high value: the enqueuer could not keep the rate). */
  maxBehindMs: z.number(),
  /** Median and p99 time the enqueue call took to return, in ms. */
  callP50Ms: z.number(),
  callP99Ms: z.number(),
  /** Share of the measured phase the enqueuer's event loop was busy (near 1: the enqueuer itself was the limit). */
  elu: z.number(),
  /** How late the enqueuer's event loop ran what was due (p99 and worst, ms): stalls that hold every job up at once. */
  loopDelayP99Ms: z.number(),
  loopDelayMaxMs: z.number(),
  ...gcFields,
})
export type PacedResult = z.infer<typeof PacedResult>

export const WorkerStats = z.object({
  /** Probe jobs whose handler ran since the process started (measured ones only). */
  probes: z.number().int(),
  /** Completions seen by the worker itself, where it can see them (BullMQ's `completed` event). */
  completed: z.number().int().optional(),
  lastCompletedAt: z.number().optional(),
})
export type WorkerStats = z.infer<typeof WorkerStats>

/** The samples since the previous `pickup` call, and the share of that time the worker's event loop was busy. */
export const PickupSamples = z.object({ samples: z.array(z.number()), elu: z.number(), loopDelayP99Ms: z.number(), loopDelayMaxMs: z.number(), ...gcFields })

/**
 * Event-loop delay (p99, worst) and garbage-collection pauses since the last reading: the stalls that hold up
 * every job in flight at once (a collection, or a process waiting for a core, which only the delay shows).
 */
function loopDelay() {
  const h = monitorEventLoopDelay({ resolution: 1 })
  h.enable()
  let gc = { gcCount: 0, gcTotalMs: 0, gcMaxMs: 0 }
  const observer = new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gc = { gcCount: gc.gcCount + 1, gcTotalMs: gc.gcTotalMs + entry.duration, gcMaxMs: Math.max(gc.gcMaxMs, entry.duration) }
  })
  observer.observe({ entryTypes: ['gc'] })
  /** The reading so far; then starts over, or stops when `last`. */
  return (last = false) => {
    const reading = { loopDelayP99Ms: h.percentile(99) / 1e6, loopDelayMaxMs: h.max / 1e6, ...gc }
    gc = { gcCount: 0, gcTotalMs: 0, gcMaxMs: 0 }
    if (last) {
      h.disable()
      observer.disconnect()
    } else h.reset()
    return reading
  }
}

/** The worker's side of `pickup`: hands over the samples so far and forgets them. */
export function pickupRecorder() {
  const samples: number[] = []
  let since = performance.eventLoopUtilization()
  const delay = loopDelay()
  let measured = 0
  return {
    record(ms: number) {
      samples.push(ms)
      measured++
    },
    get measured() {
      return measured
    },
    take(): z.infer<typeof PickupSamples> {
      const elu = performance.eventLoopUtilization(since).utilization
      since = performance.eventLoopUtilization()
      return { samples: samples.splice(0), elu, ...delay() }
    },
  }
}

/** The payload of a latency probe: when the enqueuer called enqueue, and whether it was a warm-up job. */
export const ProbePayload = z.object({ t: z.number(), warm: z.boolean().optional() }).strict()
export type ProbePayload = z.infer<typeof ProbePayload>

// ---------------------------------------------------------------------------------------------------------
// Enqueueing, the same for both systems

/** `count` jobs in batches of `batch`, one batch call after another (each a single bulk call of the system). */
export async function enqueueBulk(r: BulkRequest, addBatch: (size: number) => Promise<void>): Promise<BulkResult> {
  const startedAt = Date.now()
  for (let done = 0; done < r.count; ) {
    const size = Math.min(r.batch, r.count - done)
    await addBatch(size)
    done += size
  }
  return { startedAt, enqueuedAt: Date.now(), count: r.count }
}

/**
 * Single jobs at a fixed rate: a 1 ms timer tick sends every job whose slot (start + i / rate) has come, each
 * stamped with the time its enqueue call began; calls are not awaited one by one, so a slow call does not
 * hold back the schedule (as requests arriving at a server would not wait for each other).
 */
export async function enqueuePaced(r: PacedRequest, addOne: (payload: ProbePayload) => Promise<void>): Promise<PacedResult> {
  const calls: number[] = []
  // A count, not a Set of the calls: a Set churned like this keeps finished calls alive through scavenges in
  // the process under test (core/churn-safe.ts).
  const pending = new Tally()
  let failed = 0
  let lastError: unknown
  const phase = async (ms: number, warm: boolean) => {
    const total = Math.floor((ms * r.rate) / 1000)
    const start = preciseNow()
    let sent = 0
    let maxBehind = 0
    while (sent < total) {
      const now = preciseNow()
      const due = Math.min(total, Math.floor(((now - start) * r.rate) / 1000) + 1)
      if (due > sent) maxBehind = Math.max(maxBehind, now - (start + (sent * 1000) / r.rate))
      for (; sent < due; sent++) {
        const t = preciseNow()
        const call = addOne(warm ? { t, warm } : { t }).then(
          () => {
            if (!warm) calls.push(preciseNow() - t)
          },
          (err: unknown) => {
            failed++
            lastError = err
          },
        )
        pending.enter()
        void call.finally(() => pending.leave())
      }
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
    return { sent, maxBehind }
  }
  await phase(r.warmupMs, true)
  const delay = loopDelay()
  const elu = performance.eventLoopUtilization()
  const measured = await phase(r.durationMs, false)
  const busy = performance.eventLoopUtilization(elu).utilization
  const delays = delay(true)
  await pending.drained()
  if (failed && failed === measured.sent) throw new Error(`every enqueue failed: ${lastError instanceof Error ? lastError.message : String(lastError)}`)
  return { sent: measured.sent, failed, maxBehindMs: measured.maxBehind, callP50Ms: percentile(calls, 0.5), callP99Ms: percentile(calls, 0.99), elu: busy, ...delays }
}

/** Nearest-rank percentile (q in 0..1); NaN for no values. */
export function percentile(values: readonly number[], q: number): number {
  if (values.length === 0) return Number.NaN
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}
