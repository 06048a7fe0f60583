import { fork, spawn, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { readFileSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import postgres from 'postgres'
import {
  createIsolated,
  median,
  portLine,
  root,
  round,
  startRawAndOurs,
  startServer,
  type BenchSettings,
  type Isolated,
  type ResultRow,
  type Scenario,
  type ScenarioResult,
  type ServerProcess,
} from './harness.js'
import type { ClientCommand, ClientReply, ClientStats, SocketKind, SocketSpec } from './peers/ws-fanout-clients.js'
import { parseWrkOutput, type WrkResult } from './wrk.js'

const DELIVERIES_TARGET = 5
const P99_TARGET_MS = 50
const MEMORY_TARGET = 1.5
const ORGS = 50
const MEMBERS_PER_ORG = 2
const password = 'correct horse battery staple'

/**
 * Organization change fan-out over WebSockets. Many authenticated sockets (BENCH_WS_CLIENTS, default 5,000)
 * spread evenly over 50 organizations, each org with two invited members whose tokens the sockets share
 * (several sockets per user, as multi-tab users have; each socket authenticates and subscribes itself).
 * Changes are real HTTP writes (`POST /v1/orgs/:orgId/projects`: project, audit row and outbox event in one
 * transaction, then JetStream, then the channel hub) made by the orgs' owner.
 *
 * Measured: (1) memory per idle authenticated, subscribed socket (server RSS delta / sockets) for ours, a raw
 * uWebSockets.js server holding as many plain sockets, and the Socket.IO peer; (2) deliveries per second at
 * saturation (wrk POSTs as fast as the server answers, round-robin over the orgs) for ours and the Socket.IO
 * peer (test/bench/peers/socketio-fanout.ts); (3) p50/p99 from sending the HTTP change to each socket's
 * receipt, at half ours' saturation rate (open-loop, fixed schedule), for ours and for the peer at the same
 * rate. The sockets live in BENCH_WS_CLIENT_PROCS (default 2) child processes (test/bench/peers/ws-fanout-clients.ts).
 */
const scenario: Scenario = {
  name: 'ws-fanout',
  description: 'WebSocket fan-out of org changes: deliveries/s, change-to-receipt latency, memory per socket vs raw uWS and Socket.IO',
  async run(settings, log) {
    const clients = envInt('BENCH_WS_CLIENTS', 5_000, ORGS, 200_000)
    const procs = envInt('BENCH_WS_CLIENT_PROCS', 2, 1, 64)
    checkFileLimit(clients, procs)
    let isolated: Isolated | undefined
    let sql: postgres.Sql | undefined
    let pool: ClientPool | undefined
    const servers: ServerProcess[] = []
    let failed = false
    try {
      isolated = await createIsolated()
      log(`namespace and database ${isolated.namespace}`)
      // A long token lifetime so a long run never authenticates with an expired token.
      const { raw, ours } = await startRawAndOurs(isolated, servers, { ACCESS_TOKEN_TTL_S: '86400' })
      sql = postgres(isolated.env.DATABASE_URL!, { max: 2, onnotice: () => {} })
      const world = await buildWorld(ours.url, sql, log)
      const layout = layoutSockets(world, clients, procs)
      log(`${ORGS} orgs × ${MEMBERS_PER_ORG} invited members; ${clients} sockets (${clients / ORGS} per org, ~${Math.round(clients / (ORGS * MEMBERS_PER_ORG))} per user token) in ${procs} client processes; source addresses ${layout.addresses.join(', ')}`)
      pool = await ClientPool.start(procs)
      const clock = await pool.clockOffset()
      log(`client clocks vs the publisher: max |offset| ${clock.maxOffsetMs.toFixed(3)} ms (IPC round trip ${clock.rttMs.toFixed(3)} ms)`)
      const m: Measured = { clock }

      m.rawMemory = await memory(pool, 'raw', raw, layout, world.tokens, log)
      await raw.stop()
      m.oursMemory = await memory(pool, 'ours', ours, layout, world.tokens, log)
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
      })
      servers.push(peer)
      await ours.stop()
      m.peerMemory = await memory(pool, 'sio', peer, layout, world.tokens, log)
      m.peerSat = await saturation(settings, pool, peer, world, sql, clients, log)
      m.peerLatency = await latency(settings, pool, peer, world, rate, 'mp', clients, log)
      await pool.all({ cmd: 'close' })
      return report(settings, m as Required<Measured>, clients, procs, layout.addresses)
    } catch (err) {
      failed = true
      throw err
    } finally {
      pool?.stop()
      await sql?.end({ timeout: 1 })
      await Promise.allSettled(servers.map((s) => s.stop()))
      await isolated?.drop().catch((err: unknown) => {
        if (!failed) throw err
        log(`cleanup also failed: ${err instanceof Error ? err.message : String(err)}`)
      })
    }
  },
}

export default scenario

function envInt(name: string, fallback: number, min: number, max: number): number {
  const text = process.env[name]
  if (text === undefined || text === '') return fallback
  const value = Number(text)
  if (!Number.isInteger(value) || value < min || value > max) throw new Error(`${name} must be an integer from ${min} to ${max}, not "${text}"`)
  return value
}

/** Each server holds every socket; Node cannot raise its own limit, so say what to do instead of failing later. */
function checkFileLimit(clients: number, procs: number): void {
  const line = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync('/proc/self/limits', 'utf8'))
  const soft = line?.[1] === 'unlimited' ? Infinity : Number(line?.[1] ?? Infinity)
  const needed = clients + 1_024
  if (soft < needed || soft < clients / procs + 1_024) {
    throw new Error(`open files are limited to ${soft}, and ${clients} sockets need about ${needed} in the server: run \`ulimit -n ${needed}\` (or more) in the shell first, or lower BENCH_WS_CLIENTS`)
  }
}

// ---------------------------------------------------------------------------------------------------------
// The world: one owner (the publisher) with 50 organizations, each with two members who came by invitation.

interface World {
  publisher: string
  orgIds: string[]
  /** Every member's access token; member j of org i is at i * MEMBERS_PER_ORG + j. */
  tokens: string[]
}

async function post(url: string, token: string | undefined, body: unknown): Promise<Record<string, unknown>> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  })
  const text = await res.text()
  if (res.status !== 200 && res.status !== 201) throw new Error(`POST ${url} answered ${res.status} ${text}`)
  return JSON.parse(text) as Record<string, unknown>
}

const register = async (base: string, email: string) => String((await post(`${base}/v1/auth/register`, undefined, { email, password, name: 'Bench Fan-out' })).accessToken)

async function invitationToken(sql: postgres.Sql, email: string): Promise<string> {
  const deadline = Date.now() + 30_000
  while (Date.now() < deadline) {
    const [row] = await sql<{ token: string }[]>`select data->>'token' as token from dev_mailbox where recipient = ${email} and kind = 'invitation' limit 1`
    if (row?.token) return row.token
    await sleep(100)
  }
  throw new Error(`no invitation email reached ${email} within 30 s`)
}

async function buildWorld(base: string, sql: postgres.Sql, log: (line: string) => void): Promise<World> {
  const started = performance.now()
  const run = randomBytes(4).toString('hex')
  const publisher = await register(base, `fanout-owner-${run}@example.com`)
  const orgIds: string[] = new Array<string>(ORGS)
  const tokens: string[] = new Array<string>(ORGS * MEMBERS_PER_ORG)
  const makeOrg = async (i: number) => {
    const org = await post(`${base}/v1/orgs`, publisher, { name: `Fan-out ${i}`, slug: `fanout-${run}-${i}` })
    orgIds[i] = String(org.id)
    for (let j = 0; j < MEMBERS_PER_ORG; j++) {
      const email = `fanout-${run}-${i}-${j}@example.com`
      await post(`${base}/v1/orgs/${orgIds[i]}/invitations`, publisher, { email, role: 'member' })
      const token = await register(base, email)
      await post(`${base}/v1/invitations/accept`, token, { token: await invitationToken(sql, email) })
      tokens[i * MEMBERS_PER_ORG + j] = token
    }
  }
  for (let i = 0; i < ORGS; i += 10) await Promise.all(Array.from({ length: Math.min(10, ORGS - i) }, (_, k) => makeOrg(i + k)))
  log(`world built in ${((performance.now() - started) / 1000).toFixed(1)} s: ${ORGS} orgs, ${ORGS * MEMBERS_PER_ORG} members by invitation`)
  return { publisher, orgIds, tokens }
}

interface Layout {
  /** Per client process, its sockets. */
  perProc: SocketSpec[][]
  addresses: string[]
}

/**
 * Socket i belongs to org i mod 50 and to one of its members; sockets go round-robin to the client processes.
 * When one source address could run out of ephemeral ports, sockets spread over 127.0.0.2, .3, ...
 */
function layoutSockets(world: World, clients: number, procs: number): Layout {
  const range = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number)
  const ports = (range[1] ?? 60_999) - (range[0] ?? 32_768) + 1
  // Half the range per address leaves room for sockets of the previous phase still in TIME_WAIT.
  const perAddress = clients > ports / 2 ? Math.floor(ports / 2) : Infinity
  const addresses = new Set<string>()
  const perProc: SocketSpec[][] = Array.from({ length: procs }, () => [])
  for (let i = 0; i < clients; i++) {
    const org = i % ORGS
    const member = Math.floor(i / ORGS) % MEMBERS_PER_ORG
    const localAddress = Number.isFinite(perAddress) ? `127.0.0.${2 + Math.floor(i / perAddress)}` : undefined
    addresses.add(localAddress ?? '127.0.0.1 (no bind)')
    perProc[i % procs]!.push({ token: org * MEMBERS_PER_ORG + member, channel: `org:${world.orgIds[org]}`, ...(localAddress ? { localAddress } : {}) })
  }
  return { perProc, addresses: [...addresses] }
}

// ---------------------------------------------------------------------------------------------------------
// The client processes

type Command = ClientCommand extends infer C ? (C extends { id: number } ? Omit<C, 'id'> : never) : never

class ClientPool {
  private nextId = 1
  private readonly waiting = new Map<number, { resolve: (r: ClientReply) => void; reject: (e: Error) => void }>()

  private constructor(private readonly children: ChildProcess[]) {
    for (const child of children) {
      child.on('message', (reply: ClientReply) => {
        const w = this.waiting.get(reply.id)
        this.waiting.delete(reply.id)
        if (!w) return
        if (reply.ok) w.resolve(reply)
        else w.reject(new Error(`client process: ${reply.error}`))
      })
      child.once('exit', (code, signal) => {
        for (const w of this.waiting.values()) w.reject(new Error(`a client process exited (${signal ?? `code ${code}`})`))
        this.waiting.clear()
      })
    }
  }

  static async start(count: number): Promise<ClientPool> {
    const script = join(root, 'test/bench/peers/ws-fanout-clients.ts')
    const children = Array.from({ length: count }, () =>
      fork(script, [], { cwd: root, execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: ['ignore', 'ignore', 'inherit', 'ipc'] }),
    )
    const pool = new ClientPool(children)
    await pool.all({ cmd: 'clock' })
    return pool
  }

  get size(): number {
    return this.children.length
  }

  ask(i: number, command: Command): Promise<ClientReply> {
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject })
      this.children[i]!.send({ ...command, id })
    })
  }

  all(command: Command): Promise<ClientReply[]> {
    return Promise.all(this.children.map((_, i) => this.ask(i, command)))
  }

  async stats(): Promise<ClientStats> {
    const replies = (await this.all({ cmd: 'stats' })).filter((r): r is Extract<ClientReply, { deliveries: number }> => 'deliveries' in r)
    const dropped: Record<string, number> = {}
    for (const r of replies) for (const [k, v] of Object.entries(r.dropped)) dropped[k] = (dropped[k] ?? 0) + v
    const sum = (f: (r: ClientStats) => number) => replies.reduce((a, r) => a + f(r), 0)
    return { open: sum((r) => r.open), deliveries: sum((r) => r.deliveries), matched: sum((r) => r.matched), dropped, now: performance.timeOrigin + performance.now() }
  }

  /** Each child's clock minus ours, from the IPC round trip with the smallest delay. */
  async clockOffset(): Promise<{ maxOffsetMs: number; rttMs: number }> {
    let maxOffsetMs = 0
    let rttMs = 0
    for (let i = 0; i < this.size; i++) {
      let best = { rtt: Infinity, offset: 0 }
      for (let k = 0; k < 20; k++) {
        const t0 = performance.timeOrigin + performance.now()
        const reply = await this.ask(i, { cmd: 'clock' })
        const t1 = performance.timeOrigin + performance.now()
        if ('now' in reply && t1 - t0 < best.rtt) best = { rtt: t1 - t0, offset: reply.now - (t0 + t1) / 2 }
      }
      maxOffsetMs = Math.max(maxOffsetMs, Math.abs(best.offset))
      rttMs = Math.max(rttMs, best.rtt)
    }
    return { maxOffsetMs, rttMs }
  }

  stop(): void {
    for (const child of this.children) if (child.exitCode === null) child.kill('SIGKILL')
  }
}

async function openSockets(pool: ClientPool, kind: SocketKind, url: string, perProc: readonly SocketSpec[][], tokens: string[]): Promise<{ opened: number; ms: number }> {
  const started = performance.now()
  const replies = await Promise.all(perProc.map((sockets, i) => pool.ask(i, { cmd: 'open', kind, url, tokens, sockets, concurrency: 64, timeoutMs: 60_000 })))
  let opened = 0
  for (const r of replies) {
    if (!('opened' in r)) continue
    opened += r.opened
    if (r.failed) throw new Error(`${r.failed} ${kind} sockets did not open and subscribe: ${r.firstError ?? ''}`)
  }
  return { opened, ms: performance.now() - started }
}

// ---------------------------------------------------------------------------------------------------------
// Measuring

interface MemoryResult {
  sockets: number
  beforeBytes: number
  afterBytes: number
  bytesPerConn: number
  /** JS heap in use per socket, where the server reports it (ours, through /metrics). */
  heapPerConn: number | undefined
  heapCommittedPerConn: number | undefined
  openMs: number
}

interface SaturationResult {
  deliveriesPerSec: number
  changesPerSec: number
  http: WrkResult
  cpuUsPerChange: number | undefined
  expected: number
  received: number
  drainMs: number
  dropped: Record<string, number>
}

interface LatencyResult {
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

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

function rss(pid: number): number {
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!kb?.[1]) throw new Error(`no VmRSS for process ${pid}`)
  return Number(kb[1]) * 1024
}

/** The median of a few RSS readings after the process has had time to settle. */
async function settledRss(pid: number): Promise<number> {
  await sleep(3_000)
  const readings: number[] = []
  for (let i = 0; i < 5; i++) {
    readings.push(rss(pid))
    await sleep(200)
  }
  return median(readings)
}

/**
 * RSS before and after opening every socket. A warm-up batch of sockets is opened and closed first so the
 * code paths are compiled and the first pools allocated before the baseline is read.
 */
async function memory(pool: ClientPool, kind: SocketKind, server: ServerProcess, layout: Layout, tokens: string[], log: (line: string) => void): Promise<MemoryResult> {
  const pid = server.child.pid!
  await openSockets(pool, kind, server.url, layout.perProc.map((s) => s.slice(0, 50)), tokens)
  await pool.all({ cmd: 'close' })
  const beforeBytes = await settledRss(pid)
  const heapBefore = kind === 'ours' ? await heap(server) : undefined
  const { opened, ms } = await openSockets(pool, kind, server.url, layout.perProc, tokens)
  const afterBytes = await settledRss(pid)
  const heapAfter = kind === 'ours' ? await heap(server) : undefined
  const bytesPerConn = (afterBytes - beforeBytes) / opened
  const heapPerConn = heapBefore && heapAfter ? (heapAfter.used - heapBefore.used) / opened : undefined
  const heapCommittedPerConn = heapBefore && heapAfter ? (heapAfter.total - heapBefore.total) / opened : undefined
  log(
    `${kind}: ${opened} sockets open and subscribed in ${(ms / 1000).toFixed(1)} s; RSS ${mib(beforeBytes)} → ${mib(afterBytes)} MiB, ${Math.round(bytesPerConn)} B per socket` +
      (heapPerConn === undefined ? '' : ` (JS heap: ${Math.round(heapPerConn)} B in use, garbage not yet collected included; ${Math.round(heapCommittedPerConn!)} B committed)`),
  )
  return { sockets: opened, beforeBytes, afterBytes, bytesPerConn, heapPerConn, heapCommittedPerConn, openMs: ms }
}

/** JS heap in use and committed (nodejs_heap_size_{used,total}_bytes) from our /metrics (prom-client's defaults). */
async function heap(server: ServerProcess): Promise<{ used: number; total: number } | undefined> {
  try {
    const text = await (await fetch(`${server.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text()
    const read = (name: string) => Number(new RegExp(`^${name}(?:\\{[^}]*\\})?\\s+(\\S+)`, 'm').exec(text)?.[1] ?? NaN)
    const used = read('nodejs_heap_size_used_bytes')
    const total = read('nodejs_heap_size_total_bytes')
    return Number.isFinite(used) && Number.isFinite(total) ? { used, total } : undefined
  } catch {
    return undefined
  }
}

const mib = (bytes: number) => (bytes / 1048576).toFixed(1)

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
  const args = [`-t${settings.threads}`, `-c${settings.connections}`, `-d${durationSec}s`, '--timeout', '10s', '--latency', '-s', script, server.url]
  return new Promise((resolve, reject) => {
    const child = spawn('wrk', args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d: Buffer) => (out += d.toString()))
    child.stderr.on('data', (d: Buffer) => (out += d.toString()))
    const killer = setTimeout(() => child.kill('SIGKILL'), (durationSec + 30) * 1000)
    child.once('error', (err) => reject(new Error(`cannot run wrk: ${err.message}`, { cause: err })))
    child.once('close', (code, signal) => {
      clearTimeout(killer)
      if (code !== 0) return reject(new Error(`wrk failed (${signal ?? `exit ${code}`}): ${out}`))
      try {
        resolve(parseWrkOutput(out))
      } catch (err) {
        reject(err instanceof Error ? err : new Error(String(err)))
      }
    })
  })
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

async function saturation(settings: BenchSettings, pool: ClientPool, server: ServerProcess, world: World, sql: postgres.Sql, clients: number, log: (line: string) => void): Promise<SaturationResult> {
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

async function latency(settings: BenchSettings, pool: ClientPool, server: ServerProcess, world: World, rate: number, prefix: string, clients: number, log: (line: string) => void): Promise<LatencyResult> {
  const perOrg = clients / ORGS
  if (settings.warmupSec > 0) await publishSteady(server, world, rate, settings.warmupSec * 1000, 'w')
  await pool.all({ cmd: 'record', prefix })
  const durationMs = settings.durationSec * 1000
  const { sent, errors, httpMs } = await publishSteady(server, world, rate, durationMs, prefix)
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
  }
  log(
    `${server.name} at ${rate.toFixed(1)} changes/s: ${sent} sent (${errors} failed), ${all.length}/${expected} received; change→receipt p50 ${round(result.p50)} ms, p99 ${round(result.p99)} ms, max ${round(result.max)} ms; ` +
      `HTTP answer p50 ${round(result.httpP50)} ms, p99 ${round(result.httpP99)} ms; receipt after the HTTP answer p50 ${round(result.afterAnswerP50)} ms, p99 ${round(result.afterAnswerP99)} ms`,
  )
  return result
}

// ---------------------------------------------------------------------------------------------------------
// Report

function report(settings: BenchSettings, m: Required<Measured>, clients: number, procs: number, addresses: string[]): ScenarioResult {
  const deliveriesRatio = m.oursSat.deliveriesPerSec / m.peerSat.deliveriesPerSec
  const memoryRatio = m.oursMemory.bytesPerConn / m.rawMemory.bytesPerConn
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
      `HTTP answer p50/p99 ${round(l.httpP50)}/${round(l.httpP99)} ms, receipt after answer p50/p99 ${round(l.afterAnswerP50)}/${round(l.afterAnswerP99)} ms`,
  })
  const memRow = (label: string, r: MemoryResult): ResultRow => ({
    label,
    requestsPerSec: 0,
    latencyP50Ms: NaN,
    latencyP99Ms: NaN,
    errors: 0,
    note:
      `${Math.round(r.bytesPerConn).toLocaleString('en-US')} B/socket (RSS ${mib(r.beforeBytes)} → ${mib(r.afterBytes)} MiB, ${r.sockets} sockets` +
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
    headline: `${checks.map((c) => `${c.what} = ${c.value} (target ${c.target}): ${c.pass ? 'pass' : 'MISSED'}`).join('; ')} [${topology}]`,
    summary: {
      scenario: 'ws-fanout',
      pass: checks.every((c) => c.pass),
      deliveriesRatio: round(deliveriesRatio, 3),
      oursP99Ms: round(p99, 3),
      memoryRatio: round(memoryRatio, 3),
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
