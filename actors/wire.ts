import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node'
import { Packr } from 'msgpackr'
import { AppError, errorCodes, type ErrorCode } from '../core/errors.js'
import type { Principal } from '../core/principal.js'
import { MovedError } from './errors.js'
import type { Command } from './kind.js'

// Plain maps both ways: no msgpackr record extension, so any MessagePack peer can read the frames.
const packr = new Packr({ useRecords: false, mapsAsObjects: true })

export const header = { principal: 'ab-principal', requestId: 'ab-request-id', deadline: 'ab-deadline' } as const

export interface Call {
  kind: string
  id: string
  command: Command
}

export function encodeCall(call: Call, principal: Principal, requestId: string, deadline: number): { data: Uint8Array; headers: MsgHdrs } {
  const h = natsHeaders()
  h.set(header.principal, JSON.stringify(principal))
  h.set(header.requestId, requestId)
  h.set(header.deadline, String(deadline))
  return { data: packr.pack([call.kind, call.id, call.command]), headers: h }
}

export function decodeCall(data: Uint8Array, h: MsgHdrs | undefined): Call & { principal: Principal; requestId: string; deadline: number } {
  const [kind, id, command] = packr.unpack(data) as [string, string, Command]
  return {
    kind,
    id,
    command,
    principal: JSON.parse(h?.get(header.principal) || '{"type":"anonymous"}') as Principal,
    requestId: h?.get(header.requestId) || 'unknown',
    deadline: Number(h?.get(header.deadline)) || Date.now() + 5_000,
  }
}

export function encodeReply(value: unknown): Uint8Array {
  return packr.pack([0, value])
}

export function encodeFailure(err: unknown): Uint8Array {
  if (err instanceof MovedError) return packr.pack([1, 'moved', err.message])
  if (err instanceof AppError) return packr.pack([1, err.code, err.message, err.errors ?? null])
  return packr.pack([1, 'internal', 'the actor failed; the error was logged on its node'])
}

/** The reply value, or the error the actor raised, rebuilt on the caller's side. */
export function decodeReply(data: Uint8Array): unknown {
  const reply = packr.unpack(data) as [0, unknown] | [1, string, string, AppError['errors'] | null]
  if (reply[0] === 0) return reply[1]
  const [, code, message, errors] = reply
  if (code === 'moved') throw new MovedError(message)
  const known = code in errorCodes ? (code as ErrorCode) : 'internal'
  throw new AppError(known, message, errors ? { errors } : {})
}
