import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { bearer, freshEmail, json, lastEmail, password, problem, register, type SignedIn } from './support/identity.js'
import { eventually } from './support/eventually.js'
import { startTestNode, type TestNode } from './support/node.js'

// Two nodes of one cluster (revocation must reach both), plus single nodes with other settings in namespaces
// of their own: a zero refresh grace window, and tight login throttles.
let a: TestNode
let b: TestNode
let strict: TestNode
const ns = (suffix: string) => `${inject('namespace')}_${suffix}`

beforeAll(async () => {
  a = await startTestNode({ NAMESPACE: ns('id') })
  b = await startTestNode({ NAMESPACE: ns('id') })
  strict = await startTestNode({ NAMESPACE: ns('idstrict'), REFRESH_REUSE_GRACE_MS: '0', LOGIN_MAX_FAILURES: '3' })
})
afterAll(() => Promise.all([a.shutdown(), b.shutdown(), strict.shutdown()]))

const me = (node: TestNode, token: string) => fetch(`${node.url}/v1/users/me`, { headers: bearer(token) })
const refresh = (node: TestNode, refreshToken: string) => fetch(`${node.url}/v1/auth/refresh`, json({ refreshToken }))
const login = (node: TestNode, email: string, pw = password) => fetch(`${node.url}/v1/auth/login`, json({ email, password: pw }))

describe('the whole flow', () => {
  test('register → verify email → login → refresh → logout', async () => {
    const email = freshEmail()
    const registered = await register(a.url, email)
    expect(registered).toMatchObject({ user: { email, name: 'Ada Lovelace', emailVerified: false }, tokenType: 'Bearer', expiresIn: 900 })
    expect(await (await me(a, registered.accessToken)).json()).toMatchObject({ id: registered.user.id, email, emailVerified: false })

    const mail = await lastEmail(a.sql, email, 'email_verify')
    expect(mail?.body).toContain(mail!.token)
    expect((await fetch(`${a.url}/v1/auth/email/verify`, json({ token: mail!.token }))).status).toBe(204)
    expect(await (await me(b, registered.accessToken)).json()).toMatchObject({ emailVerified: true })
    await problem(await fetch(`${a.url}/v1/auth/email/verify`, json({ token: mail!.token })), 400, 'auth.invalid_one_time_token')

    const loggedIn = (await (await login(b, email.toUpperCase())).json()) as SignedIn
    expect(loggedIn.user.id).toBe(registered.user.id)
    const rotated = (await (await refresh(a, loggedIn.refreshToken)).json()) as SignedIn
    expect(rotated.refreshToken).not.toBe(loggedIn.refreshToken)
    expect((await me(a, rotated.accessToken)).status).toBe(200)

    expect((await fetch(`${a.url}/v1/auth/logout`, json({ refreshToken: rotated.refreshToken }))).status).toBe(204)
    await problem(await refresh(a, rotated.refreshToken), 401, 'auth.session_revoked')
    await eventually(async () => (await me(b, rotated.accessToken)).status, (s) => s === 401, 1_000, 'the access token to die on the other node')
    // The registration session is untouched by the logout of the login session.
    expect((await me(a, registered.accessToken)).status).toBe(200)
  })

  test('profile updates honour if-match', async () => {
    const { accessToken, user } = await register(a.url)
    const patch = (body: unknown, headers: Record<string, string> = {}) =>
      fetch(`${a.url}/v1/users/me`, { method: 'PATCH', body: JSON.stringify(body), headers: { 'content-type': 'application/json', ...bearer(accessToken), ...headers } })
    const renamed = (await (await patch({ name: 'Grace Hopper' }, { 'if-match': '1' })).json()) as { name: string; version: number }
    expect(renamed).toMatchObject({ id: user.id, name: 'Grace Hopper', version: 2 })
    await problem(await patch({ name: 'Stale' }, { 'if-match': '1' }), 409, 'conflict')
    await problem(await patch({ email: 'x@example.com' }), 400, 'validation.failed')
    expect(await (await me(b, accessToken)).json()).toMatchObject({ name: 'Grace Hopper' })
  })
})

describe('refresh tokens', () => {
  test('a rotated token presented again within the grace window gets the same answer, and only one rotation happens', async () => {
    const { refreshToken } = await register(a.url)
    const answers = await Promise.all(Array.from({ length: 5 }, (_, i) => refresh(i % 2 ? a : b, refreshToken)))
    expect(answers.map((r) => r.status)).toEqual([200, 200, 200, 200, 200])
    const tokens = new Set(await Promise.all(answers.map(async (r) => ((await r.json()) as SignedIn).refreshToken)))
    expect(tokens.size).toBe(1)
    const [next] = [...tokens]
    expect((await refresh(a, next!)).status).toBe(200)
  })

  test('without a grace window, concurrent refreshes of one token: exactly one wins, and the reuse revokes the session', async () => {
    const { refreshToken } = await register(strict.url)
    const answers = await Promise.all(Array.from({ length: 4 }, () => refresh(strict, refreshToken)))
    const statuses = answers.map((r) => r.status).sort()
    expect(statuses).toEqual([200, 401, 401, 401])
    const winner = (await answers.find((r) => r.status === 200)!.json()) as SignedIn
    // The first loser is the reuse that revokes the session; the later ones find it revoked already.
    const codes = await Promise.all(answers.filter((r) => r.status === 401).map(async (r) => ((await r.json()) as { code: string }).code))
    expect(codes).toContain('auth.refresh_reused')
    for (const code of codes) expect(['auth.refresh_reused', 'auth.session_revoked']).toContain(code)
    // Reuse means theft: the winner's new token dies with the session.
    await problem(await refresh(strict, winner.refreshToken), 401, 'auth.session_revoked')
    expect((await me(strict, winner.accessToken)).status).toBe(401)
  })

  test('a token reused after the grace window revokes the whole session', async () => {
    const { refreshToken } = await register(strict.url)
    const first = (await (await refresh(strict, refreshToken)).json()) as SignedIn
    await problem(await refresh(strict, refreshToken), 401, 'auth.refresh_reused')
    await problem(await refresh(strict, first.refreshToken), 401, 'auth.session_revoked')
    await problem(await me(strict, first.accessToken), 401, 'auth.session_revoked')
  })

  test('unknown and malformed refresh tokens are refused without side effects', async () => {
    await problem(await refresh(a, 'x'.repeat(43)), 401, 'auth.refresh_invalid')
    await problem(await refresh(a, 'short'), 400, 'validation.failed')
  })
})

describe('sessions', () => {
  test('the list shows each sign-in; revoking one kills its refresh token and, on every node, its access token', async () => {
    const email = freshEmail()
    const first = await register(a.url, email)
    const second = (await (await fetch(`${b.url}/v1/auth/login`, json({ email, password }, { 'user-agent': 'test-agent/1' }))).json()) as SignedIn
    const list = (await (await fetch(`${a.url}/v1/auth/sessions`, { headers: bearer(second.accessToken) })).json()) as {
      items: { id: string; current: boolean; userAgent: string | null }[]
    }
    expect(list.items).toHaveLength(2)
    const current = list.items.find((s) => s.current)!
    expect(current.userAgent).toBe('test-agent/1')
    const other = list.items.find((s) => !s.current)!

    const revoke = await fetch(`${b.url}/v1/auth/sessions/${other.id}`, { method: 'DELETE', headers: bearer(second.accessToken) })
    expect(revoke.status).toBe(204)
    await problem(await refresh(a, first.refreshToken), 401, 'auth.session_revoked')
    for (const node of [a, b]) await eventually(async () => (await me(node, first.accessToken)).status, (s) => s === 401, 1_000, 'revocation on every node')
    expect((await me(a, second.accessToken)).status).toBe(200)
    // Another user's session is not found, not forbidden.
    const stranger = await register(a.url)
    await problem(await fetch(`${a.url}/v1/auth/sessions/${current.id}`, { method: 'DELETE', headers: bearer(stranger.accessToken) }), 404, 'not_found')
  })
})

describe('password reset', () => {
  test('forgot → reset revokes every session; the new password works, the old one and the used token do not', async () => {
    const email = freshEmail()
    const first = await register(a.url, email)
    const second = (await (await login(b, email)).json()) as SignedIn
    expect((await fetch(`${a.url}/v1/auth/password/forgot`, json({ email }))).status).toBe(202)
    const mail = await eventually(() => lastEmail(a.sql, email, 'password_reset'), (m) => m !== undefined, 5_000, 'the reset email')
    const reset = (token: string, pw: string) => fetch(`${b.url}/v1/auth/password/reset`, json({ token, password: pw }))
    await problem(await reset(mail!.token, 'short'), 400, 'validation.failed')
    expect((await reset(mail!.token, 'a brand new password')).status).toBe(204)

    for (const s of [first, second]) {
      await problem(await refresh(a, s.refreshToken), 401, 'auth.session_revoked')
      await eventually(async () => (await me(a, s.accessToken)).status, (st) => st === 401, 1_000, 'old access tokens to die')
    }
    await problem(await login(a, email), 401, 'auth.invalid_credentials')
    expect((await login(a, email, 'a brand new password')).status).toBe(200)
    await problem(await reset(mail!.token, 'yet another password'), 400, 'auth.invalid_one_time_token')
  })

  test('forgot answers the same for known and unknown addresses, and mails only the known', async () => {
    const known = freshEmail()
    await register(a.url, known)
    const unknown = freshEmail()
    const answers = await Promise.all([known, unknown].map((email) => fetch(`${a.url}/v1/auth/password/forgot`, json({ email }))))
    expect(answers.map((r) => r.status)).toEqual([202, 202])
    expect(await answers[0]!.text()).toBe(await answers[1]!.text())
    await eventually(() => lastEmail(a.sql, known, 'password_reset'), (m) => m !== undefined, 5_000, 'the reset email')
    expect(await lastEmail(a.sql, unknown, 'password_reset', { timeoutMs: 0 })).toBeUndefined()
  })
})

describe('abuse resistance', () => {
  test('login answers the same, in similar time, for an unknown email and a wrong password', async () => {
    const email = freshEmail()
    await register(a.url, email)
    const timed = async (e: string) => {
      const started = performance.now()
      const res = await login(a, e, 'wrong password!')
      const body = (await res.json()) as Record<string, unknown>
      return { status: res.status, body: { ...body, requestId: undefined }, ms: performance.now() - started }
    }
    const known = await timed(email)
    const unknown = await timed(freshEmail())
    expect(unknown.status).toBe(known.status)
    expect(unknown.body).toEqual(known.body)
    // Both pay for one argon2 verification; neither answers early.
    expect(unknown.ms).toBeGreaterThan(known.ms / 3)
    expect(known.ms).toBeGreaterThan(unknown.ms / 3)
  })

  test('an account is throttled after repeated failures, with retry-after, even for the right password', async () => {
    const email = freshEmail()
    await register(strict.url, email)
    for (let i = 0; i < 3; i++) await problem(await login(strict, email, 'wrong password!'), 401, 'auth.invalid_credentials')
    const limited = await login(strict, email)
    await problem(limited, 429, 'rate_limited')
    expect(Number(limited.headers.get('retry-after'))).toBeGreaterThan(0)
    expect(limited.headers.get('ratelimit-limit')).toBe('3')
    expect(limited.headers.get('ratelimit-remaining')).toBe('0')
  })

  test('a client address is throttled across accounts', async () => {
    const node = await startTestNode({ NAMESPACE: ns('idip'), LOGIN_MAX_ATTEMPTS_PER_IP: '4' })
    try {
      const statuses = []
      for (let i = 0; i < 6; i++) statuses.push((await login(node, freshEmail(), 'whatever password')).status)
      expect(statuses).toEqual([401, 401, 401, 401, 429, 429])
    } finally {
      await node.shutdown()
    }
  })
})

describe('validation', () => {
  test.each([
    ['a short password', { email: freshEmail(), password: 'short', name: 'x' }, 'password'],
    ['a password over 256 bytes', { email: freshEmail(), password: 'é'.repeat(129), name: 'x' }, 'password'],
    ['a bad email', { email: 'not-an-email', password, name: 'x' }, 'email'],
    ['an empty name', { email: freshEmail(), password, name: '  ' }, 'name'],
  ])('registration with %s is 400 and writes nothing', async (_what, body, field) => {
    const res = await fetch(`${a.url}/v1/auth/register`, json(body))
    const p = await problem(res, 400, 'validation.failed')
    expect((p.errors as { path: string }[]).map((e) => e.path)).toContain(field)
    expect(await a.sql`select 1 from users where email = ${body.email}`).toHaveLength(0)
  })

  test('a taken email is 409 in any letter case, and the first account is untouched', async () => {
    const email = freshEmail()
    const first = await register(a.url, email)
    await problem(await fetch(`${b.url}/v1/auth/register`, json({ email: email.toUpperCase(), password, name: 'Other' })), 409, 'auth.email_taken')
    expect(await (await me(a, first.accessToken)).json()).toMatchObject({ name: 'Ada Lovelace' })
    expect(await a.sql`select 1 from users where email = ${email}`).toHaveLength(1)
  })

  test('protected endpoints need a bearer token', async () => {
    const res = await fetch(`${a.url}/v1/users/me`)
    await problem(res, 401, 'auth.unauthenticated')
    expect(res.headers.get('www-authenticate')).toMatch(/^Bearer/)
  })
})
