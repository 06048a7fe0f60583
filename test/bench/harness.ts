import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { createInterface } from 'node:readline'
import { connect } from '@nats-io/transport-node'
import { Redis } from 'ioredis'
import WebSocket from 'ws'
import postgres from 'postgres'
import { namesFor } from '../../core/names.js'
import { dropStreams } from '../../storage/nats.js'

export const root = new URL('../..', import.meta.url).pathname

// ---------------------------------------------------------------------------------------------------------
// Scenarios

export interface BenchSettings {
  /** Seconds per measured wrk run (BENCH_DURATION, default 5). */
  durationSec: number
  /** Seconds of warm-up before each measured run (BENCH_WARMUP, default 2). */
  warmupSec: number
  /** Measured runs per server (BENCH_ROUNDS, default 2), taken alternately. */
  rounds: number
  /** wrk connections (BENCH_CONNECTIONS, default 50) and threads (BENCH_THREADS, default 1). */
  connections: number
  threads: number
}

/** One line of the summary table. */
export interface ResultRow {
  label: string
  requestsPerSec: number
  latencyP50Ms: number
  latencyP99Ms: number
  errors: number
  /** CPU time the server process used per request answered (user + system), when measurable. */
  serverCpuUsPerReq?: number
  /** Free text: "best of 2", "warm-up", ... */
  note?: string
}

/** The machine-readable line a scenario ends with; `pass` says whether its target was met. */
export interface Summary {
  scenario: string
  target?: number
  pass?: boolean
  [key: string]: unknown
}

export interface ScenarioResult {
  rows: ResultRow[]
  /** One sentence with the number that matters, e.g. "ours/raw = 0.91 (target >= 0.85): pass". */
  headline: string
  summary: Summary
}

export interface Scenario {
  name: string
  description: string
  run(settings: BenchSettings, log: (line: string) => void): Promise<ScenarioResult>
}

export function readSettings(env: Record<string, string | undefined>): BenchSettings {
  return {
    durationSec: envInt(env, 'BENCH_DURATION', 5, 1, 3600),
    warmupSec: envInt(env, 'BENCH_WARMUP', 2, 0, 600),
    rounds: envInt(env, 'BENCH_ROUNDS', 4, 1, 100),
    connections: envInt(env, 'BENCH_CONNECTIONS', 50, 1, 10_000),
    threads: envInt(env, 'BENCH_THREADS', 1, 1, 64),
  }
}

/** An integer setting from `env[name]`, `fallback` when unset; throws when it is not an integer in [min, max]. */
export function envInt(env: Record<string, string | undefined>, name: string, fallback: number, min: number, max: number): number {
  const text = env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer from ${min} to ${max}, not "${text}"`)
  return value
}

// ---------------------------------------------------------------------------------------------------------
// Child processes

const live = new Set<ServerProcess>()

export interface ServerProcess {
  name: string
  child: ChildProcess
  port: number
  url: string
  /** CPU seconds (user + system) the process has used so far; undefined where /proc is not available. */
  cpuSeconds(): number | undefined
  /** SIGTERM, then SIGKILL when it has not exited after `graceMs`; resolves once it is gone. */
  stop(graceMs?: number): Promise<void>
  /** The V8 inspector's WebSocket URL, when started with `inspect` (lets a memory measurement force a GC). */
  inspector?: string
}

export interface StartServerOptions {
  name: string
  /** Script path relative to the repository root: a `.js` file runs as `node <script>`, TypeScript as `node --import tsx <script>`. */
  script: string
  args?: string[]
  env?: Record<string, string>
  /**
   * Returns the listening port when a stdout line announces readiness, else undefined. A process without a
   * port (a NATS responder) returns 0 from its ready line.
   */
  portFrom(line: string): number | undefined
  startTimeoutMs?: number
  /** Open the V8 inspector on a loopback port, so `collectGarbage` can reach it. */
  inspect?: boolean
}

/**
 * Starts an entry point as its own Node process (TypeScript through `node --import tsx`, not the tsx CLI,
 * which would add a supervising parent) and resolves once it printed its port.
 */
export function startServer(options: StartServerOptions): Promise<ServerProcess> {
  const loader = options.script.endsWith('.js') ? [] : ['--import', 'tsx']
  const inspect = options.inspect ? ['--inspect=127.0.0.1:0'] : []
  // BENCH_NODE_FLAGS (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof"): flags Node refuses in NODE_OPTIONS.
  const flags = (process.env.BENCH_NODE_FLAGS ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...flags, ...inspect, ...loader, options.script, ...(options.args ?? [])], {
    cwd: root,
    env: { ...process.env, ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  // The last lines of output, shown when the process dies; reading also keeps the pipes from filling.
  const tail: string[] = []
  const remember = (line: string) => {
    tail.push(line)
    if (tail.length > 40) tail.shift()
  }
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  const server: ServerProcess = {
    name: options.name,
    child,
    port: 0,
    url: '',
    cpuSeconds: () => (child.pid === undefined ? undefined : processCpuSeconds(child.pid)),
    async stop(graceMs = 5_000) {
      live.delete(server)
      if (child.exitCode !== null || child.signalCode !== null) return
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), graceMs)
      await exited
      clearTimeout(timer)
    },
  }
  live.add(server)
  createInterface({ input: child.stderr! }).on('line', (line) => {
    const inspector = /Debugger listening on (ws:\/\/\S+)/.exec(line)?.[1]
    if (inspector) server.inspector = inspector
    else remember(line)
  })
  const stdout = createInterface({ input: child.stdout! })

  let started = false
  return new Promise<ServerProcess>((resolve, reject) => {
    const timeoutMs = options.startTimeoutMs ?? 60_000
    const fail = (why: string) => {
      clearTimeout(timer)
      void server.stop(1_000).then(() => reject(new Error(`${options.name} ${why}${tail.length ? `; its last output:\n  ${tail.join('\n  ')}` : ''}`)))
    }
    const timer = setTimeout(() => fail(`did not report a port within ${timeoutMs} ms`), timeoutMs)
    stdout.on('line', (line) => {
      remember(line)
      if (started) return
      const port = options.portFrom(line)
      if (port === undefined) return
      started = true
      clearTimeout(timer)
      server.port = port
      server.url = `http://127.0.0.1:${port}`
      resolve(server)
    })
    child.once('error', (err) => fail(`could not start: ${err.message}`))
    child.once('exit', (code, signal) => {
      if (!started) fail(`exited (${signal ?? `code ${code}`}) before listening`)
    })
  })
}

let clockTicks: number | undefined
/** utime + stime from /proc/<pid>/stat, in seconds. */
export function processCpuSeconds(pid: number): number | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15 of the whole line.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
    clockTicks ??= Number(spawnSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).stdout.trim()) || 100
    return (Number(fields[11]) + Number(fields[12])) / clockTicks
  } catch {
    return undefined
  }
}

/**
 * Share of all CPUs busy (0..1) over `ms`, from /proc/stat; undefined where unavailable. Run before a
 * benchmark it tells whether something else is using the machine, which makes the numbers noisy.
 */
export async function machineBusy(ms: number): Promise<number | undefined> {
  const sample = () => {
    try {
      const cpu = readFileSync('/proc/stat', 'utf8').split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number)
      const idle = (cpu[3] ?? 0) + (cpu[4] ?? 0)
      return { idle, total: cpu.reduce((a, b) => a + b, 0) }
    } catch {
      return undefined
    }
  }
  const before = sample()
  await new Promise((r) => setTimeout(r, ms))
  const after = sample()
  if (!before || !after || after.total === before.total) return undefined
  return 1 - (after.idle - before.idle) / (after.total - before.total)
}

/** Stops every child still running; used on errors and signals. */
export async function stopAll(): Promise<void> {
  await Promise.allSettled([...live].map((s) => s.stop()))
}

/** Port from a line of the form `{"port":1234}` (the raw server's announcement). */
export function portLine(line: string): number | undefined {
  const entry = parseObject(line)
  return entry && typeof entry.port === 'number' ? entry.port : undefined
}

/** Port from main.ts's `{"msg":"node started","port":1234,...}` log line. */
export function nodeStartedLine(line: string): number | undefined {
  const entry = parseObject(line)
  return entry && entry.msg === 'node started' && typeof entry.port === 'number' ? entry.port : undefined
}

function parseObject(line: string): Record<string, unknown> | undefined {
  if (!line.startsWith('{')) return undefined
  try {
    const value: unknown = JSON.parse(line)
    return typeof value === 'object' && value !== null ? (value as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

// ---------------------------------------------------------------------------------------------------------
// An isolated install: its own Postgres database, NATS streams and Redis prefix, all removed afterwards.

export const services = {
  adminDatabaseUrl: process.env.BENCH_ADMIN_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
  natsUrl: process.env.BENCH_NATS_URL ?? 'nats://127.0.0.1:4222',
  redisUrl: process.env.BENCH_REDIS_URL ?? 'redis://127.0.0.1:6379',
}

export interface Isolated {
  namespace: string
  database: string
  /** The environment a main.ts child needs to use this install (merge it over anything else). */
  env: Record<string, string>
  /** Drops the database, the namespace's NATS streams and its Redis keys; every step is tried. */
  drop(): Promise<void>
}

export async function createIsolated(): Promise<Isolated> {
  const id = randomBytes(4).toString('hex')
  const namespace = `bench_${id}`
  const database = `bench_${id}`
  const admin = postgres(services.adminDatabaseUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 })
  try {
    await admin.unsafe(`create database ${database}`)
  } catch (err) {
    await admin.end({ timeout: 1 })
    const reason = err instanceof Error ? err.message : String(err)
    throw new Error(`cannot create database ${database} via ${redact(services.adminDatabaseUrl)}: ${reason}`, { cause: err })
  }
  const url = new URL(services.adminDatabaseUrl)
  url.pathname = `/${database}`
  let dropped: Promise<void> | undefined
  return {
    namespace,
    database,
    env: { NAMESPACE: namespace, DATABASE_URL: url.toString(), NATS_URL: services.natsUrl, REDIS_URL: services.redisUrl },
    drop: () =>
      (dropped ??= (async () => {
        const failures: string[] = []
        const attempt = async (what: string, step: () => Promise<void>) => {
          try {
            await step()
          } catch (err) {
            failures.push(`${what}: ${err instanceof Error ? err.message : String(err)}`)
          }
        }
        await attempt('postgres', async () => {
          try {
            await admin.unsafe(`drop database if exists ${database} with (force)`)
          } finally {
            await admin.end({ timeout: 1 })
          }
        })
        await attempt('nats', async () => {
          const nc = await connect({ servers: services.natsUrl, timeout: 5_000 })
          try {
            await dropStreams(nc, namesFor(namespace))
          } finally {
            await nc.close()
          }
        })
        await attempt('redis', async () => {
          const redis = new Redis(services.redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1, connectTimeout: 5_000 })
          try {
            await redis.connect()
            let cursor = '0'
            do {
              const [next, keys] = await redis.scan(cursor, 'MATCH', `${namesFor(namespace).redisPrefix}*`, 'COUNT', 500)
              if (keys.length > 0) await redis.del(...keys)
              cursor = next
            } while (cursor !== '0')
          } finally {
            redis.disconnect()
          }
        })
        if (failures.length) throw new Error(`cleanup of ${namespace} incomplete: ${failures.join('; ')}`)
      })()),
  }
}

/**
 * Runs `body` on a fresh isolated install, then stops every server it pushed onto `servers` and drops the
 * install (streams only once main.ts is gone, so it cannot recreate them). A cleanup failure is an error of
 * its own, unless the body already failed: then it is only logged, so it does not hide the first error.
 */
export async function withIsolated<T>(log: (line: string) => void, body: (isolated: Isolated, servers: ServerProcess[]) => Promise<T>): Promise<T> {
  let isolated: Isolated | undefined
  const servers: ServerProcess[] = []
  let failed = false
  try {
    isolated = await createIsolated()
    log(`namespace and database ${isolated.namespace}`)
    return await body(isolated, servers)
  } catch (err) {
    failed = true
    throw err
  } finally {
    await Promise.allSettled(servers.map((s) => s.stop()))
    await isolated?.drop().catch((err: unknown) => {
      if (!failed) throw err
      log(`cleanup also failed: ${err instanceof Error ? err.message : String(err)}`)
    })
  }
}

function redact(url: string): string {
  const parsed = new URL(url)
  if (parsed.password) parsed.password = '***'
  return parsed.toString()
}

// ---------------------------------------------------------------------------------------------------------
// Small helpers

export const round = (value: number, digits = 2) => Math.round(value * 10 ** digits) / 10 ** digits

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b)
  const mid = Math.floor(sorted.length / 2)
  if (sorted.length === 0) throw new Error('median of nothing')
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2
}

/** Fails unless `GET url` answers `status` with exactly `body`: never benchmark an error page. */
export async function expectResponse(url: string, status: number, body: string): Promise<void> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) })
  const text = await res.text()
  if (res.status !== status || text !== body) throw new Error(`GET ${url} answered ${res.status} ${text}, expected ${status} ${body}`)
}

let built = false
/** `npm run build`, once per benchmark run: our server is measured as `npm start` runs it, from dist/. */
export function buildOnce(): void {
  if (built) return
  process.stderr.write('[bench] npm run build\n')
  // Its output goes to stderr with the harness's progress; stdout is kept for the results.
  const result = spawnSync('npm', ['run', '--silent', 'build'], { cwd: root, stdio: ['ignore', 2, 2] })
  if (result.error || result.status !== 0) throw new Error(`npm run build failed (${result.error?.message ?? `exit ${result.status ?? result.signal}`})`)
  built = true
}

/**
 * The pair every HTTP scenario compares: the raw uWebSockets.js hello world and our server (dist/main.js,
 * built first), each in its own process, ours on the isolated database and namespace. Both are pushed onto
 * `servers` as they start, so the caller stops whatever did start even when the second one fails.
 */
export async function startRawAndOurs(
  isolated: Isolated,
  servers: ServerProcess[],
  env: Record<string, string> = {},
  { inspect = false }: { inspect?: boolean } = {},
): Promise<{ raw: ServerProcess; ours: ServerProcess }> {
  const raw = await startRaw({ inspect })
  servers.push(raw)
  const ours = await startOurs(isolated, env, { inspect })
  servers.push(ours)
  return { raw, ours }
}

/** The raw uWebSockets.js baseline server (test/bench/raw-uws-server.ts) on any free port. */
export function startRaw({ inspect = false }: { inspect?: boolean } = {}): Promise<ServerProcess> {
  return startServer({ name: 'raw uWS server', script: 'test/bench/raw-uws-server.ts', args: ['0'], portFrom: portLine, inspect })
}

/** Our server, built (`dist/main.js`), in the isolated namespace and database, on any free port. */
export function startOurs(isolated: Isolated, env: Record<string, string> = {}, { inspect = false }: { inspect?: boolean } = {}): Promise<ServerProcess> {
  buildOnce()
  return startServer({
    name: 'dist/main.js',
    script: 'dist/main.js',
    env: { ...isolated.env, HOST: '127.0.0.1', PORT: '0', LOG_LEVEL: 'info', LOG_PRETTY: 'false', SHUTDOWN_TIMEOUT_MS: '2000', ...env },
    portFrom: nodeStartedLine,
    inspect,
  })
}

/**
 * A full garbage collection in a server started with `inspect`, through the V8 inspector protocol, so a
 * memory reading counts live objects rather than whatever garbage the last collection left. A no-op for a
 * server without the inspector.
 */
export async function collectGarbage(server: ServerProcess): Promise<void> {
  if (!server.inspector) return
  const socket = new WebSocket(server.inspector)
  await new Promise<void>((resolve, reject) => {
    socket.once('open', () => resolve())
    socket.once('error', reject)
  })
  try {
    for (let id = 1; id <= 2; id++) {
      const answered = new Promise<void>((resolve) => socket.on('message', (data: Buffer) => (JSON.parse(data.toString()) as { id?: number }).id === id && resolve()))
      socket.send(JSON.stringify({ id, method: 'HeapProfiler.collectGarbage' }))
      await answered
    }
  } finally {
    socket.close()
  }
}
