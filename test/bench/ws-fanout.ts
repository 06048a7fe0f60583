import { readFileSync } from 'node:fs'
import postgres from 'postgres'
import {
  envInt,
  portLine,
  round,
  startOurs,
  startRaw,
  startRawAndOurs,
  startServer,
  withIsolated,
  type BenchSettings,
  type ResultRow,
  type Scenario,
  type ScenarioResult,
  type ServerProcess,
} from './harness.js'
import { ClientPool, openSockets } from './ws-fanout-client-pool.js'
import { latency, memory, mib, saturation, type LatencyResult, type MemoryResult, type SaturationResult } from './ws-fanout-measure.js'
import { buildWorld, layoutSockets, MEMBERS_PER_ORG, ORGS } from './ws-fanout-world.js'

const DELIVERIES_TARGET = 5
const P99_TARGET_MS = 50
const MEMORY_TARGET = 1.5
/** Server processes whose memory per socket is measured, each fresh; the median counts. */
const MEMORY_RUNS = 3

/**
 * Organization change fan-out over WebSockets. Many authenticated sockets (BENCH_WS_CLIENTS, default 5,000)
 * spread evenly over 50 organizations, each org with two invited members whose tokens the sockets share
 * (several sockets per user, as multi-tab users have; each socket authenticates and subscribes itself).
 * Changes are real HTTP writes (`POST /v1/orgs/:orgId/projects`: project, audit row and outbox event in one
 * transaction, then JetStream, then the channel hub) made by the orgs' owner.
 *
 * Measured: (1) memory per idle authenticated, subscribed socket (server RSS delta / sockets) for ours, a raw
 * uWebSockets.js server holding as many plain sockets, and the Socket.IO peer; for ours and raw the median of
 * three fresh server processes, since one process's RSS growth depends on where its allocator happens to put
 * things (a lone raw reading has ranged from ~430 to ~900 B per socket on the same machine). The target is
 * checked on that whole delta; beside it, for information, the growth of the second half of the sockets alone
 * (what one more socket costs a server already holding thousands, without the first sockets' one-time costs
 * such as code compiled for the new paths); (2) deliveries per second at
 * saturation (wrk POSTs as fast as the server answers, round-robin over the orgs) for ours and the Socket.IO
 * peer (test/bench/peers/socketio-fanout.ts); (3) p50/p99 from sending the HTTP change to each socket's
 * receipt, at half ours' saturation rate (open-loop, fixed schedule), for ours and for the peer at the same
 * rate. The sockets live in BENCH_WS_CLIENT_PROCS (default 2) child processes (test/bench/ws-fanout-clients.ts).
 */
const scenario: Scenario = {
  name: 'ws-fanout',
  description: 'WebSocket fan-out of org changes: deliveries/s, change-to-receipt latency, memory per socket vs raw uWS and Socket.IO',
  async run(settings, log) {
    const clients = envInt(process.env, 'BENCH_WS_CLIENTS', 5_000, ORGS, 200_000)
    const procs = envInt(process.env, 'BENCH_WS_CLIENT_PROCS', 2, 1, 64)
    checkFileLimit(clients, procs)
    return withIsolated(log, async (isolated, servers) => {
      let sql: postgres.Sql | undefined
      let pool: ClientPool | undefined
      try {
        // A long token lifetime so a long run never authenticates with an expired token.
        // Every server opens the V8 inspector so the memory readings can follow a full garbage collection.
        const { raw, ours } = await startRawAndOurs(isolated, servers, { ACCESS_TOKEN_TTL_S: '86400' }, { inspect: true })
        sql = postgres(isolated.env.DATABASE_URL!, { max: 2, onnotice: () => {} })
        const world = await buildWorld(ours.url, sql, log)
        const layout = layoutSockets(world, clients, procs)
        log(`${ORGS} orgs × ${MEMBERS_PER_ORG} invited members; ${clients} sockets (${clients / ORGS} per org, ~${Math.round(clients / (ORGS * MEMBERS_PER_ORG))} per user token) in ${procs} client processes; source addresses ${layout.addresses.join(', ')}`)
        pool = await ClientPool.start(procs)
        const clock = await pool.clockOffset()
        log(`client clocks vs the publisher: max |offset| ${clock.maxOffsetMs.toFixed(3)} ms (IPC round trip ${clock.rttMs.toFixed(3)} ms)`)
        const m: Measured = { clock }

        const measureMemory = async (kind: 'raw' | 'ours', first: ServerProcess, fresh: () => Promise<ServerProcess>, keepFirst: boolean) => {
          const runs: MemoryResult[] = []
          for (let run = 0; run < MEMORY_RUNS; run++) {
            const server = run === 0 ? first : await fresh()
            if (run > 0) servers.push(server)
            runs.push(await memory(pool!, kind, server, layout, world.tokens, log))
            await pool!.all({ cmd: 'close' })
            if (run > 0 || !keepFirst) await server.stop()
          }
          const median = [...runs].sort((x, y) => x.bytesPerConn - y.bytesPerConn)[Math.floor(runs.length / 2)]!
          const marginal = runs.map((r) => r.marginalBytesPerConn).sort((x, y) => x - y)[Math.floor(runs.length / 2)]!
          log(
            `${kind}: bytes per socket over ${runs.length} fresh processes ${runs.map((r) => Math.round(r.bytesPerConn)).join(', ')}; median ${Math.round(median.bytesPerConn)}; ` +
              `second half alone ${runs.map((r) => Math.round(r.marginalBytesPerConn)).join(', ')}; median ${Math.round(marginal)}`,
          )
          return { ...median, marginalBytesPerConn: marginal }
        }
        m.rawMemory = await measureMemory('raw', raw, () => startRaw({ inspect: true }), false)
        m.oursMemory = await measureMemory('ours', ours, () => startOurs(isolated, { ACCESS_TOKEN_TTL_S: '86400' }, { inspect: true }), true)
        await openSockets(pool, 'ours', ours.url, layout.perProc, world.tokens)
        m.oursSat = await saturation(settings, pool, ours, world, sql, clients, log)
        const rate = m.oursSat.deliveriesPerSec / 2 / (clients / ORGS)
        m.oursLatency = await latency(settings, pool, ours, world, rate, 'mo', clients, log)
        await pool.all({ cmd: 'close' })

        // The peer starts while ours still serves the public keys it verifies with; then ours stops.
        const peer = await startServer({
          name: 'socket.io peer',
          script: 'test/bench/peers/socketio-fanout.ts',
          args: [`${ours.url}/.well-known/jwks.json`],
          env: { ...isolated.env, HOST: '127.0.0.1', PORT: '0' },
          portFrom: portLine,
          inspect: true,
        })
        servers.push(peer)
        await ours.stop()
        m.peerMemory = await memory(pool, 'sio', peer, layout, world.tokens, log)
        m.peerSat = await saturation(settings, pool, peer, world, sql, clients, log)
        m.peerLatency = await latency(settings, pool, peer, world, rate, 'mp', clients, log)
        await pool.all({ cmd: 'close' })
        return report(settings, m as Required<Measured>, clients, procs, layout.addresses)
      } finally {
        // Before the servers stop (withIsolated does that): the sockets and the pool's connections go first.
        pool?.stop()
        await sql?.end({ timeout: 1 })
      }
    })
  },
}

export default scenario

/** Each server holds every socket; Node cannot raise its own limit, so say what to do instead of failing later. */
function checkFileLimit(clients: number, procs: number): void {
  const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  const soft = line?.[1] === 'unlimited' ? Infinity : Number(line?.[1] ?? Infinity)
  const needed = clients + 1_024
  if (soft < needed || soft < clients / procs + 1_024) {
    throw new Error(`open files are limited to ${soft}, and ${clients} sockets need about ${needed} in the server: run \`ulimit -n ${needed}\` (or more) in the shell first, or lower BENCH_WS_CLIENTS`)
  }
}

interface Measured {
  clock: { maxOffsetMs: number; rttMs: number }
  rawMemory?: MemoryResult
  oursMemory?: MemoryResult
  peerMemory?: MemoryResult
  oursSat?: SaturationResult
  peerSat?: SaturationResult
  oursLatency?: LatencyResult
  peerLatency?: LatencyResult
}

// ---------------------------------------------------------------------------------------------------------
// Report

function report(settings: BenchSettings, m: Required<Measured>, clients: number, procs: number, addresses: string[]): ScenarioResult {
  const deliveriesRatio = m.oursSat.deliveriesPerSec / m.peerSat.deliveriesPerSec
  const memoryRatio = m.oursMemory.bytesPerConn / m.rawMemory.bytesPerConn
  // Reported beside the target, not instead of it: the target is checked on the whole delta.
  const marginalMemoryRatio = m.oursMemory.marginalBytesPerConn / m.rawMemory.marginalBytesPerConn
  const p99 = m.oursLatency.p99
  const checks = [
    { what: 'ours ÷ Socket.IO deliveries/s', value: deliveriesRatio.toFixed(2), target: `>= ${DELIVERIES_TARGET}`, pass: deliveriesRatio >= DELIVERIES_TARGET },
    { what: 'ours p99 change→receipt at half load', value: `${round(p99)} ms`, target: `<= ${P99_TARGET_MS} ms`, pass: p99 <= P99_TARGET_MS },
    { what: 'ours ÷ raw uWS bytes per socket', value: memoryRatio.toFixed(2), target: `<= ${MEMORY_TARGET}`, pass: memoryRatio <= MEMORY_TARGET },
  ]
  const lost = (s: SaturationResult) => s.expected - s.received
  const droppedCount = (d: Record<string, number>) => Object.values(d).reduce((a, b) => a + b, 0)
  const satRow = (label: string, s: SaturationResult): ResultRow => ({
    label,
    requestsPerSec: s.deliveriesPerSec,
    latencyP50Ms: NaN,
    latencyP99Ms: NaN,
    errors: s.http.errors + Math.max(0, lost(s)) + droppedCount(s.dropped),
    ...(s.cpuUsPerChange === undefined ? {} : { serverCpuUsPerReq: s.cpuUsPerChange }),
    note: `deliveries/s; ${Math.round(s.changesPerSec)} changes/s (HTTP p99 ${round(s.http.latencyP99Ms)} ms), CPU per change; ${s.received}/${s.expected} delivered${droppedCount(s.dropped) ? `, sockets dropped ${JSON.stringify(s.dropped)}` : ''}`,
  })
  const latRow = (label: string, l: LatencyResult): ResultRow => ({
    label,
    requestsPerSec: l.deliveriesPerSec,
    latencyP50Ms: l.p50,
    latencyP99Ms: l.p99,
    errors: l.httpErrors + Math.max(0, l.expected - l.samples),
    note:
      `deliveries/s at ${l.changesPerSec.toFixed(1)} changes/s; change→receipt, max ${round(l.max)} ms; ${l.samples}/${l.expected} received; ` +
      `HTTP answer p50/p99 ${round(l.httpP50)}/${round(l.httpP99)} ms, receipt after answer p50/p99 ${round(l.afterAnswerP50)}/${round(l.afterAnswerP99)} ms` +
      (l.gc ? `; server GC ${l.gc.count} collections, ${Math.round(l.gc.pausedMs)} ms paused` : ''),
  })
  const memRow = (label: string, r: MemoryResult): ResultRow => ({
    label,
    requestsPerSec: 0,
    latencyP50Ms: NaN,
    latencyP99Ms: NaN,
    errors: 0,
    note:
      `${Math.round(r.bytesPerConn).toLocaleString('en-US')} B/socket, second half alone ${Math.round(r.marginalBytesPerConn).toLocaleString('en-US')} ` +
      `(RSS ${mib(r.beforeBytes)} → ${mib(r.afterBytes)} MiB, ${r.sockets} sockets` +
      `${r.heapPerConn === undefined ? '' : `; JS heap used ${Math.round(r.heapPerConn).toLocaleString('en-US')}, committed ${Math.round(r.heapCommittedPerConn ?? NaN).toLocaleString('en-US')} B/socket`})`,
  })
  const rows: ResultRow[] = [
    memRow('raw uWS memory, idle sockets', m.rawMemory),
    memRow('ours memory, idle authed+subscribed', m.oursMemory),
    memRow('socket.io memory, idle authed+joined', m.peerMemory),
    satRow('ours fan-out at saturation', m.oursSat),
    satRow('socket.io fan-out at saturation', m.peerSat),
    latRow('ours latency at half load', m.oursLatency),
    latRow('socket.io latency at same rate', m.peerLatency),
  ]
  const topology =
    `${clients} sockets, ${ORGS} orgs × ${clients / ORGS} sockets, ${ORGS * MEMBERS_PER_ORG} users (~${Math.round(clients / (ORGS * MEMBERS_PER_ORG))} sockets per token), ` +
    `${procs} client processes, clocks within ${m.clock.maxOffsetMs.toFixed(2)} ms`
  return {
    rows,
    headline:
      `${checks.map((c) => `${c.what} = ${c.value} (target ${c.target}): ${c.pass ? 'pass' : 'MISSED'}`).join('; ')}; ` +
      `for information, the second half of the sockets alone: ours ÷ raw = ${marginalMemoryRatio.toFixed(2)} [${topology}]`,
    summary: {
      scenario: 'ws-fanout',
      pass: checks.every((c) => c.pass),
      deliveriesRatio: round(deliveriesRatio, 3),
      oursP99Ms: round(p99, 3),
      memoryRatio: round(memoryRatio, 3),
      marginalMemoryRatio: round(marginalMemoryRatio, 3),
      targets: { deliveriesRatio: DELIVERIES_TARGET, oursP99Ms: P99_TARGET_MS, memoryRatio: MEMORY_TARGET },
      oursDeliveriesPerSec: Math.round(m.oursSat.deliveriesPerSec),
      peerDeliveriesPerSec: Math.round(m.peerSat.deliveriesPerSec),
      oursChangesPerSec: Math.round(m.oursSat.changesPerSec),
      peerChangesPerSec: Math.round(m.peerSat.changesPerSec),
      halfLoadChangesPerSec: round(m.oursLatency.changesPerSec, 1),
      oursP50Ms: round(m.oursLatency.p50, 3),
      peerP50Ms: round(m.peerLatency.p50, 3),
      peerP99Ms: round(m.peerLatency.p99, 3),
      oursHttpP99Ms: round(m.oursLatency.httpP99, 3),
      oursAfterAnswerP50Ms: round(m.oursLatency.afterAnswerP50, 3),
      oursAfterAnswerP99Ms: round(m.oursLatency.afterAnswerP99, 3),
      peerAfterAnswerP99Ms: round(m.peerLatency.afterAnswerP99, 3),
      rawBytesPerConn: Math.round(m.rawMemory.bytesPerConn),
      oursBytesPerConn: Math.round(m.oursMemory.bytesPerConn),
      rawMarginalBytesPerConn: Math.round(m.rawMemory.marginalBytesPerConn),
      oursMarginalBytesPerConn: Math.round(m.oursMemory.marginalBytesPerConn),
      peerBytesPerConn: Math.round(m.peerMemory.bytesPerConn),
      oursHeapUsedBytesPerConn: m.oursMemory.heapPerConn === undefined ? null : Math.round(m.oursMemory.heapPerConn),
      oursHeapCommittedBytesPerConn: m.oursMemory.heapCommittedPerConn === undefined ? null : Math.round(m.oursMemory.heapCommittedPerConn),
      lost: { ours: lost(m.oursSat), peer: lost(m.peerSat) },
      clients,
      orgs: ORGS,
      users: ORGS * MEMBERS_PER_ORG,
      clientProcesses: procs,
      sourceAddresses: addresses,
      clockOffsetMs: round(m.clock.maxOffsetMs, 3),
      durationSec: settings.durationSec,
      connections: settings.connections,
    },
  }
}
