import { randomUUID } from 'node:crypto'
import { afterAll, describe, expect, inject, test } from 'vitest'
import { counterKind, ensureCounterTable } from './support/counter-kind.js'
import { eventually } from './support/eventually.js'
import { startTestNode, type TestNode } from './support/node.js'

const PARTITIONS = 64
const env = (suffix: string) => ({ NAMESPACE: `${inject('namespace')}_${suffix}`, LEASE_TTL_MS: '2000', ACTOR_PARTITIONS: String(PARTITIONS) })
const kinds = ({ sql }: Pick<TestNode, 'sql'>) => [counterKind(sql)]
const started: TestNode[] = []
afterAll(() => Promise.all(started.map((n) => n.shutdown())))

async function start(suffix: string): Promise<TestNode> {
  const node = await startTestNode(env(suffix), { kinds })
  started.push(node)
  return node
}

/** Every partition held by exactly one node, and each node holding ⌊P/N⌋ or ⌈P/N⌉. */
function balanced(nodes: TestNode[]): boolean {
  const owned = nodes.map((n) => n.actors.ownedPartitions())
  const all = owned.flat()
  const fair = owned.every((o) => o.length === Math.floor(PARTITIONS / nodes.length) || o.length === Math.ceil(PARTITIONS / nodes.length))
  return fair && all.length === PARTITIONS && new Set(all).size === PARTITIONS
}
const counts = (nodes: TestNode[]) => nodes.map((n) => n.actors.ownedPartitions().length)

describe('placement', () => {
  test('three nodes spread partitions evenly; a fourth joining and one leaving rebalance them', async () => {
    const nodes = [await start('spread'), await start('spread'), await start('spread')]
    await eventually(() => counts(nodes), () => balanced(nodes), 15_000, '3 balanced nodes')
    expect(counts(nodes).sort()).toEqual([21, 21, 22])

    const fourth = await start('spread')
    nodes.push(fourth)
    await eventually(() => counts(nodes), () => balanced(nodes), 15_000, '4 balanced nodes')
    expect(counts(nodes)).toEqual([16, 16, 16, 16])

    const leaving = nodes.shift()!
    await leaving.shutdown()
    await eventually(() => counts(nodes), () => balanced(nodes), 15_000, '3 balanced nodes after one left')
    expect(counts(nodes).sort()).toEqual([21, 21, 22])
  })

  test('a node that leaves hands its partitions over without failing a message in flight', async () => {
    const [a, b] = [await start('handover'), await start('handover')]
    await ensureCounterTable(a.sql)
    const caller = await startTestNode({ ...env('handover'), ROLES: 'gateway' })
    started.push(caller)
    await eventually(() => counts([a, b]), () => balanced([a, b]), 15_000, '2 balanced nodes')

    const ids = Array.from({ length: 20 }, () => randomUUID())
    let stop = false
    let acknowledged = 0
    const failures: unknown[] = []
    // Writers keep adding to every counter while b leaves; each acknowledged add must be in the database.
    const writers = ids.map(async (id) => {
      while (!stop) {
        try {
          await caller.actors.ask('counter', id, { type: 'add', by: 1 }, { timeoutMs: 10_000 })
          acknowledged++
        } catch (err) {
          failures.push(err)
        }
      }
    })
    await eventually(() => acknowledged, (n) => n > 200, 10_000, 'writes before the hand-over')
    await b.shutdown()
    const afterLeave = acknowledged
    await eventually(() => acknowledged, (n) => n > afterLeave + 200, 10_000, 'writes after the hand-over')
    stop = true
    await Promise.all(writers)

    expect(failures).toEqual([])
    // A partition whose release fell back to lease expiry (a slow handler at the deadline) arrives within the TTL.
    await eventually(() => a.actors.ownedPartitions().length, (n) => n === PARTITIONS, 2_000 + 5_000, 'every partition on the remaining node')
    const rows = await a.sql<{ total: string }[]>`select coalesce(sum(value), 0) as total from test_counters where id in ${a.sql(ids)}`
    expect(Number(rows[0]!.total)).toBe(acknowledged)
  })

  test('a gateway-only node hosts nothing but can call every actor', async () => {
    const host = await start('gatewayonly')
    await ensureCounterTable(host.sql)
    const gateway = await startTestNode({ ...env('gatewayonly'), ROLES: 'gateway' }, { kinds })
    started.push(gateway)
    await eventually(() => host.actors.ownedPartitions().length, (n) => n === PARTITIONS, 15_000, 'host owns everything')
    expect(gateway.actors.ownedPartitions()).toEqual([])
    const id = randomUUID()
    expect(await gateway.actors.ask('counter', id, { type: 'add', by: 3 })).toEqual({ value: 3, version: 1 })
    expect(host.actors.isActive('counter', id)).toBe(true)
    expect(gateway.actors.isActive('counter', id)).toBe(false)
  })
})
