import { z } from 'zod'
import type { ActorSystem } from '../actors/system.js'
import type { IssuedSession, PublicUser } from '../actors/user-actor.js'
import type { AccessTokens } from '../core/access-tokens.js'
import { AppError } from '../core/errors.js'
import { newId } from '../core/ids.js'
import type { PasswordHasher } from '../core/passwords.js'
import type { Principal } from '../core/principal.js'
import { findOneTimeToken, type OneTimePurpose } from '../storage/one-time-tokens.js'
import type { Sql } from '../storage/postgres.js'
import { findRefreshToken, hashToken, type Session } from '../storage/sessions.js'
import { findLogin, findUserIdByEmail } from '../storage/users.js'
import type { RateLimiter } from '../storage/rate-limit.js'
import { ifMatchVersion } from './if-match.js'
import { defineRoute, type RequestContext, type Route } from './route.js'

export interface IdentityDeps {
  actors: ActorSystem
  sql: Sql
  hasher: PasswordHasher
  tokens: AccessTokens
  limiter: RateLimiter
  limits: { loginFailuresPerAccount: number; loginAttemptsPerIp: number; windowSeconds: number }
}

const Email = z.email().max(254).transform((e) => e.toLowerCase())
const Password = z
  .string()
  .min(10, 'must be at least 10 characters')
  .refine((p) => Buffer.byteLength(p) <= 256, 'must be at most 256 bytes')
const Name = z.string().trim().min(1).max(100)
const OpaqueToken = z.string().min(20).max(200)

const User = z.object({ id: z.string(), email: z.string(), name: z.string(), emailVerified: z.boolean(), createdAt: z.string(), version: z.number() })
const TokenPair = z.object({ accessToken: z.string(), refreshToken: z.string(), expiresIn: z.number(), tokenType: z.literal('Bearer') })
const SignedIn = TokenPair.extend({ user: User })
const SessionInfo = z.object({ id: z.string(), createdAt: z.string(), lastUsedAt: z.string(), userAgent: z.string().nullable(), ip: z.string().nullable(), current: z.boolean() })

const userJson = { type: 'user.json' } as const

const userOf = (p: Principal) => {
  if (p.type !== 'user') throw new AppError('auth.unauthenticated', 'sign in first')
  return p
}

export function identityRoutes(d: IdentityDeps): Route[] {
  const user = (id: string) => d.actors.ref('user', id)
  const pair = async (userId: string, issued: IssuedSession) => {
    const { token, expiresIn } = await d.tokens.sign(userId, issued.sessionId)
    return { accessToken: token, refreshToken: issued.refreshToken, expiresIn, tokenType: 'Bearer' as const }
  }
  const liveToken = async (token: string, purpose: OneTimePurpose) => {
    const found = await findOneTimeToken(d.sql, hashToken(token), purpose)
    if (!found) throw new AppError('auth.invalid_one_time_token', 'the token is invalid, used or expired')
    return found
  }
  const device = (ctx: RequestContext) => ({ userAgent: ctx.headers['user-agent']?.slice(0, 512) ?? null, ip: ctx.ip })

  return [
    defineRoute({
      method: 'post',
      path: '/v1/auth/register',
      operationId: 'register',
      summary: 'Create an account and sign in; a verification email goes out',
      tags: ['identity'],
      body: z.object({ email: Email, password: Password, name: Name }),
      responses: { 201: { description: 'registered and signed in', schema: SignedIn }, 409: { description: '`auth.email_taken`' } },
      handler: async (ctx) => {
        const { email, password, name } = ctx.body
        const hash = await d.hasher.hash(password)
        const id = newId()
        const reply = await user(id).ask<IssuedSession & { user: PublicUser }>(
          { type: 'user.register', email, name, hash, ...device(ctx) },
          { requestId: ctx.requestId },
        )
        return { status: 201, body: { user: reply.user, ...(await pair(id, reply)) } }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/login',
      operationId: 'login',
      summary: 'Sign in with email and password',
      tags: ['identity'],
      body: z.object({ email: Email, password: z.string().min(1).max(1024) }),
      responses: { 200: { description: 'signed in', schema: SignedIn }, 401: { description: '`auth.invalid_credentials`' }, 429: { description: 'too many attempts' } },
      handler: async (ctx) => {
        const { email, password } = ctx.body
        const window = d.limits.windowSeconds
        const account = { key: `login:fail:${email}`, max: d.limits.loginFailuresPerAccount, windowSeconds: window }
        await d.limiter.hit({ key: `login:ip:${ctx.ip}`, max: d.limits.loginAttemptsPerIp, windowSeconds: 60 })
        await d.limiter.check(account)
        const login = await findLogin(d.sql, email)
        // Unknown accounts spend the same hashing time, so timing tells nothing about who has an account.
        const verdict = login ? await d.hasher.verify(login.hash, password) : (await d.hasher.verifyNothing(password), { ok: false, rehash: false })
        if (!login || !verdict.ok) {
          await d.limiter.hit(account)
          throw new AppError('auth.invalid_credentials', 'the email or password is wrong')
        }
        await d.limiter.reset(account.key)
        const rehash = verdict.rehash ? await d.hasher.hash(password) : undefined
        const issued = await user(login.userId).ask<IssuedSession>({ type: 'session.create', ...device(ctx), ...(rehash ? { rehash } : {}) }, { requestId: ctx.requestId })
        const profile = await user(login.userId).ask<PublicUser>({ type: 'user.get' }, { requestId: ctx.requestId })
        return { status: 200, body: { user: profile, ...(await pair(login.userId, issued)) } }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/refresh',
      operationId: 'refresh',
      summary: 'Exchange a refresh token for a new pair; the old one stops working',
      tags: ['identity'],
      body: z.object({ refreshToken: OpaqueToken }),
      responses: { 200: { description: 'a new token pair', schema: TokenPair }, 401: { description: '`auth.refresh_invalid`, `auth.refresh_reused`, `auth.session_revoked`' } },
      handler: async (ctx) => {
        const hash = hashToken(ctx.body.refreshToken)
        const row = await findRefreshToken(d.sql, hash)
        if (!row) throw new AppError('auth.refresh_invalid', 'the refresh token is not valid')
        const issued = await user(row.userId).ask<IssuedSession>({ type: 'session.refresh', tokenHash: hash.toString('hex') }, { requestId: ctx.requestId })
        return { status: 200, body: await pair(row.userId, issued) }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/logout',
      operationId: 'logout',
      summary: "Revoke the refresh token's session",
      tags: ['identity'],
      body: z.object({ refreshToken: OpaqueToken }),
      responses: { 204: { description: 'signed out (also when the token was unknown or already revoked)' } },
      handler: async (ctx) => {
        const row = await findRefreshToken(d.sql, hashToken(ctx.body.refreshToken))
        if (row && !row.sessionRevokedAt) {
          await user(row.userId).ask({ type: 'session.revoke', sessionId: row.sessionId, reason: 'logout' }, { requestId: ctx.requestId })
        }
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/auth/sessions',
      operationId: 'listSessions',
      summary: "The caller's active sessions",
      tags: ['identity'],
      auth: 'user',
      responses: { 200: { description: 'sessions', schema: z.object({ items: z.array(SessionInfo), nextCursor: z.null() }) } },
      handler: async (ctx) => {
        const me = userOf(ctx.principal)
        const sessions = await user(me.userId).ask<Session[]>({ type: 'sessions.list' }, { principal: me, requestId: ctx.requestId })
        const items = sessions.map((s) => ({
          id: s.id,
          createdAt: new Date(s.createdAt).toISOString(),
          lastUsedAt: new Date(s.lastUsedAt).toISOString(),
          userAgent: s.userAgent,
          ip: s.ip,
          current: s.id === me.sessionId,
        }))
        return { status: 200, body: { items, nextCursor: null } }
      },
    }),
    defineRoute({
      method: 'delete',
      path: '/v1/auth/sessions/:id',
      operationId: 'revokeSession',
      summary: "Revoke one of the caller's sessions",
      tags: ['identity'],
      auth: 'user',
      params: z.object({ id: z.uuid() }),
      responses: { 204: { description: 'revoked' }, 404: { description: 'no such session of the caller' } },
      handler: async (ctx) => {
        const me = userOf(ctx.principal)
        await user(me.userId).ask({ type: 'session.revoke', sessionId: ctx.params.id, reason: 'revoked' }, { principal: me, requestId: ctx.requestId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/email/verify',
      operationId: 'verifyEmail',
      summary: 'Confirm an email address with the token from the verification email',
      tags: ['identity'],
      body: z.object({ token: OpaqueToken }),
      responses: { 204: { description: 'verified' }, 400: { description: '`auth.invalid_one_time_token`' } },
      handler: async (ctx) => {
        const found = await liveToken(ctx.body.token, 'email_verify')
        await user(found.userId).ask({ type: 'email.verify', tokenId: found.id }, { requestId: ctx.requestId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/password/forgot',
      operationId: 'forgotPassword',
      summary: 'Send a password reset email (always 202: nothing tells whether the account exists)',
      tags: ['identity'],
      body: z.object({ email: Email }),
      responses: { 202: { description: 'accepted' } },
      handler: async (ctx) => {
        const email = ctx.body.email
        // The answer is the same and immediate for every address; the work happens after it.
        void (async () => {
          await d.limiter.hit({ key: `forgot:${email}`, max: 5, windowSeconds: 3600 })
          const id = await findUserIdByEmail(d.sql, email)
          if (id) user(id).tell({ type: 'password.forgot' }, { requestId: ctx.requestId })
        })().catch((err: unknown) => ctx.log.warn({ err, requestId: ctx.requestId }, 'password reset email not sent'))
        return { status: 202 }
      },
    }),
    defineRoute({
      method: 'post',
      path: '/v1/auth/password/reset',
      operationId: 'resetPassword',
      summary: 'Set a new password with the token from the reset email; every session of the user is revoked',
      tags: ['identity'],
      body: z.object({ token: OpaqueToken, password: Password }),
      responses: { 204: { description: 'password changed' }, 400: { description: '`auth.invalid_one_time_token`' } },
      handler: async (ctx) => {
        const found = await liveToken(ctx.body.token, 'password_reset')
        const hash = await d.hasher.hash(ctx.body.password)
        await user(found.userId).ask({ type: 'password.reset', tokenId: found.id, hash }, { requestId: ctx.requestId })
        return { status: 204 }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/v1/users/me',
      operationId: 'getMe',
      summary: 'The signed-in user, from the user actor',
      tags: ['identity'],
      auth: 'user',
      responses: { 200: { description: 'the user', schema: User } },
      handler: async (ctx) => {
        const me = userOf(ctx.principal)
        // The hottest authenticated read: straight to the actor, no ref built per request, and the body comes
        // back already serialized (once per version of the profile).
        const json = await d.actors.ask<string>('user', me.userId, userJson, { principal: me, requestId: ctx.requestId })
        return { status: 200, contentType: 'application/json', data: json }
      },
    }),
    defineRoute({
      method: 'patch',
      path: '/v1/users/me',
      operationId: 'updateMe',
      summary: 'Change the signed-in user (send `if-match: <version>` to refuse a stale update)',
      tags: ['identity'],
      auth: 'user',
      body: z.object({ name: Name.optional() }).strict(),
      responses: { 200: { description: 'the user', schema: User }, 409: { description: 'stale `if-match` version' } },
      handler: async (ctx) => {
        const me = userOf(ctx.principal)
        const ifMatch = ifMatchVersion(ctx.headers)
        const reply = await user(me.userId).ask<PublicUser>(
          { type: 'user.update', ...ctx.body, ...(ifMatch !== undefined ? { ifMatch } : {}) },
          { principal: me, requestId: ctx.requestId },
        )
        return { status: 200, body: reply }
      },
    }),
    defineRoute({
      method: 'get',
      path: '/.well-known/jwks.json',
      operationId: 'jwks',
      summary: 'Public keys that verify access tokens',
      tags: ['identity'],
      responses: { 200: { description: 'JSON Web Key Set' } },
      handler: () => ({ status: 200, body: d.tokens.jwks(), headers: { 'cache-control': 'public, max-age=300' } }),
    }),
  ]
}
