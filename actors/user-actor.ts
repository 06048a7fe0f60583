import { AppError, notFound } from '../core/errors.js'
import { newId } from '../core/ids.js'
import type { JobQueue } from './job-queue.js'
import { consumeOneTimeToken, insertOneTimeToken, type OneTimePurpose } from '../storage/one-time-tokens.js'
import type { Queryable, Sql } from '../storage/postgres.js'
import {
  findRefreshToken,
  insertRefreshToken,
  insertSession,
  listSessions,
  newOpaqueToken,
  revokeSessions,
  rotateRefreshToken,
  touchSession,
} from '../storage/sessions.js'
import { findUser, insertUser, setPasswordHash, updateUser, type User } from '../storage/users.js'
import { expectFenced } from './errors.js'
import { defineKind, type ActorKind, type Command, type MessageContext, type Outcome } from './kind.js'
import type { SessionRevocations } from './session-revocations.js'
import type { EventPublisher } from './event-publisher.js'
import { userChannel, type ChannelEvent } from '../core/events.js'
import { channelSeq, insertEvents } from '../storage/outbox.js'

export interface UserActorDeps {
  sql: Sql
  /** Durable jobs: the verification and reset emails go out through the queue. */
  jobs: JobQueue
  revocations: SessionRevocations
  refreshTtlDays: number
  /** How long a rotated refresh token presented again gets the same answer instead of revoking its session. */
  refreshGraceMs: number
  /** Base of the links in emails. */
  publicUrl: string
  events: EventPublisher
}

interface Replay {
  at: number
  reply: IssuedSession
}

interface UserState {
  user: User | undefined
  /** The public view of `user`, built once per change: `user.get` is the hot read. */
  view: PublicUser | undefined
  /** Recent rotations by old token hash (hex): a retry within the grace window gets the same new token. */
  replays: ReadonlyMap<string, Replay>
  /** The last event number of the user's channel. */
  seq: number
}

export interface IssuedSession {
  sessionId: string
  refreshToken: string
}

export interface PublicUser {
  id: string
  email: string
  name: string
  emailVerified: boolean
  createdAt: string
  version: number
}

// The public view as JSON, serialized once per version of the view: `GET /v1/users/me` is the hottest read.
const serialized = new WeakMap<PublicUser, string>()
function jsonOf(view: PublicUser): string {
  let json = serialized.get(view)
  if (json === undefined) {
    json = JSON.stringify(view)
    serialized.set(view, json)
  }
  return json
}

export function publicUser(u: User): PublicUser {
  return { id: u.id, email: u.email, name: u.name, emailVerified: u.emailVerifiedAt !== null, createdAt: u.createdAt.toISOString(), version: u.version }
}

/**
 * One actor per user: the single writer of the user's profile, sessions, refresh-token rotations and one-time
 * tokens, so rotations of one session can never race each other.
 */
export function userKind(d: UserActorDeps): ActorKind<unknown> {
  const issue = async (tx: Queryable, sessionId: string): Promise<string> => {
    const { token, hash } = newOpaqueToken()
    await insertRefreshToken(tx, { id: newId(), sessionId, hash, ttlDays: d.refreshTtlDays })
    return token
  }
  const oneTime = async (tx: Queryable, userId: string, purpose: OneTimePurpose, ttlMinutes: number): Promise<string> => {
    const { token, hash } = newOpaqueToken()
    await insertOneTimeToken(tx, { id: newId(), userId, purpose, hash, ttlMinutes })
    return token
  }
  /** An email as a job, written in the caller's transaction (so it goes out exactly if that commits). */
  const mail = async (tx: Queryable, requestId: string, email: { to: string; subject: string; body: string; kind: string; data: Record<string, string> }) => {
    const job = d.jobs.prepare({ name: 'email.send', payload: email, requestId })
    await d.jobs.insert(tx, job)
    return job
  }

  return defineKind<UserState>({
    name: 'user',
    async load(id) {
      const user = await findUser(d.sql, id)
      const seq = user ? await channelSeq(d.sql, userChannel(id)) : 0
      // Events a previous owner committed but did not publish go out before this activation's.
      if (user) void d.events.flush(userChannel(id))
      return { user, view: user && publicUser(user), replays: new Map(), seq }
    },
    handle(state, command, ctx) {
      // Reads from memory answer synchronously; everything else may touch the database.
      if (command.type === 'user.json') {
        if (!state.view) throw notFound('user')
        return { reply: jsonOf(state.view) }
      }
      if (command.type === 'user.get') {
        if (!state.user) throw notFound('user')
        return { reply: state.view }
      }
      if (command.type === 'outbox.flush') {
        void d.events.flush(userChannel(ctx.id))
        return { reply: null }
      }
      return write(state, command, ctx)
    },
  })

  async function write(state: Readonly<UserState>, command: Command, ctx: MessageContext): Promise<Outcome<UserState>> {
    const userId = ctx.id
    const existing = (): User => {
      if (!state.user) throw notFound('user')
      return state.user
    }
    // One event per change on the user's own channel, written in the change's transaction (`record`) and
    // handed to the publisher once it committed (`adopt`).
    let pending: ChannelEvent | undefined
    const record = async (tx: Queryable, type: string, data: unknown) => {
      pending = { id: newId(), channel: userChannel(userId), seq: state.seq + 1, type, data, at: new Date().toISOString(), requestId: ctx.requestId }
      await insertEvents(tx, [pending])
    }
    const adopt = <T extends UserState>(next: T): T => {
      if (!pending) return next
      d.events.publish([pending])
      return { ...next, seq: pending.seq }
    }
    switch (command.type) {
      case 'user.register': {
        if (state.user) throw new AppError('conflict', 'this user already exists')
        const c = command as Command & { email: string; name: string; hash: string; userAgent: string | null; ip: string | null }
        const sessionId = newId()
        const { user, refreshToken, email } = await d.sql.begin(async (tx) => {
          const user = await insertUser(tx, { id: userId, email: c.email, name: c.name, hash: c.hash })
          if (!user) throw new AppError('auth.email_taken', 'an account with this email already exists')
          await insertSession(tx, { id: sessionId, userId, userAgent: c.userAgent, ip: c.ip })
          await record(tx, 'session.created', { sessionId })
          const token = await oneTime(tx, userId, 'email_verify', 24 * 60)
          const email = await mail(tx, ctx.requestId, {
            to: user.email,
            subject: 'Confirm your email address',
            body: `Hello ${user.name},\n\nconfirm your email address: ${d.publicUrl}/verify-email?token=${token}\n`,
            kind: 'email_verify',
            data: { token },
          })
          return { user, refreshToken: await issue(tx, sessionId), email }
        })
        d.jobs.publish([email])
        const view = publicUser(user)
        return { state: adopt({ ...state, user, view }), reply: { user: view, sessionId, refreshToken } }
      }
      case 'user.get':
        existing()
        return { reply: state.view }
      case 'user.update': {
        const user = existing()
        const c = command as Command & { name?: string; ifMatch?: number }
        if (c.ifMatch !== undefined && c.ifMatch !== user.version) throw new AppError('conflict', `version ${c.ifMatch} is stale; the current version is ${user.version}`)
        const updated = await d.sql.begin(async (tx) => {
          const row = await updateUser(tx, userId, user.version, { ...(c.name !== undefined ? { name: c.name } : {}) })
          expectFenced(row ? 1 : 0, `user ${userId}`, user.version)
          await record(tx, 'user.updated', publicUser(row!))
          return row!
        })
        const view = publicUser(updated)
        return { state: adopt({ ...state, user: updated, view }), reply: view }
      }
      case 'session.create': {
        existing()
        const c = command as Command & { userAgent: string | null; ip: string | null; rehash?: string }
        const sessionId = newId()
        const refreshToken = await d.sql.begin(async (tx) => {
          await insertSession(tx, { id: sessionId, userId, userAgent: c.userAgent, ip: c.ip })
          if (c.rehash) await setPasswordHash(tx, userId, c.rehash)
          await record(tx, 'session.created', { sessionId, userAgent: c.userAgent })
          return issue(tx, sessionId)
        })
        return { state: adopt({ ...state }), reply: { sessionId, refreshToken } satisfies IssuedSession }
      }
      case 'session.refresh': {
        existing()
        const key = String(command.tokenHash)
        const now = Date.now()
        const replay = state.replays.get(key)
        if (replay && now - replay.at <= d.refreshGraceMs) return { reply: replay.reply }
        const row = await findRefreshToken(d.sql, Buffer.from(key, 'hex'))
        if (!row || row.userId !== userId || row.expiresAt.getTime() <= now) throw new AppError('auth.refresh_invalid', 'the refresh token is not valid')
        if (row.sessionRevokedAt) throw new AppError('auth.session_revoked', 'this session was revoked; sign in again')
        const rotated = row.rotatedAt === null && (await d.sql.begin(async (tx) => {
          if (!(await rotateRefreshToken(tx, row.id))) return undefined
          await touchSession(tx, row.sessionId)
          return issue(tx, row.sessionId)
        }))
        if (!rotated) {
          // RFC 9700 reuse detection: a rotated token came back after its grace window, so one of its holders
          // is not the legitimate client. The whole session dies.
          const ids = await d.sql.begin(async (tx) => {
            const revoked = await revokeSessions(tx, userId, 'refresh_reused', row.sessionId)
            await record(tx, 'session.revoked', { sessionIds: revoked, reason: 'refresh_reused' })
            return revoked
          })
          await d.revocations.revoke(ids)
          // This message fails on purpose after a committed change, so its state is not adopted; the channel's
          // number must move on regardless (the one field a failing handler here may touch).
          d.events.publish([pending!])
          ;(state as { seq: number }).seq = pending!.seq
          ctx.log.warn({ userId, sessionId: row.sessionId, requestId: ctx.requestId }, 'refresh token reused: session revoked')
          throw new AppError('auth.refresh_reused', 'this refresh token was already used; the session has been revoked')
        }
        const reply: IssuedSession = { sessionId: row.sessionId, refreshToken: rotated }
        const replays = new Map([...state.replays].filter(([, r]) => now - r.at <= d.refreshGraceMs))
        if (d.refreshGraceMs > 0) replays.set(key, { at: now, reply })
        return { state: { ...state, replays }, reply }
      }
      case 'session.revoke': {
        const c = command as Command & { sessionId?: string; reason: string }
        const ids = await d.sql.begin(async (tx) => {
          const revoked = await revokeSessions(tx, userId, c.reason, c.sessionId)
          if (c.sessionId && revoked.length === 0) throw notFound('session')
          if (revoked.length > 0) await record(tx, 'session.revoked', { sessionIds: revoked, reason: c.reason })
          return revoked
        })
        await d.revocations.revoke(ids)
        return { state: adopt({ ...state }), reply: { revoked: ids } }
      }
      case 'sessions.list':
        return { reply: await listSessions(d.sql, userId) }
      case 'email.verify': {
        const user = existing()
        const updated = await d.sql.begin(async (tx) => {
          if (!(await consumeOneTimeToken(tx, String(command.tokenId)))) throw new AppError('auth.invalid_one_time_token', 'the token is invalid, used or expired')
          if (user.emailVerifiedAt) return undefined
          const row = await updateUser(tx, userId, user.version, { emailVerifiedAt: new Date() })
          expectFenced(row ? 1 : 0, `user ${userId}`, user.version)
          await record(tx, 'user.email_verified', publicUser(row!))
          return row!
        })
        if (!updated) return { reply: state.view }
        const view = publicUser(updated)
        return { state: adopt({ ...state, user: updated, view }), reply: view }
      }
      case 'password.forgot': {
        const user = existing()
        const email = await d.sql.begin(async (tx) => {
          const token = await oneTime(tx, userId, 'password_reset', 60)
          return mail(tx, ctx.requestId, {
            to: user.email,
            subject: 'Reset your password',
            body: `Hello ${user.name},\n\nreset your password: ${d.publicUrl}/reset-password?token=${token}\nThe link works once, for an hour.\n`,
            kind: 'password_reset',
            data: { token },
          })
        })
        d.jobs.publish([email])
        return { reply: null }
      }
      case 'password.reset': {
        existing()
        const c = command as Command & { tokenId: string; hash: string }
        const revoked = await d.sql.begin(async (tx) => {
          if (!(await consumeOneTimeToken(tx, c.tokenId))) throw new AppError('auth.invalid_one_time_token', 'the token is invalid, used or expired')
          await setPasswordHash(tx, userId, c.hash)
          const ids = await revokeSessions(tx, userId, 'password_reset')
          await record(tx, 'password.reset', { revokedSessions: ids })
          return ids
        })
        await d.revocations.revoke(revoked)
        return { state: adopt({ ...state, replays: new Map() }), reply: { revoked } }
      }
      default:
        throw new AppError('bad_request', `unknown user command ${command.type}`)
    }
  }
}

