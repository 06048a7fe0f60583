import { createHash } from 'node:crypto'
import { tmpdir } from 'node:os'
import { spawn, spawnSync, type ChildProcess } from 'node:child_process'
import { existsSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import type { ResultRow, ServerProcess } from './harness.js'

export interface WrkOptions {
  url: string
  threads: number
  connections: number
  durationSec: number
  /** wrk's per-request timeout; a request slower than this counts as a timeout error. */
  timeoutSec?: number
  /** Request headers (`-H`), e.g. an Authorization header. */
  headers?: Record<string, string>
  /** A POST with this JSON body instead of a GET (through a generated wrk Lua script). */
  postJson?: string
  /** Path of a wrk Lua script of the caller's own (`-s`); replaces `postJson`. */
  script?: string
}

export interface WrkResult {
  requestsPerSec: number
  latencyP50Ms: number
  latencyP99Ms: number
  /** Socket errors (connect, read, write, timeout) plus non-2xx/3xx responses. */
  errors: number
  requests: number
  /** wrk's own output, for diagnostics. */
  raw: string
}

const root = new URL('../..', import.meta.url).pathname
const running = new Set<ChildProcess>()

/** Kills every wrk still running (on SIGINT the harness stops at once instead of after the run). */
export function killWrk(): void {
  for (const child of running) child.kill('SIGKILL')
}

/** Runs wrk once (with `--latency` so percentiles are printed) and parses what it printed. */
export function runWrk(options: WrkOptions): Promise<WrkResult> {
  const args = [
    `-t${options.threads}`,
    `-c${options.connections}`,
    `-d${options.durationSec}s`,
    `--timeout`,
    `${options.timeoutSec ?? 5}s`,
    '--latency',
    ...Object.entries(options.headers ?? {}).flatMap(([name, value]) => ['-H', `${name}: ${value}`]),
    ...(options.script !== undefined ? ['-s', options.script] : options.postJson === undefined ? [] : ['-s', postScript(options.postJson)]),
    options.url,
  ]
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    running.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()))
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
    // A hung wrk must not hang the harness: it gets its duration plus a generous margin.
    const killer = setTimeout(() => child.kill('SIGKILL'), (options.durationSec + 30) * 1000)
    child.once('error', (err) => {
      clearTimeout(killer)
      running.delete(child)
      reject(new Error(`cannot run wrk: ${err.message}`, { cause: err }))
    })
    child.once('close', (code, signal) => {
      clearTimeout(killer)
      running.delete(child)
      const output = `${stdout}${stderr}`.trim()
      if (code !== 0) return reject(new Error(`wrk ${args.join(' ')} failed (${signal ?? `exit ${code}`}): ${output}`))
      try {
        resolve(parseWrkOutput(stdout))
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)))
      }
    })
  })
}

export interface MeasuredRun extends WrkResult {
  /** CPU time the server process used per request answered (user + system), when measurable. */
  cpuUsPerReq: number | undefined
}

/** A warm-up run of `warmupSec` (none when 0), then the measured run with the server's CPU time read around it. */
export async function runWrkMeasured(server: Pick<ServerProcess, 'cpuSeconds'>, options: WrkOptions, warmupSec: number): Promise<MeasuredRun> {
  if (warmupSec > 0) await runWrk({ ...options, durationSec: warmupSec })
  const before = server.cpuSeconds()
  const result = await runWrk(options)
  const after = server.cpuSeconds()
  const cpuUsPerReq = before !== undefined && after !== undefined && result.requests > 0 ? ((after - before) * 1e6) / result.requests : undefined
  return { ...result, cpuUsPerReq }
}

/** A summary table line for one wrk run. */
export function wrkRow(label: string, r: WrkResult & { cpuUsPerReq?: number | undefined }, note?: string): ResultRow {
  return {
    label,
    requestsPerSec: r.requestsPerSec,
    latencyP50Ms: r.latencyP50Ms,
    latencyP99Ms: r.latencyP99Ms,
    errors: r.errors,
    ...(r.cpuUsPerReq === undefined ? {} : { serverCpuUsPerReq: r.cpuUsPerReq }),
    ...(note ? { note } : {}),
  }
}

/** Parses the text `wrk --latency` prints; throws when the lines it needs are missing. */
export function parseWrkOutput(text: string): WrkResult {
  const rps = /^Requests\/sec:\s+([\d.]+)/m.exec(text)
  const total = /^\s*(\d+) requests in /m.exec(text)
  const p50 = /^\s*50%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text)
  const p99 = /^\s*99%\s+([\d.]+)(us|ms|s|m)\s*$/m.exec(text)
  if (!rps?.[1] || !total?.[1] || !p50 || !p99) throw new Error(`cannot parse wrk output (was --latency given?):\n${text}`)
  let errors = 0
  const socket = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(text)
  if (socket) errors += socket.slice(1).reduce((sum, n) => sum + Number(n), 0)
  const non2xx = /Non-2xx or 3xx responses: (\d+)/.exec(text)
  if (non2xx?.[1]) errors += Number(non2xx[1])
  return {
    requestsPerSec: Number(rps[1]),
    latencyP50Ms: toMs(p50),
    latencyP99Ms: toMs(p99),
    errors,
    requests: Number(total[1]),
    raw: text,
  }
}

function toMs(match: RegExpExecArray): number {
  const value = Number(match[1])
  switch (match[2]) {
    case 'us':
      return value / 1000
    case 'ms':
      return value
    case 's':
      return value * 1000
    case 'm':
      return value * 60_000
    default:
      throw new Error(`unknown wrk time unit in "${match[0]}"`)
  }
}

function onPath(command: string): boolean {
  return (process.env.PATH ?? '').split(':').some((dir) => dir !== '' && existsSync(join(dir, command)))
}

/**
 * Makes sure `wrk` can be run: installs it with `deploy/services.sh --bench` when that script exists,
 * otherwise with apt-get; throws a message saying what to do when neither works.
 */
export function ensureWrk(log: (line: string) => void): void {
  if (onPath('wrk')) return
  const script = join(root, 'deploy/services.sh')
  const attempts: string[] = []
  const run = (what: string, command: string, args: string[]) => {
    log(`wrk is not installed; running ${what}`)
    const result = spawnSync(command, args, { cwd: root, stdio: ['ignore', 'inherit', 'inherit'] })
    if (result.error) attempts.push(`${what}: ${result.error.message}`)
    else if (result.status !== 0) attempts.push(`${what}: exit ${result.status ?? result.signal}`)
  }
  if (existsSync(script)) {
    run('bash deploy/services.sh --bench', 'bash', [script, '--bench'])
  } else {
    run('apt-get update', 'apt-get', ['update'])
    run('apt-get install -y wrk', 'apt-get', ['install', '-y', 'wrk'])
  }
  if (onPath('wrk')) return
  throw new Error(
    `the benchmarks need wrk (https://github.com/wg/wrk) and it could not be installed` +
      (attempts.length ? ` (${attempts.join('; ')})` : '') +
      `: install it (Debian/Ubuntu: apt-get install wrk; macOS: brew install wrk) and run again`,
  )
}

/** A wrk Lua script that POSTs a JSON body; written once per distinct body into the temp directory. */
function postScript(body: string): string {
  const file = join(tmpdir(), `wrk-post-${createHash('sha256').update(body).digest('hex').slice(0, 16)}.lua`)
  const lua = `wrk.method = "POST"\nwrk.body = ${JSON.stringify(body)}\nwrk.headers["Content-Type"] = "application/json"\n`
  writeFileSync(file, lua)
  return file
}
