/**
 * `npm run bench [-- scenario ...]`: runs every benchmark scenario in order (or only those named) and
 * prints a summary table, then one JSON line per scenario. Progress goes to stderr.
 *
 * Exit code: 0 when every scenario ran, whether or not it met its target (the output is a report);
 * 1 when the harness itself failed (wrk missing, a server did not start, ...).
 *
 * Environment: BENCH_DURATION (seconds per measured run, default 5), BENCH_WARMUP (default 2),
 * BENCH_ROUNDS (default 4), BENCH_CONNECTIONS (default 50), BENCH_THREADS (default 1),
 * BENCH_ADMIN_DATABASE_URL, BENCH_NATS_URL, BENCH_REDIS_URL (default: the loopback services),
 * BENCH_NODE_FLAGS (Node flags for every server process the scenarios start, e.g. `--cpu-prof
 * --cpu-prof-dir=/tmp/prof`, which Node refuses in NODE_OPTIONS).
 *
 * To add a scenario: write test/bench/<name>.ts with a default export of type Scenario and list it below.
 */
import { cpus } from 'node:os'
import { machineBusy, readSettings, round, stopAll, type ResultRow, type Scenario, type ScenarioResult } from './harness.js'
import actorAsk from './actor-ask.js'
import httpHealth from './http-health.js'
import identity from './identity.js'
import jobs from './jobs.js'
import orgs from './orgs.js'
import wsFanout from './ws-fanout.js'
import { ensureWrk, killWrk } from './wrk.js'

const scenarios: Scenario[] = [httpHealth, actorAsk, identity, orgs, wsFanout, jobs]

const log = (line: string) => process.stderr.write(`[bench] ${line}\n`)

async function main(): Promise<number> {
  const wanted = process.argv.slice(2).filter((a) => a !== '--')
  const unknown = wanted.filter((name) => !scenarios.some((s) => s.name === name))
  if (unknown.length) throw new Error(`unknown scenario ${unknown.join(', ')}; known: ${scenarios.map((s) => s.name).join(', ')}`)
  const selected = wanted.length ? scenarios.filter((s) => wanted.includes(s.name)) : scenarios
  const settings = readSettings(process.env)
  ensureWrk(log)
  // wrk, the server and the kernel already share the cores: anything else running skews the numbers.
  const busy = await machineBusy(1_000)
  const machine =
    `${cpus().length} CPUs, ${busy === undefined ? 'load unknown' : `${Math.round(busy * 100)}% busy before start`}; ` +
    `wrk -t${settings.threads} -c${settings.connections}, ${settings.warmupSec} s warm-up + ${settings.durationSec} s measured, ` +
    `${settings.rounds} rounds per server, alternating`
  log(`${selected.length} scenario(s); ${machine}`)
  const noisy = busy !== undefined && busy > 0.15
  if (noisy) log('WARNING: other processes are using the CPUs; results will be noisy and low')

  const done: { scenario: Scenario; result: ScenarioResult }[] = []
  const failures: string[] = []
  for (const scenario of selected) {
    if (interrupted) break
    log(`${scenario.name}: ${scenario.description}`)
    try {
      const result = await scenario.run(settings, (line) => log(`${scenario.name}: ${line}`))
      done.push({ scenario, result })
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err)
      failures.push(`${scenario.name}: ${message}`)
      log(`${scenario.name} FAILED: ${message}`)
    }
  }

  process.stdout.write(`\nmachine: ${machine}\n`)
  if (noisy) process.stdout.write('WARNING: the machine was busy before the run; treat these numbers as a lower bound\n')
  if (interrupted) process.stdout.write('INTERRUPTED: the remaining runs were cancelled\n')
  if (done.length) process.stdout.write(`\n${table(done)}\n`)
  process.stdout.write('\n')
  for (const { scenario, result } of done) process.stdout.write(`${scenario.name}: ${result.headline}\n`)
  for (const failure of failures) process.stdout.write(`FAILED ${failure}\n`)
  process.stdout.write('\n')
  const machineBusyPct = busy === undefined ? null : Math.round(busy * 100)
  for (const { result } of done) process.stdout.write(`${JSON.stringify({ ...result.summary, machineBusyPct })}\n`)
  return failures.length ? 1 : 0
}

function table(done: readonly { scenario: Scenario; result: ScenarioResult }[]): string {
  const header = ['scenario', 'run', 'req/s', 'p50 ms', 'p99 ms', 'errors', 'srv CPU µs/req', 'note']
  const lines: string[][] = []
  for (const { scenario, result } of done) {
    result.rows.forEach((r: ResultRow, i) =>
      lines.push([
        i === 0 ? scenario.name : '',
        r.label,
        Math.round(r.requestsPerSec).toLocaleString('en-US'),
        Number.isFinite(r.latencyP50Ms) ? String(round(r.latencyP50Ms)) : '',
        Number.isFinite(r.latencyP99Ms) ? String(round(r.latencyP99Ms)) : '',
        String(r.errors),
        r.serverCpuUsPerReq === undefined ? '' : r.serverCpuUsPerReq.toFixed(1),
        r.note ?? '',
      ]),
    )
  }
  const numeric = new Set([2, 3, 4, 5, 6])
  const widths = header.map((h, c) => Math.max(h.length, ...lines.map((l) => l[c]!.length)))
  const format = (cells: readonly string[]) =>
    cells.map((cell, c) => (numeric.has(c) ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!))).join('  ').trimEnd()
  return [format(header), widths.map((w) => '-'.repeat(w)).join('  '), ...lines.map(format)].join('\n')
}

// On a signal, wrk and the servers are stopped so the running scenario fails at once and its own
// cleanup (database, streams, keys) still runs; a second signal or 30 s later the harness just exits.
let interrupted = false
let interruptedAt = 0
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (interrupted) {
      // Under `npm run bench` one Ctrl-C arrives twice (from the terminal and relayed by the tsx CLI): only a
      // later signal means "exit now, skip the cleanup".
      if (Date.now() - interruptedAt < 1_000) return
      process.exit(130)
    }
    interrupted = true
    interruptedAt = Date.now()
    log(`${signal}: stopping wrk and servers, then cleaning up`)
    killWrk()
    void stopAll()
    setTimeout(() => process.exit(130), 30_000).unref()
  })
}

let code: number
try {
  code = await main()
} catch (err) {
  log(`error: ${err instanceof Error ? err.message : String(err)}`)
  code = 1
}
await stopAll()
process.exit(interrupted ? 130 : code)
