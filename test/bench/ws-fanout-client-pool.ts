/**
 * The load-generating side of the `ws-fanout` benchmark as the scenario drives it: a pool of client processes
 * (ws-fanout-clients.ts, forked with an IPC channel), asked one command at a time.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { root } from './harness.js'
import type { ClientCommand, ClientReply, ClientStats, SocketKind, SocketSpec } from './ws-fanout-clients.js'

type Command = ClientCommand extends infer C ? (C extends { id: number } ? Omit<C, 'id'> : never) : never
export class ClientPool {
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
    const script = join(root, 'test/bench/ws-fanout-clients.ts')
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

export async function openSockets(pool: ClientPool, kind: SocketKind, url: string, perProc: readonly SocketSpec[][], tokens: string[]): Promise<{ opened: number; ms: number }> {
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
