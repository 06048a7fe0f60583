/**
 * The three measurements of the `ws-fanout` benchmark, each against one server with the pool's sockets:
 * memory per idle socket, deliveries per second at saturation (wrk publishing), and change-to-receipt latency
 * at a fixed rate (open-loop publishing).
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type postgres from 'postgres'
import { collectGarbage, median, round, sleep, type BenchSettings, type ServerProcess } from './harness.js'
import { openSockets, type ClientPool } from './ws-fanout-client-pool.js'
import type { SocketKind } from './ws-fanout-clients.js'
import { ORGS, type Layout, type World } from './ws-fanout-world.js'
import { runWrk, type WrkResult } from './wrk.js'

export interface MemoryResult {
  sockets: number
  beforeBytes: number
  afterBytes: number
  bytesPerConn: number
  /**
   * RSS growth per socket of the second half of the sockets alone, once the first half is open: what one more
   * socket costs a server that already holds many, without the one-time costs the first sockets bring
   * (compiled code, pools, allocator arenas).
   */
  marginalBytesPerConn: number
  /** JS heap in use per socket, where the server reports it (ours, through /metrics). */
  heapPerConn: number | undefined
  heapCommittedPerConn: number | undefined
  openMs: number
}

export interface SaturationResult {
  deliveriesPerSec: number
  changesPerSec: number
  http: WrkResult
  cpuUsPerChange: number | undefined
  expected: number
  received: number
  drainMs: number
  dropped: Record<string, number>
}

export interface LatencyResult {
  changesPerSec: number
  deliveriesPerSec: number
  sent: number
  httpErrors: number
  expected: number
  samples: number
  p50: number
  p99: number
  max: number
  httpP50: number
  httpP99: number
  afterAnswerP50: number
  afterAnswerP99: number
  /** The server's garbage collections over the measured phase, where it reports them (ours, through /metrics). */
  gc: { count: number; pausedMs: number } | undefined
}

function rss(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!kb?.[1]) throw new Error(`no VmRSS for process ${pid}`)
  return Number(kb[1]) * 1024
}

/**
 * RSS after a full garbage collection, once it has stopped moving: readings every half second until four in
 * a row lie within 128 KiB (at most 20 s), and their median. A process that started recently is still
 * handing memory back (V8 shrinks its heap some seconds after the last busy stretch), and a reading taken then
 * makes whatever follows look smaller than it is, even negative.
 */
async function settledRss(server: ServerProcess): Promise<number> {
  const pid = server.child.pid!
  await collectGarbage(server)
  const readings: number[] = []
  const deadline = performance.now() + 20_000
  for (;;) {
    await sleep(500)
    readings.push(rss(pid))
    const last = readings.slice(-4)
    if ((last.length === 4 && Math.max(...last) - Math.min(...last) <= 128 * 1024) || performance.now() > deadline) return median(last)
  }
}

/**
 * RSS before and after opening every socket, and halfway. A warm-up batch of sockets is opened and closed
 * first so the code paths are compiled and the first pools allocated before the baseline is read. Nothing is
 * closed after the baseline, so no server gets to reuse memory it freed.
 */
export async function memory(pool: ClientPool, kind: SocketKind, server: ServerProcess, layout: Layout, tokens: string[], log: (line: string) => void): Promise<MemoryResult> {
  await openSockets(pool, kind, server.url, layout.perProc.map((s) => s.slice(0, 50)), tokens)
  await pool.all({ cmd: 'close' })
  const beforeBytes = await settledRss(server)
  const heapBefore = kind === 'ours' ? await heap(server) : undefined
  const first = await openSockets(pool, kind, server.url, layout.perProc.map((s) => s.slice(0, Math.floor(s.length / 2))), tokens)
  const midBytes = await settledRss(server)
  const second = await openSockets(pool, kind, server.url, layout.perProc.map((s) => s.slice(Math.floor(s.length / 2))), tokens)
  const afterBytes = await settledRss(server)
  const heapAfter = kind === 'ours' ? await heap(server) : undefined
  const opened = first.opened + second.opened
  const bytesPerConn = (afterBytes - beforeBytes) / opened
  const marginalBytesPerConn = (afterBytes - midBytes) / second.opened
  const heapPerConn = heapBefore && heapAfter ? (heapAfter.used - heapBefore.used) / opened : undefined
  const heapCommittedPerConn = heapBefore && heapAfter ? (heapAfter.total - heapBefore.total) / opened : undefined
  log(
    `${kind}: ${opened} sockets open and subscribed in ${((first.ms + second.ms) / 1000).toFixed(1)} s; RSS ${mib(beforeBytes)} → ${mib(midBytes)} (half) → ${mib(afterBytes)} MiB, ` +
      `${Math.round(bytesPerConn)} B per socket; the second half alone ${Math.round(marginalBytesPerConn)} B per socket` +
      (heapPerConn === undefined ? '' : ` (JS heap: ${Math.round(heapPerConn)} B in use after a full GC; ${Math.round(heapCommittedPerConn!)} B committed)`),
  )
  return { sockets: opened, beforeBytes, afterBytes, bytesPerConn, marginalBytesPerConn, heapPerConn, heapCommittedPerConn, openMs: first.ms + second.ms }
}

/** Our /metrics (prom-client's defaults among them); undefined from a server without it (the peer). */
async function metricsText(server: ServerProcess): Promise<string | undefined> {
  try {
    const res = await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5_000) })
    return res.status === 200 ? await res.text() : undefined
  } catch {
    return undefined
  }
}

/** The values of every series of one metric, added up (NaN when it has none). */
function metricSum(text: string, name: string): number {
  const values = [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'gm'))].map((m) => Number(m[1]))
  return values.length ? values.reduce((a, b) => a + b, 0) : NaN
}

/** JS heap in use and committed (nodejs_heap_size_{used,total}_bytes). */
async function heap(server: ServerProcess): Promise<{ used: number; total: number } | undefined> {
  const text = await metricsText(server)
  if (text === undefined) return undefined
  const used = metricSum(text, 'nodejs_heap_size_used_bytes')
  const total = metricSum(text, 'nodejs_heap_size_total_bytes')
  return Number.isFinite(used) && Number.isFinite(total) ? { used, total } : undefined
}

/** Garbage collections so far, every kind (nodejs_gc_duration_seconds): how many, and their pauses added up. */
async function gcSoFar(server: ServerProcess): Promise<{ count: number; pausedMs: number } | undefined> {
  const text = await metricsText(server)
  if (text === undefined) return undefined
  const count = metricSum(text, 'nodejs_gc_duration_seconds_count')
  const seconds = metricSum(text, 'nodejs_gc_duration_seconds_sum')
  return Number.isFinite(count) && Number.isFinite(seconds) ? { count, pausedMs: seconds * 1000 } : undefined
}

export const mib = (bytes: number) => (bytes / 1048576).toFixed(1)

/** wrk POSTing project creations round-robin over the orgs, as fast as the server answers. */
function runPublisherWrk(settings: BenchSettings, server: ServerProcess, world: World, durationSec: number): Promise<WrkResult> {
  const script = join(tmpdir(), `ws-fanout-${process.pid}-${server.port}.lua`)
  const paths = world.orgIds.map((id) => JSON.stringify(`/v1/orgs/${id}/projects`)).join(', ')
  writeFileSync(
    script,
    `local paths = { ${paths} }\nlocal n = 0\n` +
      `wrk.headers["Content-Type"] = "application/json"\nwrk.headers["Authorization"] = "Bearer ${world.publisher}"\n` +
      `request = function()\n  n = n + 1\n  return wrk.format("POST", paths[(n % #paths) + 1], nil, '{"name":"fan-out ' .. n .. '"}')\nend\n`,
  )
  return runWrk({ url: server.url, threads: settings.threads, connections: settings.connections, durationSec, timeoutSec: 10, script })
}

/** Waits until `count()` reaches `expected`, or has not moved for 3 s (60 s at most); returns the last count. */
async function drain(count: () => Promise<number>, expected: number): Promise<number> {
  const deadline = Date.now() + 60_000
  let last = -1
  let movedAt = Date.now()
  for (;;) {
    const n = await count()
    if (n >= expected || Date.now() > deadline) return n
    if (n !== last) {
      last = n
      movedAt = Date.now()
    } else if (Date.now() - movedAt > 3_000) return n
    await sleep(100)
  }
}

/** Projects in the benchmark's orgs: the changes either server committed, whatever wrk saw of them. */
async function committed(sql: postgres.Sql, world: World): Promise<number> {
  const [row] = await sql<{ n: number }[]>`select count(*)::int as n from projects where org_id = any(${world.orgIds}::uuid[])`
  return row!.n
}

export async function saturation(settings: BenchSettings, pool: ClientPool, server: ServerProcess, world: World, sql: postgres.Sql, clients: number, log: (line: string) => void): Promise<SaturationResult> {
  const perOrg = clients / ORGS
  const start = await pool.stats()
  const projectsBefore = await committed(sql, world)
  if (settings.warmupSec > 0) await runPublisherWrk(settings, server, world, settings.warmupSec)
  const cpuBefore = server.cpuSeconds()
  const a = await pool.stats()
  const http = await runPublisherWrk(settings, server, world, settings.durationSec)
  const b = await pool.stats()
  const cpuAfter = server.cpuSeconds()
  const deliveriesPerSec = (b.deliveries - a.deliveries) / ((b.now - a.now) / 1000)
  // Requests still in flight when wrk stopped are answered (and published) all the same; counted from the table.
  await sleep(1_000)
  const expected = ((await committed(sql, world)) - projectsBefore) * perOrg
  const drainStarted = performance.now()
  const received = await drain(async () => (await pool.stats()).deliveries - start.deliveries, expected)
  const drainMs = performance.now() - drainStarted
  const end = await pool.stats()
  const cpuUsPerChange = cpuBefore !== undefined && cpuAfter !== undefined && http.requests > 0 ? ((cpuAfter - cpuBefore) * 1e6) / http.requests : undefined
  log(
    `${server.name} saturation: ${Math.round(deliveriesPerSec)} deliveries/s while wrk made ${Math.round(http.requestsPerSec)} changes/s (HTTP p99 ${http.latencyP99Ms} ms, ${http.errors} errors); ` +
      `${received}/${expected} delivered, last ${Math.round(drainMs)} ms after wrk; dropped sockets ${JSON.stringify(end.dropped)}`,
  )
  return { deliveriesPerSec, changesPerSec: http.requestsPerSec, http, cpuUsPerChange, expected, received, drainMs, dropped: end.dropped }
}

/**
 * Open-loop publisher: change n is due at n / rate seconds whatever the answers do (no coordinated
 * omission). Each request id carries the send time, performance.timeOrigin + performance.now() in this
 * process, which the client processes compare with their own clock at receipt.
 */
async function publishSteady(server: ServerProcess, world: World, rate: number, durationMs: number, prefix: string): Promise<{ sent: number; errors: number; httpMs: number[] }> {
  const inflight = new Set<Promise<void>>()
  /** Per change number, how long the HTTP answer took. */
  const httpMs: number[] = []
  let errors = 0
  let sent = 0
  const fire = (n: number) => {
    const orgId = world.orgIds[n % world.orgIds.length]!
    const sentAt = performance.timeOrigin + performance.now()
    const p = fetch(`${server.url}/v1/orgs/${orgId}/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${world.publisher}`, 'x-request-id': `${prefix}-${sentAt.toFixed(3)}-${n}` },
      body: JSON.stringify({ name: `fan-out ${prefix} ${n}` }),
      signal: AbortSignal.timeout(10_000),
    })
      .then(async (res) => {
        await res.arrayBuffer()
        if (res.status !== 201) errors++
        httpMs[n] = performance.timeOrigin + performance.now() - sentAt
      })
      .catch(() => {
        errors++
      })
      .finally(() => inflight.delete(p))
    inflight.add(p)
  }
  const started = performance.now()
  for (;;) {
    const elapsed = performance.now() - started
    if (elapsed >= durationMs) break
    const due = Math.floor((elapsed * rate) / 1000) + 1
    while (sent < due) fire(sent++)
    await sleep(1)
  }
  await Promise.all([...inflight])
  return { sent, errors, httpMs }
}

export async function latency(settings: BenchSettings, pool: ClientPool, server: ServerProcess, world: World, rate: number, prefix: string, clients: number, log: (line: string) => void): Promise<LatencyResult> {
  const perOrg = clients / ORGS
  if (settings.warmupSec > 0) await publishSteady(server, world, rate, settings.warmupSec * 1000, 'w')
  await pool.all({ cmd: 'record', prefix })
  const durationMs = settings.durationSec * 1000
  const gcBefore = await gcSoFar(server)
  const { sent, errors, httpMs } = await publishSteady(server, world, rate, durationMs, prefix)
  const gcAfter = await gcSoFar(server)
  const expected = (sent - errors) * perOrg
  await drain(async () => (await pool.stats()).matched, expected)
  const replies = await pool.all({ cmd: 'samples' })
  const all: number[] = []
  // Receipt measured from the HTTP answer instead of the request: the part of the latency that is fan-out
  // (negative when the event overtook the answer).
  const afterAnswer: number[] = []
  for (const r of replies) {
    if (!('samples' in r)) continue
    r.samples.forEach((v, i) => {
      all.push(v)
      const answered = httpMs[r.changes[i]!]
      if (answered !== undefined) afterAnswer.push(v - answered)
    })
  }
  all.sort((x, y) => x - y)
  afterAnswer.sort((x, y) => x - y)
  const pct = (sorted: readonly number[], p: number) => (sorted.length ? sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]! : NaN)
  const http = httpMs.filter((v) => v !== undefined).sort((x, y) => x - y)
  const result: LatencyResult = {
    changesPerSec: rate,
    deliveriesPerSec: all.length / (durationMs / 1000),
    sent,
    httpErrors: errors,
    expected,
    samples: all.length,
    p50: pct(all, 50),
    p99: pct(all, 99),
    max: all.at(-1) ?? NaN,
    httpP50: pct(http, 50),
    httpP99: pct(http, 99),
    afterAnswerP50: pct(afterAnswer, 50),
    afterAnswerP99: pct(afterAnswer, 99),
    gc: gcBefore && gcAfter ? { count: gcAfter.count - gcBefore.count, pausedMs: gcAfter.pausedMs - gcBefore.pausedMs } : undefined,
  }
  log(
    `${server.name} at ${rate.toFixed(1)} changes/s: ${sent} sent (${errors} failed), ${all.length}/${expected} received; change→receipt p50 ${round(result.p50)} ms, p99 ${round(result.p99)} ms, max ${round(result.max)} ms; ` +
      `HTTP answer p50 ${round(result.httpP50)} ms, p99 ${round(result.httpP99)} ms; receipt after the HTTP answer p50 ${round(result.afterAnswerP50)} ms, p99 ${round(result.afterAnswerP99)} ms` +
      (result.gc ? `; server GC ${result.gc.count} collections, ${Math.round(result.gc.pausedMs)} ms paused` : ''),
  )
  return result
}
