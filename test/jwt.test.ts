import { randomUUID } from 'node:crypto'
import {
  decodeJwt,
  decodeProtectedHeader,
  exportJWK,
  exportPKCS8,
  exportSPKI,
  generateKeyPair,
  importJWK,
  SignJWT,
  type CryptoKey,
  type JWK,
  type JWTHeaderParameters,
  type JWTPayload,
} from 'jose'
import { afterAll, beforeAll, describe, expect, inject, test } from 'vitest'
import { startTestNode, type TestNode } from './support/node.js'

// Access token verification attacked from the outside: every forged, altered or misaddressed token is answered
// 401 with a problem document and a `www-authenticate` challenge, never 200 and never 500.
//
// `node` signs with a key this file generated, so the tests can also sign tokens the server trusts and change
// one thing at a time (audience, issuer, typ, times). Key rotation uses further nodes that trust that key as a
// retired one, or no longer trust it at all. All nodes share a namespace of their own, so the user actors of
// this file live on these nodes only.

const namespace = () => `${inject('namespace')}_jwt`
const issuer = 'actorbase'
const audience = 'actorbase'

interface KeyPair {
  privateKey: CryptoKey
  publicKey: CryptoKey
  pem: string
}

async function newKey(): Promise<KeyPair> {
  const { privateKey, publicKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  return { privateKey, publicKey, pem: await exportPKCS8(privateKey) }
}

interface Registered {
  user: { id: string; email: string }
  accessToken: string
  refreshToken: string
  expiresIn: number
  tokenType: string
}

interface Jwks {
  keys: (JWK & { kid: string })[]
}

let trusted: KeyPair
let node: TestNode
let kid: string
let alice: Registered
const started: TestNode[] = []

async function start(env: Record<string, string>): Promise<TestNode> {
  const n = await startTestNode({ NAMESPACE: namespace(), ...env })
  started.push(n)
  return n
}

beforeAll(async () => {
  trusted = await newKey()
  node = await start({ JWT_PRIVATE_KEY: trusted.pem })
  const [first] = (await jwks(node)).keys
  kid = first!.kid
  alice = await register(node)
})
afterAll(() => Promise.all(started.map((n) => n.shutdown())))

async function jwks(n: TestNode): Promise<Jwks> {
  const res = await fetch(`${n.url}/.well-known/jwks.json`)
  expect(res.status).toBe(200)
  return (await res.json()) as Jwks
}

async function register(n: TestNode): Promise<Registered> {
  const res = await fetch(`${n.url}/v1/auth/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ email: `${randomUUID()}@example.com`, password: 'correct horse battery staple', name: 'Ada' }),
  })
  expect(res.status).toBe(201)
  return (await res.json()) as Registered
}

const me = (n: TestNode, authorization?: string) => fetch(`${n.url}/v1/users/me`, authorization === undefined ? {} : { headers: { authorization } })
const bearer = (n: TestNode, token: string) => me(n, `Bearer ${token}`)

async function expectOk(res: Response, userId: string) {
  expect(res.status).toBe(200)
  expect(((await res.json()) as { id: string }).id).toBe(userId)
}

async function expect401(res: Response, code: 'auth.invalid_token' | 'auth.unauthenticated') {
  const body = await res.text()
  expect(res.status, body).toBe(401)
  expect(res.headers.get('content-type')).toBe('application/problem+json')
  expect(res.headers.get('www-authenticate')).toBe(code === 'auth.invalid_token' ? 'Bearer error="invalid_token"' : 'Bearer')
  const problem = JSON.parse(body) as Record<string, unknown>
  expect(problem).toMatchObject({ status: 401, code, type: `urn:problem-type:${code}`, requestId: res.headers.get('x-request-id') })
  expect(typeof problem.detail).toBe('string')
  return problem
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url')
const now = () => Math.floor(Date.now() / 1000)

/** The claims the server itself puts into an access token of `who`. */
function claimsOf(who: Registered): JWTPayload {
  const { sid } = decodeJwt(who.accessToken)
  expect(typeof sid).toBe('string')
  return { sub: who.user.id, sid, iss: issuer, aud: audience, iat: now() - 5, exp: now() + 300, jti: randomUUID() }
}

/** Signs `payload` exactly as given (no defaults added) under `header`. */
function sign(payload: JWTPayload, header: JWTHeaderParameters, key: CryptoKey | Uint8Array): Promise<string> {
  return new SignJWT(payload).setProtectedHeader(header).sign(key)
}

const forge = (overrides: JWTPayload = {}, header: Partial<JWTHeaderParameters> = {}, key: CryptoKey = trusted.privateKey) =>
  sign({ ...claimsOf(alice), ...overrides }, { alg: 'EdDSA', typ: 'at+jwt', kid, ...header }, key)

describe('the control', () => {
  test('a token the server issued is accepted', async () => {
    expect(decodeProtectedHeader(alice.accessToken)).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid })
    await expectOk(await bearer(node, alice.accessToken), alice.user.id)
  })

  test('a token this test signs with the trusted key and the same claims is accepted (the forger is right)', async () => {
    await expectOk(await bearer(node, await forge()), alice.user.id)
  })
})

describe('algorithm confusion', () => {
  test('alg none with the same claims and an empty signature', async () => {
    const [, payload, signature] = alice.accessToken.split('.')
    for (const alg of ['none', 'None', 'NONE']) {
      const header = b64url({ alg, typ: 'at+jwt', kid })
      await expect401(await bearer(node, `${header}.${payload}.`), 'auth.invalid_token')
      // The real signature kept: it does not belong to this header, and `none` is not allowed anyway.
      await expect401(await bearer(node, `${header}.${payload}.${signature}`), 'auth.invalid_token')
    }
    // Without a kid, too.
    await expect401(await bearer(node, `${b64url({ alg: 'none', typ: 'at+jwt' })}.${payload}.`), 'auth.invalid_token')
  })

  test('HS256 with the public key as the HMAC secret', async () => {
    const [jwk] = (await jwks(node)).keys
    const publicKey = (await importJWK(jwk!, 'EdDSA')) as CryptoKey
    const spki = await exportSPKI(publicKey)
    const der = Buffer.from(spki.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64')
    const secrets: Record<string, Uint8Array> = {
      'x bytes': Buffer.from(jwk!.x!, 'base64url'),
      'x text': Buffer.from(jwk!.x!),
      'SPKI PEM text': Buffer.from(spki),
      'SPKI PEM text without trailing newline': Buffer.from(spki.trim()),
      'SPKI DER': der,
      'JWK JSON': Buffer.from(JSON.stringify(jwk)),
    }
    for (const [form, secret] of Object.entries(secrets)) {
      for (const alg of ['HS256', 'HS384', 'HS512']) {
        const token = await sign(claimsOf(alice), { alg, typ: 'at+jwt', kid }, secret)
        const problem = await expect401(await bearer(node, token), 'auth.invalid_token')
        expect(problem, `${alg} with ${form}`).toMatchObject({ code: 'auth.invalid_token' })
      }
    }
  })
})

describe('keys the server does not trust', () => {
  test('another Ed25519 key claiming the real kid', async () => {
    const other = await newKey()
    await expect401(await bearer(node, await forge({}, {}, other.privateKey)), 'auth.invalid_token')
  })

  test('an unknown kid, and no kid at all', async () => {
    const other = await newKey()
    const otherKid = (await exportJWK(other.publicKey)).x!.slice(0, 16)
    await expect401(await bearer(node, await forge({}, { kid: otherKid }, other.privateKey)), 'auth.invalid_token')
    // The trusted key but a kid the server does not know: keys are found by kid only.
    await expect401(await bearer(node, await forge({}, { kid: 'not-a-known-kid' })), 'auth.invalid_token')
    const noKid = await sign(claimsOf(alice), { alg: 'EdDSA', typ: 'at+jwt' }, trusted.privateKey)
    await expect401(await bearer(node, noKid), 'auth.invalid_token')
  })
})

describe('claims and header the server pins, signed with the trusted key', () => {
  test('wrong audience', async () => {
    await expect401(await bearer(node, await forge({ aud: 'someone-else' })), 'auth.invalid_token')
    await expect401(await bearer(node, await forge({ aud: [] })), 'auth.invalid_token')
    const { aud: _aud, ...noAudience } = claimsOf(alice)
    await expect401(await bearer(node, await sign(noAudience, { alg: 'EdDSA', typ: 'at+jwt', kid }, trusted.privateKey)), 'auth.invalid_token')
  })

  test('wrong issuer', async () => {
    await expect401(await bearer(node, await forge({ iss: 'https://evil.example.com' })), 'auth.invalid_token')
    await expect401(await bearer(node, await forge({ iss: `${issuer} ` })), 'auth.invalid_token')
    const { iss: _iss, ...noIssuer } = claimsOf(alice)
    await expect401(await bearer(node, await sign(noIssuer, { alg: 'EdDSA', typ: 'at+jwt', kid }, trusted.privateKey)), 'auth.invalid_token')
  })

  test('missing or wrong typ', async () => {
    const noTyp = await sign(claimsOf(alice), { alg: 'EdDSA', kid }, trusted.privateKey)
    await expect401(await bearer(node, noTyp), 'auth.invalid_token')
    for (const typ of ['JWT', 'jwt', 'at+jwt2', 'dpop+jwt', '']) {
      await expect401(await bearer(node, await forge({}, { typ })), 'auth.invalid_token')
    }
  })

  test('a required claim missing', async () => {
    for (const claim of ['sub', 'sid', 'exp', 'iat', 'jti'] as const) {
      const { [claim]: _dropped, ...rest } = claimsOf(alice)
      const res = await bearer(node, await sign(rest, { alg: 'EdDSA', typ: 'at+jwt', kid }, trusted.privateKey))
      await expect401(res, 'auth.invalid_token')
    }
    // Present but not a string.
    await expect401(await bearer(node, await forge({ sid: 42 })), 'auth.invalid_token')
  })
})

describe('validity window, signed with the trusted key', () => {
  test('expired', async () => {
    const problem = await expect401(await bearer(node, await forge({ iat: now() - 600, exp: now() - 60 })), 'auth.invalid_token')
    expect(problem.detail).toMatch(/expired/)
  })

  test('not yet valid', async () => {
    await expect401(await bearer(node, await forge({ nbf: now() + 600 })), 'auth.invalid_token')
  })

  test('a lifetime longer than we issue, or an issue time in the future, even with a trusted signature', async () => {
    await expect401(await bearer(node, await forge({ iat: now(), exp: now() + 10 * 365 * 86_400, nbf: undefined })), 'auth.invalid_token')
    await expect401(await bearer(node, await forge({ iat: now() - 3 * 3600, exp: now() + 600 })), 'auth.invalid_token')
  })
})

describe('tampering', () => {
  test('a changed sub with the original signature', async () => {
    const bob = await register(node)
    const [header, payload, signature] = alice.accessToken.split('.')
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString()) as JWTPayload
    expect(claims.sub).toBe(alice.user.id)
    const tampered = `${header}.${b64url({ ...claims, sub: bob.user.id })}.${signature}`
    await expect401(await bearer(node, tampered), 'auth.invalid_token')
    // Changing the header instead breaks the signature just as well.
    await expect401(await bearer(node, `${b64url({ ...decodeProtectedHeader(alice.accessToken), extra: 1 })}.${payload}.${signature}`), 'auth.invalid_token')
    // The original is untouched by all this.
    await expectOk(await bearer(node, alice.accessToken), alice.user.id)
  })

  test('garbage in the token is a 401, not a 500', async () => {
    for (const token of ['x', 'a.b.c', 'a.b', '...', `${alice.accessToken}.x`, alice.accessToken.slice(0, -2)]) {
      await expect401(await bearer(node, token), 'auth.invalid_token')
    }
  })
})

describe('the authorization header', () => {
  test('missing, another scheme, or Bearer without a token', async () => {
    await expect401(await me(node), 'auth.unauthenticated')
    await expect401(await me(node, 'Basic xyz'), 'auth.unauthenticated')
    await expect401(await me(node, `Basic ${alice.accessToken}`), 'auth.unauthenticated')
    await expect401(await me(node, 'Bearer'), 'auth.unauthenticated')
    await expect401(await me(node, 'Bearer '), 'auth.unauthenticated')
    await expect401(await me(node, alice.accessToken), 'auth.unauthenticated')
  })

  test('nothing may trail the token', async () => {
    await expect401(await me(node, `Bearer ${alice.accessToken} garbage`), 'auth.unauthenticated')
  })

  test('the scheme is case-insensitive', async () => {
    await expectOk(await me(node, `bearer ${alice.accessToken}`), alice.user.id)
  })
})

describe('key rotation', () => {
  // `node` is the old node: it signs with K1 (`trusted`). The new key K2 signs on the rotated nodes, which
  // still verify K1 tokens (given as SPKI PEM or as JWK); `retired` has dropped K1.
  let k2: KeyPair
  let rotated: TestNode
  let rotatedJwk: TestNode
  let retired: TestNode
  let k1Spki: string
  let k1Jwk: JWK

  beforeAll(async () => {
    k2 = await newKey()
    k1Spki = await exportSPKI(trusted.publicKey)
    k1Jwk = await exportJWK(trusted.publicKey)
    ;[rotated, rotatedJwk, retired] = await Promise.all([
      start({ JWT_PRIVATE_KEY: k2.pem, JWT_PREVIOUS_PUBLIC_KEYS: JSON.stringify([k1Spki]) }),
      start({ JWT_PRIVATE_KEY: k2.pem, JWT_PREVIOUS_PUBLIC_KEYS: JSON.stringify([k1Jwk]) }),
      start({ JWT_PRIVATE_KEY: k2.pem }),
    ])
  })

  test('a K1 token is accepted where K1 is a previous key, as SPKI PEM or as JWK', async () => {
    const user = await register(node)
    expect(decodeProtectedHeader(user.accessToken).kid).toBe(kid)
    await expectOk(await bearer(rotated, user.accessToken), user.user.id)
    await expectOk(await bearer(rotatedJwk, user.accessToken), user.user.id)
  })

  test('the rotated JWKS lists K2 first, then K1; tokens are signed with K2', async () => {
    const k2Kid = (await jwks(retired)).keys.map((k) => k.kid)
    expect(k2Kid).toHaveLength(1)
    expect(k2Kid[0]).not.toBe(kid)
    for (const n of [rotated, rotatedJwk]) {
      const set = await jwks(n)
      expect(set.keys.map((k) => k.kid)).toEqual([k2Kid[0], kid])
      expect(set.keys[1]).toMatchObject({ kty: 'OKP', crv: 'Ed25519', x: k1Jwk.x, alg: 'EdDSA', use: 'sig' })
      for (const k of set.keys) expect(k).not.toHaveProperty('d')
    }
    const user = await register(rotated)
    expect(decodeProtectedHeader(user.accessToken)).toEqual({ alg: 'EdDSA', typ: 'at+jwt', kid: k2Kid[0] })
    // K2 tokens work on every node that has K2 and not on the old node, which never had it.
    await expectOk(await bearer(rotated, user.accessToken), user.user.id)
    await expectOk(await bearer(rotatedJwk, user.accessToken), user.user.id)
    await expectOk(await bearer(retired, user.accessToken), user.user.id)
    await expect401(await bearer(node, user.accessToken), 'auth.invalid_token')
  })

  test('once K1 is retired its tokens are refused', async () => {
    const user = await register(node)
    await expectOk(await bearer(node, user.accessToken), user.user.id)
    await expect401(await bearer(retired, user.accessToken), 'auth.invalid_token')
    // Also a K1-signed token that claims K2's kid.
    const [k2Jwk] = (await jwks(retired)).keys
    await expect401(await bearer(retired, await forge({}, { kid: k2Jwk!.kid })), 'auth.invalid_token')
  })
})
