import {
  expectResponse,
  median,
  round,
  startRawAndOurs,
  withIsolated,
  type BenchSettings,
  type ResultRow,
  type Scenario,
  type ScenarioResult,
  type ServerProcess,
} from './harness.js'
import { runWrkMeasured, wrkRow, type MeasuredRun as Run } from './wrk.js'

const TARGET = 0.85
const BODY = '{"status":"ok"}'

/**
 * GET /health through our whole HTTP layer (routing, request context, security headers, request id,
 * metrics) against a bare uWebSockets.js hello world answering the same body. Both run as their own
 * process and are measured alternately (raw, ours, raw, ours, ...) so drifts in machine load hit both.
 */
const scenario: Scenario = {
  name: 'http-health',
  description: 'GET /health through the full HTTP layer vs a raw uWebSockets.js hello world',
  run: (settings, log) =>
    withIsolated(log, async (isolated, servers) => {
      const { raw, ours } = await startRawAndOurs(isolated, servers)
      log(`raw on ${raw.url}, ours on ${ours.url}`)
      await expectResponse(`${raw.url}/health`, 200, BODY)
      await expectResponse(`${ours.url}/health`, 200, BODY)
      return await measure(settings, log, raw, ours)
    }),
}

export default scenario

async function measure(settings: BenchSettings, log: (line: string) => void, raw: ServerProcess, ours: ServerProcess): Promise<ScenarioResult> {
  const runs = { raw: [] as Run[], ours: [] as Run[] }
  const targets = [
    { key: 'raw' as const, server: raw },
    { key: 'ours' as const, server: ours },
  ]
  for (let n = 1; n <= settings.rounds; n++) {
    for (const { key, server } of targets) {
      const options = { url: `${server.url}/health`, threads: settings.threads, connections: settings.connections, durationSec: settings.durationSec }
      const result = await runWrkMeasured(server, options, settings.warmupSec)
      const { cpuUsPerReq } = result
      runs[key].push(result)
      log(
        `round ${n}/${settings.rounds} ${key.padEnd(4)} ${Math.round(result.requestsPerSec)} req/s, ` +
          `p50 ${result.latencyP50Ms} ms, p99 ${result.latencyP99Ms} ms, ${result.errors} errors` +
          (cpuUsPerReq === undefined ? '' : `, server CPU ${cpuUsPerReq.toFixed(1)} µs/req`),
      )
    }
  }
  const bestRaw = best(runs.raw)
  const bestOurs = best(runs.ours)
  // Each round measures raw and ours back to back; the median of those pair ratios is what drifting load on
  // a shared machine disturbs least (best-of across rounds can pair a quiet raw run with a noisy one of ours).
  const pairRatios = runs.ours.map((o, i) => o.requestsPerSec / runs.raw[i]!.requestsPerSec)
  const ratio = median(pairRatios)
  const pass = ratio >= TARGET
  const errors = [...runs.raw, ...runs.ours].reduce((sum, r) => sum + r.errors, 0)
  // Server CPU per request: less sensitive than req/s to wrk and to other load competing for the cores.
  const rawCpu = leastCpu(runs.raw)
  const oursCpu = leastCpu(runs.ours)
  const note = `best of ${settings.rounds}`
  log(`pair ratios ${pairRatios.map((r) => r.toFixed(3)).join(', ')}; best-of ratio ${(bestOurs.requestsPerSec / bestRaw.requestsPerSec).toFixed(3)}`)
  const rows: ResultRow[] = [
    wrkRow('raw uWS hello world', bestRaw, note),
    wrkRow('ours GET /health', bestOurs, note),
    ...runs.raw.map((r, i) => wrkRow(`  raw run ${i + 1}`, r)),
    ...runs.ours.map((r, i) => wrkRow(`  ours run ${i + 1}`, r)),
  ]
  return {
    rows,
    headline:
      `ours/raw = ${ratio.toFixed(3)} (median of ${pairRatios.length} back-to-back pairs: ${pairRatios.map((r) => r.toFixed(2)).join(', ')}; target >= ${TARGET}): ${pass ? 'pass' : 'MISSED'}` +
      (rawCpu !== undefined && oursCpu !== undefined
        ? `; server CPU per request ${oursCpu.toFixed(1)} µs vs ${rawCpu.toFixed(1)} µs raw (${(oursCpu / rawCpu).toFixed(2)}x)`
        : '') +
      (errors ? `; ${errors} wrk errors` : ''),
    summary: {
      scenario: 'http-health',
      rawRps: Math.round(bestRaw.requestsPerSec),
      oursRps: Math.round(bestOurs.requestsPerSec),
      ratio: round(ratio, 3),
      target: TARGET,
      pass,
      rawP99Ms: bestRaw.latencyP99Ms,
      oursP99Ms: bestOurs.latencyP99Ms,
      rawCpuUsPerReq: rawCpu === undefined ? null : round(rawCpu),
      oursCpuUsPerReq: oursCpu === undefined ? null : round(oursCpu),
      errors,
      runs: settings.rounds,
      durationSec: settings.durationSec,
      connections: settings.connections,
      threads: settings.threads,
    },
  }
}

const best = (results: readonly Run[]): Run => results.reduce((a, b) => (b.requestsPerSec > a.requestsPerSec ? b : a))

function leastCpu(results: readonly Run[]): number | undefined {
  const values = results.map((r) => r.cpuUsPerReq).filter((v) => v !== undefined)
  return values.length ? Math.min(...values) : undefined
}
