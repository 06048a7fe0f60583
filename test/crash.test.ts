import { randomUUID } from 'node:crypto'
import type { ChildProcess } from 'node:child_process'
import { afterAll, beforeAll, expect, inject, test } from 'vitest'
import { exited, logLine, spawnChild } from './support/child.js'
import { counterKind, ensureCounterTable } from './support/counter-kind.js'
import { eventually } from './support/eventually.js'
import { startTestNode, type TestNode } from './support/node.js'

const TTL = 2_000
const PARTITIONS = 8
const env = () => ({
  DATABASE_URL: inject('databaseUrl'),
  NAMESPACE: `${inject('namespace')}_crash`,
  LEASE_TTL_MS: String(TTL),
  ACTOR_PARTITIONS: String(PARTITIONS),
  ASK_TIMEOUT_MS: '20000',
  HOST: '127.0.0.1',
  PORT: '0',
})

let survivor: TestNode
const children: ChildProcess[] = []

beforeAll(async () => {
  survivor = await startTestNode({ ...env(), ASK_TIMEOUT_MS: '15000' }, { kinds: ({ sql }) => [counterKind(sql)] })
  await ensureCounterTable(survivor.sql)
})
afterAll(async () => {
  for (const child of children) {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  }
  await survivor.shutdown()
})

/** A second node in its own process; resolves once it has taken its share of partitions from the survivor. */
async function startChild(): Promise<{ child: ChildProcess; url: string; partitions: number[] }> {
  const child = spawnChild('test/support/actor-node.ts', { ...env(), NODE_ID: `child-${randomUUID().slice(0, 8)}` })
  children.push(child)
  const ready = await logLine(child, 'actor node ready')
  await eventually(() => survivor.actors.ownedPartitions().length, (n) => n === PARTITIONS / 2, 15_000, 'survivor to hand over half')
  const partitions = [...Array(PARTITIONS).keys()].filter((p) => !survivor.actors.ownedPartitions().includes(p))
  return { child, url: `http://127.0.0.1:${String(ready.port)}`, partitions }
}

function idIn(partitions: number[]): string {
  for (let tries = 0; tries < 10_000; tries++) {
    const id = randomUUID()
    if (partitions.includes(survivor.actors.partitionOf('counter', id))) return id
  }
  throw new Error(`no id found in partitions ${JSON.stringify(partitions)}`)
}

test('a killed node’s actors answer again from another node within lease TTL + 5 s, with no acknowledged write lost', async () => {
  const { child, partitions } = await startChild()
  const ids = Array.from({ length: 10 }, () => idIn(partitions))
  // Written through the survivor, handled by the child (remote), acknowledged.
  for (const id of ids) expect(await survivor.actors.ask('counter', id, { type: 'add', by: 5 })).toEqual({ value: 5, version: 1 })

  const exit = exited(child)
  child.kill('SIGKILL')
  await exit
  const killedAt = performance.now()
  const values = await Promise.all(ids.map((id) => survivor.actors.ask<{ value: number }>('counter', id, { type: 'get' }, { timeoutMs: TTL + 5_000 })))
  expect(performance.now() - killedAt).toBeLessThan(TTL + 5_000)
  expect(values.map((v) => v.value)).toEqual(ids.map(() => 5))
  expect(survivor.actors.ownedPartitions()).toHaveLength(PARTITIONS)
})

test('a paused node does not serve stale state after it resumes, and its stale write is refused by fencing', async () => {
  const { child, url, partitions } = await startChild()
  const id = idIn(partitions)
  expect(await (await post(url, id, { by: 1 })).json()).toEqual({ value: 1, version: 1 })

  // A slow add on the child: it has read version 1 and will write after the pause.
  const waiting = logLine(child, 'slow add waiting')
  const stale = post(url, id, { by: 100, delayMs: 300 })
  await waiting
  child.kill('SIGSTOP')

  // The survivor takes the partition over once the lease expires and writes a newer version.
  const partition = survivor.actors.partitionOf('counter', id)
  await eventually(() => survivor.actors.ownedPartitions(), (o) => o.includes(partition), TTL + 5_000, 'take-over')
  expect(await survivor.actors.ask('counter', id, { type: 'add', by: 10 })).toEqual({ value: 11, version: 2 })

  child.kill('SIGCONT')
  const refused = await stale
  expect(refused.status).toBe(409)
  expect(((await refused.json()) as { code: string }).code).toBe('conflict')

  // Asked through the resumed node's own gateway, the answer comes from the current owner: never its old memory.
  const read = await fetch(`${url}/test/counters/${id}`)
  expect(await read.json()).toEqual({ value: 11, version: 2 })
  const [row] = await survivor.sql<{ value: number; version: number }[]>`select value, version from test_counters where id = ${id}`
  expect(row).toEqual({ value: 11, version: 2 })
  const metrics = await (await fetch(`${url}/metrics`)).text()
  expect(metrics).toMatch(/actor_fencing_conflicts_total\{kind="counter"[^}]*\} 1/)
})

function post(url: string, id: string, body: object): Promise<Response> {
  return fetch(`${url}/test/counters/${id}`, { method: 'POST', body: JSON.stringify(body), headers: { 'content-type': 'application/json' } })
}
