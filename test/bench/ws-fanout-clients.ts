/**
 * The client side of the `ws-fanout` benchmark: one load-generator process holding many WebSocket clients,
 * driven by the benchmark over Node's IPC channel (started by ws-fanout-client-pool.ts with `fork`,
 * `serialization: 'advanced'`). A load generator, not a server: it lives with the scenario, not the peers.
 *
 * Three kinds of socket, each with the library a real client of that server would use:
 * - `ours`: the `ws` package on `/v1/ws`: auth frame, `ready`, subscribe to the org channel, `ok`;
 * - `raw`: the `ws` package on the raw uWebSockets.js server's `/ws?topic=...` (no frames at all);
 * - `sio`: socket.io-client (which runs `ws` under Node) with the websocket transport only (no long-polling
 *   first), the token in the handshake's `auth`, then `subscribe` with an acknowledgement.
 *
 * Every event frame is parsed (as any real client must) and counted; while a latency prefix is set, an event
 * whose `requestId` starts with it yields one sample: receipt time minus the send time the publisher wrote
 * into the request id (`<prefix>-<ms since epoch, 3 decimals>-<n>`), both read as performance.timeOrigin +
 * performance.now() on the same machine.
 *
 * Exits when its parent goes away.
 */
import { performance } from 'node:perf_hooks'
import { io, type ManagerOptions, type Socket, type SocketOptions } from 'socket.io-client'
import WebSocket from 'ws'

export type SocketKind = 'ours' | 'raw' | 'sio'

export interface SocketSpec {
  /** Index into the command's token list. */
  token: number
  channel: string
  localAddress?: string
}

export type ClientCommand =
  | { id: number; cmd: 'open'; kind: SocketKind; url: string; tokens: string[]; sockets: SocketSpec[]; concurrency: number; timeoutMs: number }
  | { id: number; cmd: 'stats' }
  | { id: number; cmd: 'record'; prefix: string }
  | { id: number; cmd: 'samples' }
  | { id: number; cmd: 'close' }
  | { id: number; cmd: 'clock' }

export interface ClientStats {
  open: number
  deliveries: number
  /** Events that matched the latency prefix so far. */
  matched: number
  /** Sockets that closed without being asked to, by close code (or reason for Socket.IO). */
  dropped: Record<string, number>
  now: number
}

export type ClientReply =
  | { id: number; ok: true; opened: number; failed: number; firstError?: string; ms: number }
  | ({ id: number; ok: true } & ClientStats)
  | { id: number; ok: true; samples: Float64Array; changes: Float64Array; matched: number }
  | { id: number; ok: true; now: number }
  | { id: number; ok: true }
  | { id: number; ok: false; error: string }

interface EventLike {
  type?: unknown
  event?: { requestId?: unknown }
}

const now = () => performance.timeOrigin + performance.now()

let deliveries = 0
let prefix = ''
let samples = new Float64Array(1 << 16)
/** The change number (the request id's last part) of each sample. */
let changes = new Float64Array(1 << 16)
let matched = 0
const dropped: Record<string, number> = {}
const closers = new Set<() => Promise<void>>()
let closing = false

function onEvent(frame: EventLike): void {
  deliveries++
  if (prefix === '') return
  const requestId = frame.event?.requestId
  if (typeof requestId !== 'string' || !requestId.startsWith(prefix)) return
  const dash = requestId.lastIndexOf('-')
  const sent = Number(requestId.slice(prefix.length + 1, dash))
  if (matched === samples.length) {
    const bigger = new Float64Array(samples.length * 2)
    bigger.set(samples)
    samples = bigger
    const more = new Float64Array(changes.length * 2)
    more.set(changes)
    changes = more
  }
  changes[matched] = Number(requestId.slice(dash + 1))
  samples[matched++] = now() - sent
}

const drop = (why: string) => {
  if (!closing) dropped[why] = (dropped[why] ?? 0) + 1
}

function openOurs(url: string, token: string, spec: SocketSpec, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/v1/ws`, spec.localAddress ? { localAddress: spec.localAddress } : {})
    let ready = false
    const timer = setTimeout(() => fail(new Error(`no subscription within ${timeoutMs} ms`)), timeoutMs)
    const fail = (err: Error) => {
      clearTimeout(timer)
      ws.terminate()
      reject(err)
    }
    ws.on('open', () => ws.send(JSON.stringify({ type: 'auth', token })))
    ws.on('error', (err) => {
      if (!ready) fail(err)
    })
    ws.on('message', (data: Buffer) => {
      const frame = JSON.parse(data.toString('utf8')) as EventLike & { id?: unknown; code?: unknown }
      if (frame.type === 'event') return onEvent(frame)
      if (ready) return
      if (frame.type === 'ready') return ws.send(JSON.stringify({ id: 1, type: 'subscribe', channel: spec.channel }))
      if (frame.id === 1 && frame.type === 'ok') {
        ready = true
        clearTimeout(timer)
        const closer = () => closeWs(ws)
        closers.add(closer)
        ws.on('close', (code) => {
          closers.delete(closer)
          drop(String(code))
        })
        return resolve()
      }
      if (frame.type === 'error') fail(new Error(`subscribe answered ${JSON.stringify(frame)}`))
    })
    ws.on('close', (code, reason) => {
      if (!ready) fail(new Error(`closed ${code} ${reason.toString()} before subscribing`))
    })
  })
}

function openRaw(url: string, spec: SocketSpec, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`${url.replace(/^http/, 'ws')}/ws?topic=${encodeURIComponent(spec.channel)}`, spec.localAddress ? { localAddress: spec.localAddress } : {})
    const timer = setTimeout(() => {
      ws.terminate()
      reject(new Error(`not open within ${timeoutMs} ms`))
    }, timeoutMs)
    ws.on('message', (data: Buffer) => onEvent(JSON.parse(data.toString('utf8')) as EventLike))
    ws.once('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    ws.once('open', () => {
      clearTimeout(timer)
      const closer = () => closeWs(ws)
      closers.add(closer)
      ws.on('close', (code) => {
        closers.delete(closer)
        drop(String(code))
      })
      resolve()
    })
  })
}

function closeWs(ws: WebSocket): Promise<void> {
  if (ws.readyState === WebSocket.CLOSED) return Promise.resolve()
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      ws.terminate()
      resolve()
    }, 5_000)
    ws.once('close', () => {
      clearTimeout(timer)
      resolve()
    })
    ws.close()
  })
}

interface SioServerToClient {
  event(frame: EventLike): void
}
interface SioClientToServer {
  subscribe(channel: string, ack: (answer: { ok?: true; error?: string }) => void): void
}

function openSio(url: string, token: string, spec: SocketSpec, timeoutMs: number): Promise<void> {
  // localAddress is passed through to `ws` by engine.io-client, though its types do not list it.
  const options: Partial<ManagerOptions & SocketOptions> & { localAddress?: string } = {
    transports: ['websocket'],
    auth: { token },
    forceNew: true,
    reconnection: false,
    timeout: timeoutMs,
    ...(spec.localAddress ? { localAddress: spec.localAddress } : {}),
  }
  const socket: Socket<SioServerToClient, SioClientToServer> = io(url, options)
  return new Promise((resolve, reject) => {
    const fail = (err: Error) => {
      socket.disconnect()
      reject(err)
    }
    socket.once('connect_error', (err) => fail(err))
    socket.once('connect', () => {
      socket
        .timeout(timeoutMs)
        .emitWithAck('subscribe', spec.channel)
        .then(
          (answer) => {
            if (!answer.ok) return fail(new Error(`subscribe answered ${JSON.stringify(answer)}`))
            const closer = () =>
              new Promise<void>((done) => {
                socket.once('disconnect', () => done())
                socket.disconnect()
                if (!socket.connected) done()
              })
            closers.add(closer)
            socket.on('disconnect', (reason) => {
              closers.delete(closer)
              drop(reason)
            })
            resolve()
          },
          (err: unknown) => fail(err instanceof Error ? err : new Error(String(err))),
        )
    })
    socket.on('event', onEvent)
  })
}

async function open(c: Extract<ClientCommand, { cmd: 'open' }>): Promise<ClientReply> {
  const started = now()
  let opened = 0
  let failed = 0
  let firstError: string | undefined
  let next = 0
  const worker = async () => {
    while (next < c.sockets.length) {
      const spec = c.sockets[next++]!
      const token = c.tokens[spec.token]!
      try {
        if (c.kind === 'ours') await openOurs(c.url, token, spec, c.timeoutMs)
        else if (c.kind === 'raw') await openRaw(c.url, spec, c.timeoutMs)
        else await openSio(c.url, token, spec, c.timeoutMs)
        opened++
      } catch (err) {
        failed++
        firstError ??= err instanceof Error ? err.message : String(err)
      }
    }
  }
  closing = false
  await Promise.all(Array.from({ length: Math.max(1, c.concurrency) }, worker))
  return { id: c.id, ok: true, opened, failed, ...(firstError ? { firstError } : {}), ms: now() - started }
}

async function run(c: ClientCommand): Promise<ClientReply> {
  switch (c.cmd) {
    case 'open':
      return open(c)
    case 'stats':
      return { id: c.id, ok: true, open: closers.size, deliveries, matched, dropped: { ...dropped }, now: now() }
    case 'record':
      prefix = c.prefix
      matched = 0
      return { id: c.id, ok: true }
    case 'samples': {
      const taken = samples.slice(0, matched)
      const reply = { id: c.id, ok: true as const, samples: taken, changes: changes.slice(0, matched), matched }
      prefix = ''
      matched = 0
      return reply
    }
    case 'close':
      closing = true
      await Promise.all([...closers].map((close) => close()))
      closers.clear()
      for (const key of Object.keys(dropped)) delete dropped[key]
      deliveries = 0
      return { id: c.id, ok: true }
    case 'clock':
      return { id: c.id, ok: true, now: now() }
  }
}

process.on('message', (message: ClientCommand) => {
  run(message).then(
    (reply) => process.send!(reply),
    (err: unknown) => process.send!({ id: message.id, ok: false, error: err instanceof Error ? err.message : String(err) }),
  )
})
process.on('disconnect', () => process.exit(0))
