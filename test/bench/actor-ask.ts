import { readdirSync, readFileSync } from 'node:fs'
import { performance } from 'node:perf_hooks'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { pino } from 'pino'
import { loadConfig } from '../../core/config.js'
import { createLogger } from '../../core/log.js'
import { startNode, type AppNode } from '../../main.js'
import { ECHO_KIND, echoKind } from './echo-kind.js'
import {
  createIsolated,
  median,
  processCpuSeconds,
  round,
  services,
  sleep,
  startServer,
  type BenchSettings,
  type Isolated,
  type ResultRow,
  type Scenario,
  type ScenarioResult,
  type ServerProcess,
} from './harness.js'

const TARGET = {
  /** Remote ask p50 (1 in flight) at most this multiple of raw NATS request-reply p50. */
  latencyRatioMax: 1.3,
  /** Remote ask throughput (100 in flight) at least this share of raw NATS request-reply throughput. */
  throughputRatioMin: 0.8,
  /** Local ask minus plain async call, ns per sequential awaited call. */
  localOverheadNsMax: 5_000,
}
const IN_FLIGHT = 100
const TIMEOUT_MS = 10_000
const LOCAL_CALLS = 200_000
const LOCAL_WARMUP_CALLS = 50_000
/**
 * Local asks never leave the microtask queue (no I/O, no timer), so a loop of them would starve timers (the
 * partition lease renewals) and signal handling: local loops yield to the event loop every this many calls
 * (a few ms), outside the timed stretches for sequential runs.
 */
const LOCAL_YIELD_EVERY = 1_000
const LOCAL_CONCURRENT = { warmupSec: 0.5, durationSec: 1 }
/** Local runs are short and swing with the garbage collector's phase: twice as many rounds as remote ones. */
const LOCAL_ROUNDS_PER_ROUND = 2
const yieldToEventLoop = () => new Promise<void>((resolve) => setImmediate(resolve))

/**
 * The actor runtime's ask against what it is built on:
 *  - remote: `ask` from a gateway node (hosts nothing) to an `echo` actor on a node in another process,
 *    against nats.js request-reply to a plain echo subscription in another process; p50/p99 with one
 *    request in flight and throughput with 100 in flight, measured alternately round by round;
 *  - local: `ask` to an actor of a partition this process owns, against a plain async function call.
 */
const scenario: Scenario = {
  name: 'actor-ask',
  description: 'actor ask (remote over NATS and local) vs raw nats.js request-reply and a plain async call',
  async run(settings, log) {
    const remote = await remotePhase(settings, log)
    const local = await localPhase(settings, log)
    return report(settings, log, remote, local)
  },
}

export default scenario

// ---------------------------------------------------------------------------------------------------------
// Measuring

interface Measured {
  /** Calls answered inside the measured window. */
  requests: number
  errors: number
  seconds: number
  p50Ms: number
  p99Ms: number
  /** CPU of the responding child (echo responder or actor host) per answered call, when measurable. */
  serverCpuUsPerReq?: number
  /** CPU of this process (the caller: raw client or gateway node) per answered call. */
  clientCpuUsPerReq: number
  /** CPU of nats-server per answered call, when it runs on this machine (for the CPU budget only). */
  natsCpuUsPerReq?: number
}

type Call = (worker: number, i: number) => Promise<unknown>

/** Throws once a process the calls depend on has exited (a crash, or the harness stopping on a signal). */
function checkAlive(processes: readonly ServerProcess[]): void {
  for (const p of processes) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${p.name} exited (${p.child.signalCode ?? `code ${p.child.exitCode}`})`)
  }
}

const rps = (m: Measured) => m.requests / m.seconds

function percentile(sorted: Float64Array, q: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!
}

class Samples {
  private data = new Float64Array(1 << 16)
  length = 0
  push(value: number): void {
    if (this.length === this.data.length) {
      const bigger = new Float64Array(this.data.length * 2)
      bigger.set(this.data)
      this.data = bigger
    }
    this.data[this.length++] = value
  }
  sorted(): Float64Array {
    return this.data.slice(0, this.length).sort()
  }
}

/** CPU seconds of this process, of a child when given, and of a local nats-server, read at one moment. */
function cpuNow(server: ServerProcess | undefined): { client: number; server: number | undefined; nats: number | undefined } {
  const usage = process.cpuUsage()
  return {
    client: (usage.user + usage.system) / 1e6,
    server: server?.cpuSeconds(),
    nats: natsServerPid === undefined ? undefined : processCpuSeconds(natsServerPid),
  }
}

/** The pid of nats-server when the benchmark's NATS runs on this machine (one such process), else undefined. */
const natsServerPid = ((): number | undefined => {
  if (!/^nats:\/\/(127\.0\.0\.1|localhost)(:|$)/.test(services.natsUrl)) return undefined
  try {
    const pids = readdirSync('/proc').filter((entry) => /^\d+$/.test(entry) && readComm(entry) === 'nats-server')
    return pids.length === 1 ? Number(pids[0]) : undefined
  } catch {
    return undefined
  }
})()

function readComm(pid: string): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim()
  } catch {
    return undefined
  }
}

function finish(samples: Samples, requests: number, errors: number, seconds: number, cpu0: ReturnType<typeof cpuNow>, cpu1: ReturnType<typeof cpuNow>): Measured {
  if (requests === 0) throw new Error(`no call was answered in ${seconds.toFixed(1)} s (${errors} errors)`)
  const sorted = samples.sorted()
  return {
    requests,
    errors,
    seconds,
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    ...(cpu0.server !== undefined && cpu1.server !== undefined ? { serverCpuUsPerReq: ((cpu1.server - cpu0.server) * 1e6) / requests } : {}),
    clientCpuUsPerReq: ((cpu1.client - cpu0.client) * 1e6) / requests,
    ...(cpu0.nats !== undefined && cpu1.nats !== undefined ? { natsCpuUsPerReq: ((cpu1.nats - cpu0.nats) * 1e6) / requests } : {}),
  }
}

/** One call in flight: warm-up, then every call of the measured window timed on its own. */
async function sequential(call: Call, warmupSec: number, durationSec: number, server: ServerProcess, needed: readonly ServerProcess[]): Promise<Measured> {
  let i = 0
  const warmEnd = performance.now() + warmupSec * 1000
  while (performance.now() < warmEnd) {
    checkAlive(needed)
    await call(0, i++)
  }
  const samples = new Samples()
  let errors = 0
  const cpu0 = cpuNow(server)
  const start = performance.now()
  const end = start + durationSec * 1000
  let t = start
  while (t < end) {
    checkAlive(needed)
    const sent = t
    let ok = true
    try {
      await call(0, i++)
    } catch {
      ok = false
      if (++errors > 10) throw new Error(`more than 10 errors with one call in flight`)
    }
    t = performance.now()
    if (ok) samples.push(t - sent)
  }
  const cpu1 = cpuNow(server)
  return finish(samples, samples.length, errors, (t - start) / 1000, cpu0, cpu1)
}

/**
 * `inFlight` callers, each starting its next call as soon as the last one is answered, for the warm-up and
 * then the measured window without a pause in between, so the window starts and ends with every call
 * outstanding. Answers are counted when they arrive inside the window. Clocks are read by the callers, not
 * by timers: a run of calls that never yields to the event loop still ends.
 */
async function concurrent(
  call: Call,
  inFlight: number,
  warmupSec: number,
  durationSec: number,
  server?: ServerProcess,
  needed: readonly ServerProcess[] = [],
): Promise<Measured> {
  const windowStart = performance.now() + warmupSec * 1000
  const windowEnd = windowStart + durationSec * 1000
  const samples = new Samples()
  let started: number | undefined
  let cpu0: ReturnType<typeof cpuNow> | undefined
  let cpu1: ReturnType<typeof cpuNow> | undefined
  let errors = 0
  let failure: unknown
  const worker = async (w: number) => {
    for (let i = 0; ; i++) {
      const sent = performance.now()
      if (sent >= windowEnd || failure !== undefined) {
        cpu1 ??= cpuNow(server)
        return
      }
      if (started === undefined && sent >= windowStart) {
        started = sent
        cpu0 = cpuNow(server)
      }
      let ok = true
      try {
        checkAlive(needed)
      } catch (err) {
        failure ??= err
        continue
      }
      try {
        await call(w, i)
      } catch (err) {
        ok = false
        if (started === undefined || ++errors > 1000) failure ??= err
      }
      const answered = performance.now()
      if (ok && started !== undefined && answered >= started && answered < windowEnd) samples.push(answered - sent)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, (_, w) => worker(w)))
  if (failure !== undefined) throw new Error(`calls failed: ${failure instanceof Error ? failure.message : String(failure)}${errors > 1000 ? ' (over 1000 errors)' : ''}`, { cause: failure })
  if (started === undefined || cpu0 === undefined || cpu1 === undefined) throw new Error('the measured window never started')
  return finish(samples, samples.length, errors, (windowEnd - started) / 1000, cpu0, cpu1)
}

/**
 * `inFlight` callers of calls that never leave the microtask queue: in batches of `LOCAL_YIELD_EVERY`
 * calls (every caller making its share), with a yield to the event loop between batches; only the batches
 * are timed. Latencies are those within a batch.
 */
async function localBatches(call: Call, inFlight: number, warmupSec: number, durationSec: number): Promise<Measured> {
  const perCaller = Math.max(1, Math.round(LOCAL_YIELD_EVERY / inFlight))
  const samples = new Samples()
  const batch = async (record: boolean) => {
    await Promise.all(
      Array.from({ length: inFlight }, async (_, w) => {
        for (let i = 0; i < perCaller; i++) {
          const sent = performance.now()
          await call(w, i)
          if (record) samples.push(performance.now() - sent)
        }
      }),
    )
  }
  const warmEnd = performance.now() + warmupSec * 1000
  while (performance.now() < warmEnd) {
    await batch(false)
    await yieldToEventLoop()
  }
  const cpu0 = cpuNow(undefined)
  let timedMs = 0
  while (timedMs < durationSec * 1000) {
    const start = performance.now()
    await batch(true)
    timedMs += performance.now() - start
    await yieldToEventLoop()
  }
  return finish(samples, samples.length, 0, timedMs / 1000, cpu0, cpuNow(undefined))
}

/** ns per call over `n` sequential awaited calls, timed in stretches of LOCAL_YIELD_EVERY with a yield between. */
async function nsPerCall(call: (i: number) => Promise<unknown>, n: number): Promise<number> {
  let ns = 0n
  for (let done = 0; done < n; ) {
    const end = Math.min(n, done + LOCAL_YIELD_EVERY)
    const start = process.hrtime.bigint()
    for (let i = done; i < end; i++) await call(i)
    ns += process.hrtime.bigint() - start
    done = end
    await yieldToEventLoop()
  }
  return Number(ns) / n
}

async function expectEcho(what: string, call: (n: number) => Promise<unknown>): Promise<void> {
  const n = 4242
  const reply = await call(n)
  if (reply !== n) throw new Error(`${what} answered ${JSON.stringify(reply)}, expected ${n}`)
}

/** Bench nodes in this process log warnings only, to stderr: stdout is the report. */
function nodeLogger(nodeId: string) {
  return createLogger({ level: 'warn', pretty: false, nodeId }, pino.destination({ fd: 2, sync: false }))
}

function nodeEnv(isolated: Isolated, nodeId: string, roles?: string): Record<string, string> {
  return {
    ...isolated.env,
    HOST: '127.0.0.1',
    PORT: '0',
    NODE_ID: nodeId,
    LOG_LEVEL: 'warn',
    LOG_PRETTY: 'false',
    SHUTDOWN_TIMEOUT_MS: '2000',
    ASK_TIMEOUT_MS: String(TIMEOUT_MS),
    ...(roles ? { ROLES: roles } : {}),
  }
}

/** Runs `body`, then `cleanup` whatever happened; a cleanup failure surfaces only when the body succeeded. */
async function withCleanup<T>(log: (line: string) => void, body: () => Promise<T>, cleanup: () => Promise<void>): Promise<T> {
  let failed = false
  try {
    return await body()
  } catch (err) {
    failed = true
    throw err
  } finally {
    await cleanup().catch((err: unknown) => {
      if (!failed) throw err
      log(`cleanup also failed: ${err instanceof Error ? err.message : String(err)}`)
    })
  }
}

// ---------------------------------------------------------------------------------------------------------
// Remote: raw request-reply vs ask to another process

interface RemoteRound {
  rawSeq: Measured
  actorSeq: Measured
  rawConc: Measured
  actorConc: Measured
}

async function remotePhase(settings: BenchSettings, log: (line: string) => void): Promise<RemoteRound[]> {
  let isolated: Isolated | undefined
  const children: ServerProcess[] = []
  let gateway: AppNode | undefined
  let client: NatsConnection | undefined
  return withCleanup(
    log,
    async () => {
      isolated = await createIsolated()
      log(`remote: namespace and database ${isolated.namespace}`)
      const subject = `${isolated.namespace}.bench.echo`
      const [echo, host] = await Promise.all([
        startServer({
          name: 'nats echo responder',
          script: 'test/bench/nats-echo.ts',
          args: [subject],
          env: { NATS_URL: services.natsUrl },
          portFrom: (line) => (line.includes('"nats echo ready"') ? 0 : undefined),
        }),
        startServer({
          name: 'actor host node',
          script: 'test/bench/actor-host-node.ts',
          env: nodeEnv(isolated, 'bench-host', 'actors'),
          portFrom: (line) => (line.includes('"actor host ready"') ? 0 : undefined),
        }),
      ])
      children.push(echo, host)
      log('remote: echo responder and actor host (all partitions held) are up')

      client = await connect({ servers: services.natsUrl, name: 'bench-raw-client', timeout: 5_000 })
      const nc = client
      const payload = new TextEncoder().encode(JSON.stringify({ type: 'echo', n: 4242 }))
      const raw: Call = async () => (await nc.request(subject, payload, { timeout: TIMEOUT_MS })).data

      const config = loadConfig(nodeEnv(isolated, 'bench-gateway', 'gateway'))
      gateway = await startNode(config, { log: nodeLogger(config.nodeId) })
      const actors = gateway.actors
      const ids = Array.from({ length: IN_FLIGHT }, (_, w) => `e${w}`)
      const options = { timeoutMs: TIMEOUT_MS }
      // Worker w always asks actor e<w>: 100 actors spread over the partitions; the single caller asks e0.
      const actor: Call = (w, i) => actors.ask(ECHO_KIND, ids[w]!, { type: 'echo', n: i }, options)

      const echoed = new TextDecoder().decode((await nc.request(subject, payload, { timeout: TIMEOUT_MS })).data)
      if (echoed !== new TextDecoder().decode(payload)) throw new Error(`the raw echo answered ${echoed}`)
      // Every actor answers (and is activated) before anything is measured.
      await Promise.all(ids.map((id) => expectEcho(`actor ${id}`, (n) => actors.ask(ECHO_KIND, id, { type: 'echo', n }, options))))
      const partitions = new Set(ids.map((id) => actors.partitionOf(ECHO_KIND, id)))
      log(`remote: ${ids.length} echo actors answer, over ${partitions.size} of ${config.actorPartitions} partitions`)

      const rounds: RemoteRound[] = []
      const { warmupSec, durationSec } = settings
      for (let n = 1; n <= settings.rounds; n++) {
        const rawSeq = await sequential(raw, warmupSec, durationSec, echo, children)
        const actorSeq = await sequential(actor, warmupSec, durationSec, host, children)
        const rawConc = await concurrent(raw, IN_FLIGHT, warmupSec, durationSec, echo, children)
        const actorConc = await concurrent(actor, IN_FLIGHT, warmupSec, durationSec, host, children)
        rounds.push({ rawSeq, actorSeq, rawConc, actorConc })
        log(
          `round ${n}/${settings.rounds} 1 in flight p50 raw ${us(rawSeq.p50Ms)} actor ${us(actorSeq.p50Ms)} ` +
            `(${(actorSeq.p50Ms / rawSeq.p50Ms).toFixed(2)}x); ${IN_FLIGHT} in flight raw ${Math.round(rps(rawConc))}/s actor ${Math.round(rps(actorConc))}/s ` +
            `(${(rps(actorConc) / rps(rawConc)).toFixed(2)})` +
            (rawSeq.errors + actorSeq.errors + rawConc.errors + actorConc.errors > 0
              ? `; errors ${rawSeq.errors + rawConc.errors} raw, ${actorSeq.errors + actorConc.errors} actor`
              : ''),
        )
        log(
          `round ${n}/${settings.rounds} CPU µs/req caller+responder+nats-server: 1 in flight raw ${cpuText(rawSeq)} actor ${cpuText(actorSeq)}; ` +
            `${IN_FLIGHT} in flight raw ${cpuText(rawConc)} actor ${cpuText(actorConc)}`,
        )
      }
      return rounds
    },
    async () => {
      await Promise.allSettled([
        ...children.map((c) => c.stop()),
        gateway?.shutdown(),
        client?.close(),
      ])
      // Streams are dropped once every node is gone, so none can recreate them.
      await isolated?.drop()
    },
  )
}

function cpuText(m: Measured): string {
  const text = (v: number | undefined) => (v === undefined ? '?' : v.toFixed(1))
  return `${text(m.clientCpuUsPerReq)}+${text(m.serverCpuUsPerReq)}+${text(m.natsCpuUsPerReq)}`
}

// ---------------------------------------------------------------------------------------------------------
// Local: ask to an actor of a partition this process owns vs a plain async call

interface LocalRound {
  plainNs: number
  askNs: number
  askConc: Measured
}

// The baseline: the same work (hand back n) behind one async boundary.
async function echo(n: number): Promise<number> {
  return n
}

async function localPhase(settings: BenchSettings, log: (line: string) => void): Promise<LocalRound[]> {
  let isolated: Isolated | undefined
  let node: AppNode | undefined
  return withCleanup(
    log,
    async () => {
      isolated = await createIsolated()
      log(`local: namespace and database ${isolated.namespace}`)
      const config = loadConfig(nodeEnv(isolated, 'bench-local'))
      node = await startNode(config, { log: nodeLogger(config.nodeId), kinds: () => [echoKind()] })
      const actors = node.actors
      const deadline = Date.now() + 30_000
      while (actors.ownedPartitions().length < config.actorPartitions) {
        if (Date.now() > deadline) throw new Error(`the local node holds ${actors.ownedPartitions().length} of ${config.actorPartitions} partitions after 30 s`)
        await sleep(50)
      }
      const options = { timeoutMs: TIMEOUT_MS }
      const ids = Array.from({ length: IN_FLIGHT }, (_, w) => `l${w}`)
      const ask = (i: number) => actors.ask(ECHO_KIND, 'l0', { type: 'echo', n: i }, options)
      const plain = (i: number) => echo(i)
      const askMany: Call = (w, i) => actors.ask(ECHO_KIND, ids[w]!, { type: 'echo', n: i }, options)
      await Promise.all(ids.map((id) => expectEcho(`local actor ${id}`, (n) => actors.ask(ECHO_KIND, id, { type: 'echo', n }, options))))
      await expectEcho('plain call', plain)
      log(`local: node holds all ${config.actorPartitions} partitions; ${ids.length} echo actors answer`)

      await nsPerCall(plain, LOCAL_WARMUP_CALLS)
      await sleep(50)
      await nsPerCall(ask, LOCAL_WARMUP_CALLS)
      const rounds: LocalRound[] = []
      const total = settings.rounds * LOCAL_ROUNDS_PER_ROUND
      for (let n = 1; n <= total; n++) {
        // A pause before each run lets timers (lease renewals) run and settles the machine.
        await sleep(100)
        const plainNs = await nsPerCall(plain, LOCAL_CALLS)
        await sleep(100)
        const askNs = await nsPerCall(ask, LOCAL_CALLS)
        await sleep(100)
        const askConc = await localBatches(askMany, IN_FLIGHT, LOCAL_CONCURRENT.warmupSec, LOCAL_CONCURRENT.durationSec)
        if (actors.ownedPartitions().length < config.actorPartitions) throw new Error('the local node lost partitions during the run')
        rounds.push({ plainNs, askNs, askConc })
        log(
          `local round ${n}/${total} plain ${Math.round(plainNs)} ns, local ask ${Math.round(askNs)} ns/call ` +
            `(overhead ${((askNs - plainNs) / 1000).toFixed(2)} µs); 100 callers ${Math.round(rps(askConc))} asks/s`,
        )
      }
      return rounds
    },
    async () => {
      await node?.shutdown().catch(() => undefined)
      await isolated?.drop()
    },
  )
}

// ---------------------------------------------------------------------------------------------------------
// Report

function report(settings: BenchSettings, log: (line: string) => void, remote: RemoteRound[], local: LocalRound[]): ScenarioResult {
  const mid = (values: readonly number[]) => median(values)
  const latencyRatios = remote.map((r) => r.actorSeq.p50Ms / r.rawSeq.p50Ms)
  const throughputRatios = remote.map((r) => rps(r.actorConc) / rps(r.rawConc))
  const overheadsNs = local.map((r) => r.askNs - r.plainNs)
  const latencyRatio = mid(latencyRatios)
  const throughputRatio = mid(throughputRatios)
  const overheadNs = mid(overheadsNs)
  const pass = {
    latency: latencyRatio <= TARGET.latencyRatioMax,
    throughput: throughputRatio >= TARGET.throughputRatioMin,
    local: overheadNs <= TARGET.localOverheadNsMax,
  }
  const errors = remote.reduce((sum, r) => sum + r.rawSeq.errors + r.actorSeq.errors + r.rawConc.errors + r.actorConc.errors, 0) +
    local.reduce((sum, r) => sum + r.askConc.errors, 0)
  const list = (values: readonly number[], digits = 2) => values.map((v) => v.toFixed(digits)).join(', ')
  log(`p50 ratios ${list(latencyRatios)}; throughput ratios ${list(throughputRatios)}; local overheads ns ${list(overheadsNs, 0)}`)

  const defined = (values: readonly (number | undefined)[]) => values.filter((v) => v !== undefined)
  const cpuNote = (runs: readonly Measured[]) => {
    const nats = defined(runs.map((m) => m.natsCpuUsPerReq))
    return `CPU µs/req: caller ${mid(runs.map((m) => m.clientCpuUsPerReq)).toFixed(1)}` + (nats.length ? `, nats-server ${mid(nats).toFixed(1)}` : '')
  }
  const medianRow = (label: string, runs: readonly Measured[]): ResultRow => {
    const server = defined(runs.map((m) => m.serverCpuUsPerReq))
    return {
      label,
      requestsPerSec: mid(runs.map(rps)),
      latencyP50Ms: mid(runs.map((m) => m.p50Ms)),
      latencyP99Ms: mid(runs.map((m) => m.p99Ms)),
      errors: runs.reduce((sum, m) => sum + m.errors, 0),
      ...(server.length ? { serverCpuUsPerReq: mid(server) } : {}),
      note: `median of ${runs.length}; p50 ${us(mid(runs.map((m) => m.p50Ms)))}, p99 ${us(mid(runs.map((m) => m.p99Ms)))}; ${cpuNote(runs)}`,
    }
  }
  const runRow = (label: string, m: Measured): ResultRow => ({
    label,
    requestsPerSec: rps(m),
    latencyP50Ms: m.p50Ms,
    latencyP99Ms: m.p99Ms,
    errors: m.errors,
    ...(m.serverCpuUsPerReq === undefined ? {} : { serverCpuUsPerReq: m.serverCpuUsPerReq }),
    note: cpuNote([m]),
  })
  const plainNs = mid(local.map((r) => r.plainNs))
  const askNs = mid(local.map((r) => r.askNs))
  const callRow = (label: string, ns: number): ResultRow => ({
    label,
    requestsPerSec: 1e9 / ns,
    latencyP50Ms: ns / 1e6,
    latencyP99Ms: NaN,
    errors: 0,
    note: `median of ${local.length}; ${Math.round(ns)} ns per call (mean of ${LOCAL_CALLS.toLocaleString('en-US')} sequential)`,
  })
  const rows: ResultRow[] = [
    medianRow('raw NATS req-reply, 1 in flight', remote.map((r) => r.rawSeq)),
    medianRow('remote actor ask, 1 in flight', remote.map((r) => r.actorSeq)),
    medianRow(`raw NATS req-reply, ${IN_FLIGHT} in flight`, remote.map((r) => r.rawConc)),
    medianRow(`remote actor ask, ${IN_FLIGHT} in flight`, remote.map((r) => r.actorConc)),
    callRow('plain async call, sequential', plainNs),
    callRow('local actor ask, sequential', askNs),
    medianRow(`local actor ask, ${IN_FLIGHT} callers`, local.map((r) => r.askConc)),
    ...remote.flatMap((r, i) => [
      runRow(`  round ${i + 1} raw, 1 in flight`, r.rawSeq),
      runRow(`  round ${i + 1} actor, 1 in flight`, r.actorSeq),
      runRow(`  round ${i + 1} raw, ${IN_FLIGHT} in flight`, r.rawConc),
      runRow(`  round ${i + 1} actor, ${IN_FLIGHT} in flight`, r.actorConc),
    ]),
  ]

  const rawP50 = mid(remote.map((r) => r.rawSeq.p50Ms))
  const actorP50 = mid(remote.map((r) => r.actorSeq.p50Ms))
  const verdict = (ok: boolean) => (ok ? 'pass' : 'MISSED')
  const headline =
    `remote p50 actor/raw = ${latencyRatio.toFixed(2)} (${us(actorP50)} vs ${us(rawP50)}; pairs ${list(latencyRatios)}; target <= ${TARGET.latencyRatioMax}): ${verdict(pass.latency)}; ` +
    `${IN_FLIGHT}-in-flight throughput actor/raw = ${throughputRatio.toFixed(2)} (pairs ${list(throughputRatios)}; target >= ${TARGET.throughputRatioMin}): ${verdict(pass.throughput)}; ` +
    `local ask overhead ${(overheadNs / 1000).toFixed(2)} µs/call (${Math.round(askNs)} ns vs ${Math.round(plainNs)} ns plain; target <= ${TARGET.localOverheadNsMax / 1000} µs): ${verdict(pass.local)}` +
    (errors ? `; ${errors} errors` : '')

  const cpu = (runs: readonly Measured[]) => {
    const server = defined(runs.map((m) => m.serverCpuUsPerReq))
    const nats = defined(runs.map((m) => m.natsCpuUsPerReq))
    return {
      caller: round(mid(runs.map((m) => m.clientCpuUsPerReq)), 1),
      responder: server.length ? round(mid(server), 1) : null,
      natsServer: nats.length ? round(mid(nats), 1) : null,
    }
  }
  return {
    rows,
    headline,
    summary: {
      scenario: 'actor-ask',
      pass: pass.latency && pass.throughput && pass.local,
      rawP50Us: round(rawP50 * 1000, 1),
      actorP50Us: round(actorP50 * 1000, 1),
      rawP99Us: round(mid(remote.map((r) => r.rawSeq.p99Ms)) * 1000, 1),
      actorP99Us: round(mid(remote.map((r) => r.actorSeq.p99Ms)) * 1000, 1),
      latencyRatio: round(latencyRatio, 3),
      latencyRatioMax: TARGET.latencyRatioMax,
      latencyPass: pass.latency,
      rawRps: Math.round(mid(remote.map((r) => rps(r.rawConc)))),
      actorRps: Math.round(mid(remote.map((r) => rps(r.actorConc)))),
      throughputRatio: round(throughputRatio, 3),
      throughputRatioMin: TARGET.throughputRatioMin,
      throughputPass: pass.throughput,
      cpuUsPerReq1: { raw: cpu(remote.map((r) => r.rawSeq)), actor: cpu(remote.map((r) => r.actorSeq)) },
      cpuUsPerReq100: { raw: cpu(remote.map((r) => r.rawConc)), actor: cpu(remote.map((r) => r.actorConc)) },
      plainNs: Math.round(plainNs),
      localAskNs: Math.round(askNs),
      localOverheadNs: Math.round(overheadNs),
      localOverheadNsMax: TARGET.localOverheadNsMax,
      localPass: pass.local,
      localRps100: Math.round(mid(local.map((r) => rps(r.askConc)))),
      errors,
      rounds: settings.rounds,
      durationSec: settings.durationSec,
      warmupSec: settings.warmupSec,
      inFlight: IN_FLIGHT,
      localCalls: LOCAL_CALLS,
    },
  }
}

const us = (ms: number) => `${Math.round(ms * 1000)} µs`
