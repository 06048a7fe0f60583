import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { logLine, spawnMain } from './support/child.js'
import { eventually } from './support/eventually.js'
import { bearer, json, register, type SignedIn } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { addMember, call, createOrg, createProject, expectJson, type OrgView } from './support/orgs.js'
import { scratchDatabase } from './support/services.js'
import { startTcpProxy, type TcpProxy } from './support/tcp-proxy.js'
import { connectAuthed, type Frame, type WsClient } from './support/ws-client.js'

// Two nodes in process (A hosts actors and serves, B as well), and gateway-only child processes that tests kill.
const namespace = `${inject('namespace')}_rt`
let a: TestNode
let b: TestNode
const clients: WsClient[] = []
const children: ChildProcess[] = []

beforeAll(async () => {
  a = await startTestNode({ NAMESPACE: namespace, PRESENCE_TTL_MS: '1500' })
  b = await startTestNode({ NAMESPACE: namespace, PRESENCE_TTL_MS: '1500' })
})
afterAll(async () => {
  for (const c of clients) c.close()
  for (const child of children) child.kill('SIGKILL')
  await Promise.all([a.shutdown(), b.shutdown()])
})

const ws = async (node: { url: string }, user: SignedIn, protocol?: 'v1.json' | 'v1.msgpack') => {
  const client = await connectAuthed(node.url, user.accessToken, protocol ? { protocol } : {})
  clients.push(client)
  return client
}

async function world(): Promise<{ owner: SignedIn; org: OrgView; channel: string }> {
  const owner = await register(a.url)
  const org = await createOrg(a.url, owner)
  return { owner, org, channel: `org:${org.id}` }
}

/** A gateway-only node in its own process: killing it loses sockets, never actors. */
async function startGateway(extra: Record<string, string> = {}): Promise<{ url: string; child: ChildProcess }> {
  const child = spawnMain({
    DATABASE_URL: inject('databaseUrl'),
    NAMESPACE: namespace,
    ROLES: 'gateway',
    HOST: '127.0.0.1',
    PORT: '0',
    LOG_LEVEL: 'info',
    PRESENCE_TTL_MS: '1500',
    NODE_ID: `gw-${randomUUID().slice(0, 8)}`,
    ...extra,
  })
  children.push(child)
  const started = await logLine(child, 'node started')
  return { url: `http://127.0.0.1:${started.port as number}`, child }
}

const seqs = (frames: Frame[]) => frames.map((f) => f.seq as number)
const consecutive = (from: number, count: number) => Array.from({ length: count }, (_, i) => from + i)

describe('delivery', () => {
  test('a change made on A reaches subscribers on A and B once each, in order, with gap-free seq, in JSON and MessagePack alike', async () => {
    const { owner, org, channel } = await world()
    const onA = await ws(a, owner)
    const onB = await ws(b, owner, 'v1.msgpack')
    expect((await onA.subscribe(channel)).type).toBe('ok')
    expect((await onB.subscribe(channel)).type).toBe('ok')
    const auth = bearer(owner.accessToken)
    const made: string[] = []
    for (let i = 0; i < 10; i++) made.push((await createProject(i % 2 ? b.url : a.url, org.id, auth, { name: `change ${i}` })).id)
    for (const client of [onA, onB]) {
      const events = await client.events(channel, 10)
      expect(seqs(events)).toEqual(consecutive(seqs(events)[0]!, 10))
      expect(events.map((e) => (e.event as { data: { id: string } }).data.id)).toEqual(made)
      expect(events[0]!.event).toMatchObject({ type: 'project.created', at: expect.any(String), requestId: expect.any(String) })
    }
    // Nothing more was sent: the next change is the very next frame.
    await createProject(a.url, org.id, auth, { name: 'one more' })
    for (const client of [onA, onB]) {
      const next = await client.next((f) => f.type === 'event')
      expect((next.event as { data: { name: string } }).data.name).toBe('one more')
    }
  })

  test('one socket on several channels: each delivers its own events, and dropping one (the first or a later one) leaves the others', async () => {
    const owner = await register(a.url)
    const auth = bearer(owner.accessToken)
    const [first, second] = [await createOrg(a.url, owner), await createOrg(a.url, owner)]
    const channels = [`org:${first.id}`, `org:${second.id}`, `user:${owner.user.id}`]
    const client = await ws(b, owner)
    for (const channel of channels) expect((await client.subscribe(channel)).type).toBe('ok')
    // Witnesses on the same node: once one has an event, the client would have it too if still subscribed.
    const witnesses = [await ws(b, owner), await ws(b, owner)]
    for (const [i, witness] of witnesses.entries()) expect((await witness.subscribe(channels[i]!)).type).toBe('ok')
    const named = (name: string) => (f: Frame) => f.type === 'event' && (f.event as { data: { name?: string } }).data.name === name
    // A second subscribe to a channel already held is just ok.
    expect((await client.subscribe(channels[1]!)).type).toBe('ok')
    const changed = async (org: OrgView, name: string) => {
      await createProject(a.url, org.id, auth, { name })
      return client.next(named(name))
    }
    expect((await changed(first, 'to the first')).channel).toBe(channels[0])
    expect((await changed(second, 'to the second')).channel).toBe(channels[1])

    // The first channel goes; the second still delivers, the first no longer does.
    expect((await client.request({ type: 'unsubscribe', channel: channels[0] })).type).toBe('ok')
    await createProject(a.url, first.id, auth, { name: 'unheard' })
    await witnesses[0]!.next(named('unheard'))
    expect((await changed(second, 'still heard')).channel).toBe(channels[1])
    expect(client.frames.some(named('unheard'))).toBe(false)
    // Back again, and then the later one goes.
    expect((await client.subscribe(channels[0]!)).type).toBe('ok')
    expect((await changed(first, 'heard again')).channel).toBe(channels[0])
    expect((await client.request({ type: 'unsubscribe', channel: channels[1] })).type).toBe('ok')
    await createProject(a.url, second.id, auth, { name: 'unheard either' })
    await witnesses[1]!.next(named('unheard either'))
    expect((await changed(first, 'first only')).channel).toBe(channels[0])
    expect(client.frames.some(named('unheard either'))).toBe(false)
  })

  test('a client that reconnects with since gets exactly what it missed, then live events, with no gap or duplicate', async () => {
    const { owner, org, channel } = await world()
    const auth = bearer(owner.accessToken)
    const first = await ws(a, owner)
    await first.subscribe(channel)
    await createProject(a.url, org.id, auth)
    const seen = seqs(await first.events(channel, 1))
    first.close()
    await first.closed
    // Changes go on while it is away.
    for (let i = 0; i < 5; i++) await createProject(a.url, org.id, auth, { name: `while away ${i}` })
    const again = await ws(b, owner)
    const writes = Promise.all(Array.from({ length: 5 }, (_, i) => createProject(a.url, org.id, auth, { name: `during resume ${i}` })))
    expect((await again.subscribe(channel, seen.at(-1))).type).toBe('ok')
    await writes
    const resumed = await again.events(channel, 10)
    expect(seqs(resumed)).toEqual(consecutive(seen.at(-1)! + 1, 10))
    await createProject(b.url, org.id, auth)
    expect(seqs(await again.events(channel, 1))).toEqual([seen.at(-1)! + 11])
  })

  test('a resume from before the kept history answers history.expired', async () => {
    const small = await startTestNode({ NAMESPACE: `${inject('namespace')}_rtsmall`, EVENTS_MAX_PER_CHANNEL: '10' })
    try {
      const owner = await register(small.url)
      const org = await createOrg(small.url, owner)
      const auth = bearer(owner.accessToken)
      for (let i = 0; i < 14; i++) await createProject(small.url, org.id, auth)
      const client = await connectAuthed(small.url, owner.accessToken)
      clients.push(client)
      // 15 events (the creation and 14 projects); the stream keeps the last 10, 6 to 15.
      expect(await client.subscribe(`org:${org.id}`, 2)).toMatchObject({ type: 'error', code: 'history.expired' })
      expect(await client.subscribe(`org:${org.id}`, 5)).toMatchObject({ type: 'ok' })
      expect(seqs(await client.events(`org:${org.id}`, 10))).toEqual(consecutive(6, 10))
    } finally {
      await small.shutdown()
    }
  })
})

describe('the user channel', () => {
  test("a user's own changes and session events arrive on user:<id>, in order, on every node", async () => {
    const user = await register(a.url)
    const channel = `user:${user.user.id}`
    const onB = await ws(b, user)
    await onB.subscribe(channel, 0)
    // Registration opened the first session.
    expect((await onB.events(channel, 1))[0]).toMatchObject({ seq: 1, event: { type: 'session.created' } })
    const renamed = await fetch(`${a.url}/v1/users/me`, { method: 'PATCH', body: JSON.stringify({ name: 'Renamed' }), headers: { 'content-type': 'application/json', ...bearer(user.accessToken) } })
    expect(renamed.status).toBe(200)
    const login = (await (await fetch(`${a.url}/v1/auth/login`, json({ email: user.user.email, password: 'correct horse battery staple' }))).json()) as SignedIn
    expect((await fetch(`${a.url}/v1/auth/logout`, json({ refreshToken: login.refreshToken }))).status).toBe(204)
    const events = await onB.events(channel, 3)
    expect(events.map((e) => [e.seq, (e.event as { type: string }).type])).toEqual([
      [2, 'user.updated'],
      [3, 'session.created'],
      [4, 'session.revoked'],
    ])
    expect((events[0]!.event as { data: { name: string } }).data.name).toBe('Renamed')
  })
})

describe('the relay', () => {
  let proxy: TcpProxy
  let host: TestNode
  let gateway: TestNode
  let db: Awaited<ReturnType<typeof scratchDatabase>>
  beforeAll(async () => {
    // A database of its own: every relay of this run scans its database for unpublished events, and nodes of
    // another namespace would publish these into theirs (one database serves one namespace in production).
    db = await scratchDatabase(inject('databaseUrl'))
    const target = new URL(process.env.TEST_NATS_URL ?? 'nats://127.0.0.1:4222')
    proxy = await startTcpProxy(target.hostname, Number(target.port || 4222))
    const rly = `${inject('namespace')}_rly`
    // The only actor host reaches NATS through the proxy; the gateway with the subscriber reaches it directly.
    host = await startTestNode({ NAMESPACE: rly, DATABASE_URL: db.url, NATS_URL: `nats://127.0.0.1:${proxy.port}`, OUTBOX_RELAY_INTERVAL_MS: '200', LEASE_TTL_MS: '20000' })
    gateway = await startTestNode({ NAMESPACE: rly, DATABASE_URL: db.url, ROLES: 'gateway' })
  })
  afterAll(async () => {
    await proxy.restore()
    await Promise.all([host.shutdown(), gateway.shutdown()])
    await proxy.close()
    await db.drop()
  })

  test('a change committed while its node could not publish is delivered once publishing works again', async () => {
    const owner = await register(host.url)
    const org = await createOrg(host.url, owner)
    const channel = `org:${org.id}`
    const subscriber = await connectAuthed(gateway.url, owner.accessToken)
    clients.push(subscriber)
    await subscriber.subscribe(channel, 0)
    expect(seqs(await subscriber.events(channel, 1))).toEqual([1])

    await proxy.cut()
    const during = await createProject(host.url, org.id, bearer(owner.accessToken), { name: 'committed during the outage' })
    const [row] = await host.sql<{ published: Date | null }[]>`select published_at as published from outbox where channel = ${channel} and seq = 2`
    expect(row?.published).toBeNull()
    await proxy.restore()

    const delivered = await subscriber.events(channel, 1, 15_000)
    expect(delivered[0]).toMatchObject({ seq: 2, event: { type: 'project.created', data: { id: during.id } } })
    await createProject(host.url, org.id, bearer(owner.accessToken), { name: 'after' })
    expect(seqs(await subscriber.events(channel, 1, 5_000))).toEqual([3])
  }, 30_000)
})

describe('presence', () => {
  test('joins and leaves across nodes, counted per user; a killed node’s users leave', async () => {
    const { owner, org, channel } = await world()
    const other = await addMember(a.url, a.sql, org.id, bearer(owner.accessToken), 'member')
    const watcher = await ws(a, owner)
    await watcher.subscribe(channel)
    await eventually(async () => (await watcher.request({ type: 'presence', channel })).members, (m) => JSON.stringify(m) === JSON.stringify([{ userId: owner.user.id, connections: 1 }]), 5_000, 'the watcher itself to be present')

    const second = await ws(b, owner)
    await second.subscribe(channel)
    const gw = await startGateway()
    const remote = await ws(gw, other)
    await remote.subscribe(channel)
    // The node that started watching last knows, as soon as the subscription is on, of the connections that were
    // already there (from the stored entries, not from a later heartbeat).
    expect((await remote.request({ type: 'presence', channel })).members).toContainEqual({ userId: owner.user.id, connections: 2 })
    // (The watcher may first see its own join, depending on whether its topic or its presence came first.)
    const mentions = (f: Frame, key: 'joins' | 'leaves') => f.type === 'presence.diff' && (f[key] as string[]).includes(other.user.id)
    expect(await watcher.next((f) => mentions(f, 'joins'), 5_000)).toMatchObject({ joins: [other.user.id], leaves: [] })
    const members = await eventually(
      async () => (await watcher.request({ type: 'presence', channel })).members as { userId: string; connections: number }[],
      (m) => m.length === 2 && m.some((x) => x.userId === owner.user.id && x.connections === 2),
      5_000,
      'both users with their connection counts',
    )
    expect(members).toEqual(expect.arrayContaining([{ userId: owner.user.id, connections: 2 }, { userId: other.user.id, connections: 1 }]))

    // A second connection closing is not a leave; the node dying is.
    second.close()
    gw.child.kill('SIGKILL')
    const diff = await watcher.next((f) => mentions(f, 'leaves'), 6_000)
    expect(diff).toMatchObject({ joins: [], leaves: [other.user.id] })
  }, 30_000)
})

describe('subscription churn', () => {
  test('bursts of subscribe and unsubscribe frames, then a close, leave nothing behind: no presence, no subscription', async () => {
    const { owner, org, channel } = await world()
    const other = await addMember(a.url, a.sql, org.id, bearer(owner.accessToken), 'member')
    const watcher = await ws(a, owner)
    await watcher.subscribe(channel)
    const gauge = async () => Number(/^ws_subscriptions(?:\{[^}]*\})? (\d+)/m.exec(await (await fetch(`${a.url}/metrics`)).text())?.[1] ?? NaN)
    const before = await gauge()
    const flapper = await ws(a, other)
    // Not awaited one by one: each subscribe may still be setting up when the next frames arrive.
    for (let i = 0; i < 20; i++) {
      flapper.send({ id: 3 * i, type: 'subscribe', channel })
      flapper.send({ id: 3 * i + 1, type: 'unsubscribe', channel })
      flapper.send({ id: 3 * i + 2, type: 'subscribe', channel })
    }
    await flapper.next((f) => f.id === 59)
    flapper.close()
    await flapper.closed
    await eventually(gauge, (n) => n === before, 5_000, 'the subscription count to be back')
    await eventually(
      async () => (await watcher.request({ type: 'presence', channel })).members,
      (m) => JSON.stringify(m) === JSON.stringify([{ userId: owner.user.id, connections: 1 }]),
      5_000,
      'only the watcher to be present',
    )
  })
})

describe('revocation on open sockets', () => {
  test('a role change that takes away access and a removal unsubscribe within 1 s on every node', async () => {
    const { owner, org, channel } = await world()
    const auth = bearer(owner.accessToken)
    await expectJson(await call(a.url, auth, { method: 'POST', path: `/v1/orgs/${org.id}/roles`, body: { name: 'blind', permissions: ['projects:read'] } }), 201)
    const first = await addMember(a.url, a.sql, org.id, auth, 'member')
    const second = await addMember(a.url, a.sql, org.id, auth, 'member')
    const sockets = { first: [await ws(a, first), await ws(b, first)], second: [await ws(a, second), await ws(b, second)] }
    for (const s of [...sockets.first, ...sockets.second]) await s.subscribe(channel)

    let started = performance.now()
    await expectJson(await call(b.url, auth, { method: 'PATCH', path: `/v1/orgs/${org.id}/members/${first.user.id}`, body: { roles: ['blind'] } }), 200)
    for (const s of sockets.first) expect(await s.next((f) => f.type === 'unsubscribed', 1_000)).toEqual({ type: 'unsubscribed', channel, reason: 'forbidden' })
    expect(performance.now() - started).toBeLessThan(1_000)

    started = performance.now()
    expect((await call(a.url, auth, { method: 'DELETE', path: `/v1/orgs/${org.id}/members/${second.user.id}` })).status).toBe(204)
    for (const s of sockets.second) expect(await s.next((f) => f.type === 'unsubscribed', 1_000)).toEqual({ type: 'unsubscribed', channel, reason: 'removed' })
    expect(performance.now() - started).toBeLessThan(1_000)

    // No further events reach them.
    await createProject(a.url, org.id, auth)
    const owners = await ws(a, owner)
    await owners.subscribe(channel, 0)
    await owners.events(channel, 1)
    for (const s of [...sockets.first, ...sockets.second]) expect(s.frames.filter((f) => f.type === 'event' && (f.event as { type: string }).type === 'project.created')).toEqual([])
  })

  test('revoking a session closes its sockets with 4003 within 1 s on every node', async () => {
    const user = await register(a.url)
    const sockets = [await ws(a, user), await ws(b, user)]
    const started = performance.now()
    expect((await fetch(`${a.url}/v1/auth/logout`, json({ refreshToken: user.refreshToken }))).status).toBe(204)
    for (const s of sockets) expect((await s.closed).code).toBe(4003)
    expect(performance.now() - started).toBeLessThan(1_000)
  })
})

describe('node loss', () => {
  test('clients of a gateway that dies reconnect elsewhere and resume with since, missing nothing', async () => {
    const { owner, org, channel } = await world()
    const auth = bearer(owner.accessToken)
    const gw = await startGateway()
    const client = await ws(gw, owner)
    await client.subscribe(channel)
    await createProject(a.url, org.id, auth)
    const seen = seqs(await client.events(channel, 1))
    gw.child.kill('SIGKILL')
    await client.closed
    for (let i = 0; i < 4; i++) await createProject(b.url, org.id, auth, { name: `after the crash ${i}` })
    const resumed = await ws(a, owner)
    await resumed.subscribe(channel, seen.at(-1))
    expect(seqs(await resumed.events(channel, 4))).toEqual(consecutive(seen.at(-1)! + 1, 4))
  }, 30_000)
})

test('the real-time metrics are on /metrics', async () => {
  const text = await (await fetch(`${a.url}/metrics`)).text()
  for (const name of ['ws_connections', 'ws_subscriptions', 'ws_events_delivered_total', 'ws_events_replayed_total', 'ws_slow_readers_closed_total', 'ws_presence_users', 'events_relay_lag_seconds']) {
    expect(text).toMatch(new RegExp(`^${name}(\\{[^}]*\\})? `, 'm'))
  }
})
