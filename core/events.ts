/** One change, as it is stored in the outbox, published to JetStream and sent to WebSocket clients. */
export interface ChannelEvent {
  id: string
  channel: string
  /** Per channel, from 1, increasing by one with no gaps. */
  seq: number
  type: string
  data: unknown
  /** ISO-8601 UTC. */
  at: string
  requestId?: string
}

export type ChannelKind = 'org' | 'user'

const channelShape = /^(org|user):([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/

/** `org:<uuid>` or `user:<uuid>`; undefined for anything else. */
export function parseChannel(channel: string): { kind: ChannelKind; id: string } | undefined {
  const m = channelShape.exec(channel)
  return m ? { kind: m[1] as ChannelKind, id: m[2]! } : undefined
}

export const orgChannel = (orgId: string) => `org:${orgId}`
export const userChannel = (userId: string) => `user:${userId}`
