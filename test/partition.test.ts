import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, expect, inject, test } from 'vitest'
import { counterKind, ensureCounterTable } from './support/counter-kind.js'
import { eventually } from './support/eventually.js'
import { startTestNode, type TestNode } from './support/node.js'
import { natsUrl } from './support/services.js'
import { proxyFor, type TcpProxy } from './support/tcp-proxy.js'

// Node `cut` reaches NATS through a proxy the test can silence; `healthy` and the gateway `caller` go direct.
const TTL = 2_000
const env = () => ({ NAMESPACE: `${inject('namespace')}_part`, LEASE_TTL_MS: String(TTL), ACTOR_PARTITIONS: '8', ASK_TIMEOUT_MS: '8000' })
const kinds = ({ sql }: Pick<TestNode, 'sql'>) => [counterKind(sql)]
let proxy: TcpProxy
let cut: TestNode
let healthy: TestNode
let caller: TestNode

beforeAll(async () => {
  let url: string
  ;({ proxy, url } = await proxyFor(natsUrl, 4222))
  cut = await startTestNode({ ...env(), NATS_URL: url }, { kinds })
  await ensureCounterTable(cut.sql)
  healthy = await startTestNode(env(), { kinds })
  caller = await startTestNode({ ...env(), ROLES: 'gateway' })
  await eventually(() => cut.actors.ownedPartitions().length, (n) => n === 4, 15_000, 'an even split')
})
afterAll(async () => {
  // Reset the swallowed connection so the node reconnects at once instead of waiting out its ping timeout.
  await proxy.cut()
  await proxy.restore()
  await Promise.all([caller.shutdown(), healthy.shutdown(), cut.shutdown()])
  await proxy.close()
})

const idOn = (node: TestNode) => {
  for (;;) {
    const id = randomUUID()
    if (node.actors.ownedPartitions().includes(node.actors.partitionOf('counter', id))) return id
  }
}

test('a node silently cut off from NATS stops running queued messages when its lease runs out, and its actors answer from the other node', async () => {
  const ids = Array.from({ length: 6 }, () => idOn(cut))
  const id = ids[0]!
  await cut.actors.ask('counter', id, { type: 'get' })
  // A slow message outlives the lease; five more wait behind it.
  const slow = cut.actors.ask('counter', id, { type: 'add-slow', by: 100, delayMs: TTL + 500 })
  const queued = Array.from({ length: 5 }, () => cut.actors.ask('counter', id, { type: 'add', by: 1 }).then(() => 'ran', () => 'refused'))
  proxy.blackhole()

  const partition = cut.actors.partitionOf('counter', id)
  await eventually(() => healthy.actors.ownedPartitions(), (o) => o.includes(partition), TTL + 5_000, 'take-over by the healthy node')
  await slow.catch(() => undefined)
  // None of the queued adds ran on the cut-off node after its lease lapsed.
  expect(await Promise.all(queued)).toEqual(['refused', 'refused', 'refused', 'refused', 'refused'])
  const [row] = await healthy.sql<{ value: number }[]>`select value from test_counters where id = ${id}`
  expect(row!.value).toBe(100)

  // The NATS server still believes the cut-off node is subscribed; callers must reach the new owner anyway.
  const answers = await Promise.all(ids.map((i) => caller.actors.ask('counter', i, { type: 'get' }, { timeoutMs: 4_000 }).then(() => 'ok', (e: { code?: string }) => e.code)))
  expect(answers).toEqual(ids.map(() => 'ok'))
  expect(cut.actors.ownedPartitions()).not.toContain(partition)
})
