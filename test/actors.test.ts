import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { AppError } from '../core/errors.js'
import { counterKind, ensureCounterTable } from './support/counter-kind.js'
import { eventually } from './support/eventually.js'
import { startTestNode, type TestNode } from './support/node.js'

// Two hosting nodes and one gateway-only node, in one process with separate NATS connections.
const env = () => ({ NAMESPACE: `${inject('namespace')}_act`, LEASE_TTL_MS: '2000', ACTOR_PARTITIONS: '16' })
let a: TestNode
let b: TestNode
let gateway: TestNode
let release!: () => void
const gate = new Promise<void>((r) => (release = r))

beforeAll(async () => {
  const kinds = ({ sql }: Pick<TestNode, 'sql'>) => [
    counterKind(sql, { idleTimeoutMs: 300, gate }),
    counterKind(sql, { name: 'small-counter', mailboxCapacity: 5, gate }),
  ]
  a = await startTestNode(env(), { kinds })
  await ensureCounterTable(a.sql)
  b = await startTestNode(env(), { kinds })
  gateway = await startTestNode({ ...env(), ROLES: 'gateway' }, { kinds })
  await eventually(() => a.actors.ownedPartitions().length + b.actors.ownedPartitions().length, (n) => n === 16, 10_000, 'all partitions owned')
})
afterAll(async () => {
  release()
  await Promise.all([gateway?.shutdown(), a?.shutdown(), b?.shutdown()])
})

const loads = async (id: string) => (await a.sql<{ loads: number }[]>`select loads from test_counters where id = ${id}`)[0]?.loads ?? 0
/** An id whose partition `node` owns, so a test can choose between the local and the remote path. */
const idOwnedBy = (node: TestNode, kind = 'counter') => {
  for (;;) {
    const id = randomUUID()
    // Both kinds land in the same partition only by chance, so the id is checked for the one the test uses.
    if (node.actors.ownedPartitions().includes(node.actors.partitionOf(kind, id))) return id
  }
}

describe('activation', () => {
  test('100 concurrent first messages from three nodes load a cold actor exactly once', async () => {
    const id = randomUUID()
    const callers = [a, b, gateway]
    const replies = await Promise.all(Array.from({ length: 100 }, (_, i) => callers[i % 3]!.actors.ask<{ value: number }>('counter', id, { type: 'get' })))
    expect(replies.every((r) => r.value === 0)).toBe(true)
    expect(await loads(id)).toBe(1)
    const owners = [a, b].filter((n) => n.actors.isActive('counter', id))
    expect(owners).toHaveLength(1)
  })

  test('an idle actor is passivated and comes back with its persisted state', async () => {
    const id = idOwnedBy(a)
    await a.actors.ask('counter', id, { type: 'add', by: 7 })
    expect(a.actors.isActive('counter', id)).toBe(true)
    await eventually(() => a.actors.isActive('counter', id), (active) => !active, 5_000, 'passivation')
    expect(await b.actors.ask('counter', id, { type: 'get' })).toEqual({ value: 7, version: 1 })
    expect(await loads(id)).toBe(2)
  })

  test('the caller principal and request id reach the handler, locally and remotely', async () => {
    const principal = { type: 'user', userId: 'u1', sessionId: 's1' } as const
    for (const caller of [a, b, gateway]) {
      const reply = await caller.actors.ask('counter', idOwnedBy(a), { type: 'whoami' }, { principal, requestId: 'req-42' })
      expect(reply).toEqual({ principal, requestId: 'req-42' })
    }
  })
})

describe('mailbox', () => {
  test('messages from concurrent senders are handled one at a time, each sender in its order', async () => {
    const id = idOwnedBy(a)
    const senders = [a, a, b, gateway]
    await Promise.all(
      senders.map((node, s) => Promise.all(Array.from({ length: 40 }, (_, n) => node.actors.ask('counter', id, { type: 'append', item: `${s}:${n}` })))),
    )
    const seen = await a.actors.ask<string[]>('counter', id, { type: 'appended' })
    expect(seen).toHaveLength(160)
    for (let s = 0; s < senders.length; s++) {
      const mine = seen.filter((item) => item.startsWith(`${s}:`)).map((item) => Number(item.split(':')[1]))
      expect(mine).toEqual(Array.from({ length: 40 }, (_, n) => n))
    }
  })

  test('tells from one ref arrive in order', async () => {
    const id = idOwnedBy(b)
    const ref = a.actors.ref('counter', id)
    for (let n = 0; n < 30; n++) ref.tell({ type: 'append', item: String(n) })
    const seen = await eventually(() => a.actors.ask<string[]>('counter', id, { type: 'appended' }), (s) => s.length === 30, 5_000, '30 tells')
    expect(seen).toEqual(Array.from({ length: 30 }, (_, n) => String(n)))
  })

  test('a handler that fails leaves the state as it was before the message', async () => {
    for (const owner of [a, b]) {
      const id = idOwnedBy(owner)
      await a.actors.ask('counter', id, { type: 'add', by: 5 })
      await expect(a.actors.ask('counter', id, { type: 'refuse-after-compute' })).rejects.toMatchObject({ code: 'conflict' })
      expect(await a.actors.ask('counter', id, { type: 'get' })).toEqual({ value: 5, version: 1 })
      // An unexpected error is answered as internal, and the actor is still alive afterwards.
      await expect(a.actors.ask('counter', id, { type: 'crash' })).rejects.toMatchObject({ code: 'internal' })
      expect(await a.actors.ask('counter', id, { type: 'add', by: 1 })).toEqual({ value: 6, version: 2 })
    }
  })

  test('a full mailbox answers unavailable at once instead of queueing', async () => {
    const id = idOwnedBy(a, 'small-counter')
    await a.actors.ask('small-counter', id, { type: 'get' })
    const blocked = a.actors.ask('small-counter', id, { type: 'wait' }, { timeoutMs: 20_000 })
    const queued = Array.from({ length: 5 }, () => a.actors.ask('small-counter', id, { type: 'get' }, { timeoutMs: 20_000 }))
    for (const caller of [a, gateway]) {
      const started = performance.now()
      const err = await caller.actors.ask('small-counter', id, { type: 'get' }, { timeoutMs: 20_000 }).catch((e: unknown) => e)
      expect(err).toBeInstanceOf(AppError)
      expect((err as AppError).code).toBe('unavailable')
      expect(performance.now() - started).toBeLessThan(500)
    }
    release()
    expect(await blocked).toBe('waited')
    expect(await Promise.all(queued)).toHaveLength(5)
  })
})

describe('deadlines', () => {
  test('a caller gets timeout at its deadline, and a message whose deadline passed in the queue is not run', async () => {
    const slow = await startTestNode({ ...env(), ROLES: 'gateway' })
    try {
      for (const caller of [a, slow]) {
        // Local (a) and remote (slow: gateway only) callers.
        const id = idOwnedBy(b)
        // Keep b's actor busy with a slow add so the next message waits in its mailbox past its deadline.
        const busy = b.actors.ask('counter', id, { type: 'add-slow', by: 1, delayMs: 600 })
        const started = performance.now()
        const late = caller.actors.ask('counter', id, { type: 'add', by: 100 }, { timeoutMs: 200 })
        await expect(late).rejects.toMatchObject({ code: 'timeout' })
        const waited = performance.now() - started
        expect(waited).toBeGreaterThanOrEqual(190)
        expect(waited).toBeLessThan(1_000)
        await busy
        // The timed-out add never ran.
        expect(await a.actors.ask('counter', id, { type: 'get' })).toEqual({ value: 1, version: 1 })
      }
    } finally {
      await slow.shutdown()
    }
  })
})
