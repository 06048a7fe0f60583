import WebSocket from 'ws'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { eventually } from './support/eventually.js'
import { bearer, json, register, type SignedIn } from './support/identity.js'
import { startTestNode, type TestNode } from './support/node.js'
import { addMember, createOrg, createProject, type OrgView } from './support/orgs.js'
import { WsClient, connectAuthed } from './support/ws-client.js'

// One node with tight limits, so each protection can be hit quickly.
let node: TestNode
let owner: SignedIn
let org: OrgView

beforeAll(async () => {
  node = await startTestNode({
    NAMESPACE: `${inject('namespace')}_wsp`,
    CORS_ORIGINS: 'https://app.example.com',
    WS_AUTH_TIMEOUT_MS: '300',
    WS_MAX_FRAME_BYTES: '4096',
    WS_RATE_PER_SECOND: '20',
    WS_RATE_BURST: '20',
    WS_MAX_BAD_FRAMES: '3',
    WS_MAX_BUFFERED_BYTES: '65536',
  })
  owner = await register(node.url)
  org = await createOrg(node.url, owner)
})
afterAll(() => node.shutdown())

const upgrade = (origin?: string) =>
  new Promise<number>((resolve) => {
    const ws = new WebSocket(`${node.url.replace('http', 'ws')}/v1/ws`, origin ? { origin } : {})
    ws.once('open', () => {
      ws.close()
      resolve(101)
    })
    ws.once('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0))
  })

describe('connecting', () => {
  test('the Origin allow-list is checked before the socket opens; no Origin (a server) is allowed', async () => {
    expect(await upgrade('https://evil.example.com')).toBe(403)
    expect(await upgrade('https://app.example.com')).toBe(101)
    expect(await upgrade()).toBe(101)
  })

  test('an unknown subprotocol is refused; v1.msgpack is chosen when offered', async () => {
    await expect(WsClient.connect(node.url, { protocol: 'v2.xml' as 'v1.json' })).rejects.toThrow(/400/)
    const client = await connectAuthed(node.url, owner.accessToken, { protocol: 'v1.msgpack' })
    expect(client.ws.protocol).toBe('v1.msgpack')
    expect((await client.request({ type: 'subscribe', channel: `org:${org.id}` })).type).toBe('ok')
    client.close()
  })

  test('no auth frame in time closes with 4001', async () => {
    const client = await WsClient.connect(node.url)
    expect((await client.closed).code).toBe(4001)
  })

  test('a first frame other than auth, or a bad token, closes with 4001', async () => {
    const early = await WsClient.connect(node.url)
    early.send({ id: 1, type: 'subscribe', channel: `org:${org.id}` })
    expect((await early.closed).code).toBe(4001)
    const forged = await WsClient.connect(node.url)
    forged.send({ type: 'auth', token: `${owner.accessToken.slice(0, -4)}AAAA` })
    expect((await forged.closed).code).toBe(4001)
  })

  test('ready names the user, session and connection', async () => {
    const client = await WsClient.connect(node.url)
    const ready = await client.auth(owner.accessToken)
    expect(ready).toMatchObject({ type: 'ready', userId: owner.user.id, sessionId: expect.any(String), connectionId: expect.any(String) })
    client.send({ type: 'ping' })
    expect(await client.next((f) => f.type === 'pong')).toEqual({ type: 'pong' })
    client.close()
  })

  test('a second auth frame is refused, whether the first is still being checked or done; the socket stays one session', async () => {
    // A token this node has not seen yet, so the first check is not answered from the cache at once.
    const fresh = await register(node.url)
    const client = await WsClient.connect(node.url)
    client.send({ type: 'auth', token: fresh.accessToken })
    client.send({ type: 'auth', token: owner.accessToken })
    client.send({ type: 'auth', token: owner.accessToken })
    const ready = await client.next((f) => f.type === 'ready')
    expect(ready).toMatchObject({ userId: fresh.user.id })
    expect(await client.next((f) => f.type === 'error')).toMatchObject({ code: 'bad_request' })
    expect(await client.next((f) => f.type === 'error')).toMatchObject({ code: 'bad_request' })
    expect(client.frames.filter((f) => f.type === 'ready')).toHaveLength(0)
    // Logging out the fresh session closes the socket: it was indexed under that session, once.
    expect((await fetch(`${node.url}/v1/auth/logout`, json({ refreshToken: fresh.refreshToken }))).status).toBe(204)
    expect((await client.closed).code).toBe(4003)
  })
})

describe('frames', () => {
  test('bad frames get an error frame each; repeated ones close the socket', async () => {
    const client = await connectAuthed(node.url, owner.accessToken)
    client.ws.send('{not json')
    expect(await client.next((f) => f.type === 'error')).toMatchObject({ code: 'validation.malformed_json' })
    client.send({ type: 'teleport' })
    expect(await client.next((f) => f.type === 'error')).toMatchObject({ code: 'validation.failed' })
    // Still usable between bad frames.
    expect((await client.subscribe(`org:${org.id}`)).type).toBe('ok')
    client.send({ id: 'x', type: 'subscribe' })
    expect((await client.closed).code).toBe(1008)
  })

  test('a frame over the size limit closes the connection', async () => {
    const client = await connectAuthed(node.url, owner.accessToken)
    client.send({ id: 1, type: 'rpc', method: 'projects.create', params: { orgId: org.id, name: 'x', description: 'y'.repeat(8_000) } })
    // uWebSockets.js drops the connection outright (no close frame), which a client sees as 1006.
    expect([1006, 1009]).toContain((await client.closed).code)
    expect(await client.next((f) => f.type === 'result').catch(() => 'nothing')).toBe('nothing')
  })

  test('too many frames too fast closes with 4029', async () => {
    const client = await connectAuthed(node.url, owner.accessToken)
    for (let i = 0; i < 60; i++) client.send({ type: 'ping' })
    expect((await client.closed).code).toBe(4029)
  })

  test('subscribing needs membership; a user channel is its user’s only', async () => {
    const stranger = await register(node.url)
    const client = await connectAuthed(node.url, stranger.accessToken)
    expect(await client.subscribe(`org:${org.id}`)).toMatchObject({ type: 'error', code: 'rbac.forbidden' })
    expect(await client.subscribe(`user:${owner.user.id}`)).toMatchObject({ type: 'error', code: 'rbac.forbidden' })
    expect(await client.subscribe('org:not-a-channel')).toMatchObject({ type: 'error', code: 'validation.failed' })
    expect(await client.subscribe(`user:${stranger.user.id}`)).toMatchObject({ type: 'ok' })
    expect(await client.request({ type: 'presence', channel: `org:${org.id}` })).toMatchObject({ type: 'error', code: 'rbac.forbidden' })
    client.close()
  })
})

describe('RPC', () => {
  test('project commands run through the same actor and checks as HTTP', async () => {
    const client = await connectAuthed(node.url, owner.accessToken)
    const created = await client.request({ type: 'rpc', method: 'projects.create', params: { orgId: org.id, name: 'From a socket' } })
    expect(created).toMatchObject({ type: 'result', result: { name: 'From a socket', version: 1, orgId: org.id } })
    const id = (created.result as { id: string }).id
    expect(await client.request({ type: 'rpc', method: 'projects.get', params: { orgId: org.id, id } })).toMatchObject({ result: { id } })
    expect(await client.request({ type: 'rpc', method: 'projects.update', params: { orgId: org.id, id, name: 'Renamed', ifMatch: 1 } })).toMatchObject({ result: { name: 'Renamed', version: 2 } })
    expect(await client.request({ type: 'rpc', method: 'projects.update', params: { orgId: org.id, id, name: 'Stale', ifMatch: 1 } })).toMatchObject({ type: 'error', code: 'conflict' })
    expect(await client.request({ type: 'rpc', method: 'projects.list', params: { orgId: org.id, limit: 100 } })).toMatchObject({ result: { items: expect.arrayContaining([expect.objectContaining({ id })]) } })
    expect(await client.request({ type: 'rpc', method: 'projects.create', params: { orgId: org.id, name: '' } })).toMatchObject({ type: 'error', code: 'validation.failed' })
    expect(await client.request({ type: 'rpc', method: 'projects.explode', params: {} })).toMatchObject({ type: 'error', code: 'not_found' })
    expect(await client.request({ type: 'rpc', method: 'projects.delete', params: { orgId: org.id, id } })).toMatchObject({ type: 'result', result: null })

    const viewer = await addMember(node.url, node.sql, org.id, bearer(owner.accessToken), 'viewer')
    const theirs = await connectAuthed(node.url, viewer.accessToken)
    expect(await theirs.request({ type: 'rpc', method: 'projects.create', params: { orgId: org.id, name: 'nope' } })).toMatchObject({ type: 'error', code: 'rbac.forbidden' })
    const outsider = await connectAuthed(node.url, (await register(node.url)).accessToken)
    expect(await outsider.request({ type: 'rpc', method: 'projects.list', params: { orgId: org.id } })).toMatchObject({ type: 'error', code: 'not_found' })
    for (const c of [client, theirs, outsider]) c.close()
  })
})

describe('slow readers', () => {
  test('a reader that falls too far behind is closed with 4008 while others keep receiving', async () => {
    const channel = `org:${org.id}`
    const slow = await connectAuthed(node.url, owner.accessToken)
    const fast = await connectAuthed(node.url, owner.accessToken)
    await slow.subscribe(channel)
    await fast.subscribe(channel)
    // The slow client stops reading from its TCP socket; the server's buffer for it fills up.
    const raw = (slow.ws as unknown as { _socket: { pause(): void; resume(): void } })._socket
    raw.pause()
    const auth = bearer(owner.accessToken)
    const metric = async () => Number(/^ws_slow_readers_closed_total(?:\{[^}]*\})? (\d+)/m.exec(await (await fetch(`${node.url}/metrics`)).text())?.[1] ?? 0)
    const before = await metric()
    let sent = 0
    await eventually(
      async () => {
        await Promise.all(Array.from({ length: 20 }, () => createProject(node.url, org.id, auth, { name: `bulk ${sent++}`, description: 'z'.repeat(1_900) })))
        return metric()
      },
      (n) => n > before,
      30_000,
      'the slow reader to be closed',
    )
    const got = await fast.events(channel, sent, 10_000)
    expect(got.map((f) => f.seq)).toEqual(got.map((_, i) => (got[0]!.seq as number) + i))
    raw.resume()
    expect((await slow.closed).code).toBe(4008)
    fast.close()
  }, 40_000)
})
