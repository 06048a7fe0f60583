import { Packr } from 'msgpackr'
import { z } from 'zod'

export type WireProtocol = 'json' | 'msgpack'

/** Subprotocol names of API.md; a client that offers none gets JSON. */
export const subprotocols: Record<string, WireProtocol> = { 'v1.json': 'json', 'v1.msgpack': 'msgpack' }

const CorrelationId = z.union([z.string().max(64), z.number().int()])
const Channel = z.string().max(100)

/** Every frame a client may send; anything else is a bad frame. */
export const ClientFrame = z.discriminatedUnion('type', [
  z.object({ type: z.literal('auth'), token: z.string().min(1).max(4_096) }).strict(),
  z.object({ id: CorrelationId, type: z.literal('subscribe'), channel: Channel, since: z.number().int().min(0).optional() }).strict(),
  z.object({ id: CorrelationId, type: z.literal('unsubscribe'), channel: Channel }).strict(),
  z.object({ id: CorrelationId, type: z.literal('rpc'), method: z.string().max(64), params: z.record(z.string(), z.unknown()).default({}) }).strict(),
  z.object({ id: CorrelationId, type: z.literal('presence'), channel: Channel }).strict(),
  z.object({ type: z.literal('ping') }).strict(),
])
export type ClientFrame = z.infer<typeof ClientFrame>

// Records off: every frame is a plain map, as any MessagePack client expects.
const packr = new Packr({ useRecords: false })

export function decodeFrame(data: ArrayBuffer, isBinary: boolean, protocol: WireProtocol): unknown {
  if (protocol === 'msgpack') {
    if (!isBinary) throw new Error('v1.msgpack frames are binary')
    return packr.unpack(new Uint8Array(data))
  }
  if (isBinary) throw new Error('v1.json frames are text')
  return JSON.parse(Buffer.from(data).toString('utf8'))
}

export function encodeFrame(frame: unknown, protocol: WireProtocol): string | Uint8Array {
  return protocol === 'msgpack' ? packr.pack(frame) : JSON.stringify(frame)
}
